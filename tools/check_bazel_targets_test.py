"""Tests for tools/check_bazel_targets.py: every Python file in exactly one Bazel target."""

from __future__ import annotations

import textwrap
from pathlib import Path

import check_bazel_targets
import pytest

# The real macro file, so the checker is tested on what the repository's BUILD files load.
# Beside this file in a checkout, and in the runfiles tree under Bazel (a data dependency).
_PYTEST_BZL = Path(__file__).parent / "pytest.bzl"

_TOOLS_BUILD = """
genrule(
    name = "pytest_entry",
    outs = ["pytest_entry.py"],
    cmd = "touch $@",
)

py_library(
    name = "pytest_main",
    srcs = ["pytest_main.py"],
)
"""

_PACKAGE_BUILD = """
load("//tools:pytest.bzl", "pytest_tests")

py_library(
    name = "lib",
    srcs = glob(["*.py"], exclude = ["*_test.py"]),
)

pytest_tests(
    srcs = glob(["*_test.py"]),
    deps = [":lib"],
)
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small repository laid out like tf-admm: one package, its tests, tools, a conftest."""
    _write(
        tmp_path,
        {
            "WORKSPACE": 'workspace(name = "demo")\n',
            "BUILD": 'py_library(name = "conftest", srcs = ["conftest.py"])\n',
            "conftest.py": "",
            "setup.py": "",
            "pyproject.toml": "",
            "tools/BUILD": _TOOLS_BUILD,
            "tools/pytest.bzl": _PYTEST_BZL.read_text(encoding="utf-8"),
            "tools/pytest_main.py": "",
            "pkg/BUILD": _PACKAGE_BUILD,
            "pkg/__init__.py": "",
            "pkg/core.py": "",
            "pkg/core_test.py": "",
        },
    )
    return tmp_path


def _check(root: Path) -> list[str]:
    return check_bazel_targets.check(str(root))


def test_repository_has_each_python_file_in_exactly_one_target():
    # Under Bazel this file is a symlink into the checkout; resolving it finds the real tree.
    root = Path(__file__).resolve().parents[1]
    if not (root / "WORKSPACE").is_file():
        pytest.skip(f"not run from a checkout: {root}")
    assert _check(root) == []


def test_a_globbed_package_with_its_tests_has_no_problems(repo):
    assert _check(repo) == []


def test_the_macro_makes_one_py_test_per_test_file_with_the_generated_entry(repo):
    _write(repo, {"pkg/more_test.py": ""})
    targets = check_bazel_targets.load_targets(str(repo))

    tests = {label: t for label, t in targets.items() if t.kind == "py_test"}

    assert sorted(tests) == ["//pkg:core_test", "//pkg:more_test"]
    assert tests["//pkg:core_test"].srcs == ("//tools:pytest_entry.py", "//pkg:core_test.py")


def test_a_module_in_a_folder_without_build_file_is_reported(repo):
    _write(repo, {"newpkg/__init__.py": "", "newpkg/thing.py": ""})
    assert _check(repo) == [
        "newpkg/__init__.py: in no Bazel target; newpkg/ has no BUILD file "
        "(see tf_admm/BUILD for the pattern)",
        "newpkg/thing.py: in no Bazel target; newpkg/ has no BUILD file "
        "(see tf_admm/BUILD for the pattern)",
    ]


def test_a_module_left_out_of_explicit_srcs_is_reported(repo):
    _write(
        repo,
        {
            "pkg/BUILD": 'py_library(name = "lib", srcs = ["__init__.py", "core.py"])\n'
            'py_test(name = "core_test", srcs = ["core_test.py"])\n',
            "pkg/extra.py": "",
            "pkg/extra_test.py": "",
        },
    )
    assert _check(repo) == [
        "pkg/extra.py: in no Bazel target; add it to a target's srcs",
        "pkg/extra_test.py: in no Bazel target; add it to a target's srcs",
    ]


