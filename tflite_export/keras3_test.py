"""``export`` and ``verify_file`` on Keras 3 (``import keras``) models, TensorFlow backend.

pytest's process runs Keras 3 on TensorFlow (its default). The JAX case trains and strips in a
subprocess started with ``KERAS_BACKEND=jax`` (as ``tf_admm/keras3/backends_test.py`` does),
which saves a pruned and a quantized model as ``.keras`` and also tries to export one there;
this process loads the files on TensorFlow and exports them (the quantized one full-integer).
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tf_admm
from tf_admm.compat import keras as tf_keras
from tflite_export import exporter, flatbuffer, integer, keras_weights, verify
from tflite_export.encodings import Encoding
from tflite_export.inputs import output_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Keras kernel layout -> TFLite's: Conv2D HWIO -> OHWI, Dense (in, out) -> (out, in).
_TFLITE_LAYOUT = {"conv": lambda k: k.transpose(3, 0, 1, 2), "fc": lambda k: k.T}
_SPEC = dict(
    rules=[tf_admm.Rule(name="conv", sparsity=0.75), tf_admm.Rule(name="fc", sparsity=0.9)],
    update_unit="step",
    update_every=2,
    admm_rounds=2,
)


@pytest.fixture(autouse=True)
def _keras3_seed():
    keras.utils.clear_session()
    keras.utils.set_random_seed(3)
    yield
    keras.utils.clear_session()


def _convnet() -> keras.Model:
    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten(name="flatten")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(h), name="net")


def _pruned(model: keras.Model, spec: dict = _SPEC) -> keras.Model:
    """``model`` ADMM-pruned (2 rounds of 2 steps, then masked retraining) and stripped."""
    admm = tf_admm.admm_wrap(model, tf_admm.Spec(**spec))
    admm.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 1)).astype("float32")
    admm.fit(x, np.arange(32) % 3, batch_size=8, epochs=2, verbose=0, callbacks=tf_admm.callbacks())
    return tf_admm.strip(admm)


def _assert_stored_sparse_and_exact(model: keras.Model, path: str, report) -> None:
    """Every kernel stored sparse with its exact nonzeros, decoding to the Keras kernel."""
    with open(path, "rb") as handle:
        parsed = flatbuffer.read_model(handle.read())
    names = {flatbuffer.tensor_name(t): i for i, t in enumerate(parsed.subgraphs[0].tensors)}
    choices = {w.label: w for w in report.weights}
    assert set(choices) == {"conv", "fc"}
    for name, choice in choices.items():
        kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel)
        assert choice.encoding is Encoding.SPARSE_FLOAT32, (name, choice)
        assert choice.nonzeros == np.count_nonzero(kernel) < kernel.size
        decoded = flatbuffer.decode_tensor(parsed, 0, names[choice.tensor_name])
        np.testing.assert_array_equal(decoded, _TFLITE_LAYOUT[name](kernel))
    assert [c.runtime for c in report.checks] == list(verify.LITERT_RUNTIMES)
    assert all(c.passed for c in report.checks)
    parts = report.file
    assert report.file_bytes == os.path.getsize(path)
    assert parts.tensor_bytes + parts.metadata_bytes + parts.overhead_bytes == report.file_bytes
    assert report.float_file_bytes > report.file_bytes


def _interpreter_outputs(path: str, x: np.ndarray, output: str = "fc") -> list[np.ndarray]:
    """The file's outputs on ``x`` in each runtime (XNNPACK, builtin kernels)."""
    with open(path, "rb") as handle:
        data = handle.read()
    return [
        verify.run(data, [x], runtime=runtime, input_names=["image"], output_names=[output])[0]
        for runtime in verify.LITERT_RUNTIMES
    ]


