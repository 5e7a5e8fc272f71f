"""Measurements in :mod:`bench.combined` shared by every run: nonzeros and distinct values per
layer, the ``.tflite`` files (bytes, gzip bytes, accuracy in LiteRT) and the paper-style storage
of a converted int8 file."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import tf_admm
import tflite_export
from recipes import reporting
from tf_admm.compat import keras, tf
from tflite_export import flatbuffer
from tflite_export.exporter import converter_for
from tflite_export.keras_weights import SUPPORTED_LAYERS
from tflite_export.report import gzip_size

__all__ = ["converter_default", "files", "model_facts", "storage_from_tflite"]


def _distinct_nonzero(values: np.ndarray) -> int:
    return int(np.unique(values[values != 0]).size)


def model_facts(model: keras.Model, plans) -> dict[str, Any]:
    """Nonzeros and distinct nonzero values per layer of a plain model."""
    names = {p.name for p in plans}
    nonzeros, distinct = {}, {}
    for layer in model.layers:
        if layer.name in names:
            kernel = layer.kernel.numpy()
            nonzeros[layer.name] = int(np.count_nonzero(kernel))
            distinct[layer.name] = _distinct_nonzero(kernel)
    return {"nonzeros": nonzeros, "distinct_values": distinct}


def converter_default(model: keras.Model) -> bytes:
    """The plain TFLite converter with ``Optimize.DEFAULT``, as tfmot's guides use it."""
    converter = converter_for(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def files(work_dir: str, stem: str, model: keras.Model, test_ds) -> dict[str, Any]:
    """The converter's and tflite_export's files of ``model`` (written under
    ``<work_dir>/tflite``): bytes, gzip bytes, accuracy."""
    directory = os.path.join(work_dir, "tflite")
    os.makedirs(directory, exist_ok=True)
    files: dict[str, Any] = {}
    data = converter_default(model)
    path = os.path.join(directory, f"{stem}_converter_default.tflite")
    _write(path, data)
    files["converter_default"] = {
        "path": path,
        "file_bytes": len(data),
        "gzip_bytes": gzip_size(data),
        "accuracy": reporting.litert_accuracy(data, test_ds)[0],
        "data": data,  # Removed before JSON; PCQAT's storage is read from it.
    }
    path = os.path.join(directory, f"{stem}_tflite_export.tflite")
    try:
        report = tflite_export.export(model, path)
    except Exception as error:  # A third-party model it may not accept: record why.
        files["tflite_export"] = {"error": f"{type(error).__name__}: {error}"[:2000]}
        print(f"  tflite_export.export of {stem} failed: {files['tflite_export']['error'][:200]}")
        return files
    with open(path, "rb") as f:
        exported = f.read()
    files["tflite_export"] = {
        "path": path,
        "file_bytes": report.file_bytes,
        "gzip_bytes": report.gzip_bytes,
        "float_file_bytes": report.float_file_bytes,
        "float_gzip_bytes": report.float_gzip_bytes,
        "accuracy": reporting.litert_accuracy(exported, test_ds)[0],
        "encodings": {w.label: w.encoding.value for w in report.weights},
    }
    if not report.weights:
        # A QAT model's kernels reach the converter through fake-quant ops, not as constants.
        files["tflite_export"]["note"] = "no weight tensors found: nothing was encoded"
    return files


_CODE_OPERATORS = {
    flatbuffer.schema.BuiltinOperator.FULLY_CONNECTED,
    flatbuffer.schema.BuiltinOperator.CONV_2D,
    flatbuffer.schema.BuiltinOperator.DEPTHWISE_CONV_2D,
}


def _keras_layout(layer: keras.layers.Layer, values: np.ndarray) -> np.ndarray | None:
    """A weight tensor in TFLite's layout put back in ``layer``'s kernel layout (None: no fit)."""
    entry = SUPPORTED_LAYERS.get(type(layer))
    if entry is None:
        return None
    attribute, to_tflite = entry
    shape = tuple(getattr(layer, attribute).shape)
    order = to_tflite(np.arange(int(np.prod(shape))).reshape(shape))
    if tuple(order.shape) != tuple(values.shape):
        return None
    kernel = np.empty(int(np.prod(shape)), values.dtype)
    kernel[order.reshape(-1)] = values.reshape(-1)
    return kernel.reshape(shape)


def storage_from_tflite(
    data: bytes, reference: keras.Model, names
) -> tuple[tf_admm.storage.StorageReport, dict[str, int]]:
    """Paper-style storage of the quantized weight tensors of a converted (int8) file.

    Each FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D weight is matched to the layer of
    ``reference`` (same architecture) whose kernel has its shape, and counted from its stored
    integer codes in Keras order: ``b = bits_for_levels(distinct nonzero codes)`` per value, a
    codebook of the distinct codes (8 bits each, unless ``b`` is 8) plus one 32-bit scale per
    tensor or channel; sparse or dense, whichever is smaller.

    Args:
      data: the ``.tflite`` bytes.
      reference: a plain Keras model of the same architecture.
      names: the layers to account for.

    Returns:
      The report and the distinct nonzero codes per layer.

    Raises:
      ValueError: if a layer has no tensor of its shape or several.
    """
    model = flatbuffer.read_model(data)
    candidates: dict[tuple[int, ...], list[tuple[Any, np.ndarray]]] = {}
    for index, subgraph in enumerate(model.subgraphs):
        for operator in subgraph.operators:
            if flatbuffer.builtin_code(model, operator) not in _CODE_OPERATORS:
                continue
            tensor_index = operator.inputs[1]
            tensor = subgraph.tensors[tensor_index]
            codes = flatbuffer.decode_tensor(model, index, tensor_index)
            candidates.setdefault(tuple(codes.shape), []).append((tensor, codes))
    layers, distinct = [], {}
    for name in names:
        layer = reference.get_layer(name)
        matches = []
        for tensors in candidates.values():
            for tensor, codes in tensors:
                kernel = _keras_layout(layer, codes)
                if kernel is not None:
                    matches.append((tensor, kernel))
        if len(matches) != 1:
            raise ValueError(
                f"Expected one weight tensor of layer {name!r}'s shape in the file; "
                f"received: {len(matches)}"
            )
        tensor, kernel = matches[0]
        quantization = tensor.quantization
        scales = len(quantization.scale) if quantization and quantization.scale is not None else 0
        count = _distinct_nonzero(kernel)
        distinct[name] = count
        bits = tf_admm.storage.bits_for_levels(max(count, 1))
        if not np.issubdtype(kernel.dtype, np.integer):
            bits = tf_admm.storage.BASELINE_BITS  # A float tensor: stored as it is.
        table = count * 8 if bits < 8 else 0
        options = [
            tf_admm.storage.layer_storage(
                name,
                weights=kernel,
                bits_per_value=bits,
                codebook_bits=table + tf_admm.storage.BASELINE_BITS * scales,
                sparse=sparse,
            )
            for sparse in (True, False)
        ]
        layers.append(min(options, key=lambda option: option.total_bits))
    return tf_admm.storage.storage_report(layers), distinct
