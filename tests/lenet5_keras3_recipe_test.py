"""The LeNet-5/MNIST recipes on Keras 3 (``--keras=3``), on TensorFlow here and on JAX in a
subprocess, on a few batches of real MNIST; and their flag checks."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

import tf_admm
from recipes import lenet5_mnist, lenet5_mnist_quant, stacks
from tf_admm.compat import keras3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(lenet5_mnist.CONFIG_DIR, "lenet5_admm_71x.json")
QUANT_CONFIG = os.path.join(lenet5_mnist.CONFIG_DIR, "lenet5_admm_quant_167x.json")
SENSITIVITY_CONFIG = os.path.join(lenet5_mnist.CONFIG_DIR, "lenet5_admm_167x_sensitivity.json")
BUDGETS = {"conv1": 100, "conv2": 2000, "fc1": 3600, "fc2": 350}  # Ye et al. 71.2x config.
QUANT_BUDGETS = {"conv1": 200, "conv2": 1100, "fc1": 1120, "fc2": 150}  # The 167x config.
QUANT_BITS = {"conv1": 3, "conv2": 3, "fc1": 2, "fc2": 3}

pytestmark = pytest.mark.skipif(
    keras3.backend.backend() != "tensorflow", reason="runs Keras 3 on TensorFlow in-process"
)


def _settings(tmp_path, data_dir, **overrides):
    spec = dataclasses.replace(tf_admm.Spec.from_file(CONFIG), admm_rounds=1, retrain_rounds=1)
    values = dict(
        spec=spec,
        model_dir=str(tmp_path),
        data_dir=data_dir,
        pretrain_epochs=1,
        retrain_epochs=1,
        train_batches=4,
        verbose=0,
        stack=stacks.Stack.KERAS3_TENSORFLOW,
    )
    values.update(overrides)
    return lenet5_mnist.Settings(**values)


def _kernel_nonzeros(model) -> dict[str, int]:
    return {
        la.name: int(np.count_nonzero(keras3.ops.convert_to_numpy(la.kernel)))
        for la in model.layers
        if hasattr(la, "kernel")
    }


def test_keras3_on_tensorflow_prunes_distills_and_exports_a_verified_file(tmp_path, mnist_data_dir):
    results = lenet5_mnist.run(_settings(tmp_path, mnist_data_dir))
    assert results["stack"] == "keras3_tensorflow"
    assert {r["layer"]: r["nonzeros"] for r in results["layers"]} == BUDGETS
    assert results["distillation"]["weight"] == 0.5  # The recipe's default, on Keras 3 too.
    model = keras3.models.load_model(results["model"])
    assert isinstance(model, keras3.Model) and _kernel_nonzeros(model) == BUDGETS
    lite = results["tflite"]
    assert all(check["passed"] for check in lite["report"]["checks"])
    assert abs(lite["accuracy"] - results["pruned_accuracy"]) <= 0.001
    # Its own dense checkpoint: a tf_keras run in the same folder does not load it.
    assert [f for f in os.listdir(tmp_path) if f.startswith("dense_")] == [
        "dense_e1_s0_keras3_tensorflow_b4.weights.h5"
    ]


def _assert_full_integer_file_holds_the_levels(results) -> None:
    """The ``--tflite_int8`` file: verified, every kernel stored as its level indices (exact,
    with the planned nonzeros), accurate within a point of the Keras model."""
    int8 = results["tflite_int8"]
    assert int8["activations"] == "int8" and int8["path"].endswith("lenet5_int8.tflite")
    assert int8["file_bytes"] == os.path.getsize(int8["path"]) < int8["float_file_bytes"] / 5
    assert all(check["passed"] for check in int8["report"]["checks"])
    weights = {w["label"]: w for w in int8["report"]["weights"]}
    assert {name: w["nonzeros"] for name, w in weights.items()} == QUANT_BUDGETS
    for name, weight in weights.items():
        assert weight["encoding"] in ("levels", "sparse_levels"), (name, weight)
        assert weight["max_weight_error"] == 0.0, (name, weight)
    assert abs(int8["accuracy"] - results["pruned_accuracy"]) <= 0.01


def test_keras3_on_tensorflow_prunes_and_quantizes_with_paper_bits(tmp_path, mnist_data_dir):
    spec = dataclasses.replace(
        tf_admm.Spec.from_file(QUANT_CONFIG),
        admm_rounds=1,
        retrain_rounds=0,
        quant_admm_rounds=1,
        quant_fractions=(1.0,),
    )
    settings = _settings(
        tmp_path, mnist_data_dir, spec=spec, retrain_epochs=0, distill_weight=0.0, tflite_int8=True
    )
    results = lenet5_mnist.run(settings)
    model = keras3.models.load_model(results["model"])
    assert _kernel_nonzeros(model) == QUANT_BUDGETS
    for name, b in QUANT_BITS.items():
        kernel = keras3.ops.convert_to_numpy(model.get_layer(name).kernel)
        assert len(np.unique(kernel[kernel != 0])) <= 2**b
    storage = {layer["name"]: layer for layer in results["storage"]["layers"]}
    assert {name: storage[name]["bits_per_value"] for name in QUANT_BITS} == QUANT_BITS
    assert abs(results["tflite"]["accuracy"] - results["pruned_accuracy"]) <= 0.001
    _assert_full_integer_file_holds_the_levels(results)


def test_keras3_on_tensorflow_splits_by_sensitivity_measured_on_the_validation_split(
    tmp_path, mnist_data_dir
):
    spec = dataclasses.replace(
        tf_admm.Spec.from_file(SENSITIVITY_CONFIG), admm_rounds=1, retrain_rounds=0
    )
    settings = _settings(
        tmp_path,
        mnist_data_dir,
        spec=spec,
        validation_examples=256,
        retrain_epochs=0,
        distill_weight=0.0,
        export=False,
    )
    results = lenet5_mnist.run(settings)
    assert results["spec"]["allocation"] == "sensitivity"
    # 430,500 / 167 = 2,577.8: 2,578 kept, split by the losses measured on the 256 images.
    allocated = results["spec"]["allocated"]
    assert sum(allocated.values()) == 2_578
    assert results["seconds"]["sensitivity"] > 0
    nonzeros = {r["layer"]: r["nonzeros"] for r in results["layers"]}
    assert nonzeros == {key.split("/")[0]: kept for key, kept in allocated.items()}
    assert results["validation"]["examples"] == 256
    # The Keras 3 model's held-out accuracy after each epoch; after the last, the stripped
    # model's.
    curve = results["validation"]["curve"]
    assert [point["epoch"] for point in curve] == list(range(1, len(curve) + 1))
    assert curve[-1]["phase"] == "retrain"
    assert curve[-1]["accuracy"] == pytest.approx(
        results["validation"]["pruned_accuracy"], abs=1e-3
    )


def test_validation_loss_of_a_keras3_model_equals_the_tf_keras_one_for_the_same_weights(
    tmp_path, mnist_data_dir
):
    settings = _settings(tmp_path, mnist_data_dir, validation_examples=300, batch_size=128)
    validation_ds = lenet5_mnist._validation_ds(settings)
    keras3.utils.set_random_seed(0)
    model = lenet5_mnist.models.lenet5(api=keras3)
    twin = lenet5_mnist.models.lenet5(api=lenet5_mnist.keras)
    twin.set_weights(model.get_weights())
    loss = lenet5_mnist._validation_loss(model, validation_ds)
    assert loss > 0
    np.testing.assert_allclose(loss, lenet5_mnist._validation_loss(twin, validation_ds), rtol=1e-5)


def _jax_environment() -> dict[str, str]:
    # Neither KERAS_BACKEND nor pytest's variables: the command itself picks the backend.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KERAS_"))}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run_on_jax(tmp_path, mnist_data_dir, config: dict, *flags: str):
    """Runs the recipe with ``--keras=3 --backend=jax`` on ``config`` for one pretraining epoch
    of 2 batches; returns the finished process and its results.json."""
    pytest.importorskip("jax", reason="pip install -e '.[test]' installs jax")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    model_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "recipes.lenet5_mnist",
        "--keras=3",
        "--backend=jax",
        f"--config={path}",
        f"--model_dir={model_dir}",
        f"--data_dir={mnist_data_dir}",
        "--pretrain_epochs=1",
        "--retrain_epochs=0",
        "--train_batches=2",
        "--verbose=0",
        *flags,
    ]
    done = subprocess.run(
        command, env=_jax_environment(), cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"{done.stdout[-20000:]}\n--- stderr\n{done.stderr[-8000:]}"
    with open(model_dir / "results.json", encoding="utf-8") as f:
        return done, json.load(f)


def test_keras3_on_jax_restarts_on_jax_trains_and_exports_on_tensorflow(tmp_path, mnist_data_dir):
    spec = tf_admm.Spec.from_file(QUANT_CONFIG).to_dict()
    rounds = {"admm_rounds": 1, "retrain_rounds": 0, "quant_admm_rounds": 1}
    config = {**spec, **rounds, "quant_fractions": [1.0]}
    done, results = _run_on_jax(tmp_path, mnist_data_dir, config, "--tflite_int8")
    assert results["stack"] == "keras3_jax"
    assert {r["layer"]: r["nonzeros"] for r in results["layers"]} == QUANT_BUDGETS
    for key in ("tflite", "tflite_int8"):
        lite = results[key]
        # Exported on TensorFlow from the saved file, which computes what the JAX model did.
        assert lite["exported_on"] == "tensorflow" and lite["keras_backend_max_diff"] < 1e-4
        assert all(check["passed"] for check in lite["report"]["checks"])
    assert abs(results["tflite"]["accuracy"] - results["pruned_accuracy"]) <= 0.001
    _assert_full_integer_file_holds_the_levels(results)
    assert "TFLite: " in done.stdout and "TFLite full-int8: " in done.stdout


def test_keras3_on_jax_splits_by_sensitivity_measured_on_the_validation_split(
    tmp_path, mnist_data_dir
):
    spec = tf_admm.Spec.from_file(SENSITIVITY_CONFIG).to_dict()
    config = {**spec, "admm_rounds": 1, "retrain_rounds": 0}
    flags = ("--validation_examples=256", "--distill_weight=0", "--noexport")
    _, results = _run_on_jax(tmp_path, mnist_data_dir, config, *flags)
    assert results["stack"] == "keras3_jax"
    assert results["spec"]["allocation"] == "sensitivity"
    allocated = results["spec"]["allocated"]
    assert sum(allocated.values()) == 2_578 and results["seconds"]["sensitivity"] > 0
    nonzeros = {r["layer"]: r["nonzeros"] for r in results["layers"]}
    assert nonzeros == {key.split("/")[0]: kept for key, kept in allocated.items()}
    last = results["validation"]["curve"][-1]
    assert last["accuracy"] == pytest.approx(results["validation"]["pruned_accuracy"], abs=1e-3)


def _flag_settings(argv, combined=False):
    lenet5_mnist.flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver():
        if combined:
            lenet5_mnist_quant.use_defaults()
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["prog", *argv])
        return lenet5_mnist.settings_from_flags()


def test_flags_choose_the_stack_for_both_recipes():
    assert _flag_settings([]).stack is stacks.Stack.TF_KERAS
    assert _flag_settings(["--keras=3"]).stack is stacks.Stack.KERAS3_TENSORFLOW
    combined = _flag_settings(["--keras=3", "--backend=jax"], combined=True)
    assert combined.stack is stacks.Stack.KERAS3_JAX
    assert combined.model_dir == "runs/lenet5_mnist_quant"
    # The sensitivity allocation is measured on Keras 3 too, given a validation split.
    argv = ["--keras=3", "--validation_examples=1000", f"--config={SENSITIVITY_CONFIG}"]
    settings = _flag_settings(argv)
    assert settings.stack is stacks.Stack.KERAS3_TENSORFLOW
    assert settings.spec.allocation is tf_admm.Allocation.SENSITIVITY
    # A quantized Keras 3 model exports full-integer too, on either backend.
    for backend in ("tensorflow", "jax"):
        argv = ["--keras=3", f"--backend={backend}", "--tflite_int8"]
        settings = _flag_settings(argv, combined=True)
        assert settings.spec.quantizes and settings.tflite_int8


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backend=jax"], "--backend only with --keras=3"),
        (["--keras=2", "--backend=tensorflow"], "--backend only with --keras=3"),
        (["--keras=3", f"--config={SENSITIVITY_CONFIG}"], r"validation_examples > 0"),
    ],
)
def test_unsupported_flag_combinations_are_usage_errors(argv, message):
    with pytest.raises(lenet5_mnist.app.UsageError, match=message):
        _flag_settings(argv)


def test_unknown_keras_or_backend_is_refused_by_the_flag_parser():
    for argv in (["--keras=4"], ["--keras=3", "--backend=torch"]):
        with pytest.raises(flags.IllegalFlagValueError):
            _flag_settings(argv)
