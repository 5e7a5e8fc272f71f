"""Tests for tools/pytest_main.py, the pytest launcher of Bazel's py_test targets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import pytest_main

_PYPROJECT = '[tool.pytest.ini_options]\npython_files = ["*_test.py"]\n'


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def runfiles(tmp_path: Path) -> Path:
    """A stand-in for the workspace folder of a runfiles tree: config, conftest, one package."""
    root = tmp_path / "runfiles" / "ws"
    _write(root / "pyproject.toml", _PYPROJECT)
    _write(
        root / "conftest.py",
        """
        import pytest

        @pytest.fixture
        def from_root_conftest():
            return 42
        """,
    )
    _write(root / "pkg" / "__init__.py", "")
    _write(root / "pkg" / "mod.py", "VALUE = 7\n")
    return root


def _run(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    inherited = ("XML_OUTPUT", "PYTEST_", "TEST_TOTAL_SHARDS", "TEST_SHARD")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, pytest_main.__file__, *args],
        cwd=root,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pytest_args_point_pytest_at_the_runfiles_root_and_bazels_xml_file(tmp_path):
    (tmp_path / "pyproject.toml").write_text(_PYPROJECT)
    args = pytest_main.pytest_args(
        "pkg/a_test.py", ["-k", "fast"], str(tmp_path), {"XML_OUTPUT_FILE": "/out/test.xml"}
    )
    assert args == [
        str(tmp_path / "pkg" / "a_test.py"),
        f"--rootdir={tmp_path}",
        "-p",
        "no:cacheprovider",
        "-c",
        str(tmp_path / "pyproject.toml"),
        "--junitxml=/out/test.xml",
        "-k",
        "fast",
    ]


def test_pytest_args_leave_out_config_and_xml_when_absent(tmp_path):
    args = pytest_main.pytest_args("a_test.py", [], str(tmp_path), {})
    assert "-c" not in args
    assert not any(arg.startswith("--junitxml") for arg in args)


@pytest.mark.parametrize("test_file", ["/abs/a_test.py", "pkg/data.json"])
def test_pytest_args_refuse_absolute_or_non_python_paths(tmp_path, test_file):
    with pytest.raises(ValueError, match=f"received: test_file={test_file}"):
        pytest_main.pytest_args(test_file, [], str(tmp_path), {})


def test_drop_checkout_paths_removes_the_entry_folder_and_checkouts_only(tmp_path):
    runfiles_root = tmp_path / "runfiles"
    checkout = tmp_path / "checkout"
    entry_dir = tmp_path / "bin" / "tools"
    site = tmp_path / "site-packages"
    for folder in (runfiles_root, checkout, entry_dir, site):
        folder.mkdir(parents=True)
    (checkout / "WORKSPACE").write_text("")
    path = [str(entry_dir), str(runfiles_root), str(checkout), str(site)]

    kept = pytest_main.drop_checkout_paths(path, str(runfiles_root), str(entry_dir))

    assert kept == [str(runfiles_root), str(site)]


def test_drop_checkout_paths_keeps_the_runfiles_root_even_with_a_workspace_file(tmp_path):
    (tmp_path / "WORKSPACE").write_text("")
    assert pytest_main.drop_checkout_paths([str(tmp_path)], str(tmp_path), None) == [str(tmp_path)]


def _finder(module: str, mapping: dict[str, str]) -> type:
    return type("_EditableFinder", (), {"__module__": module, "MAPPING": mapping})


def test_drop_checkout_finders_removes_editable_finders_of_the_tested_packages():
    ours = _finder("__editable___tf_admm_0_1_0_finder", {"tf_admm": "/src/tf_admm"})
    other_dist = _finder("__editable___other_1_0_finder", {"other": "/elsewhere/other"})
    unrelated = types.SimpleNamespace(__module__="importlib._bootstrap_external")

    kept = pytest_main.drop_checkout_finders([unrelated, ours, other_dist], ["tf_admm", "pkg"])

    assert kept == [unrelated, other_dist]


def test_main_runs_one_file_with_the_root_conftest_and_passes(runfiles):
    _write(
        runfiles / "pkg" / "mod_test.py",
        """
        from pkg import mod

        def test_value(from_root_conftest):
            assert mod.VALUE * 6 == from_root_conftest
        """,
    )
    result = _run(runfiles, "pkg/mod_test.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_main_fails_on_a_failing_test_and_writes_the_junit_xml(runfiles, tmp_path):
    _write(runfiles / "pkg" / "bad_test.py", "def test_bad():\n    assert 1 == 2\n")
    xml = tmp_path / "out" / "test.xml"

    result = _run(runfiles, "pkg/bad_test.py", env={"XML_OUTPUT_FILE": str(xml)})

    assert result.returncode == 1, result.stdout + result.stderr
    assert 'failures="1"' in xml.read_text()


def test_main_fails_when_the_file_has_no_tests(runfiles):
    _write(runfiles / "pkg" / "empty_test.py", "VALUE = 1\n")
    assert _run(runfiles, "pkg/empty_test.py").returncode == 5


def test_main_passes_extra_arguments_to_pytest(runfiles):
    _write(
        runfiles / "pkg" / "two_test.py",
        "def test_kept():\n    pass\n\ndef test_dropped():\n    assert False\n",
    )
    result = _run(runfiles, "pkg/two_test.py", "-k", "kept")
    assert result.returncode == 0, result.stdout + result.stderr


def test_main_hides_modules_of_a_checkout_on_the_path(runfiles, tmp_path):
    checkout = tmp_path / "checkout"
    _write(checkout / "WORKSPACE", "")
    _write(checkout / "undeclared.py", "VALUE = 1\n")
    _write(runfiles / "pkg" / "imports_test.py", "def test_import():\n    import undeclared\n")

    result = _run(runfiles, "pkg/imports_test.py", env={"PYTHONPATH": str(checkout)})

    assert result.returncode == 1, result.stdout + result.stderr
    assert "No module named 'undeclared'" in result.stdout


def test_main_without_a_test_file_is_a_usage_error(runfiles):
    result = _run(runfiles)
    assert result.returncode == 2
    assert "usage" in result.stderr


@pytest.mark.parametrize("index", [0, 1, 2])
def test_shards_split_the_tests_without_overlap_and_touch_the_status_file(
    runfiles, tmp_path, index
):
    _write(
        runfiles / "pkg" / "many_test.py",
        """
        import pytest

        @pytest.mark.parametrize("n", range(7))
        def test_n(n):
            print(f"RAN-{n}-RAN")
        """,
    )
    status = tmp_path / f"status{index}"
    env = {
        "TEST_TOTAL_SHARDS": "3",
        "TEST_SHARD_INDEX": str(index),
        "TEST_SHARD_STATUS_FILE": str(status),
    }

    result = _run(runfiles, "pkg/many_test.py", "-s", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    ran = sorted(int(n) for n in re.findall(r"RAN-(\d+)-RAN", result.stdout))
    assert ran == list(range(index, 7, 3))
    assert status.exists()


def test_a_shard_left_without_tests_passes_but_an_empty_file_still_fails(runfiles):
    _write(runfiles / "pkg" / "one_test.py", "def test_only():\n    pass\n")
    _write(runfiles / "pkg" / "none_test.py", "VALUE = 1\n")
    env = {"TEST_TOTAL_SHARDS": "2", "TEST_SHARD_INDEX": "1"}

    assert _run(runfiles, "pkg/one_test.py", env=env).returncode == 0
    assert _run(runfiles, "pkg/none_test.py", env=env).returncode == 5


def test_shard_refuses_an_index_outside_the_total():
    with pytest.raises(ValueError, match="received: index=3, total=3"):
        pytest_main.Shard(3, 3)
    assert pytest_main.Shard.from_env({}) is None
    assert pytest_main.Shard.from_env({"TEST_TOTAL_SHARDS": "1"}) is None
