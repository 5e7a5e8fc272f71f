"""The shape of tflite_export/: no import cycle, no module using another's private names, no
function-local imports of sibling modules, small files.

Read from the source with ``ast`` (nothing is imported), counting function-local imports too, so
that a cycle cannot hide behind one. Test files are left out: a test may reach into its module.
"""

import ast
import os

import pytest

PACKAGE = "tflite_export"
_DIR = os.path.dirname(os.path.abspath(__file__))
MAX_LINES = 625  # "about 600": verify.py, the largest, is 612


def _modules():
    return sorted(
        name[: -len(".py")]
        for name in os.listdir(_DIR)
        if name.endswith(".py") and not name.endswith("_test.py")
    )


def _tree(module):
    with open(os.path.join(_DIR, f"{module}.py"), encoding="utf-8") as f:
        return ast.parse(f.read())


def _sibling(node):
    """The sibling modules an import node names (``from tflite_export import a, b``, ``import
    tflite_export.a``, ``from tflite_export.a import name``), with the names taken from them."""
    if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
        return {alias.name: set() for alias in node.names}
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{PACKAGE}."):
        return {node.module.split(".")[1]: {alias.name for alias in node.names}}
    if isinstance(node, ast.Import):
        return {
            alias.name.split(".")[1]: set()
            for alias in node.names
            if alias.name.startswith(f"{PACKAGE}.")
        }
    return {}


def _imports(tree):
    """``{sibling module: names used from it}``, through ``module.name`` attributes too."""
    used, aliases = {}, {}
    for node in ast.walk(tree):
        for module, names in _sibling(node).items():
            used.setdefault(module, set()).update(names)
        if isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            used[aliases[node.value.id]].add(node.attr)
    return used


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


def test_imports_are_read_at_module_level_and_inside_functions():
    tree = ast.parse(
        "from tflite_export import a\n"
        "def f():\n"
        "    from tflite_export import b\n"
        "    from tflite_export.c import _x\n"
        "    return a._y\n"
    )
    assert _imports(tree) == {"a": {"_y"}, "b": set(), "c": {"_x"}}


def test_no_import_cycle():
    graph = {module: set(_imports(_tree(module))) - {module} for module in _modules()}
    assert find_cycle(graph) is None


@pytest.mark.parametrize("module", _modules())
def test_no_private_names_of_another_module(module):
    private = {
        f"{target}.{name}"
        for target, names in _imports(_tree(module)).items()
        for name in names
        if name.startswith("_") and not name.startswith("__") and target != module
    }
    assert not private, f"{PACKAGE}/{module}.py uses private names of other modules: {private}"


@pytest.mark.parametrize("module", _modules())
def test_no_function_local_import_of_a_sibling(module):
    local = []
    for function in ast.walk(_tree(module)):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                local += [f"{function.name}: {name}" for name in _sibling(node)]
    assert not local, f"{PACKAGE}/{module}.py imports sibling modules inside functions: {local}"


@pytest.mark.parametrize("module", _modules())
def test_module_is_small(module):
    with open(os.path.join(_DIR, f"{module}.py"), encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, f"{PACKAGE}/{module}.py has {lines} lines"
