"""Checks that every Python file in the repository belongs to exactly one Bazel target.

A module must be in the ``srcs`` of exactly one ``py_library`` / ``py_binary`` / ``py_test``
(through a ``filegroup`` counts); a test file (``*_test.py`` or ``test_*.py``, as pytest collects
them) must be in exactly one ``py_test``. Without Bazel installed, this evaluates the BUILD files
itself: BUILD and ``.bzl`` files are plain enough Starlark to run as Python with stand-ins for
``glob``, ``load``, ``native`` and the rules, which record each target's ``srcs``. So the macros
in ``tools/pytest.bzl`` are checked by what they really generate.

Left out: folders named in ``.bazelignore`` (the virtualenv, the Bazel stand-ins, ...), hidden
folders, ``bazel-*`` output links, nested Bazel repositories, and ``NOT_BUILT`` (``setup.py``).

Usage (exit status 1 and one line per problem when a file is missing or doubled)::

    python tools/check_bazel_targets.py [--root DIR]
"""

from __future__ import annotations

import argparse
import builtins
import dataclasses
import fnmatch
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "NOT_BUILT",
    "PY_RULES",
    "BuildError",
    "Target",
    "check",
    "glob_files",
    "ignored_dirs",
    "is_test_file",
    "load_targets",
    "main",
    "python_files",
]

BUILD_FILE_NAMES = ("BUILD.bazel", "BUILD")
WORKSPACE_FILE_NAMES = ("WORKSPACE", "WORKSPACE.bazel")
PY_RULES = frozenset({"py_library", "py_binary", "py_test"})
# Repository-relative paths of Python files that are not meant to be built by Bazel.
NOT_BUILT = frozenset({"setup.py"})
_TEST_PATTERNS = ("*_test.py", "test_*.py")


class BuildError(Exception):
    """A BUILD or .bzl file that this checker cannot evaluate."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One rule instance from a BUILD file.

    Attributes:
      label: ``//package:name``.
      kind: Rule name, e.g. ``py_test`` (``native.py_test`` in a macro gives ``py_test``).
      srcs: The ``srcs`` labels as written, resolved against the package.
      outs: Files a ``genrule`` generates, as labels.
    """

    label: str
    kind: str
    srcs: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()