def test_admm_pruned_keras3_model_exports_exact_nonzeros_sparse_and_matches_keras(tmp_path):
    model = _convnet()
    planned = {
        row.layer: row.weights[0].kept
        for row in tf_admm.plan(model, tf_admm.Spec(**_SPEC)).layers
        if row.weights
    }
    plain = _pruned(model)
    path = str(tmp_path / "pruned.tflite")
    report = exporter.export(plain, path)
    _assert_stored_sparse_and_exact(plain, path, report)
    assert {w.label: w.nonzeros for w in report.weights} == planned
    assert report.skipped_weights == ()
    x = np.random.default_rng(1).normal(size=(5, 8, 8, 1)).astype("float32")
    for outputs in _interpreter_outputs(path, x):
        np.testing.assert_allclose(outputs, plain.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    checks = exporter.verify_file(path, plain, representative_data=x)
    assert all(c.passed for c in checks) and len(checks) == len(verify.LITERT_RUNTIMES)


def test_filter_pruned_keras3_model_shrinks_and_exports_verified(tmp_path):
    spec = {**_SPEC, "rules": [tf_admm.Rule(name="conv", structure="filter", keep=2)]}
    stripped = _pruned(_convnet(), spec)
    small = tf_admm.shrink(stripped)
    assert small.get_layer("conv").kernel.shape == (3, 3, 1, 2)
    assert small.get_layer("fc").kernel.shape == (6 * 6 * 2, 3)
    path = str(tmp_path / "shrunk.tflite")
    report = exporter.export(small, path)
    assert report.checks and all(c.passed for c in report.checks)
    x = np.random.default_rng(1).normal(size=(5, 8, 8, 1)).astype("float32")
    for outputs in _interpreter_outputs(path, x):
        np.testing.assert_allclose(outputs, stripped.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    checks = exporter.verify_file(path, small, representative_data=x)
    assert all(c.passed for c in checks) and len(checks) == len(verify.LITERT_RUNTIMES)


def test_keras3_sequential_exports_with_its_layer_names(tmp_path):
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, name="hidden"), keras.layers.Dense(2, name="out")]
    )
    report = exporter.export(model, str(tmp_path / "seq.tflite"))
    assert [w.label for w in report.weights] == ["hidden", "out"]
    assert [o.output for o in report.checks[0].outputs] == ["out"]


_JAX_SCRIPT = """
import os, sys
import keras
import numpy as np
sys.path.insert(0, {root!r})
import tf_admm
import tflite_export
from tflite_export import keras3_test

assert keras.backend.backend() == "jax", keras.backend.backend()
keras.utils.set_random_seed(3)
plain = keras3_test._pruned(keras3_test._convnet())
plain.save({out!r} + ".keras")
x = np.random.default_rng(1).normal(size=(5, 8, 8, 1)).astype("float32")
np.save({out!r} + ".npy", x)
np.save({out!r} + "_out.npy", np.asarray(plain.predict(x, verbose=0)))
quantized = keras3_test._admm_quantized()
quantized.save({out!r} + "_quantized.keras")
logits = quantized.predict(keras3_test._level_data(), verbose=0)
np.save({out!r} + "_quantized_out.npy", np.asarray(logits))
try:
    tflite_export.export(plain, {out!r} + ".tflite")
except tflite_export.ExportError as error:
    print("ExportError:", error)
"""


