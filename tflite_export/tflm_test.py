"""The TFLite Micro targets: LUT weights run in TFLite Micro and reproduce the uncompressed file."""

import numpy as np
import pytest

from tflite_export import exporter, flatbuffer, lut, tflm, tflm_target, verify
from tflite_export.encodings import Encoding
from tflite_export.keras_weights import SUPPORTED_LAYERS
from tflite_export.testing import LAYER_KINDS, kernel_of, small_model
from tflite_export.weights import find_weight_tensors

pytest.importorskip(
    "tflite_micro", reason="needs tflite-micro, the optional [tflm] extra: pip install -e '.[tflm]'"
)

# Layers whose kernels get k values per output channel (Keras layout: last axis).
_PER_CHANNEL_K = 5
_HEAD_K = 4


def _clustered(values: np.ndarray, k: int, per_channel: bool) -> np.ndarray:
    """Each weight moved to the nearest of ``k`` quantiles, per tensor or per output channel."""
    values = np.asarray(values, np.float32)
    if not per_channel:
        centroids = np.quantile(values, np.linspace(0.05, 0.95, k)).astype(np.float32)
        return centroids[np.argmin(np.abs(values[..., None] - centroids), axis=-1)]
    moved = np.moveaxis(values, -1, 0)
    rows = [_clustered(row, k, per_channel=False) for row in moved]
    return np.moveaxis(np.stack(rows), 0, -1)


def _model(kind: str):
    model = small_model(kind)
    kernel = kernel_of(model.get_layer("target"))
    kernel.assign(_clustered(kernel.numpy(), _PER_CHANNEL_K, per_channel=True))
    head = model.get_layer("head").kernel
    head.assign(_clustered(head.numpy(), _HEAD_K, per_channel=False))
    return model


