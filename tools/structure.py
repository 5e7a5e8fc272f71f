"""The shape of the code base, read from the source with ``ast`` (nothing is imported).

One walker for every structure check (``tools/structure_test.py``): it finds the modules of the
given packages, what each imports from the others (module-level and function-local imports,
``from package import module`` followed by ``module.name``, dotted ``package.module.name``
chains) and reports four kinds of problem:

* a module longer than a limit (``long_modules``),
* a name starting with ``_`` taken from another module (``private_uses``),
* an import cycle among the modules (``find_cycle``),
* an import inside a function (``local_imports``): a way to dodge a cycle, so only the lazy
  imports the caller lists are let through.

Test code (``*_test.py``, ``conftest.py``, ``testing.py``, ``*_testing.py``) is left out of the
checks: a test may reach into its module, and test helpers are not the library.
"""

from __future__ import annotations

import ast
import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "Import",
    "Module",
    "find_cycle",
    "graph",
    "imports",
    "is_test_file",
    "local_imports",
    "long_modules",
    "private_uses",
    "read_modules",
]


@dataclasses.dataclass(frozen=True)
class Module:
    """One source file.

    Attributes:
      name: dotted module name (``bench.results``; a package's ``__init__.py`` is the package).
      path: the file, relative to the root it was read from.
      lines: its number of lines.
      tree: its syntax tree.
    """

    name: str
    path: str
    lines: int
    tree: ast.Module


@dataclasses.dataclass(frozen=True)
class Import:
    """What one module takes from another of the walked modules.

    Attributes:
      source: the importing module.
      target: the imported module.
      names: the names it uses from ``target`` (imported by name or read as attributes).
      local: whether the import statement is inside a function, and which one (or None).
      line: line of the import statement.
    """

    source: str
    target: str
    names: frozenset[str]
    local: str | None
    line: int


def is_test_file(path: str) -> bool:
    """Whether ``path`` is test code: ``*_test.py``, ``conftest.py``, ``testing.py`` or
    ``*_testing.py``."""
    name = os.path.basename(path)
    return (
        name.endswith("_test.py")
        or name in ("conftest.py", "testing.py")
        or name.endswith("_testing.py")
    )