def test_models_trained_on_jax_export_on_tensorflow_and_jax_export_names_the_fix(tmp_path):
    pytest.importorskip("jax", reason="pip install -e '.[test]' installs jax")
    out = str(tmp_path / "jax_trained")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KERAS_"))}
    env["KERAS_BACKEND"] = "jax"
    script = textwrap.dedent(_JAX_SCRIPT).format(root=ROOT, out=out)
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    shown = f"exit {result.returncode}\n{result.stdout[-8000:]}\n{result.stderr[-8000:]}"
    assert result.returncode == 0, shown
    assert "ExportError:" in result.stdout, shown
    message = result.stdout.split("ExportError:", 1)[1]
    assert "backend 'jax'" in message and "KERAS_BACKEND=tensorflow" in message, message
    assert not os.path.exists(out + ".tflite")

    plain = keras.models.load_model(out + ".keras")
    x, jax_outputs = np.load(out + ".npy"), np.load(out + "_out.npy")
    np.testing.assert_allclose(plain.predict(x, verbose=0), jax_outputs, rtol=1e-5, atol=1e-5)
    path = str(tmp_path / "jax_trained.tflite")
    report = exporter.export(plain, path, representative_data=x, activations="float32")
    _assert_stored_sparse_and_exact(plain, path, report)
    for outputs in _interpreter_outputs(path, x):
        np.testing.assert_allclose(outputs, jax_outputs, rtol=1e-5, atol=1e-5)

    # Quantized on JAX: the levels computed there are exact levels here too, stored as indices.
    quantized = keras.models.load_model(out + "_quantized.keras")
    x, jax_outputs = _level_data(), np.load(out + "_quantized_out.npy")
    np.testing.assert_allclose(quantized.predict(x, verbose=0), jax_outputs, rtol=1e-5, atol=1e-5)
    path = str(tmp_path / "jax_quantized_int8.tflite")
    report = exporter.export(quantized, path, representative_data=x)
    _assert_int8_file_holds_the_levels(quantized, path, report, jax_outputs)


# Per target, what a pruned kernel of the small convnet is stored as (the tf_keras choices for
# these weights): int8 LiteRT keeps dense int8 (sparse int8 indices cost more at this size),
# TFLite Micro stores the kernels as LUTs of their distinct values.
_TARGETS = {
    "litert_int8": ({}, {Encoding.INT8, Encoding.SPARSE_INT8}),
    "tflm": ({"target": "tflm"}, {Encoding.LUT, Encoding.FLOAT32}),
    "tflm_int8": ({"target": "tflm_int8"}, {Encoding.LUT, Encoding.INT8}),
}


@pytest.mark.parametrize("target", _TARGETS)
def test_keras3_model_exports_full_integer_and_tflm_with_exact_zeros(target, tmp_path):
    kwargs, allowed = _TARGETS[target]
    if kwargs.get("target", "").startswith("tflm"):
        pytest.importorskip("tflite_micro", reason="pip install -e '.[tflm]'")
    plain = _pruned(_convnet())
    x = np.random.default_rng(2).normal(size=(64, 8, 8, 1)).astype("float32")
    path = str(tmp_path / f"{target}.tflite")
    report = exporter.export(plain, path, representative_data=x, **kwargs)
    nonzeros = {
        name: int(np.count_nonzero(keras.ops.convert_to_numpy(plain.get_layer(name).kernel)))
        for name in ("conv", "fc")
    }
    assert {w.label: w.nonzeros for w in report.weights} == nonzeros
    assert {w.encoding for w in report.weights} <= allowed, report.weights
    assert all(c.passed for c in report.checks)
    assert report.file_bytes == os.path.getsize(path)
    if target == "litert_int8":
        checks = exporter.verify_file(path, plain, representative_data=x)
        assert all(c.passed for c in checks)


def test_keras3_wrapped_or_inputless_models_are_refused_with_the_fix(tmp_path):
    admm = tf_admm.admm_wrap(_convnet(), tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5)))
    with pytest.raises(exporter.ExportError, match=r"tf_admm\.strip"):
        exporter.export(admm, str(tmp_path / "wrapped.tflite"))
    unbuilt = keras.Sequential([keras.layers.Dense(2)], name="bare")
    with pytest.raises(exporter.ExportError, match=r"'bare'.*keras\.Input\(shape\)"):
        exporter.export(unbuilt, str(tmp_path / "bare.tflite"))
    assert not os.listdir(tmp_path)


