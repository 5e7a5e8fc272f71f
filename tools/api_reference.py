"""The API reference of ``tf_admm`` and ``tflite_export``, built from their docstrings.

Usage (from the repository root; open ``<out>/index.html``):
  python tools/api_reference.py --out=build/api

It fails, naming them, when a public module, or a public name of one (its ``__all__``, and the
public methods and properties those classes define), has no docstring; tests run the same check
and build, so the reference cannot rot.

pdoc, not Sphinx or mkdocs + mkdocstrings: it reads the Google-style docstrings as they are
written, needs no configuration files or hand-kept page list (every module is found by walking
the packages), and is one small pip package.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

PACKAGES = ("tf_admm", "tflite_export")


def public_modules(packages: Sequence[str] = PACKAGES) -> list[str]:
    """Every module of ``packages`` that users import: no tests, no ``_private`` modules,
    and no ``__main__``."""
    names = []
    for package in packages:
        names.append(package)
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            parts = info.name.split(".")
            if any(p.startswith("_") or p.endswith("_test") for p in parts[1:]):
                continue
            names.append(info.name)
    return sorted(names)


def _public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n, value in vars(module).items()
            if not n.startswith("_") and getattr(value, "__module__", None) == module.__name__
        ]
    return list(names)


def _documented(value) -> bool:
    return bool((inspect.getdoc(value) or "").strip())


def undocumented(modules: Iterable[str]) -> list[str]:
    """Dotted names among ``modules`` that have no docstring (see the module docstring)."""
    missing = []
    for name in modules:
        module = importlib.import_module(name)
        if not _documented(module):
            missing.append(name)
        for attribute in _public_names(module):
            value = getattr(module, attribute)
            if isinstance(value, ModuleType) or getattr(value, "__module__", name) != name:
                continue  # Re-exported: checked where it is defined.
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue  # Constants carry no docstring of their own.
            if not _documented(value):
                missing.append(f"{name}.{attribute}")
            if inspect.isclass(value):
                for member, raw in vars(value).items():
                    if member.startswith("_"):
                        continue
                    function = raw.fget if isinstance(raw, property) else raw
                    if isinstance(function, (staticmethod, classmethod)):
                        function = function.__func__
                    if inspect.isfunction(function) and not _documented(
                        getattr(value, member) if not isinstance(raw, property) else function
                    ):
                        missing.append(f"{name}.{attribute}.{member}")
    return missing


def build(out: str | Path, modules: Sequence[str] | None = None) -> Path:
    """Writes the HTML reference of ``modules`` (default: :func:`public_modules`) to ``out``.

    Returns:
      ``out`` as a Path; ``out/index.html`` is the start page.
    """
    import pdoc
    import pdoc.render

    modules = list(modules or public_modules())
    pdoc.render.configure(docformat="google", show_source=False)
    out = Path(out)
    pdoc.pdoc(*modules, output_directory=out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    # Run as a script, tools/ comes first on sys.path: document this checkout's packages,
    # not whichever copy is installed.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build/api", help="Directory for the HTML files.")
    args = parser.parse_args(argv)
    modules = public_modules()
    missing = undocumented(modules)
    if missing:
        print("Public names without a docstring:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    out = build(args.out, modules)
    print(f"API reference of {len(modules)} modules: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
