"""Dropping internal tensor names: inputs and outputs keep theirs, the file computes the same,
and the report still accounts for every byte."""

import doctest
import os

import numpy as np
import pytest

from tf_admm.compat import keras
from tflite_export import conversion, exporter, flatbuffer, names, report, verify
from tflite_export.testing import kernel_of, on_levels, prune, small_model


def _compressed(kind="conv2d"):
    """``small_model(kind)`` with pruned kernels on 4-bit levels (re-encoded weights)."""
    model = small_model(kind)
    for name in ("target", "head"):
        variable = kernel_of(model.get_layer(name))
        values = variable.numpy()
        variable.assign(on_levels(prune(values, values.size // 4), 4))
    return model


def _samples(model, count=8, seed=1):
    shape = (count, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _interpreter(data):
    interpreter = verify.litert_interpreter(data, verify.Runtime.BUILTIN)
    interpreter.allocate_tensors()
    return interpreter


def _io_names(data):
    interpreter = _interpreter(data)
    return (
        [d["name"] for d in interpreter.get_input_details()],
        [d["name"] for d in interpreter.get_output_details()],
    )


def _signature_outputs(data, samples):
    """Outputs of the serving_default signature runner, one sample at a time."""
    interpreter = _interpreter(data)
    runner = interpreter.get_signature_runner("serving_default")
    (input_name,) = runner.get_input_details()
    results = [runner(**{input_name: sample[None]}) for sample in samples]
    return {key: np.concatenate([r[key] for r in results]) for key in results[0]}


def _names(data):
    model = flatbuffer.read_model(data)
    return {
        (s, t): flatbuffer.tensor_name(tensor)
        for s, subgraph in enumerate(model.subgraphs)
        for t, tensor in enumerate(subgraph.tensors)
    }


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


def _assert_accounted(export_report, data):
    parts = export_report.file
    assert parts.file_bytes == len(data)
    assert parts.tensor_bytes + parts.metadata_bytes + parts.overhead_bytes == len(data)
    assert 0 <= parts.name_bytes < parts.overhead_bytes
    as_dict = export_report.to_dict()
    assert sum(t["total_bytes"] for t in as_dict["tensors"]) + as_dict["metadata_bytes"] + as_dict[
        "overhead_bytes"
    ] == len(data)


def test_docstring_examples():
    assert doctest.testmod(names).failed == 0


@pytest.mark.parametrize("length, expected", [(0, 8), (3, 8), (4, 12), (7, 12), (8, 16)])
def test_a_string_takes_its_length_prefix_characters_terminator_and_padding(length, expected):
    assert names.string_bytes(length) == expected


def test_drop_names_keeps_io_names_and_outputs_and_empties_the_rest():
    model = small_model("conv2d")
    data = exporter.convert_float(model)
    dropped_data, dropped = names.drop_names(data)
    before, after = _names(data), _names(dropped_data)
    io = names.named_tensors(flatbuffer.read_model(data))
    assert io == {(0, 0), (0, len(before) - 1)}  # the converter's input first, output last
    assert {key: after[key] for key in io} == {key: before[key] for key in io}
    assert all(after[key] == "" for key in after if key not in io)
    assert dropped.dropped == len(before) - len(io) and dropped.kept == len(io)
    assert dropped.bytes_after == len(dropped_data) < dropped.bytes_before == len(data)
    # Against the same writer, the name strings go (and each tensor's offset to its name),
    # less up to 15 bytes of padding that the 16-byte aligned buffers may take where they
    # moved to.
    same_writer = len(flatbuffer.write_model(flatbuffer.read_model(data)))
    saved = sum(names.string_bytes(len(before[k].encode())) for k in before if k not in io)
    assert same_writer - dropped.bytes_after > saved - flatbuffer.BUFFER_ALIGNMENT
    assert _io_names(dropped_data) == _io_names(data)
    assert {d["name"] for d in _interpreter(dropped_data).get_tensor_details()} >= {""}
    samples = _samples(model)
    with_names, without = (
        _signature_outputs(data, samples),
        _signature_outputs(dropped_data, samples),
    )
    assert with_names.keys() == without.keys() == {"head"}
    np.testing.assert_array_equal(without["head"], with_names["head"])
    # The accounting of the file: every byte, and the names left are the inputs' and outputs'.
    parts = report.account(dropped_data)
    assert parts.tensor_bytes + parts.metadata_bytes + parts.overhead_bytes == len(dropped_data)
    assert parts.name_bytes == sum(names.string_bytes(len(before[k].encode())) for k in io)
    assert report.account(data).name_bytes == sum(
        names.string_bytes(len(name.encode())) for name in before.values()
    )


def test_every_subgraph_keeps_its_input_and_output_names():
    inputs = keras.Input((5, 3), name="sequence")
    hidden = keras.layers.GRU(4, name="gru")(inputs)  # a WHILE loop: three subgraphs
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
    data, _ = conversion.convert_float_any_batch(model)
    parsed = flatbuffer.read_model(data)
    assert len(parsed.subgraphs) > 1
    dropped_data, dropped = names.drop_names(data)
    before, after = _names(data), _names(dropped_data)
    io = names.named_tensors(parsed)
    for index, subgraph in enumerate(parsed.subgraphs):
        assert {(index, int(t)) for t in [*subgraph.inputs, *subgraph.outputs]} <= io
    assert {key: after[key] for key in io} == {key: before[key] for key in io}
    assert dropped.dropped == sum(1 for key in after if key not in io and before[key])
    samples = np.random.default_rng(0).standard_normal((1, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        verify.run(dropped_data, [samples], runtime=verify.Runtime.BUILTIN)[0],
        verify.run(data, [samples], runtime=verify.Runtime.BUILTIN)[0],
    )


@pytest.mark.parametrize("value", ["none", "IO", None, True])
def test_a_bad_tensor_names_value_is_refused_naming_the_allowed_ones(tmp_path, value):
    path = tmp_path / "m.tflite"
    with pytest.raises(
        exporter.ExportError,
        match=r"Expected tensor_names in \['keep', 'io'\]; received: tensor_names=",
    ):
        exporter.export(small_model("dense"), str(path), tensor_names=value)
    assert not path.exists()


@pytest.mark.parametrize(
    "options",
    [{}, {"representative_data": "samples"}],
    ids=["float32", "full_int8"],
)
def test_litert_export_without_names_is_smaller_verified_and_accounted(tmp_path, options):
    model = _compressed()
    samples = _samples(model, count=32)
    options = {k: samples if v == "samples" else v for k, v in options.items()}
    kept_path, io_path = str(tmp_path / "keep.tflite"), str(tmp_path / "io.tflite")
    kept = exporter.export(model, kept_path, **options)
    dropped = exporter.export(model, io_path, tensor_names="io", **options)
    kept_data, io_data = _read(kept_path), _read(io_path)
    assert not any("tensor_names" in note for note in kept.notes)
    assert all(c.passed for c in dropped.checks)
    _assert_accounted(kept, kept_data)
    _assert_accounted(dropped, io_data)
    # Same weights, encodings and stored bytes; only the names' bytes differ.
    assert [(w.label, w.encoding, w.stored_bytes) for w in dropped.weights] == [
        (w.label, w.encoding, w.stored_bytes) for w in kept.weights
    ]
    assert dropped.file.tensor_bytes == kept.file.tensor_bytes
    assert dropped.file_bytes < kept.file_bytes
    (note,) = [n for n in dropped.notes if n.startswith("tensor_names='io'")]
    saved = kept.file_bytes - dropped.file_bytes
    assert f"{saved:,} B smaller than with every name ({kept.file_bytes:,} B)" in note
    # Users find the inputs and outputs by the same names; nothing else is named.
    assert _io_names(io_data) == _io_names(kept_data)
    io = names.named_tensors(flatbuffer.read_model(io_data))
    assert all(name == "" for key, name in _names(io_data).items() if key not in io)
    assert all(_names(io_data)[key] for key in io)
    # And they compute the same.
    with_names, without = (
        _signature_outputs(kept_data, samples),
        _signature_outputs(io_data, samples),
    )
    np.testing.assert_array_equal(without["head"], with_names["head"])
    assert "tensor names:" in dropped.format()


@pytest.mark.parametrize("target", ["tflm", "tflm_int8"])
def test_tflite_micro_export_without_names_is_verified_and_accounted(tmp_path, target):
    pytest.importorskip(
        "tflite_micro",
        reason="needs tflite-micro, the optional [tflm] extra: pip install -e '.[tflm]'",
    )
    model = small_model("dense")
    kernel = model.get_layer("target").kernel
    kernel.assign(on_levels(kernel.numpy(), 3))  # 8 distinct values: 3-bit LUT indices
    samples = _samples(model, count=16)
    kept_path, io_path = str(tmp_path / "keep.tflite"), str(tmp_path / "io.tflite")
    kept = exporter.export(model, kept_path, target=target, representative_data=samples)
    dropped = exporter.export(
        model, io_path, target=target, representative_data=samples, tensor_names="io"
    )
    io_data = _read(io_path)
    assert all(c.passed for c in dropped.checks)
    assert [(w.label, w.encoding, w.stored_bytes) for w in dropped.weights] == [
        (w.label, w.encoding, w.stored_bytes) for w in kept.weights
    ]
    # tflm_int8: the int8 kernel of this small model is smaller as it is than as a LUT.
    expected_luts = ["target"] if target == "tflm" else []
    assert [t.label for t in dropped.lut] == [t.label for t in kept.lut] == expected_luts
    _assert_accounted(dropped, io_data)
    assert os.path.getsize(io_path) == dropped.file_bytes < kept.file_bytes
    saved = kept.file_bytes - dropped.file_bytes
    assert f"{saved:,} B smaller than with every name ({kept.file_bytes:,} B)" in dropped.notes[-1]
    io = names.named_tensors(flatbuffer.read_model(io_data))
    assert all(name == "" for key, name in _names(io_data).items() if key not in io)
    # TFLite Micro files hold the custom DECODE operator: LiteRT cannot load them, so the
    # names are compared in the flatbuffer.
    kept_names = _names(_read(kept_path))
    assert io and all(_names(io_data)[key] == kept_names[key] for key in io)