def test_admm_quantized_keras3_model_exports_its_levels_exactly(tmp_path):
    # Pruned then put on 3-bit per-channel (conv) and 2-bit (fc) uniform levels by ADMM.
    spec = tf_admm.Spec(
        rules=[
            tf_admm.Rule(name="conv", sparsity=0.5, bits=3, per_channel=True),
            tf_admm.Rule(name="fc", sparsity=0.9, bits=2),
        ],
        update_unit="step",
        update_every=2,
        admm_rounds=2,
        retrain_rounds=1,
        quant_admm_rounds=1,
        quant_fractions=(0.5, 1.0),
    )
    admm = tf_admm.admm_wrap(_convnet(), spec)
    admm.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype("float32")
    admm.fit(x, np.arange(32) % 3, batch_size=8, epochs=3, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.QUANT_RETRAIN
    plain = tf_admm.strip(admm)
    path = str(tmp_path / "quantized.tflite")
    report = exporter.export(plain, path)
    with open(path, "rb") as handle:
        parsed = flatbuffer.read_model(handle.read())
    names = {flatbuffer.tensor_name(t): i for i, t in enumerate(parsed.subgraphs[0].tensors)}
    choices = {w.label: w for w in report.weights}
    assert choices["conv"].encoding in (Encoding.LEVELS, Encoding.SPARSE_LEVELS)
    assert choices["fc"].encoding in (Encoding.LEVELS, Encoding.SPARSE_LEVELS)
    for name, choice in choices.items():
        kernel = keras.ops.convert_to_numpy(plain.get_layer(name).kernel)
        assert choice.nonzeros == np.count_nonzero(kernel)
        decoded = flatbuffer.decode_tensor(parsed, 0, names[choice.tensor_name])
        np.testing.assert_array_equal(decoded, _TFLITE_LAYOUT[name](kernel))
    assert all(c.passed for c in report.checks)
    assert report.file_bytes < report.float_file_bytes
    for outputs in _interpreter_outputs(path, x[:5]):
        np.testing.assert_allclose(outputs, plain.predict(x[:5], verbose=0), rtol=1e-5, atol=1e-5)


# One rule per kind of levels tf-admm trains, each on the layer a LeNet-like net would give it.
_LEVEL_SPEC = dict(
    rules=[
        tf_admm.Rule(name="conv", sparsity=0.5, bits=3, per_channel=True),  # uniform per channel
        tf_admm.Rule(name="depthwise", sparsity=0.5, clusters=3),  # k-means
        tf_admm.Rule(name="fc1", sparsity=0.8, bits=2),  # uniform per tensor
        tf_admm.Rule(name="fc2", bits=2, scheme="power_of_two"),  # not pruned
    ],
    rho=tf_admm.RhoSchedule(0.05, 1.5),
    update_unit="step",
    update_every=2,
    admm_rounds=2,
    retrain_rounds=1,
    quant_admm_rounds=2,
    quant_fractions=(0.5, 1.0),
)
_UNIFORM_BITS = {"conv": 3, "fc1": 2, "fc2": 2}
_WEIGHTED_OPERATORS = (
    flatbuffer.schema.BuiltinOperator.CONV_2D,
    flatbuffer.schema.BuiltinOperator.DEPTHWISE_CONV_2D,
    flatbuffer.schema.BuiltinOperator.FULLY_CONNECTED,
)


def _level_data() -> np.ndarray:
    """The training inputs of :func:`_admm_quantized`, also its calibration samples."""
    return np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype("float32")


def _four_layer_net(module) -> keras.Model:
    """Conv2D -> DepthwiseConv2D -> Dense -> Dense on 8x8x1 inputs, built with ``module``
    (Keras 3's ``keras`` or ``tf_keras``)."""
    layers = module.layers
    inputs = module.Input((8, 8, 1), name="image")
    h = layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    h = layers.DepthwiseConv2D(3, name="depthwise")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dense(16, activation="relu", name="fc1")(h)
    return module.Model(inputs, layers.Dense(3, name="fc2")(h), name="net")


def _admm_quantized() -> keras.Model:
    """The Keras 3 four-layer net pruned, then quantized and locked by ADMM under
    ``_LEVEL_SPEC`` (14 steps), stripped."""
    admm = tf_admm.admm_wrap(_four_layer_net(keras), tf_admm.Spec(**_LEVEL_SPEC))
    admm.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x = _level_data()
    # 2 pruning + 1 retraining + 2 quantization ADMM + 2 locking rounds of 2 steps each.
    admm.fit(
        x,
        np.arange(len(x)) % 3,
        batch_size=8,
        epochs=4,
        shuffle=False,
        verbose=0,
        callbacks=tf_admm.callbacks(),
    )
    assert admm.phase is tf_admm.Phase.QUANT_RETRAIN
    return tf_admm.strip(admm)


def _stored(data: bytes, report) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Label -> (the int codes in the file, their scales, the values they decode to)."""
    parsed = flatbuffer.read_model(data)
    tensors = parsed.subgraphs[0].tensors
    names = {flatbuffer.tensor_name(t): i for i, t in enumerate(tensors)}
    found = {}
    for choice in report.weights:
        position = names[choice.tensor_name]
        codes = flatbuffer.decode_tensor(parsed, 0, position)
        scales = np.asarray(tensors[position].quantization.scale, np.float32)
        found[choice.label] = (codes, scales, flatbuffer.dequantize(tensors[position], codes))
    return found


def _tflite_kernel(model: keras.Model, name: str) -> np.ndarray:
    layer = model.get_layer(name)
    attribute, to_tflite = keras_weights.SUPPORTED_LAYERS[type(layer)]
    return to_tflite(keras.ops.convert_to_numpy(getattr(layer, attribute)))


def _biases_in_steps(data: bytes, model: keras.Model, report) -> dict[str, float]:
    """Per layer, how far its int32 bias is from the Keras bias, in steps of the bias scale,
    after checking that scale is ``input_scale * weight_scale`` as the int8 kernels assume."""
    labels = {w.tensor_name: w.label for w in report.weights}
    parsed = flatbuffer.read_model(data)
    subgraph = parsed.subgraphs[0]
    found = {}
    for operator in subgraph.operators:
        if flatbuffer.builtin_code(parsed, operator) not in _WEIGHTED_OPERATORS:
            continue
        activation, weight, bias = (subgraph.tensors[int(i)] for i in operator.inputs[:3])
        name = labels[flatbuffer.tensor_name(weight)]
        bias_scales = np.asarray(bias.quantization.scale, np.float64)
        expected = activation.quantization.scale[0] * np.asarray(
            weight.quantization.scale, np.float64
        )
        np.testing.assert_allclose(bias_scales, expected, rtol=1e-6, err_msg=name)
        codes = flatbuffer.decode_tensor(parsed, 0, int(operator.inputs[2]))
        keras_bias = keras.ops.convert_to_numpy(model.get_layer(name).bias)
        found[name] = float(np.max(np.abs(codes * bias_scales - keras_bias) / bias_scales))
    return found


def _assert_int8_file_holds_the_levels(
    plain: keras.Model, path: str, report, expected: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The full-integer file of :func:`_admm_quantized`'s model: the planned nonzeros, uniform
    levels stored as their indices (exact), k-means as the converter's codes, biases at the
    kernels' scale, outputs within the int8 tolerance of ``expected``; the stored weights."""
    x = _level_data()
    planned = {
        row.layer: row.weights[0].kept
        for row in tf_admm.plan(_four_layer_net(keras), tf_admm.Spec(**_LEVEL_SPEC)).layers
    }
    with open(path, "rb") as handle:
        data = handle.read()
    assert report.activations == "int8" and report.file_bytes == len(data)
    assert all(c.passed for c in report.checks)
    assert "intended int8 weights (read from the interpreter)" in {
        c.reference for c in report.checks
    }
    stored = _stored(data, report)
    choices = {w.label: w for w in report.weights}
    assert set(choices) == set(planned) == {"conv", "depthwise", "fc1", "fc2"}
    for name, choice in choices.items():
        codes, scales, decoded = stored[name]
        kernel = _tflite_kernel(plain, name)
        # Exact nonzeros: the plan's, the Keras kernel's and the file's codes'.
        assert choice.nonzeros == np.count_nonzero(codes) == np.count_nonzero(kernel)
        assert choice.nonzeros == planned[name], name
        assert np.all(codes[kernel == 0] == 0), name
        if name in _UNIFORM_BITS:
            # The level indices as codes, the step as scale: the trained weights bit for bit.
            assert choice.encoding in (Encoding.LEVELS, Encoding.SPARSE_LEVELS), choice
            np.testing.assert_array_equal(decoded, kernel, err_msg=name)
            assert choice.max_weight_error == 0.0
            assert np.max(np.abs(codes)) <= 2 ** (_UNIFORM_BITS[name] - 1), name
            per_channel = name == "conv"
            assert (np.unique(scales).size > 1) is per_channel, (name, scales)
        else:
            # k-means centroids on no uniform grid: the converter's codes, off by at most
            # half a step (per channel, along TFLite's depthwise axis 3).
            assert choice.encoding in (Encoding.INT8, Encoding.SPARSE_INT8), choice
            assert "not on uniform levels" in dict(choice.rejected)["levels"]
            step = scales.reshape(1, 1, 1, -1)
            assert np.all(np.abs(decoded - kernel) <= step / 2 * (1 + 1e-5))
            assert 0 < choice.max_weight_error == pytest.approx(np.max(np.abs(decoded - kernel)))
    # Every bias at the scale its operator's int8 kernel assumes, within half a step of Keras'.
    steps = _biases_in_steps(data, plain, report)
    assert set(steps) == set(choices) and max(steps.values()) <= 0.5 + 1e-3, steps

    # Outputs within the exporter's int8 tolerance in both runtimes, again from the file.
    (scale,) = integer.output_scales(data, output_names(plain))
    tolerance = verify.Int8Tolerance()
    for outputs in _interpreter_outputs(path, x, output="fc2"):
        assert np.max(np.abs(outputs - expected)) <= tolerance.output_steps * scale
        agree = np.mean(np.argmax(outputs, -1) == np.argmax(expected, -1))
        assert agree >= tolerance.top1_agreement
    checks = exporter.verify_file(path, plain, representative_data=x)
    assert all(c.passed for c in checks)
    return stored


def test_admm_quantized_keras3_model_exports_full_integer_levels_as_tf_keras_does(tmp_path):
    plain = _admm_quantized()
    x = _level_data()
    expected = plain.predict(x, verbose=0)
    path = str(tmp_path / "quantized_int8.tflite")
    report = exporter.export(plain, path, representative_data=x)
    stored = _assert_int8_file_holds_the_levels(plain, path, report, expected)

    # The same weights in a tf_keras model: the same encodings, codes, scales and bytes.
    twin = _four_layer_net(tf_keras)
    for layer in plain.layers:
        if layer.weights:
            twin.get_layer(layer.name).set_weights(layer.get_weights())
    np.testing.assert_array_equal(twin(x).numpy(), expected)
    twin_path = str(tmp_path / "tf_keras_int8.tflite")
    twin_report = exporter.export(twin, twin_path, representative_data=x)
    with open(twin_path, "rb") as handle:
        twin_stored = _stored(handle.read(), twin_report)
    choices = {w.label: w for w in report.weights}
    assert set(choices) == {w.label for w in twin_report.weights}
    for choice in twin_report.weights:
        mine = choices[choice.label]
        assert (mine.encoding, mine.stored_bytes, mine.nonzeros, mine.max_weight_error) == (
            choice.encoding,
            choice.stored_bytes,
            choice.nonzeros,
            choice.max_weight_error,
        ), choice.label
        for ours, theirs in zip(stored[choice.label], twin_stored[choice.label]):
            np.testing.assert_array_equal(ours, theirs, err_msg=choice.label)