def _inputs(model, count=6, seed=3):
    shape = (count, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _tflite_kernel(model, name):
    layer = model.get_layer(name)
    attribute, to_tflite = SUPPORTED_LAYERS[type(layer)]
    return to_tflite(getattr(layer, attribute).numpy())


def _weight_keys(data, model, integer):
    parsed = flatbuffer.read_model(data)
    return {
        w.label: (w.subgraph, w.tensor)
        for w in find_weight_tensors(parsed, model, quantized=integer)
    }


def _assert_accounting(report, data):
    parts = report.file
    assert parts.tensor_bytes + parts.metadata_bytes + parts.overhead_bytes == len(data)
    assert 0 < parts.overhead_bytes < 4096  # tables, names, operators: a few KiB at most
    for row in report.lut:
        weight = next(w for w in report.weights if w.label == row.label)
        item = np.dtype(row.value_type).itemsize
        assert row.index_bytes == (weight.num_weights * row.index_bits + 7) // 8
        assert row.table_bytes == row.num_tables * row.table_entries * item
        assert row.header_bytes == lut.DCM_BYTES
        assert weight.stored_bytes == row.total_bytes


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_float_luts_run_in_tflm_with_the_exact_keras_weights(kind, tmp_path):
    model = _model(kind)
    x = _inputs(model)
    path = str(tmp_path / "m.tflite")
    report = exporter.export(model, path, target="tflm", representative_data=x)
    with open(path, "rb") as handle:
        data = handle.read()
    assert report.file_bytes == len(data) < report.float_file_bytes
    assert all(c.passed for c in report.checks)
    by_label = {w.label: w for w in report.weights}
    assert by_label["head"].encoding is Encoding.LUT
    assert by_label["head"].detail.startswith(f"{lut.index_bits(_HEAD_K)}-bit indices, 1 table")
    # Decoded independently, every LUT is the Keras kernel itself.
    luts = tflm.read_luts(data)
    keys = _weight_keys(exporter.convert_float(model), model, integer=False)
    for label, weight in by_label.items():
        if weight.encoding is Encoding.LUT:
            assert np.array_equal(luts[keys[label]].values, _tflite_kernel(model, label))
    # The file in TFLite Micro: equal to the uncompressed file there, close to Keras.
    got = verify.run(data, [x], runtime=verify.Runtime.TFLM)[0]
    plain = verify.run(exporter.convert_float(model), [x], runtime=verify.Runtime.TFLM)[0]
    assert np.array_equal(got, plain)
    np.testing.assert_allclose(got, model(x).numpy(), atol=1e-4)
    _assert_accounting(report, data)


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_int8_luts_reproduce_the_uncompressed_int8_file(kind, tmp_path):
    model = _model(kind)
    x = _inputs(model, count=8)
    path = str(tmp_path / "m.tflite")
    report = exporter.export(model, path, target="tflm_int8", representative_data=x)
    with open(path, "rb") as handle:
        data = handle.read()
    assert all(c.passed for c in report.checks)
    by_label = {w.label: w for w in report.weights}
    # The largest kernel's per-channel int8 weights keep at most k codes per channel.
    largest = max(report.weights, key=lambda w: w.num_weights)
    k = _HEAD_K if largest.label == "head" else _PER_CHANNEL_K
    assert largest.encoding is Encoding.LUT
    assert "tables on axis 0" in largest.detail
    row = next(r for r in report.lut if r.label == largest.label)
    assert row.mode == "per_channel" and row.value_type == "int8"
    assert row.index_bits <= lut.index_bits(k)
    # The same conversion without LUTs: equal weights, equal int8 outputs in TFLite Micro.
    uncompressed = tflm.convert_int8(model, [x])
    assert report.uncompressed_file_bytes == len(uncompressed)
    keys = _weight_keys(uncompressed, model, integer=True)
    plain_model = flatbuffer.read_model(uncompressed)
    luts = tflm.read_luts(data)
    for label, weight in by_label.items():
        if weight.encoding is Encoding.LUT:
            want = flatbuffer.decode_tensor(plain_model, *keys[label])
            assert np.array_equal(luts[keys[label]].values, want)
    quantization = {q.kind: q for q in report.io_quantization}
    codes = np.clip(
        np.rint(x / quantization["input"].scale) + quantization["input"].zero_point, -128, 127
    ).astype(np.int8)
    got = verify.run(data, [codes], runtime=verify.Runtime.TFLM)[0]
    assert got.dtype == np.int8
    assert np.array_equal(got, verify.run(uncompressed, [codes], runtime=verify.Runtime.TFLM)[0])
    litert = verify.run(uncompressed, [codes], runtime=verify.Runtime.BUILTIN)[0]
    assert np.max(np.abs(got.astype(int) - litert)) <= 1  # measured: 0 on these models
    real = (got.astype(np.float64) - quantization["output"].zero_point) * quantization[
        "output"
    ].scale
    keras_out = model(x).numpy()
    allowed = tflm.DEFAULT_INT8_TOLERANCE * max(1.0, np.max(np.abs(keras_out)))
    assert np.max(np.abs(real - keras_out)) <= allowed
    _assert_accounting(report, data)


@pytest.fixture(scope="module")
def int8_case():
    model = _model("conv2d")
    x = _inputs(model, count=4)
    uncompressed = tflm.convert_int8(model, [x])
    key = _weight_keys(uncompressed, model, integer=True)["head"]
    values = flatbuffer.decode_tensor(flatbuffer.read_model(uncompressed), *key)
    return model, x, uncompressed, key, values


def test_a_good_per_channel_file_passes_check_lut_file(int8_case):
    model, x, uncompressed, key, values = int8_case
    data = tflm.write_luts(uncompressed, {key: lut.fit_lut(values, 0)})
    checks = tflm.check_lut_file(data, uncompressed, model, representative_data=x)
    assert all(c.passed for c in checks)
    references = {c.reference for c in checks}
    assert "uncompressed weights (decoded by TFLite Micro)" in references
    assert "uncompressed file" in references


def test_a_per_tensor_table_over_per_channel_weights_is_refused(int8_case):
    model, x, uncompressed, key, values = int8_case
    fit = lut.fit_lut(values, None)
    assert fit.fits
    data = tflm.write_luts(uncompressed, {key: fit})
    # The file format holds the right values, yet TFLite Micro decodes them wrongly.
    assert np.array_equal(tflm.read_luts(data)[key].values, values)
    with pytest.raises(exporter.VerificationError, match=r"decoded by TFLite Micro\): head"):
        tflm.check_lut_file(data, uncompressed, model, representative_data=x)


def test_a_corrupted_value_table_is_refused(int8_case):
    model, x, uncompressed, key, values = int8_case
    data = tflm.write_luts(uncompressed, {key: lut.fit_lut(values, 0)})
    parsed = flatbuffer.read_model(data)
    ancillary = parsed.subgraphs[0].tensors[tflm.read_luts(data)[key].ancillary]
    table = np.array(parsed.buffers[ancillary.buffer].data, np.uint8)
    table[lut.DCM_BYTES] ^= 0x40  # the first value of the first table
    parsed.buffers[ancillary.buffer].data = table
    corrupted = flatbuffer.write_model(parsed)
    with pytest.raises(exporter.VerificationError, match=r"file format decoded here\): .*weights"):
        tflm.check_lut_file(corrupted, uncompressed, model, representative_data=x)


def test_float_per_channel_tables_without_channel_quantization_are_refused():
    model = _model("dense")
    x = _inputs(model)
    uncompressed = exporter.convert_float(model)
    key = _weight_keys(uncompressed, model, integer=False)["target"]
    values = flatbuffer.decode_tensor(flatbuffer.read_model(uncompressed), *key)
    spec = tflm.lut_spec_yaml({key: lut.fit_lut(values, 0)})
    from tflite_micro.tensorflow.lite.micro import compression

    bare = bytes(compression.compress(uncompressed, compression.parse_yaml(spec)))
    with pytest.raises(exporter.VerificationError, match="decoded by TFLite Micro"):
        tflm.check_lut_file(bare, uncompressed, model, representative_data=x)
    # With the unit per-channel quantization write_luts adds, the same tables decode right.
    annotated = tflm.write_luts(uncompressed, {key: lut.fit_lut(values, 0)})
    assert all(
        c.passed for c in tflm.check_lut_file(annotated, uncompressed, model, representative_data=x)
    )


def test_auto_falls_back_from_an_option_that_fails_verification(tmp_path, monkeypatch):
    # Pretend TFLite Micro decodes any table layout: per-tensor tables are then offered first
    # for the int8 head, fail in TFLite Micro, and the per-channel tables are used instead.
    monkeypatch.setattr(tflm_target, "_table_rule", lambda *args: None)
    model = _model("conv2d")
    report = exporter.export(
        model,
        str(tmp_path / "m.tflite"),
        target="tflm_int8",
        representative_data=_inputs(model, count=4),
    )
    head = next(w for w in report.weights if w.label == "head")
    assert head.encoding is Encoding.LUT and "tables on axis 0" in head.detail
    failed = dict(head.rejected)
    assert "decoded by TFLite Micro" in failed["lut per tensor"]
    assert all(c.passed for c in report.checks)


def test_requested_encodings_that_do_not_apply_are_refused(tmp_path):
    model = small_model("conv2d")  # random kernels: 784 distinct head weights per channel
    path = str(tmp_path / "m.tflite")
    with pytest.raises(exporter.ExportError, match="784 distinct values per table"):
        exporter.export(model, path, target="tflm", encoding={"head": "lut"})
    with pytest.raises(exporter.ExportError, match=r"\['auto', 'lut', 'float32'\]"):
        exporter.export(model, path, target="tflm", encoding="sparse_float32")
    with pytest.raises(exporter.ExportError, match="only in TFLite Micro"):
        exporter.export(model, path, target="litert", encoding="lut")


def test_dense_weights_give_the_uncompressed_file(tmp_path):
    model = small_model("dense")
    path = str(tmp_path / "m.tflite")
    report = exporter.export(model, path, target="tflm_int8", encoding="int8")
    assert {w.encoding for w in report.weights} == {Encoding.INT8}
    assert report.lut == () and report.file_bytes == report.uncompressed_file_bytes
    assert all(c.passed for c in report.checks)
    assert "input features: int8, real =" in report.format()
