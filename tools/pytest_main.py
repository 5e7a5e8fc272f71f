"""Runs pytest on one test file inside a Bazel ``py_test`` (see ``tools/pytest.bzl``).

Bazel starts the generated ``tools/pytest_entry.py`` as ``pytest_entry.py <test file> [pytest
arguments]`` in the workspace folder of the runfiles tree, which holds exactly the sources the
target declares, plus ``conftest.py`` and ``pyproject.toml`` at the top. This module:

* runs pytest there with that folder as ``rootdir`` and ``pyproject.toml`` as configuration, so
  the root ``conftest.py`` applies as in a plain ``pytest`` run at the repository root;
* turns off pytest's cache (the runfiles tree is read-only; ``TEST_TMPDIR`` takes temporary
  files) and writes the JUnit XML that Bazel asks for in ``XML_OUTPUT_FILE``;
* runs only its share of the tests when the target sets ``shard_count`` (Bazel's
  ``TEST_TOTAL_SHARDS`` / ``TEST_SHARD_INDEX``): test number ``i`` goes to shard ``i % total``;
* hides the checkout itself from imports: an editable install (``pip install -e .``) and the
  folder of the generated entry point would otherwise let a test import modules its target
  does not declare, and Bazel would not notice a missing dependency.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["Shard", "drop_checkout_finders", "drop_checkout_paths", "main", "pytest_args"]

_WORKSPACE_FILES = ("WORKSPACE", "WORKSPACE.bazel")


def pytest_args(
    test_file: str, extra: Sequence[str], root: str, env: Mapping[str, str]
) -> list[str]:
    """The pytest command line for one test file.

    Args:
      test_file: Path of the test file relative to ``root``, e.g. ``tf_admm/spec_test.py``.
      extra: More pytest arguments, passed last.
      root: The workspace folder in the runfiles tree.
      env: The test's environment (Bazel's ``XML_OUTPUT_FILE`` is read from it).

    Returns:
      Arguments for ``pytest.main``.

    Raises:
      ValueError: If ``test_file`` is absolute or not a ``.py`` file.
    """
    if os.path.isabs(test_file) or not test_file.endswith(".py"):
        raise ValueError(
            f"Expected a .py path relative to the workspace; received: test_file={test_file}"
        )
    args = [os.path.join(root, test_file), f"--rootdir={root}", "-p", "no:cacheprovider"]
    inifile = os.path.join(root, "pyproject.toml")
    if os.path.isfile(inifile):
        args += ["-c", inifile]
    xml_output = env.get("XML_OUTPUT_FILE")
    if xml_output:
        args.append(f"--junitxml={xml_output}")
    return args + list(extra)


def _is_checkout(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, name)) for name in _WORKSPACE_FILES)


def drop_checkout_paths(path: Iterable[str], root: str, entry_dir: str | None) -> list[str]:
    """``sys.path`` without the folders that would import from the checkout.

    Args:
      path: The import path, in order.
      root: The workspace folder in the runfiles tree (always kept).
      entry_dir: The folder Python put first for the entry script: the real folder of the
        generated file, outside the runfiles tree. None when there is none to drop.

    Returns:
      The kept entries, in order: everything but ``entry_dir`` and folders holding a Bazel
      ``WORKSPACE`` file (a checkout on the path, e.g. from an old-style editable install).
    """
    root = os.path.realpath(root)
    kept = []
    for entry in path:
        real = os.path.realpath(entry or os.curdir)
        if entry_dir is not None and real == os.path.realpath(entry_dir):
            continue
        if real != root and _is_checkout(real):
            continue
        kept.append(entry)
    return kept


def drop_checkout_finders(meta_path: Iterable[object], packages: Iterable[str]) -> list[object]:
    """``sys.meta_path`` without setuptools' editable finders for these top-level packages.

    ``pip install -e .`` installs a finder (from a module named ``__editable___<dist>_finder``)
    that maps each top-level package to the checkout; it would answer imports of modules that
    the runfiles tree lacks.

    Args:
      meta_path: The import finders, in order.
      packages: Top-level package names found in the runfiles tree.

    Returns:
      The finders kept, in order.
    """
    packages = set(packages)
    kept = []
    for finder in meta_path:
        module = getattr(finder, "__module__", "") or ""
        mapping = getattr(finder, "MAPPING", None) or getattr(
            sys.modules.get(module), "MAPPING", None
        )
        if (
            module.startswith("__editable__")
            and isinstance(mapping, Mapping)
            and packages & set(mapping)
        ):
            continue
        kept.append(finder)
    return kept


class Shard:
    """A pytest plugin keeping test number ``i`` (in collection order) when ``i % total == index``.

    Attributes:
      index: This shard, from 0.
      total: Number of shards.
      collected: Tests collected before the split (set during collection).
      kept: Tests this shard runs (set during collection).
    """

    def __init__(self, index: int, total: int):
        if not 0 <= index < total:
            raise ValueError(f"Expected 0 <= index < total; received: index={index}, total={total}")
        self.index = index
        self.total = total
        self.collected = 0
        self.kept = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Shard | None:
        """The shard Bazel asks for, or None when the test is not sharded.

        Bazel expects a sharded test to touch ``TEST_SHARD_STATUS_FILE``; this does it.
        """
        total = int(env.get("TEST_TOTAL_SHARDS") or 1)
        if total <= 1:
            return None
        status_file = env.get("TEST_SHARD_STATUS_FILE")
        if status_file:
            with open(status_file, "a", encoding="utf-8"):
                pass
        return cls(int(env.get("TEST_SHARD_INDEX") or 0), total)

    def pytest_collection_modifyitems(self, config, items) -> None:
        self.collected = len(items)
        kept = [item for number, item in enumerate(items) if number % self.total == self.index]
        dropped = [item for number, item in enumerate(items) if number % self.total != self.index]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        self.kept = len(kept)


def _top_level_packages(root: str) -> list[str]:
    return [
        name
        for name in sorted(os.listdir(root))
        if os.path.isfile(os.path.join(root, name, "__init__.py"))
    ]


def main(argv: Sequence[str] | None = None, entry_dir: str | None = None) -> int:
    """Runs pytest on ``argv[0]`` (relative to the current folder) with ``argv[1:]`` appended.

    Args:
      argv: Arguments after the program name; ``sys.argv[1:]`` when None.
      entry_dir: See ``drop_checkout_paths``.

    Returns:
      pytest's exit code: 0 when all passed, 5 when the file has no tests (a sharded run
      whose shard got none of the file's tests gives 0).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: pytest_entry.py TEST_FILE [PYTEST_ARGS...]", file=sys.stderr)
        return 2
    # Bazel kills a test at its timeout: line buffering keeps what was printed up to then.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    root = os.getcwd()
    sys.path[:] = drop_checkout_paths(sys.path, root, entry_dir)
    if root not in sys.path:
        sys.path.insert(0, root)
    sys.meta_path[:] = drop_checkout_finders(sys.meta_path, _top_level_packages(root))
    # The runfiles tree is not ours to write __pycache__ folders into.
    sys.dont_write_bytecode = True

    import pytest

    shard = Shard.from_env(os.environ)
    plugins = [shard] if shard else []
    code = int(pytest.main(pytest_args(argv[0], argv[1:], root, os.environ), plugins=plugins))
    if code == pytest.ExitCode.NO_TESTS_COLLECTED and shard and shard.collected:
        return 0  # More shards than tests: this one has nothing to run, which is fine.
    return code


if __name__ == "__main__":
    sys.exit(main())
