"""Importing tf_admm prints nothing: TensorFlow's native startup lines are filtered out, and
everything else written while it loads is passed on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tf_admm import compat

# Lines TF 2.21 writes to stderr on `import tensorflow` on a machine without a GPU.
_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_CUDA = (
    b"I0000 00:00:1796323184.849949   32063 cudart_stub.cc:31] Could not find cuda drivers on "
    b"your machine, GPU will not be used."
)


@pytest.mark.parametrize(
    "level, line, shown",
    [
        ("2", _NOTICE, False),
        ("0", _NOTICE, False),
        ("2", _CUDA, False),
        ("1", _CUDA, False),
        ("0", _CUDA, True),  # the user asked for INFO lines
        ("2", b"E0000 00:00:1796323184.849949   32063 some.cc:1] a real error", True),
        ("2", b"W0000 00:00:1796323184.849949   32063 some.cc:1] a warning", True),
        ("2", b"Traceback (most recent call last):", True),
        ("2", b"I like this line", True),
    ],
)
def test_startup_line_shown(level, line, shown, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
    assert compat.startup_line_shown(line) is shown


def _import_in_subprocess(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=env, timeout=300, check=True
    )


def test_import_tf_admm_writes_nothing_and_keeps_later_stderr():
    done = _import_in_subprocess(
        "import sys, tf_admm; print('after', file=sys.stderr); print(tf_admm.tf.__version__)"
    )
    assert done.stderr == b"after\n"
    assert done.stdout.strip()  # TensorFlow's version: the import worked


def test_stderr_written_while_tensorflow_loads_is_passed_on():
    # A line written in the middle of the filtered imports (by an import hook, the first time
    # tf_keras is looked up) reaches stderr afterwards.
    code = (
        "import sys\n"
        "class Finder:\n"
        "    written = False\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tf_keras' and not self.written:\n"
        "            self.written = True\n"
        "            sys.stderr.write('written while loading\\n')\n"
        "        return None\n"
        "sys.meta_path.insert(0, Finder())\n"
        "import tf_admm\n"
    )
    assert _import_in_subprocess(code).stderr == b"written while loading\n"