def test_a_module_in_two_targets_is_reported(repo):
    _write(
        repo,
        {"pkg/BUILD": _PACKAGE_BUILD + 'py_binary(name = "tool", srcs = ["core.py"])\n'},
    )
    assert _check(repo) == ["pkg/core.py: in 2 targets (//pkg:lib, //pkg:tool); keep it in one"]


def test_a_test_file_in_a_library_is_reported(repo):
    _write(
        repo,
        {
            "pkg/BUILD": 'py_library(name = "lib", srcs = glob(["*.py"]))\n',
        },
    )
    assert _check(repo) == [
        "pkg/core_test.py: a test file, expected in a py_test; received: py_library //pkg:lib"
    ]


def test_a_filegroup_hands_a_subpackage_to_one_library(repo):
    _write(
        repo,
        {
            "pkg/BUILD": _PACKAGE_BUILD.replace(
                '["*_test.py"]),\n)', '["*_test.py"]) + ["//pkg/sub:srcs"],\n)', 1
            ),
            "pkg/sub/BUILD": 'filegroup(name = "srcs", srcs = glob(["*.py"]))\n',
            "pkg/sub/__init__.py": "",
            "pkg/sub/deep.py": "",
        },
    )
    assert _check(repo) == []
    lib = check_bazel_targets.load_targets(str(repo))["//pkg:lib"]
    assert "//pkg/sub:srcs" in lib.srcs


def test_glob_stays_out_of_subpackages_but_enters_plain_folders(repo):
    _write(
        repo,
        {
            "pkg/plain/inner.py": "",
            "pkg/sub/BUILD": "",
            "pkg/sub/other.py": "",
        },
    )
    found = check_bazel_targets.glob_files(str(repo), "pkg", ["**/*.py"], ["*_test.py"])
    assert found == ["__init__.py", "core.py", "plain/inner.py"]


def test_ignored_hidden_and_nested_repository_folders_are_not_checked(repo):
    _write(
        repo,
        {
            ".bazelignore": "# virtualenv\n.venv\nvendored/\n",
            ".venv/lib/site.py": "",
            "vendored/lib.py": "",
            ".hidden/x.py": "",
            "third_party/stub/WORKSPACE": "",
            "third_party/stub/defs.py": "",
        },
    )
    assert check_bazel_targets.ignored_dirs(str(repo)) == {".venv", "vendored"}
    assert _check(repo) == []
    assert "setup.py" not in check_bazel_targets.python_files(str(repo))


def test_a_missing_source_file_is_reported(repo):
    _write(repo, {"pkg/BUILD": _PACKAGE_BUILD + 'py_library(name = "x", srcs = ["gone.py"])\n'})
    assert _check(repo) == ["//pkg:x: srcs has pkg/gone.py, which does not exist"]


def test_a_build_file_that_fails_names_the_file(repo):
    _write(
        repo,
        {
            "pkg/BUILD": _PACKAGE_BUILD.replace(
                "deps = [", 'overrides = {"absent_test.py": {"size": "large"}},\n    deps = ['
            )
        },
    )
    (problem,) = _check(repo)
    assert problem.startswith("pkg/BUILD: fail(): Expected overrides only for files in srcs")


def test_build_files_may_use_builtins_like_len(repo):
    _write(
        repo,
        {
            "pkg/BUILD": _PACKAGE_BUILD
            + 'py_library(name = "n%d" % len([1, 2]), srcs = [], deps = sorted([":lib"]))\n'
        },
    )
    assert "//pkg:n2" in check_bazel_targets.load_targets(str(repo))


def test_main_exits_1_with_the_problems_and_0_with_a_summary(repo, capsys):
    assert check_bazel_targets.main(["--root", str(repo)]) == 0
    assert "each of 5 Python files is in exactly one target" in capsys.readouterr().out

    _write(repo, {"newpkg/thing.py": ""})
    assert check_bazel_targets.main(["--root", str(repo)]) == 1
    assert "newpkg/thing.py: in no Bazel target" in capsys.readouterr().out