def read_modules(root: str, packages: Sequence[str]) -> dict[str, Module]:
    """The non-test modules under ``root``'s ``packages`` directories (recursively)."""
    found = {}
    for package in packages:
        for directory, subdirectories, files in os.walk(os.path.join(root, package)):
            subdirectories[:] = sorted(
                d for d in subdirectories if not d.startswith((".", "__pycache__"))
            )
            for file in sorted(files):
                if not file.endswith(".py") or is_test_file(file):
                    continue
                path = os.path.join(directory, file)
                relative = os.path.relpath(path, root)
                parts = relative[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                with open(path, encoding="utf-8") as f:
                    source = f.read()
                name = ".".join(parts)
                found[name] = Module(
                    name=name,
                    path=relative,
                    lines=source.count("\n") + (not source.endswith("\n") and bool(source)),
                    tree=ast.parse(source, filename=relative),
                )
    return found


def _enclosing_functions(tree: ast.AST) -> dict[ast.AST, str]:
    """{import node: name of the innermost function around it} for imports inside functions."""
    found: dict[ast.AST, str] = {}

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = function
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner = getattr(child, "name", "<lambda>")
            if isinstance(child, (ast.Import, ast.ImportFrom)) and function is not None:
                found[child] = function
            visit(child, inner)

    visit(tree, None)
    return found


def _resolve(dotted: str, known: Iterable[str]) -> tuple[str, list[str]] | None:
    """The longest known module that starts ``dotted``, and the rest of it; None if none."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate, parts[end:]
    return None


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if not module.path.endswith("__init__.py"):
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _attribute_chain(node: ast.Attribute) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]`` when it starts with a plain name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def imports(module: Module, known: Mapping[str, Module] | Iterable[str]) -> list[Import]:
    """Everything ``module`` takes from the ``known`` modules, one entry per import statement.

    ``from p import m`` where ``p.m`` is a module is an import of ``p.m``; names read later as
    ``m.name`` (or ``alias.name``, or ``p.m.name`` after ``import p.m``) count as used from it.
    """
    known = set(known)
    local = _enclosing_functions(module.tree)
    entries: list[tuple[str, set[str], str | None, int]] = []
    aliases: dict[str, tuple[int, str]] = {}  # bound name -> (entry, module it names)
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolved = _resolve(alias.name, known)
                if resolved is None:
                    continue
                entries.append((resolved[0], set(resolved[1][:1]), local.get(node), node.lineno))
                if alias.asname:
                    aliases[alias.asname] = (len(entries) - 1, resolved[0])
                else:  # ``import p.m`` binds ``p``, a namespace package perhaps.
                    top = alias.name.split(".")[0]
                    aliases.setdefault(top, (len(entries) - 1, top))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    target, names = f"{base}.{alias.name}", set()
                else:
                    resolved = _resolve(base, known)
                    if resolved is None:
                        continue
                    target, names = resolved[0], {(resolved[1] or [alias.name])[0]}
                entries.append((target, names, local.get(node), node.lineno))
                if not names:
                    aliases[alias.asname or alias.name] = (len(entries) - 1, target)
    reached: dict[tuple[int, str], int] = {}  # (entry, submodule reached through it) -> entry
    for node in ast.walk(module.tree):
        chain = _attribute_chain(node) if isinstance(node, ast.Attribute) else None
        if not chain or chain[0] not in aliases:
            continue
        index, bound = aliases[chain[0]]
        # The longest module the chain names (``tf_admm.storage.bits`` is ``bits`` of
        # tf_admm.storage); the names after it are attributes.
        resolved = _resolve(".".join([bound, *chain[1:]]), known)
        if resolved is None:
            continue
        target, rest = resolved
        if target != entries[index][0] and (index, target) not in reached:
            entries.append((target, set(), entries[index][2], entries[index][3]))
            reached[(index, target)] = len(entries) - 1
        if rest:
            entries[reached.get((index, target), index)][1].add(rest[0])
    return [
        Import(module.name, target, frozenset(names), function, line)
        for target, names, function, line in entries
        if target != module.name
    ]


def graph(modules: Mapping[str, Module], lazy: Mapping[str, str] = {}) -> dict[str, set[str]]:
    """{module: the modules it imports}, function-local imports included but the ``lazy`` ones
    (see :func:`local_imports`): those run after every module has loaded."""
    edges: dict[str, set[str]] = {}
    for name, module in modules.items():
        edges[name] = set()
        for entry in imports(module, modules):
            if entry.local is None or not _allowed(name, entry.target, lazy):
                edges[name].add(entry.target)
    return edges


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle as a list of modules (the first repeated at the end), or None."""
    state: dict[str, str] = {}  # module -> "open" while on the path, "done" after

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target, path + [target])):
                return found
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def long_modules(
    modules: Mapping[str, Module], limit: int, exceptions: Mapping[str, int]
) -> list[str]:
    """Modules over ``limit`` lines, in words; a module in ``exceptions`` may keep (not exceed)
    the line count given there."""
    found = []
    for module in sorted(modules.values(), key=lambda m: m.path):
        allowed = max(limit, exceptions.get(module.path, 0))
        if module.lines > allowed:
            found.append(f"{module.path}: {module.lines} lines (at most {allowed})")
    return found


def private_uses(modules: Mapping[str, Module]) -> list[str]:
    """Names starting with ``_`` (not dunders) that a module takes from another, in words."""
    found = []
    for module in sorted(modules.values(), key=lambda m: m.path):
        for entry in imports(module, modules):
            private = sorted(n for n in entry.names if n.startswith("_") and not n.startswith("__"))
            if private:
                found.append(
                    f"{module.path}:{entry.line}: private names of {entry.target}: "
                    + ", ".join(private)
                )
    return found


def _allowed(source: str, target: str, lazy: Mapping[str, str]) -> bool:
    keys = (target, target.split(".")[0], f"{source} -> {target}")
    return any(key in lazy for key in keys)


def local_imports(modules: Mapping[str, Module], lazy: Mapping[str, str] = {}) -> list[str]:
    """Import statements inside functions, in words, but the ``lazy`` ones.

    Args:
      modules: the modules to check.
      lazy: {what may be imported inside functions: why}. A key is a module (``matplotlib``,
        ``tf_admm.keras3``; a top-level package covers its submodules) or ``"importer ->
        imported"`` (``"bench.results_recipe -> tf_admm.compat"``) to allow one importer only.
    """
    found = []
    for name, module in sorted(modules.items()):
        for node, function in sorted(
            _enclosing_functions(module.tree).items(), key=lambda item: item[0].lineno
        ):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _absolute(module, node)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in dict.fromkeys(targets):
                if not _allowed(name, target, lazy):
                    found.append(f"{module.path}:{node.lineno}: {function}() imports {target}")
    return found
