"""The shape of recipes/: no import cycle, no module using another's private names, small files.

Read from the source with ``ast`` (nothing is imported), counting function-local imports too, so
that a cycle cannot hide behind one. Test files are left out: a test may reach into its own
module.
"""

import ast
import os

import pytest

PACKAGE = "recipes"
_DIR = os.path.dirname(os.path.abspath(__file__))
MAX_LINES = 700  # data.py, the largest, is 681


def _modules():
    return sorted(
        name[: -len(".py")]
        for name in os.listdir(_DIR)
        if name.endswith(".py") and not name.endswith("_test.py") and name != "__init__.py"
    )


def _tree(module):
    with open(os.path.join(_DIR, f"{module}.py"), encoding="utf-8") as f:
        return ast.parse(f.read())


def _imports(tree):
    """``{sibling module: names used from it}``: ``from recipes import m`` (then ``m.name``),
    ``import recipes.m`` and ``from recipes.m import name``."""
    used, aliases = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
            for alias in node.names:
                used.setdefault(alias.name, set())
                aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{PACKAGE}."):
            module = node.module.split(".")[1]
            used.setdefault(module, set()).update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(f"{PACKAGE}."):
                    used.setdefault(alias.name.split(".")[1], set())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            used[aliases[node.value.id]].add(node.attr)
    return used


def _graph():
    return {module: _imports(_tree(module)) for module in _modules()}


def find_cycle(graph):
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state = {}  # module -> "open" while on the path, "done" after

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target, path + [target])):
                return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    graph = {module: set(used) for module, used in _graph().items()}
    assert find_cycle(graph) is None


@pytest.mark.parametrize("module", _modules())
def test_no_private_names_of_another_module(module):
    private = {
        f"{target}.{name}"
        for target, names in _imports(_tree(module)).items()
        for name in names
        if name.startswith("_") and not name.startswith("__")
    }
    assert not private, f"recipes/{module}.py uses private names of other modules: {private}"


@pytest.mark.parametrize("module", _modules())
def test_module_is_small(module):
    with open(os.path.join(_DIR, f"{module}.py"), encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, f"recipes/{module}.py has {lines} lines"
