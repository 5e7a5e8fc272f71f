"""End-to-end tests of ``export``: round trips, verification, byte accounting, bad inputs."""

import gzip
import json
import math
import os

import numpy as np
import pytest

import tf_admm
from tf_admm.compat import keras
from tflite_export import encodings, exporter, flatbuffer, float_target, verify
from tflite_export.encodings import Encoding
from tflite_export.keras_weights import SUPPORTED_LAYERS
from tflite_export.testing import (
    LAYER_KINDS,
    kernel_of,
    on_centroids,
    on_levels,
    prune,
    random_zeros,
    small_model,
)

# Output channel axis of each kind's Keras kernel (per-channel levels).
_KERAS_CHANNEL_AXIS = {"dense": -1, "conv2d": -1, "depthwise": None}


def _compressed(kind, *, keep_fraction=None, bits=None, per_channel=False, seed=0):
    model = small_model(kind, seed=seed)
    for layer in model.layers:
        if type(layer) not in SUPPORTED_LAYERS:
            continue
        variable = kernel_of(layer)
        values = variable.numpy()
        if keep_fraction is not None:
            values = prune(values, max(1, int(values.size * keep_fraction)))
        if bits is not None:
            axis = _KERAS_CHANNEL_AXIS[kind] if per_channel and layer.name == "target" else None
            values = on_levels(values, bits, axis)
        variable.assign(values)
    return model


def _decoded_weights(path, report):
    """Keras layer name -> weights decoded from the written file, in TFLite layout."""
    with open(path, "rb") as handle:
        model = flatbuffer.read_model(handle.read())
    names = {flatbuffer.tensor_name(t): i for i, t in enumerate(model.subgraphs[0].tensors)}
    return {
        choice.label: flatbuffer.decode_tensor(model, 0, names[choice.tensor_name])
        for choice in report.weights
    }


def _expected_tflite_layout(layer):
    attribute, to_tflite = SUPPORTED_LAYERS[type(layer)]
    return to_tflite(getattr(layer, attribute).numpy())


def _assert_weights_round_trip(model, path, report):
    decoded = _decoded_weights(path, report)
    assert set(decoded) == {"target", "head"}
    for name, values in decoded.items():
        np.testing.assert_array_equal(values, _expected_tflite_layout(model.get_layer(name)))


def _choice(report, label):
    return next(w for w in report.weights if w.label == label)


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_pruned_weights_round_trip_sparse_and_match_keras(kind, tmp_path):
    model = _compressed(kind, keep_fraction=0.1)
    path = str(tmp_path / "pruned.tflite")
    report = exporter.export(model, path)
    assert _choice(report, "target").encoding is Encoding.SPARSE_FLOAT32
    _assert_weights_round_trip(model, path, report)
    assert [c.runtime for c in report.checks] == list(verify.LITERT_RUNTIMES)
    assert all(c.passed for c in report.checks)
    # An independent check of the written file, with other inputs.
    rng = np.random.default_rng(7)
    data = rng.standard_normal((5, *model.input_shape[1:])).astype(np.float32)
    checks = exporter.verify_file(path, model, representative_data=data)
    assert all(check.passed for check in checks)


@pytest.mark.parametrize(
    "kind, keep_fraction, bits, encoding, code_type",
    [
        ("dense", None, 2, Encoding.LEVELS, "int4"),
        ("conv2d", None, 5, Encoding.LEVELS, "int8"),
        ("depthwise", None, 3, Encoding.LEVELS, "int4"),
        ("dense", 0.05, 6, Encoding.SPARSE_LEVELS, "int8"),
        ("conv2d", 0.2, 6, Encoding.SPARSE_LEVELS, "int8"),
    ],
)
def test_quantized_weights_are_stored_as_their_integer_codes(
    kind, keep_fraction, bits, encoding, code_type, tmp_path
):
    model = _compressed(kind, keep_fraction=keep_fraction, bits=bits)
    path = str(tmp_path / "quantized.tflite")
    report = exporter.export(model, path)
    target = _choice(report, "target")
    assert target.encoding is encoding
    assert target.detail.startswith(code_type)
    assert target.max_weight_error == 0.0
    # Same levels, bit for bit, after decoding the codes with the file's scale.
    _assert_weights_round_trip(model, path, report)
    rows = [t for t in report.file.tensors if t.label == "target" and t.value_bytes]
    assert len(rows) == 1
    num_weights = kernel_of(model.get_layer("target")).numpy().size
    if encoding is Encoding.LEVELS:
        expected = math.ceil(num_weights / 2) if code_type == "int4" else num_weights
        assert rows[0].value_bytes == expected
        assert rows[0].index_bytes == 0
    else:
        assert rows[0].storage == "sparse int8"
        assert rows[0].value_bytes < num_weights
    # One float32 scale and one int64 zero point.
    assert sum(t.quantization_bytes for t in report.file.tensors if t.label == "target") == 12


