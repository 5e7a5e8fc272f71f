"""Runs the Keras 3 adapter's tests on the other backends, each in a subprocess.

Keras 3 fixes its backend when it is first imported (``KERAS_BACKEND``), and this process runs
TensorFlow (pytest's process imports it, and Keras 3 defaults to it): ``adapter_test.py``,
``quantization_test.py``, ``sensitivity_test.py``, ``shrink_test.py`` and ``structured_test.py``
run here on that backend and, through this file, in a fresh ``python -m pytest`` on JAX. A
failure there fails the test here with the subprocess's output. The model that the JAX run
trains and strips is then loaded by plain Keras 3 on this process's backend in another
subprocess that never imports tf_admm.
"""

import os
import subprocess
import sys
import textwrap

import keras
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OTHER_BACKENDS = [b for b in ("tensorflow", "jax") if b != keras.backend.backend()]


def _environment(**overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KERAS_"))}
    env.update(overrides)
    return env


def _run(command, env, cwd, timeout=1500) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def _shown(result: subprocess.CompletedProcess) -> str:
    return (
        f"exit status {result.returncode}\n--- stdout\n{result.stdout[-30000:]}\n"
        f"--- stderr\n{result.stderr[-8000:]}"
    )


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_adapter_tests_pass_on_backend_and_stripped_model_loads_without_tf_admm(backend, tmp_path):
    if backend == "jax":
        pytest.importorskip("jax", reason="pip install -e '.[test]' installs jax")
    export = str(tmp_path / "stripped")
    tests = os.path.join(HERE, "adapter_test.py")
    result = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", tests],
        env=_environment(KERAS_BACKEND=backend, TF_ADMM_KERAS3_EXPORT=export),
        cwd=ROOT,
    )
    assert result.returncode == 0, f"adapter_test.py on {backend}: {_shown(result)}"
    assert " passed" in result.stdout and " skipped" not in result.stdout, _shown(result)

    here = keras.backend.backend()
    script = textwrap.dedent(
        f"""
        import sys
        import keras
        import numpy as np
        assert keras.backend.backend() == {here!r}, keras.backend.backend()
        model = keras.models.load_model({export + ".keras"!r})
        x, expected = np.load({export + ".npy"!r}), np.load({export + "_out.npy"!r})
        np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
        assert not [m for m in sys.modules if m.startswith("tf_admm")], "tf_admm was imported"
        print("loaded", type(model).__name__)
        """
    )
    loaded = _run([sys.executable, "-c", script], _environment(KERAS_BACKEND=here), str(tmp_path))
    assert loaded.returncode == 0, f"plain Keras 3 on {here}: {_shown(loaded)}"
    assert "loaded Sequential" in loaded.stdout


@pytest.mark.parametrize(
    "name",
    ["quantization_test.py", "sensitivity_test.py", "shrink_test.py", "structured_test.py"],
)
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_adapter_test_file_passes_on_backend(backend, name):
    if backend == "jax":
        pytest.importorskip("jax", reason="pip install -e '.[test]' installs jax")
    tests = os.path.join(HERE, name)
    result = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", tests],
        env=_environment(KERAS_BACKEND=backend),
        cwd=ROOT,
    )
    assert result.returncode == 0, f"{name} on {backend}: {_shown(result)}"
    assert " passed" in result.stdout and " skipped" not in result.stdout, _shown(result)