def is_test_file(path: str) -> bool:
    """Whether pytest collects this file as a test module (``pyproject.toml``'s patterns)."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in _TEST_PATTERNS)


def ignored_dirs(root: str) -> frozenset[str]:
    """The repository-relative folders listed in ``.bazelignore`` (one per line, # comments)."""
    path = os.path.join(root, ".bazelignore")
    if not os.path.isfile(path):
        return frozenset()
    with open(path, encoding="utf-8") as handle:
        lines = (line.split("#", 1)[0].strip().strip("/") for line in handle)
        return frozenset(line for line in lines if line)


def _skip_dir(root: str, rel: str, ignored: frozenset[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    full = os.path.join(root, rel)
    return (
        rel in ignored
        or name.startswith(".")
        or name.startswith("bazel-")
        or name == "__pycache__"
        or name.endswith(".egg-info")
        or os.path.islink(full)
        or any(os.path.isfile(os.path.join(full, f)) for f in WORKSPACE_FILE_NAMES)
    )


def _walk(root: str, ignored: frozenset[str], start: str = "") -> Iterable[tuple[str, list[str]]]:
    """Yields (folder, file names) for every folder under ``start`` that Bazel would see."""
    stack = [start]
    while stack:
        rel = stack.pop()
        entries = sorted(os.scandir(os.path.join(root, rel)), key=lambda entry: entry.name)
        files = [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]
        yield rel, files
        for entry in reversed(entries):
            child = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False) and not _skip_dir(root, child, ignored):
                stack.append(child)


def _build_file(root: str, package: str) -> str | None:
    for name in BUILD_FILE_NAMES:
        path = os.path.join(root, package, name)
        if os.path.isfile(path):
            return path
    return None


def python_files(root: str, ignored: frozenset[str] | None = None) -> list[str]:
    """Repository-relative paths of the Python files that need a target, sorted."""
    ignored = ignored_dirs(root) if ignored is None else ignored
    found = []
    for rel, files in _walk(root, ignored):
        for name in files:
            path = f"{rel}/{name}" if rel else name
            if name.endswith(".py") and path not in NOT_BUILT:
                found.append(path)
    return sorted(found)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append("(?:.*/)?" if not last else ".*")
            continue
        regex = "".join(
            "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char)
            for char in segment
        )
        parts.append(regex if last else regex + "/")
    return re.compile("".join(parts) + r"\Z")


def glob_files(
    root: str,
    package: str,
    include: Sequence[str],
    exclude: Sequence[str] = (),
    ignored: frozenset[str] = frozenset(),
) -> list[str]:
    """Bazel's ``glob`` over source files: package-relative paths, not entering subpackages.

    Args:
      root: Repository root.
      package: Package folder relative to ``root`` ("" for the root package).
      include: Patterns with ``*``, ``?`` and ``**`` (any number of folders).
      exclude: Patterns to drop.
      ignored: Folders from ``.bazelignore``.

    Returns:
      Sorted paths relative to the package.
    """
    includes = [_glob_regex(pattern) for pattern in include]
    excludes = [_glob_regex(pattern) for pattern in exclude]
    matched = []
    stack = [package]
    while stack:
        rel = stack.pop()
        for entry in os.scandir(os.path.join(root, rel)):
            path = f"{rel}/{entry.name}" if rel else entry.name
            inner = path[len(package) + 1 :] if package else path
            if entry.is_dir():
                if not _skip_dir(root, path, ignored) and _build_file(root, path) is None:
                    stack.append(path)
            elif any(r.match(inner) for r in includes) and not any(
                r.match(inner) for r in excludes
            ):
                matched.append(inner)
    return sorted(matched)


def _split_label(label: str, package: str) -> tuple[str, str]:
    """(package, name) of a label written in ``package``; raises for other repositories."""
    if label.startswith("@"):
        raise BuildError(f"Expected a label in this repository; received: label={label}")
    if label.startswith("//"):
        body = label[2:]
        if ":" in body:
            pkg, name = body.split(":", 1)
        else:
            pkg, name = body, body.rsplit("/", 1)[-1]
        return pkg, name
    return package, label[1:] if label.startswith(":") else label


def _canonical(label: str, package: str) -> str:
    if label.startswith("@"):
        return label
    pkg, name = _split_label(label, package)
    return f"//{pkg}:{name}"


class _Package:
    """Evaluates one BUILD file, recording its targets."""

    def __init__(self, root: str, name: str, ignored: frozenset[str]):
        self.root = root
        self.name = name
        self.ignored = ignored
        self.targets: list[Target] = []

    def rule(self, kind: str) -> Callable[..., None]:
        def record(name: str | None = None, **attrs: Any) -> None:
            if kind in ("package", "licenses", "exports_files", "load"):
                return
            if not isinstance(name, str):
                raise BuildError(f"Expected a name for {kind}; received: name={name!r}")
            srcs = attrs.get("srcs") or ()
            if isinstance(srcs, str) or not isinstance(srcs, (list, tuple)):
                raise BuildError(
                    f"Expected a list of srcs for {kind} {name}; received: srcs={srcs!r}"
                )
            outs = attrs.get("outs") or ()
            self.targets.append(
                Target(
                    label=f"//{self.name}:{name}",
                    kind=kind,
                    srcs=tuple(_canonical(src, self.name) for src in srcs),
                    outs=tuple(_canonical(out, self.name) for out in outs),
                )
            )

        return record

    def glob(
        self,
        include: Sequence[str] = (),
        exclude: Sequence[str] = (),
        exclude_directories: int = 1,
        allow_empty: bool = True,
    ) -> list[str]:
        del exclude_directories  # Only files are ever matched here.
        files = glob_files(self.root, self.name, include, exclude, self.ignored)
        if not files and not allow_empty:
            raise BuildError(f"Expected glob({list(include)}) to match files in //{self.name}")
        return files

    def native(self) -> Any:
        package = self

        class Native:
            def __getattr__(self, attr: str) -> Any:
                if attr == "glob":
                    return package.glob
                if attr == "package_name":
                    return lambda: package.name
                if attr == "repository_name":
                    return lambda: "@"
                if attr == "existing_rules":
                    return lambda: {
                        target.label.split(":")[1]: {"kind": target.kind}
                        for target in package.targets
                    }
                return package.rule(attr)

        return Native()

    def builtins(self) -> dict[str, Any]:
        return {
            "fail": _fail,
            "select": _select,
            "struct": lambda **kwargs: argparse.Namespace(**kwargs),
            "True": True,
            "False": False,
            "None": None,
        }

    def load_bzl(self, label: str, scope: dict[str, Any], symbols: Sequence[str], **aliases: str):
        if not label.endswith(".bzl"):
            raise BuildError(f"Expected a .bzl file to load; received: label={label}")
        pkg, name = _split_label(label, self.name)
        path = os.path.join(self.root, pkg, name)
        if not os.path.isfile(path):
            raise BuildError(f"Expected {label} to exist; received: path={path}")
        namespace: dict[str, Any] = {"native": self.native(), **self.builtins()}
        namespace["load"] = lambda lbl, *syms, **als: self.load_bzl(lbl, namespace, syms, **als)
        with open(path, encoding="utf-8") as handle:
            exec(compile(handle.read(), path, "exec"), namespace)  # noqa: S102
        for local, exported in [*((s, s) for s in symbols), *aliases.items()]:
            if exported not in namespace:
                raise BuildError(f"Expected {label} to define {exported}")
            scope[local] = namespace[exported]

    def evaluate(self, path: str) -> None:
        package = self

        globals_ = {"__builtins__": builtins, **self.builtins()}

        class Scope(dict):
            # Names a BUILD file calls without defining them are rules (py_test, genrule, ...),
            # unless they are builtins (len, dict, ...), which the lookup goes on to find.
            def __missing__(self, key: str) -> Any:
                if key == "glob":
                    return package.glob
                if key in globals_ or hasattr(builtins, key):
                    raise KeyError(key)
                if re.fullmatch(r"[a-z][a-z0-9_]*", key):
                    return package.rule(key)
                raise KeyError(key)

        scope = Scope()
        scope["load"] = lambda label, *syms, **als: self.load_bzl(label, scope, syms, **als)
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        try:
            exec(compile(source, path, "exec"), globals_, scope)  # noqa: S102
        except BuildError:
            raise
        except Exception as error:  # Starlark errors surface as any Python exception here.
            raise BuildError(f"{type(error).__name__}: {error}") from error


def _fail(message: str = "", *args: Any, **kwargs: Any) -> None:
    raise BuildError(f"fail(): {message}")


def _select(branches: dict[str, Any], no_match_error: str = "") -> Any:
    # Every branch may apply somewhere: the union covers them all.
    values = list(branches.values())
    if values and all(isinstance(value, (list, tuple)) for value in values):
        return [item for value in values for item in value]
    return values[0] if values else None


def load_targets(root: str, ignored: frozenset[str] | None = None) -> dict[str, Target]:
    """Evaluates every BUILD file under ``root``.

    Args:
      root: Repository root.
      ignored: Folders to skip; ``.bazelignore``'s when None.

    Returns:
      Targets by label.

    Raises:
      BuildError: Naming the BUILD file that could not be evaluated.
    """
    ignored = ignored_dirs(root) if ignored is None else ignored
    targets: dict[str, Target] = {}
    for rel, _ in _walk(root, ignored):
        build_file = _build_file(root, rel)
        if build_file is None:
            continue
        package = _Package(root, rel, ignored)
        try:
            package.evaluate(build_file)
        except BuildError as error:
            raise BuildError(f"{os.path.relpath(build_file, root)}: {error}") from error
        for target in package.targets:
            targets[target.label] = target
    return targets


def _source_files(label: str, targets: dict[str, Target], generated: set[str]) -> list[str]:
    """Repository-relative source paths behind one ``srcs`` label (filegroups expanded)."""
    if label.startswith("@") or label in generated:
        return []
    target = targets.get(label)
    if target is not None:
        if target.kind != "filegroup":
            return []
        return [path for src in target.srcs for path in _source_files(src, targets, generated)]
    pkg, name = label[2:].split(":", 1)
    return [f"{pkg}/{name}" if pkg else name]


def check(root: str) -> list[str]:
    """Problems found under ``root``, one sentence each, sorted; empty when all is well."""
    ignored = ignored_dirs(root)
    try:
        targets = load_targets(root, ignored)
    except BuildError as error:
        return [str(error)]
    generated = {out for target in targets.values() for out in target.outs}
    owners: dict[str, list[Target]] = {}
    problems = []
    for target in targets.values():
        if target.kind not in PY_RULES:
            continue
        for src in target.srcs:
            for path in _source_files(src, targets, generated):
                if not os.path.isfile(os.path.join(root, path)):
                    problems.append(f"{target.label}: srcs has {path}, which does not exist")
                elif path.endswith(".py"):
                    owners.setdefault(path, []).append(target)
    for path in python_files(root, ignored):
        found = owners.get(path, [])
        labels = ", ".join(target.label for target in found)
        if not found:
            folder = path.rsplit("/", 1)[0] if "/" in path else ""
            hint = (
                "add it to a target's srcs"
                if _build_file(root, folder)
                else f"{folder or '.'}/ has no BUILD file (see tf_admm/BUILD for the pattern)"
            )
            problems.append(f"{path}: in no Bazel target; {hint}")
        elif len(found) > 1:
            problems.append(f"{path}: in {len(found)} targets ({labels}); keep it in one")
        elif is_test_file(path) and found[0].kind != "py_test":
            problems.append(
                f"{path}: a test file, expected in a py_test; received: {found[0].kind} {labels}"
            )
    return sorted(problems)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: prints the problems (exit 1) or a one-line summary (exit 0)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root",
        default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        help="repository root (default: the checkout holding this script)",
    )
    args = parser.parse_args(argv)
    problems = check(args.root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"check_bazel_targets: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    count = len(python_files(args.root))
    print(f"check_bazel_targets: each of {count} Python files is in exactly one target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