def test_eight_bit_levels_up_to_plus_128_are_int8_with_zero_point_minus_one(tmp_path):
    model = small_model("dense")
    kernel = kernel_of(model.get_layer("target"))
    values = np.abs(kernel.numpy())
    values[::2] *= -1
    step = np.float32(values.max() / 128)
    codes = np.clip(np.rint(values / step), -127, 128)  # 255 levels and zero, +128 used
    kernel.assign(codes.astype(np.float32) * step)
    path = str(tmp_path / "eight_bits.tflite")
    report = exporter.export(model, path)
    target = _choice(report, "target")
    assert target.encoding is Encoding.LEVELS and target.detail.startswith("int8 codes + -1")
    _assert_weights_round_trip(model, path, report)


def test_per_channel_levels_keep_one_step_per_output_channel(tmp_path):
    model = _compressed("dense", bits=3, per_channel=True)
    path = str(tmp_path / "per_channel.tflite")
    report = exporter.export(model, path)
    target = _choice(report, "target")
    assert target.encoding in (Encoding.LEVELS, Encoding.SPARSE_LEVELS)
    assert "per channel" in target.detail
    _assert_weights_round_trip(model, path, report)
    assert sum(t.quantization_bytes for t in report.file.tensors if t.label == "target") == 40 * 12


def test_byte_accounting_sums_to_the_file_size(tmp_path):
    model = _compressed("conv2d", keep_fraction=0.1, bits=4)
    path = str(tmp_path / "accounted.tflite")
    report = exporter.export(model, path)
    size = os.path.getsize(path)
    parts = report.file
    assert report.file_bytes == size
    assert parts.tensor_bytes + parts.metadata_bytes + parts.overhead_bytes == size
    assert 0 < parts.overhead_bytes < size
    with open(path, "rb") as handle:
        data = handle.read()
    assert report.gzip_bytes == len(gzip.compress(data, compresslevel=9, mtime=0))
    assert report.float_file_bytes == len(exporter.convert_float(model))
    assert report.float_file_bytes > size
    # Each weight's stored bytes are those of the tensors in its decode chain.
    for choice in report.weights:
        owned = [t for t in parts.tensors if t.label == choice.label]
        assert choice.stored_bytes == sum(t.total_bytes for t in owned)
    as_json = json.loads(report.to_json())
    assert as_json["file_bytes"] == size
    assert (
        sum(t["total_bytes"] for t in as_json["tensors"])
        + as_json["metadata_bytes"]
        + as_json["overhead_bytes"]
        == size
    )
    table = report.format()
    assert "flatbuffer overhead" in table and "target" in table


def test_sparse_index_bytes_match_the_layout(tmp_path):
    model = _compressed("dense", keep_fraction=0.1)
    path = str(tmp_path / "sparse.tflite")
    report = exporter.export(model, path, encoding={"target": "sparse_float32"})
    values = _expected_tflite_layout(model.get_layer("target"))
    layout = encodings.best_sparse_layout(values != 0, 4)
    row = next(t for t in report.file.tensors if t.label == "target" and t.value_bytes)
    assert row.value_bytes == 4 * layout.num_entries
    # Index arrays plus the int32 traversal order (one entry per dimension).
    assert row.index_bytes == layout.index_bytes + 4 * values.ndim


