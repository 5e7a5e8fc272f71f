"""Reading, editing and writing flatbuffers: round trips, alignment, decode chains."""

import numpy as np
import pytest

from tflite_export import encodings, exporter, flatbuffer
from tflite_export.testing import prune, small_model

_schema = flatbuffer.schema


@pytest.fixture(scope="module")
def float_file():
    return exporter.convert_float(small_model("conv2d"))


def _constants(model):
    subgraph = model.subgraphs[0]
    return {
        flatbuffer.tensor_name(t): flatbuffer.decode_tensor(model, 0, i)
        for i, t in enumerate(subgraph.tensors)
        if model.buffers[t.buffer].data is not None
    }


def _data_offsets(data):
    raw = _schema.Model.GetRootAs(data, 0)
    offsets = []
    for index in range(raw.BuffersLength()):
        buffer = raw.Buffers(index)
        if buffer.DataLength():
            offsets.append(buffer.DataAsNumpy().__array_interface__["data"][0])
    return offsets


def test_rewriting_keeps_every_constant(float_file):
    before = flatbuffer.read_model(float_file)
    after = flatbuffer.read_model(flatbuffer.write_model(flatbuffer.read_model(float_file)))
    old, new = _constants(before), _constants(after)
    assert old.keys() == new.keys() and old
    for name in old:
        np.testing.assert_array_equal(old[name], new[name])


def test_buffer_data_is_16_byte_aligned(float_file):
    data = bytearray(flatbuffer.write_model(flatbuffer.read_model(float_file)))
    array = np.frombuffer(data, np.uint8)
    base = array.__array_interface__["data"][0]
    offsets = [offset - base for offset in _data_offsets(array)]
    assert offsets and all(offset % flatbuffer.BUFFER_ALIGNMENT == 0 for offset in offsets)


def test_released_constant_loses_its_buffer_and_indices_stay(float_file):
    model = flatbuffer.read_model(float_file)
    buffers = len(model.buffers)
    names = [flatbuffer.tensor_name(t) for t in model.subgraphs[0].tensors]
    weight = next(i for i, n in enumerate(names) if n.endswith("target/Conv2D"))
    editor = flatbuffer.ModelEditor(model)
    editor.release_constant(0, weight)
    rewritten = flatbuffer.read_model(flatbuffer.write_model(editor.finish()))
    assert len(rewritten.buffers) == buffers - 1
    assert [flatbuffer.tensor_name(t) for t in rewritten.subgraphs[0].tensors] == names
    with pytest.raises(ValueError, match="no data and no producer"):
        flatbuffer.decode_tensor(rewritten, 0, weight)


def test_decode_follows_densify_and_dequantize(float_file):
    model = flatbuffer.read_model(float_file)
    editor = flatbuffer.ModelEditor(model)
    codes = prune(np.arange(-12, 12, dtype=np.float32).reshape(4, 6), 8).astype(np.int8)
    layout = encodings.best_sparse_layout(codes != 0, 1)
    quantization = _schema.QuantizationParametersT()
    quantization.scale = np.array([0.5], np.float32)
    quantization.zeroPoint = np.array([0], np.int64)
    sparse = editor.add_tensor(
        0,
        "sparse",
        codes.shape,
        _schema.TensorType.INT8,
        codes.reshape(-1)[layout.positions],
        sparsity=flatbuffer.sparsity_parameters(layout),
    )
    dense = editor.add_tensor(0, "dense", codes.shape, _schema.TensorType.INT8, None, quantization)
    out = editor.add_tensor(0, "out", codes.shape, _schema.TensorType.FLOAT32)
    editor.add_operator(0, _schema.BuiltinOperator.DENSIFY, 1, [sparse], [dense])
    editor.add_operator(0, _schema.BuiltinOperator.DEQUANTIZE, 2, [dense], [out])
    rewritten = flatbuffer.read_model(flatbuffer.write_model(editor.finish()))
    np.testing.assert_array_equal(flatbuffer.decode_tensor(rewritten, 0, sparse), codes)
    np.testing.assert_array_equal(
        flatbuffer.decode_tensor(rewritten, 0, out), codes.astype(np.float32) * 0.5
    )
    # Decode operators run first, in the order added.
    first = rewritten.subgraphs[0].operators[:2]
    assert [flatbuffer.builtin_code(rewritten, op) for op in first] == [
        _schema.BuiltinOperator.DENSIFY,
        _schema.BuiltinOperator.DEQUANTIZE,
    ]


def test_int4_constant_decodes_to_its_codes(float_file):
    model = flatbuffer.read_model(float_file)
    editor = flatbuffer.ModelEditor(model)
    codes = np.array([[-8, 7, 0], [1, -1, 3]])
    index = editor.add_tensor(
        0, "int4", codes.shape, _schema.TensorType.INT4, encodings.pack_int4(codes)
    )
    rewritten = flatbuffer.read_model(flatbuffer.write_model(editor.finish()))
    np.testing.assert_array_equal(flatbuffer.decode_tensor(rewritten, 0, index), codes)


def test_opcodes_are_shared_by_code_and_version(float_file):
    editor = flatbuffer.ModelEditor(flatbuffer.read_model(float_file))
    first = editor.opcode(_schema.BuiltinOperator.DEQUANTIZE, 2)
    assert editor.opcode(_schema.BuiltinOperator.DEQUANTIZE, 2) == first
    assert editor.opcode(_schema.BuiltinOperator.DEQUANTIZE, 5) != first


def test_not_a_tflite_file_is_refused():
    with pytest.raises(ValueError, match="TFLite flatbuffer"):
        flatbuffer.read_model(b"\x00" * 32)
