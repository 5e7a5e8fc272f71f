"""Full-integer LiteRT export: int8 weights and activations, exact levels, verified files."""

import os

import numpy as np
import pytest

from tflite_export import exporter, flatbuffer, integer, integer_target, verify
from tflite_export.encodings import Encoding
from tflite_export.inputs import prepare_inputs
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

_schema = flatbuffer.schema
_LEVEL_BITS = 3  # codes -4 .. 4: int4


def _model(kind, compression, seed=0):
    """``pruned``: 90% of each kernel zero by magnitude. ``levels``: 3-bit levels {±q..±4q}
    (q per tensor), then 70% random zeros, so every level stays in use."""
    model = small_model(kind, seed=seed)
    for name in ("target", "head"):
        variable = kernel_of(model.get_layer(name))
        values = variable.numpy()
        if compression == "pruned":
            values = prune(values, max(1, values.size // 10))
        elif compression == "levels":
            values = random_zeros(on_levels(values, _LEVEL_BITS), 0.7, seed)
        else:
            raise ValueError(compression)
        variable.assign(values)
    return model


def _samples(model, count=16, seed=1):
    shape = (count, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _kernel(model, name):
    layer = model.get_layer(name)
    attribute, to_tflite = SUPPORTED_LAYERS[type(layer)]
    return to_tflite(getattr(layer, attribute).numpy())


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _stored_weights(data, report):
    """Label -> (int codes the kernel reads, their scales, dequantized values)."""
    model = flatbuffer.read_model(data)
    tensors = model.subgraphs[0].tensors
    index = {flatbuffer.tensor_name(t): i for i, t in enumerate(tensors)}
    found = {}
    for choice in report.weights:
        position = index[choice.tensor_name]
        codes = flatbuffer.decode_tensor(model, 0, position)
        tensor = tensors[position]
        found[choice.label] = (
            codes,
            np.asarray(tensor.quantization.scale, np.float32),
            flatbuffer.dequantize(tensor, codes),
        )
    return found


def _per_channel(scales, ndim, axis):
    shape = [1] * ndim
    shape[axis] = -1
    return scales.reshape(shape) if scales.size > 1 else scales


def _assert_biases_follow_weight_scales(data, model):
    """Every int32 bias has scale input_scale * weight_scale and holds the Keras bias."""
    parsed = flatbuffer.read_model(data)
    subgraph = parsed.subgraphs[0]
    checked = 0
    for operator in subgraph.operators:
        code = flatbuffer.builtin_code(parsed, operator)
        if code not in (
            _schema.BuiltinOperator.FULLY_CONNECTED,
            _schema.BuiltinOperator.CONV_2D,
            _schema.BuiltinOperator.DEPTHWISE_CONV_2D,
        ):
            continue
        activation, weight, bias = (subgraph.tensors[int(i)] for i in operator.inputs[:3])
        input_scale = np.float64(activation.quantization.scale[0])
        weight_scales = np.asarray(weight.quantization.scale, np.float64)
        bias_scales = np.asarray(bias.quantization.scale, np.float32)
        np.testing.assert_allclose(bias_scales, input_scale * weight_scales, rtol=1e-6)
        codes = flatbuffer.decode_tensor(parsed, 0, int(operator.inputs[2]))
        name = "target" if "target" in flatbuffer.tensor_name(weight) else "head"
        keras_bias = model.get_layer(name).bias.numpy()
        assert np.all(np.abs(codes * bias_scales.astype(np.float64) - keras_bias) <= bias_scales)
        checked += 1
    assert checked == 2


@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("compression", ["pruned", "levels"])
def test_full_int8_keeps_zeros_and_levels_and_matches_keras(kind, compression, tmp_path):
    model = _model(kind, compression)
    x = _samples(model)
    path = str(tmp_path / "int8.tflite")
    report = exporter.export(model, path, representative_data=x)
    data = _read(path)

    assert report.activations == "int8" and report.target == "litert"
    assert all(c.passed for c in report.checks)
    references = {c.reference for c in report.checks}
    assert "intended int8 weights (read from the interpreter)" in references
    # Every byte accounted for.
    parts = report.file
    assert report.file_bytes == os.path.getsize(path) == len(data)
    assert parts.tensor_bytes + parts.metadata_bytes + parts.overhead_bytes == len(data)
    for choice in report.weights:
        owned = [t for t in parts.tensors if t.label == choice.label]
        assert choice.stored_bytes == sum(t.total_bytes for t in owned) > 0

    stored = _stored_weights(data, report)
    assert set(stored) == {"target", "head"}
    for choice in report.weights:
        codes, scales, real = stored[choice.label]
        kernel = _kernel(model, choice.label)
        assert np.all(codes[kernel == 0] == 0)  # pruned weights stay exactly zero
        if compression == "levels":
            assert choice.encoding in (Encoding.LEVELS, Encoding.SPARSE_LEVELS)
            np.testing.assert_array_equal(real, kernel)  # the trained levels, bit for bit
            assert np.max(np.abs(codes)) <= 2 ** (_LEVEL_BITS - 1)  # the level indices
            assert np.unique(scales).size == 1  # q per tensor, repeated per channel
            assert choice.max_weight_error == 0.0
            assert "miss the levels by up to" in choice.detail
        else:
            assert choice.encoding in (Encoding.INT8, Encoding.SPARSE_INT8)
            axis = 3 if choice.layer_type == "DepthwiseConv2D" else 0
            step = _per_channel(scales, kernel.ndim, axis)
            assert np.all(np.abs(real - kernel) <= step / 2 * (1 + 1e-5))
            assert choice.max_weight_error == pytest.approx(np.max(np.abs(real - kernel)))
        if choice.layer_type == "Dense":
            # XNNPACK fails to prepare a FULLY_CONNECTED reading DENSIFY'd int8 weights
            # (measured with ai_edge_litert 2.3.0), so no Dense weight may stay sparse.
            assert not choice.encoding.sparse
    target = next(w for w in report.weights if w.label == "target")
    if (kind, compression) == ("dense", "pruned"):
        assert any(
            name == "sparse_int8" and "xnnpack: failed to run" in why
            for name, why in target.rejected
        )
    if (kind, compression) == ("conv2d", "pruned"):
        # A convolution reading DENSIFY'd int8 weights runs in both runtimes.
        assert target.encoding is Encoding.SPARSE_INT8
        assert "entries" in target.detail and target.stored_bytes < target.num_weights
    if compression == "levels":
        _assert_biases_follow_weight_scales(data, model)

    # Outputs within a few output steps of Keras, checked again from the written file.
    scale = integer.output_scales(data, model.output_names)[0]
    got = verify.run(data, [x], runtime=verify.Runtime.BUILTIN)[0]
    assert np.max(np.abs(got - model(x).numpy())) <= 4 * scale  # measured: at most 2.4
    checks = exporter.verify_file(path, model, representative_data=x)
    assert all(c.passed for c in checks)
    assert len(data) < report.float_file_bytes


def test_per_channel_levels_keep_one_step_per_channel(tmp_path):
    model = small_model("dense")
    kernel = kernel_of(model.get_layer("target"))
    kernel.assign(random_zeros(on_levels(kernel.numpy(), 4, axis=-1), 0.5))
    path = str(tmp_path / "m.tflite")
    report = exporter.export(
        model, path, representative_data=_samples(model), encoding={"target": "levels"}
    )
    codes, scales, real = _stored_weights(_read(path), report)["target"]
    np.testing.assert_array_equal(real, _kernel(model, "target"))
    assert scales.size == 40 and np.unique(scales).size > 1
    assert np.max(np.abs(codes)) <= 8


def test_int8_inputs_and_outputs_on_request(tmp_path):
    model = _model("dense", "levels")
    x = _samples(model)
    path = str(tmp_path / "io.tflite")
    report = exporter.export(model, path, representative_data=x, int8_io=True)
    assert [(q.kind, q.dtype) for q in report.io_quantization] == [
        ("input", "int8"),
        ("output", "int8"),
    ]
    assert all(c.passed for c in report.checks)
    assert "input features: int8, real =" in report.format()
    quantized = {q.kind: q for q in report.io_quantization}
    codes = integer.quantize(x, quantized["input"])
    out = verify.run(_read(path), [codes], runtime=verify.Runtime.BUILTIN)[0]
    assert out.dtype == np.int8
    real = integer.dequantize(out, quantized["output"])
    assert np.max(np.abs(real - model(x).numpy())) <= 4 * quantized["output"].scale  # 2.4
    assert all(c.passed for c in exporter.verify_file(path, model, representative_data=x))


def _plant_one_wrong_code(monkeypatch):
    """Makes every level candidate write one code off by one (the outputs barely move)."""
    original = integer_target._apply_levels

    def planted(codes, *args):
        codes = codes.copy()
        first = np.flatnonzero(codes)[0]
        codes.flat[first] -= np.sign(codes.flat[first])
        return original(codes, *args)

    monkeypatch.setattr(integer_target, "_apply_levels", planted)


def test_a_planted_wrong_weight_is_refused_and_not_written(tmp_path, monkeypatch):
    model = _model("dense", "levels")
    _plant_one_wrong_code(monkeypatch)
    path = tmp_path / "bad.tflite"
    with pytest.raises(
        exporter.VerificationError,
        match=r"intended int8 weights \(file decoded here\): .*target weights: max\|diff\|=1 ",
    ) as caught:
        exporter.export(
            model, str(path), representative_data=_samples(model), encoding={"target": "levels"}
        )
    assert "read from the interpreter" in str(caught.value)
    assert not path.exists()


def test_auto_falls_back_from_a_planted_wrong_weight(tmp_path, monkeypatch):
    model = _model("dense", "levels")
    _plant_one_wrong_code(monkeypatch)
    report = exporter.export(model, str(tmp_path / "m.tflite"), representative_data=_samples(model))
    for choice in report.weights:
        assert choice.encoding is Encoding.INT8
        failed = [why for name, why in choice.rejected if name == "levels"]
        assert failed and all("intended int8 weights" in why for why in failed)
    assert all(c.passed for c in report.checks)


def test_a_bias_left_at_the_old_scale_is_refused(tmp_path, monkeypatch):
    original = integer_target._bias_updates

    def stale(model, weight, scales, keras_bias):
        """The converter's bias codes, labelled with the new scale: a missed rescale."""
        updates = original(model, weight, scales, keras_bias)
        return [
            (index, flatbuffer.decode_tensor(model, weight.subgraph, index), new_scales)
            for index, _, new_scales in updates
        ]

    monkeypatch.setattr(integer_target, "_bias_updates", stale)
    model = _model("dense", "levels")
    with pytest.raises(exporter.VerificationError, match=r"target bias \(steps\): max\|diff\|="):
        exporter.export(
            model,
            str(tmp_path / "m.tflite"),
            representative_data=_samples(model),
            encoding={"target": "levels"},
        )


def test_a_corrupted_int8_file_fails_verify_file(tmp_path):
    model = _model("dense", "pruned")
    x = _samples(model)
    path = str(tmp_path / "m.tflite")
    exporter.export(model, path, representative_data=x)
    parsed = flatbuffer.read_model(_read(path))
    head = next(
        t
        for t in parsed.subgraphs[0].tensors
        if "head" in flatbuffer.tensor_name(t)
        and t.type == _schema.TensorType.INT8
        and parsed.buffers[t.buffer].data is not None
    )
    buffer = parsed.buffers[head.buffer]
    buffer.data = np.asarray(buffer.data, np.uint8)[::-1].copy()
    with pytest.raises(exporter.VerificationError, match=r"head: max\|diff\|=.*allowed"):
        exporter.verify_file(flatbuffer.write_model(parsed), model, representative_data=x)


def test_a_tolerance_the_converter_cannot_meet_fails_with_the_difference(tmp_path):
    model = _model("dense", "pruned")
    path = tmp_path / "m.tflite"
    with pytest.raises(
        exporter.VerificationError, match=r"converter's full-integer file.*head: max\|diff\|="
    ):
        exporter.export(
            model,
            str(path),
            representative_data=_samples(model),
            tolerance=verify.Int8Tolerance(output_steps=0.01),
        )
    assert not path.exists()


def test_clustered_weights_keep_the_converter_codes_and_report_the_error(tmp_path):
    model = small_model("dense")
    kernel = kernel_of(model.get_layer("target"))
    # Arbitrary floats: no uniform grid, not even per channel.
    centroids = np.array([-np.sqrt(0.1), -np.e / 40, np.pi / 30, np.sqrt(0.08)], np.float32)
    kernel.assign(on_centroids(random_zeros(kernel.numpy(), 0.7), centroids))
    report = exporter.export(model, str(tmp_path / "m.tflite"), representative_data=_samples(model))
    target = next(w for w in report.weights if w.label == "target")
    assert target.encoding is Encoding.INT8
    assert 0 < target.max_weight_error <= np.sqrt(0.1) / 127
    assert "4 distinct nonzero values, not on uniform levels" in dict(target.rejected)["levels"]


def test_representative_data_forms_give_the_same_inputs():
    from tf_admm.compat import tf

    model = small_model("conv2d")
    x = _samples(model, count=10)
    labels = np.arange(10)
    forms = {
        "dataset of (images, labels) batches": tf.data.Dataset.from_tensor_slices(
            (x, labels)
        ).batch(4),
        "dataset of single images": tf.data.Dataset.from_tensor_slices(x),
        "generator function, TFLite style": lambda: ([x[i : i + 1]] for i in range(10)),
        "list of samples": list(x),
        "dict": {"image": x},
    }
    for name, form in forms.items():
        (got,) = prepare_inputs(model, form, 8, 0)
        np.testing.assert_array_equal(got, x, err_msg=name)
    endless = tf.data.Dataset.from_tensor_slices(x).repeat()
    (got,) = prepare_inputs(model, endless, 8, 0)
    assert got.shape[0] == exporter.MAX_REPRESENTATIVE_SAMPLES


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"encoding": "float32"}, r"for a full-integer LiteRT file"),
        ({"encoding": {"head": "lut"}}, r"\['auto', 'int8', 'sparse_int8', 'levels'"),
        ({"activations": "int4"}, "Expected activations in"),
        ({"int8_io": "yes"}, "int8_io to be a bool"),
        ({"allow_float16": True}, "allow_float16 only for a float32 LiteRT file"),
        ({"representative_data": iter([])}, "at least one sample"),
        ({"representative_data": "x.npy"}, "Expected representative_data as arrays"),
        ({"representative_data": [np.zeros((2, 3))] * 3}, "shape"),
    ],
)
def test_bad_full_integer_arguments_are_refused(tmp_path, kwargs, message):
    arguments = {"representative_data": np.zeros((2, 24), np.float32), **kwargs}
    with pytest.raises(exporter.ExportError, match=message):
        exporter.export(small_model("dense"), str(tmp_path / "m.tflite"), **arguments)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"activations": "int8"}, "Expected representative_data"),
        ({"int8_io": True}, "int8_io only for a full-integer LiteRT file"),
        ({"tolerance": verify.Int8Tolerance()}, "Int8Tolerance only for a full-integer"),
        ({"target": "tflm", "activations": "int8"}, "use target tflm_int8"),
    ],
)
def test_int8_options_without_int8_activations_are_refused(tmp_path, kwargs, message):
    with pytest.raises(exporter.ExportError, match=message):
        exporter.export(small_model("dense"), str(tmp_path / "m.tflite"), **kwargs)
