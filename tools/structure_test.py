"""The shape of the whole code base (tools/structure.py): small modules, no module using another's
private names, no import cycle, no function-local imports but the lazy ones listed below.

Reads the checkout this file is in (through the runfiles symlinks under Bazel); each check is
also run on a small offending tree, so that it is known to be able to fail.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import structure

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tf_admm", "tflite_export", "recipes", "bench", "tools")
MAX_LINES = 600

# Modules allowed over MAX_LINES, each with the line count it may not exceed: none since the
# tf_admm modules were split (2026-12-07). An entry is refused once its module fits.
LINE_EXCEPTIONS: dict[str, int] = {}

# Imports inside functions that are allowed, and why: optional or heavy dependencies loaded only
# when the function that needs them runs. Keys as structure.local_imports reads them.
LAZY_IMPORTS = {
    "matplotlib": "bench.plots: heavy; only drawing a plot needs it",
    "tensorflow_datasets": "recipes.image_data: heavy; only building a TFDS dataset needs it",
    "tflite_micro": "tflite_export: optional (the TFLite Micro target and checks)",
    "pdoc": "tools.api_reference: optional; only building the API reference needs it",
    "pytest": "tools.pytest_main: imported after the launcher has fixed sys.path",
    "bench.results_recipe -> tf_admm.compat": (
        "TensorFlow, only to read a recipe's TensorBoard logs: bench.results is pure Python"
    ),
    "tf_admm.compat -> tf_admm.keras3": "the Keras 3 adapter imports Keras 3 (optional)",
    "tflite_export.inputs -> tf_admm.keras3": "the Keras 3 adapter imports Keras 3 (optional)",
    "recipes.reporting -> tflite_export": "LiteRT, loaded only when a recipe exports a file",
    "recipes.reporting -> tflite_export.verify": "LiteRT, as above",
}

# Function-local imports inside tf_admm that still dodge an import cycle: to be removed, no new
# one (test_allowed_local_imports_are_all_still_used refuses an entry once its import is gone).
TF_ADMM_CYCLE_DODGES = {
    "tf_admm.keras3.model -> tf_admm.keras3.callback": "AdmmModel.fit()",
}

ALLOWED_LOCAL = {**LAZY_IMPORTS, **TF_ADMM_CYCLE_DODGES}


@pytest.fixture(scope="module")
def modules():
    if not (ROOT / "WORKSPACE").is_file():
        pytest.skip(f"not run from a checkout: {ROOT}")
    return structure.read_modules(str(ROOT), PACKAGES)


def test_every_package_is_read_and_test_code_is_not(modules):
    assert {name.split(".")[0] for name in modules} == set(PACKAGES)
    assert "bench.results" in modules and "tools.structure" in modules
    assert not [name for name in modules if name.endswith(("_test", "testing", "conftest"))]


def test_no_module_is_long(modules):
    assert structure.long_modules(modules, MAX_LINES, LINE_EXCEPTIONS) == []


def test_line_exceptions_are_modules_still_over_the_limit(modules):
    lines = {module.path: module.lines for module in modules.values()}
    stale = {path for path in LINE_EXCEPTIONS if lines.get(path, 0) <= MAX_LINES}
    assert not stale, f"split already: remove from LINE_EXCEPTIONS: {sorted(stale)}"


def test_no_module_uses_private_names_of_another(modules):
    assert structure.private_uses(modules) == []


def test_no_function_local_imports_but_the_listed_lazy_ones(modules):
    assert structure.local_imports(modules, ALLOWED_LOCAL) == []


def test_allowed_local_imports_are_all_still_used(modules):
    # Each importer-specific entry must still match an import inside a function.
    used = set()
    for entry in structure.local_imports(modules, {}):
        where, target = entry.split(": ", 1)[0], entry.rsplit(" imports ", 1)[1]
        path = where.rsplit(":", 1)[0]
        importer = next(name for name, m in modules.items() if m.path == path)
        used.add(f"{importer} -> {target}")
    stale = [key for key in ALLOWED_LOCAL if " -> " in key and key not in used]
    assert not stale, f"no such function-local import any more: remove {stale}"


def test_no_import_cycle(modules):
    assert structure.find_cycle(structure.graph(modules, ALLOWED_LOCAL)) is None


# ----------------------------------------------------------------------------------------------
# Each check on a tree that breaks it
# ----------------------------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> dict[str, structure.Module]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return structure.read_modules(str(root), ["pkg"])


def test_a_long_module_is_reported_unless_excepted_and_not_grown(tmp_path):
    modules = _tree(tmp_path, {"pkg/long.py": "x = 1\n" * 12, "pkg/short.py": "x = 1\n"})
    assert structure.long_modules(modules, 10, {}) == ["pkg/long.py: 12 lines (at most 10)"]
    assert structure.long_modules(modules, 10, {"pkg/long.py": 12}) == []
    assert structure.long_modules(modules, 10, {"pkg/long.py": 11}) == [
        "pkg/long.py: 12 lines (at most 11)"
    ]


def test_private_names_of_another_module_are_reported_in_every_spelling(tmp_path):
    modules = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "_hidden = 1\npublic = 2\n",
            "pkg/sub/b.py": "_also = 1\n",
            "pkg/by_name.py": "from pkg.a import _hidden, public\n",
            "pkg/by_module.py": "from pkg import a\n\nvalue = a._hidden + a.public\n",
            "pkg/by_alias.py": "from pkg import a as alias\n\nvalue = alias._hidden\n",
            "pkg/dotted.py": "import pkg.sub.b\n\nvalue = pkg.sub.b._also\n",
            "pkg/relative.py": "from .a import _hidden\n",
            "pkg/own.py": "_mine = 1\nvalue = _mine\n",
            "pkg/fine.py": "from pkg import a\n\nvalue = a.public\n",
            # Test code may reach into its module.
            "pkg/a_test.py": "from pkg.a import _hidden\n",
        },
    )
    found = structure.private_uses(modules)
    assert found == [
        "pkg/by_alias.py:1: private names of pkg.a: _hidden",
        "pkg/by_module.py:1: private names of pkg.a: _hidden",
        "pkg/by_name.py:1: private names of pkg.a: _hidden",
        "pkg/dotted.py:1: private names of pkg.sub.b: _also",
        "pkg/relative.py:1: private names of pkg.a: _hidden",
    ]


def test_an_import_cycle_is_found_through_a_function_local_import(tmp_path):
    modules = _tree(
        tmp_path,
        {
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "import pkg.c\n",
            "pkg/c.py": "def f():\n    from pkg.a import thing\n    return thing\n",
            "pkg/d.py": "from pkg import a\n",
        },
    )
    edges = structure.graph(modules)
    assert edges["pkg.d"] == {"pkg.a"}
    assert structure.find_cycle(edges) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    # Allowed as a lazy import, the function-local edge is not part of the graph.
    assert structure.find_cycle(structure.graph(modules, {"pkg.c -> pkg.a": "why"})) is None
    assert structure.find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_function_local_imports_are_reported_unless_listed(tmp_path):
    modules = _tree(
        tmp_path,
        {
            "pkg/a.py": "import json\n",
            "pkg/b.py": textwrap.dedent(
                """\
                import os


                def draw():
                    import heavy.plotting

                    return heavy.plotting


                class Thing:
                    def method(self):
                        from pkg import a

                        return a
                """
            ),
        },
    )
    assert structure.local_imports(modules) == [
        "pkg/b.py:5: draw() imports heavy.plotting",
        "pkg/b.py:12: method() imports pkg.a",
    ]
    assert structure.local_imports(modules, {"heavy": "optional", "pkg.b -> pkg.a": "why"}) == []
    assert structure.local_imports(modules, {"pkg.other -> pkg.a": "another importer"}) == [
        "pkg/b.py:5: draw() imports heavy.plotting",
        "pkg/b.py:12: method() imports pkg.a",
    ]