def test_float32_everywhere_when_asked(tmp_path):
    model = _compressed("dense", keep_fraction=0.1, bits=3)
    report = exporter.export(model, str(tmp_path / "float.tflite"), encoding="float32")
    assert {w.encoding for w in report.weights} == {Encoding.FLOAT32}
    assert {w.reason for w in report.weights} == {"requested"}


def test_lossy_int8_is_only_used_when_asked_and_reports_its_error(tmp_path):
    model = small_model("conv2d")
    auto = exporter.export(model, str(tmp_path / "auto.tflite"))
    assert all(w.encoding is Encoding.FLOAT32 for w in auto.weights)
    lossy = exporter.export(model, str(tmp_path / "int8.tflite"), encoding="int8")
    target = _choice(lossy, "target")
    assert target.encoding is Encoding.INT8 and target.max_weight_error > 0
    assert all(c.passed for c in lossy.checks)
    assert lossy.file_bytes < auto.file_bytes


def test_outputs_matched_by_name_in_a_multi_output_model(tmp_path):
    inputs = keras.Input((5,), name="zeta")
    hidden = keras.layers.Dense(8, name="shared")(inputs)
    first = keras.layers.Dense(3, name="yy")(hidden)
    second = keras.layers.Dense(2, name="aa")(hidden)  # the converter sorts outputs by name
    model = keras.Model(inputs, [first, second])
    report = exporter.export(model, str(tmp_path / "two.tflite"))
    assert [c.output for c in report.checks[0].outputs] == ["yy", "aa"]
    assert all(c.passed for c in report.checks)


def _shift_codes(original):
    def shifted(fit):
        stored = original(fit)
        if isinstance(stored, np.ndarray) and stored.dtype == np.int8:
            return np.clip(stored.astype(np.int16) + 1, -128, 127).astype(np.int8)
        return stored

    return shifted


def test_a_bad_encoding_that_was_asked_for_is_refused_and_not_written(tmp_path, monkeypatch):
    model = _compressed("conv2d", bits=5)
    monkeypatch.setattr(float_target, "_stored_codes", _shift_codes(float_target._stored_codes))
    path = tmp_path / "bad.tflite"
    with pytest.raises(exporter.VerificationError, match=r"max\|diff\|") as caught:
        exporter.export(model, str(path), encoding="levels")
    assert "xnnpack" in str(caught.value) and "builtin" in str(caught.value)
    assert not path.exists()


def test_auto_falls_back_from_a_bad_encoding_and_says_why(tmp_path, monkeypatch):
    model = _compressed("conv2d", bits=5)
    monkeypatch.setattr(float_target, "_stored_codes", _shift_codes(float_target._stored_codes))
    path = str(tmp_path / "fallback.tflite")
    report = exporter.export(model, path)
    target = _choice(report, "target")
    assert target.encoding is not Encoding.LEVELS
    assert "passing verification" in target.reason
    assert any(e == "levels" and "max|diff|" in why for e, why in target.rejected)
    _assert_weights_round_trip(model, path, report)


def test_a_corrupted_weight_buffer_fails_verification(tmp_path):
    model = _compressed("dense", keep_fraction=0.2, bits=4)
    path = str(tmp_path / "good.tflite")
    exporter.export(model, path)
    with open(path, "rb") as handle:
        parsed = flatbuffer.read_model(handle.read())
    stored = [
        t
        for t in parsed.subgraphs[0].tensors
        if t.type == flatbuffer.schema.TensorType.INT8 and parsed.buffers[t.buffer].data is not None
    ]
    assert stored
    buffer = parsed.buffers[stored[0].buffer]
    buffer.data = np.asarray(buffer.data, np.uint8)[::-1].copy()
    corrupted = flatbuffer.write_model(parsed)
    with pytest.raises(exporter.VerificationError, match="target|head|output"):
        exporter.verify_file(corrupted, model)


def test_wrapped_model_is_refused_with_the_fix(tmp_path):
    spec = tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5))
    wrapped = tf_admm.admm_wrap(small_model("dense"), spec)
    with pytest.raises(exporter.ExportError, match=r"tf_admm\.strip"):
        exporter.export(wrapped, str(tmp_path / "wrapped.tflite"))
    report = exporter.export(tf_admm.strip(wrapped), str(tmp_path / "stripped.tflite"))
    assert all(c.passed for c in report.checks)


