"""Byte accounting of files: every byte in exactly one part."""

import numpy as np
import pytest

from tflite_export import exporter, flatbuffer, report
from tflite_export.testing import small_model

_schema = flatbuffer.schema


@pytest.fixture(scope="module")
def float_file():
    return exporter.convert_float(small_model("depthwise"))


def test_constant_values_are_all_buffer_bytes(float_file):
    parts = report.account(float_file)
    parsed = flatbuffer.read_model(float_file)
    tensor_buffers = {t.buffer for t in parsed.subgraphs[0].tensors}
    expected = sum(
        len(b.data)
        for i, b in enumerate(parsed.buffers)
        if i in tensor_buffers and b.data is not None
    )
    assert sum(t.value_bytes for t in parts.tensors) == expected
    assert all(t.index_bytes == 0 and t.quantization_bytes == 0 for t in parts.tensors)
    assert parts.metadata_bytes > 0  # the converter's runtime-version and conversion metadata
    assert parts.tensor_bytes + parts.metadata_bytes + parts.overhead_bytes == len(float_file)
    assert 0 < parts.overhead_bytes < len(float_file)


def test_a_shared_buffer_is_counted_once(float_file):
    model = flatbuffer.read_model(float_file)
    subgraph = model.subgraphs[0]
    source = next(t for t in subgraph.tensors if model.buffers[t.buffer].data is not None)
    copy = _schema.TensorT()
    copy.name, copy.shape, copy.type, copy.buffer = "copy", source.shape, source.type, source.buffer
    subgraph.tensors.append(copy)
    data = flatbuffer.write_model(model)
    parts = report.account(data)
    assert not any(t.name == "copy" for t in parts.tensors)
    assert parts.tensor_bytes + parts.metadata_bytes + parts.overhead_bytes == len(data)


def test_quantization_parameters_are_counted(float_file):
    model = flatbuffer.read_model(float_file)
    editor = flatbuffer.ModelEditor(model)
    quantization = _schema.QuantizationParametersT()
    quantization.scale = np.ones(3, np.float32)
    quantization.zeroPoint = np.zeros(3, np.int64)
    editor.add_tensor(0, "q", (3, 2), _schema.TensorType.INT8, np.zeros(6, np.int8), quantization)
    parts = report.account(flatbuffer.write_model(editor.finish()))
    row = next(t for t in parts.tensors if t.name == "q")
    assert (row.value_bytes, row.quantization_bytes, row.storage) == (6, 3 * 12, "int8")


def test_gzip_size_is_deterministic():
    data = bytes(range(256)) * 8
    assert report.gzip_size(data) == report.gzip_size(data) < len(data)
