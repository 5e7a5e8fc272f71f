"""tools/api_reference.py: the pdoc reference builds; every public name has a docstring."""

from __future__ import annotations

import sys
import types

import api_reference
import pytest


def test_every_public_name_of_both_packages_has_a_docstring():
    modules = api_reference.public_modules()
    assert {"tf_admm", "tf_admm.spec", "tflite_export", "tflite_export.exporter"} <= set(modules)
    assert not [m for m in modules if m.endswith("_test")]
    assert api_reference.undocumented(modules) == []


def test_the_check_names_what_lacks_a_docstring(monkeypatch):
    module = types.ModuleType("fake_api", "A documented module.")

    def documented():
        """Has one."""

    def bare():
        pass

    class Thing:
        """A class."""

        def method(self):
            pass

        @property
        def size(self):
            return 1

        def _private(self):
            pass

    for value in (documented, bare, Thing):
        value.__module__ = "fake_api"
        setattr(module, value.__name__, value)
    module.__all__ = ["documented", "bare", "Thing"]
    monkeypatch.setitem(sys.modules, "fake_api", module)
    assert api_reference.undocumented(["fake_api"]) == [
        "fake_api.bare",
        "fake_api.Thing.method",
        "fake_api.Thing.size",
    ]


def test_reference_builds_a_page_per_module_with_the_docstrings(tmp_path):
    pytest.importorskip("pdoc", reason="pdoc is in the [test] extra")
    out = api_reference.build(tmp_path, ["tf_admm", "tf_admm.spec"])
    assert (out / "index.html").exists()
    page = (out / "tf_admm" / "spec.html").read_text(encoding="utf-8")
    assert "class Spec" in page or '<span class="name">Spec</span>' in page
    assert "target_ratio" in page