@pytest.mark.parametrize(
    "make_path, message",
    [
        (lambda tmp: tmp / "missing" / "m.tflite", "existing directory"),
        (lambda tmp: tmp, "is a directory"),
        (lambda tmp: 42, "str or os.PathLike"),
    ],
)
def test_unwritable_paths_are_refused(tmp_path, make_path, message):
    path = make_path(tmp_path)
    with pytest.raises(exporter.ExportError, match=message):
        exporter.export(small_model("dense"), path if isinstance(path, int) else str(path))


def test_encoding_for_an_unsupported_layer_is_refused(tmp_path):
    inputs = keras.Input((6,))
    hidden = keras.layers.BatchNormalization(name="norm")(inputs)
    outputs = keras.layers.Dense(3, name="fc")(hidden)
    model = keras.Model(inputs, outputs)
    with pytest.raises(exporter.ExportError, match="Layer 'norm'.*BatchNormalization"):
        exporter.export(model, str(tmp_path / "m.tflite"), encoding={"norm": "levels"})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"encoding": "levels"}, "uniform levels"),
        ({"encoding": "sparse_float32"}, "no zero weights"),
        ({"encoding": "zip"}, "Expected encoding in"),
        ({"encoding": {"nope": "auto"}}, "Expected encoding keys"),
        ({"target": "micro"}, "Expected target in"),
        ({"tolerance": 0}, "tolerance > 0"),
        ({"representative_data": np.zeros((2, 3), np.float32)}, "shape"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(exporter.ExportError, match=message):
        exporter.export(small_model("dense"), str(tmp_path / "m.tflite"), **kwargs)


def test_not_a_keras_model_is_refused(tmp_path):
    with pytest.raises(exporter.ExportError, match="tf_keras Model"):
        exporter.export(object(), str(tmp_path / "m.tflite"))


def test_pruned_lenet5_is_forty_times_smaller_than_the_float_file(tmp_path):
    from recipes import models

    model = models.lenet5()
    # Nonzeros of Ye et al.'s pruned LeNet-5, by magnitude, without training.
    for name, keep in {"conv1": 100, "conv2": 2000, "fc1": 3600, "fc2": 350}.items():
        kernel = model.get_layer(name).kernel
        kernel.assign(prune(kernel.numpy(), keep))
    report = exporter.export(model, str(tmp_path / "lenet5.tflite"), batch_size=4)
    assert {w.encoding for w in report.weights} == {Encoding.SPARSE_FLOAT32}
    assert report.float_file_bytes / report.file_bytes > 30
    assert sum(w.nonzeros for w in report.weights) == 6050


# k-means weights: 4 arbitrary centroids (no uniform grid, not float16 values) plus zeros.
_CENTROIDS = np.array([-np.sqrt(0.1), -np.e / 40, np.pi / 30, np.sqrt(0.08)], np.float32)


def _clustered(centroids, zero_fraction=0.7):
    model = small_model("dense")
    kernel = kernel_of(model.get_layer("target"))
    kernel.assign(on_centroids(random_zeros(kernel.numpy(), zero_fraction), centroids))
    return model


def test_clustered_weights_are_stored_exactly_as_float32_and_say_why(tmp_path):
    model = _clustered(_CENTROIDS)
    path = str(tmp_path / "clustered.tflite")
    report = exporter.export(model, path)
    target = _choice(report, "target")
    assert target.encoding is Encoding.SPARSE_FLOAT32 and target.max_weight_error == 0.0
    rejected = dict(target.rejected)
    assert rejected["levels"].startswith("4 distinct nonzero values, not on uniform levels")
    assert rejected["float16"].startswith("not exact: float16 moves weights by up to")
    assert "allow_float16=True" in rejected["sparse_float16"]
    _assert_weights_round_trip(model, path, report)


def test_centroids_on_a_uniform_grid_are_stored_as_their_codes(tmp_path):
    step = np.float32(0.0371)
    grid = np.array([-3, -1, 2, 5], np.float32) * step  # k-means that landed on a grid
    model = _clustered(grid, zero_fraction=0.2)
    path = str(tmp_path / "grid.tflite")
    report = exporter.export(model, path)
    target = _choice(report, "target")
    assert target.encoding is Encoding.LEVELS and target.detail.startswith("int4 codes")
    _assert_weights_round_trip(model, path, report)


def test_float16_centroids_are_stored_as_float16_exactly(tmp_path):
    model = _clustered(_CENTROIDS.astype(np.float16).astype(np.float32))
    path = str(tmp_path / "half.tflite")
    report = exporter.export(model, path)
    target = _choice(report, "target")
    assert target.encoding is Encoding.SPARSE_FLOAT16 and target.max_weight_error == 0.0
    _assert_weights_round_trip(model, path, report)
    rows = [t for t in report.file.tensors if t.label == "target" and t.value_bytes]
    assert rows[0].storage == "sparse float16"
    assert rows[0].value_bytes == 2 * target.nonzeros


@pytest.mark.parametrize("zero_fraction, encoding", [(0.7, "sparse_float16"), (0.0, "float16")])
def test_float16_when_allowed_rounds_centroids_and_reports_the_error(
    tmp_path, zero_fraction, encoding
):
    model = _clustered(_CENTROIDS, zero_fraction)
    path = str(tmp_path / "half.tflite")
    report = exporter.export(model, path, allow_float16=True)
    target = _choice(report, "target")
    assert target.encoding.value == encoding
    decoded = _decoded_weights(path, report)["target"]
    kernel = _expected_tflite_layout(model.get_layer("target"))
    np.testing.assert_array_equal(decoded, kernel.astype(np.float16).astype(np.float32))
    assert target.max_weight_error == pytest.approx(np.max(np.abs(decoded - kernel)))
    assert 0 < target.max_weight_error < 1e-3
    assert all(c.passed for c in report.checks)


def test_sparse_int8_weight_only_is_lossy_and_only_used_when_asked(tmp_path):
    model = _compressed("conv2d", keep_fraction=0.1)
    path = str(tmp_path / "sparse_int8.tflite")
    report = exporter.export(model, path, encoding={"target": "sparse_int8"})
    target = _choice(report, "target")
    assert target.encoding is Encoding.SPARSE_INT8 and target.max_weight_error > 0
    decoded = _decoded_weights(path, report)["target"]
    assert np.all(decoded[_expected_tflite_layout(model.get_layer("target")) == 0] == 0)
    assert all(c.passed for c in report.checks)


class _TwoInputs(keras.Model):
    """Subclassed, called on a list of two tensors."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.target = keras.layers.Dense(40, name="target")
        self.head = keras.layers.Dense(2, name="head")

    def call(self, inputs):
        first, second = inputs
        return self.head(self.target(first) + second)


def test_subclassed_model_is_exported_on_the_signature_of_its_first_call(tmp_path):
    model = _TwoInputs(name="two")
    model([np.zeros((3, 24), np.float32), np.zeros((3, 40), np.float32)])
    kernel = model.target.kernel
    kernel.assign(prune(kernel.numpy(), 30))
    path = str(tmp_path / "two.tflite")
    report = exporter.export(model, path)
    assert _choice(report, "target").encoding is Encoding.SPARSE_FLOAT32
    assert all(c.passed for c in report.checks)
    with open(path, "rb") as handle:
        inputs, _ = verify.signature_names(flatbuffer.read_model(handle.read()))
    assert sorted(inputs.values()) == ["input_0", "input_1"]
    assert all(c.passed for c in exporter.verify_file(path, model))


def test_models_without_known_inputs_are_refused_saying_what_is_missing(tmp_path):
    with pytest.raises(exporter.ExportError, match=r"'two' \(_TwoInputs\).*never called or built"):
        exporter.export(_TwoInputs(name="two"), str(tmp_path / "m.tflite"))
    unbuilt = keras.Sequential([keras.layers.Dense(2)], name="seq")
    with pytest.raises(exporter.ExportError, match=r"'seq' \(Sequential\).*without an input shape"):
        exporter.export(unbuilt, str(tmp_path / "m.tflite"))
