"""Which tensors of a converted file are weights, and which Keras weight each one is.

A *weight tensor* is a constant FLOAT32 operand (INT8 in a full-integer file) in the weight slot
of a FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, CONV_3D or TRANSPOSE_CONV operator. The
converter renames and re-lays out Keras kernels, so a tensor is matched to a Keras weight by
content: the Keras kernel put in the operator's layout must equal the tensor bit for bit (an
INT8 tensor: within half a quantization step of each value). Tensors that match no Keras
weight (the converter folded something into them) keep their TFLite name and are still encoded,
since every encoding is checked in the interpreter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from tf_admm.compat import keras
from tflite_export import flatbuffer

__all__ = [
    "SUPPORTED_LAYERS",
    "Consumer",
    "WeightTensor",
    "consumers",
    "find_weight_tensors",
    "is_full_integer",
    "keras_kernels",
    "keras_layers",
]

_schema = flatbuffer.schema
_OPS = _schema.BuiltinOperator


@dataclasses.dataclass(frozen=True)
class _Operands:
    """Operand positions of an operator with weights, and the weights' output-channel axis."""

    input: int
    weight: int
    bias: int
    channel_axis: int  # in TFLite's layout of the weight


_OPERANDS = {
    _OPS.FULLY_CONNECTED: _Operands(input=0, weight=1, bias=2, channel_axis=0),
    _OPS.CONV_2D: _Operands(input=0, weight=1, bias=2, channel_axis=0),
    _OPS.DEPTHWISE_CONV_2D: _Operands(input=0, weight=1, bias=2, channel_axis=3),
    _OPS.CONV_3D: _Operands(input=0, weight=1, bias=2, channel_axis=4),
    _OPS.TRANSPOSE_CONV: _Operands(input=2, weight=1, bias=3, channel_axis=0),
}
_OP_NAMES = {value: name for name, value in vars(_OPS).items() if not name.startswith("_")}


def _dense(kernel: np.ndarray) -> np.ndarray:
    return kernel.T


def _conv1d(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(2, 0, 1)[:, None]


def _conv2d(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(3, 0, 1, 2)


def _depthwise(kernel: np.ndarray) -> np.ndarray:
    return kernel.reshape(1, kernel.shape[0], kernel.shape[1], -1)


# Exact layer class -> (weight attribute, Keras layout -> TFLite layout). Exact classes only:
# DepthwiseConv2D subclasses Conv2D but keeps another weight in another layout.
SUPPORTED_LAYERS: dict[type, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    keras.layers.Dense: ("kernel", _dense),
    keras.layers.Conv1D: ("kernel", _conv1d),
    keras.layers.Conv2D: ("kernel", _conv2d),
    keras.layers.DepthwiseConv2D: ("depthwise_kernel", _depthwise),
}


@dataclasses.dataclass(frozen=True)
class WeightTensor:
    """A weight tensor of the converted file and the Keras weight it holds, if found.

    Attributes:
      subgraph: subgraph index.
      tensor: tensor index in the subgraph.
      tensor_name: the tensor's name in the file.
      shape: its shape (TFLite layout).
      operator: name of the operator that consumes it as weights.
      channel_axis: output-channel axis in the TFLite layout (for per-channel scales).
      layer: Keras layer name, or ``None`` when no Keras weight matched.
      weight: Keras weight attribute (``kernel``, ``depthwise_kernel``), or ``None``.
      layer_type: Keras layer class name, or ``None``.
    """

    subgraph: int
    tensor: int
    tensor_name: str
    shape: tuple[int, ...]
    operator: str
    channel_axis: int
    layer: str | None = None
    weight: str | None = None
    layer_type: str | None = None

    @property
    def label(self) -> str:
        """The Keras layer name (each supported layer has one weight tensor), else the tensor's."""
        return self.tensor_name if self.layer is None else self.layer


def _close(values: np.ndarray, allowed: np.ndarray, expected: np.ndarray) -> bool:
    if not np.any(allowed):
        return bool(np.array_equal(values, expected))
    return bool(np.all(np.abs(values.astype(np.float64) - expected) <= allowed))


def keras_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of ``model``, nested models flattened, in model order."""
    found = []

    def walk(layer):
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                walk(inner)
        else:
            found.append(layer)

    walk(model)
    return found


def keras_kernels(model: keras.Model) -> dict[str, np.ndarray]:
    """Layer name -> the kernel of every supported layer, in TFLite's layout."""
    kernels = {}
    for layer in keras_layers(model):
        entry = SUPPORTED_LAYERS.get(type(layer))
        if entry is not None and layer.built:
            attribute, to_tflite = entry
            kernels[layer.name] = to_tflite(np.asarray(getattr(layer, attribute).numpy()))
    return kernels


def is_full_integer(model) -> bool:
    """Whether an operator of the parsed file reads INT8 or INT4 weights (constant or not)."""
    integer_types = (_schema.TensorType.INT8, _schema.TensorType.INT4)
    for subgraph in model.subgraphs or []:
        for operator in subgraph.operators or []:
            operands = _OPERANDS.get(flatbuffer.builtin_code(model, operator))
            if operands is None or operator.inputs is None:
                continue
            if len(operator.inputs) > operands.weight and operator.inputs[operands.weight] >= 0:
                tensor = subgraph.tensors[int(operator.inputs[operands.weight])]
                if tensor.type in integer_types:
                    return True
    return False


def _constant_weight(model, subgraph, tensor_index: int, quantized: bool) -> bool:
    tensor = subgraph.tensors[tensor_index]
    data = model.buffers[tensor.buffer].data
    if quantized:
        quantization = tensor.quantization
        type_ok = (
            tensor.type == _schema.TensorType.INT8
            and quantization is not None
            and quantization.scale is not None
            and len(quantization.scale) > 0
        )
    else:
        type_ok = tensor.type == _schema.TensorType.FLOAT32
    return type_ok and tensor.sparsity is None and data is not None and len(data) > 0


def find_weight_tensors(
    model, keras_model: keras.Model | None = None, *, quantized: bool = False
) -> list[WeightTensor]:
    """Weight tensors of a parsed ``ModelT``, matched to ``keras_model``'s weights when given.

    Each tensor appears once even when several operators read it.

    Args:
      model: the parsed file.
      keras_model: the model it was converted from, to name the tensors by layer.
      quantized: look for the INT8 weights of a full-integer file instead of FLOAT32 ones.
    """
    found: dict[tuple[int, int], WeightTensor] = {}
    for subgraph_index, subgraph in enumerate(model.subgraphs or []):
        for operator in subgraph.operators or []:
            code = flatbuffer.builtin_code(model, operator)
            if code not in _OPERANDS:
                continue
            operand, axis = _OPERANDS[code].weight, _OPERANDS[code].channel_axis
            if operator.inputs is None or len(operator.inputs) <= operand:
                continue
            tensor_index = int(operator.inputs[operand])
            key = (subgraph_index, tensor_index)
            if tensor_index < 0 or key in found:
                continue
            if not _constant_weight(model, subgraph, tensor_index, quantized):
                continue
            tensor = subgraph.tensors[tensor_index]
            found[key] = WeightTensor(
                subgraph=subgraph_index,
                tensor=tensor_index,
                tensor_name=flatbuffer.tensor_name(tensor),
                shape=tuple(int(d) for d in tensor.shape),
                operator=_OP_NAMES.get(code, str(code)),
                channel_axis=axis,
            )
    tensors = list(found.values())
    if keras_model is None:
        return tensors
    return _match(model, tensors, keras_model)


@dataclasses.dataclass(frozen=True)
class Consumer:
    """An operator that reads a weight tensor as its weights.

    Attributes:
      operator: operator index in the subgraph.
      input: index of its activation input tensor.
      bias: index of its bias tensor, or ``None`` when it has none.
    """

    operator: int
    input: int
    bias: int | None


def consumers(model, subgraph_index: int, tensor_index: int) -> list[Consumer]:
    """Every operator of the subgraph reading ``tensor_index`` in its weight slot."""
    found = []
    subgraph = model.subgraphs[subgraph_index]
    for op_index, operator in enumerate(subgraph.operators or []):
        operands = _OPERANDS.get(flatbuffer.builtin_code(model, operator))
        inputs = [] if operator.inputs is None else [int(i) for i in operator.inputs]
        if operands is None or len(inputs) <= operands.weight:
            continue
        if inputs[operands.weight] != tensor_index:
            continue
        bias = inputs[operands.bias] if len(inputs) > operands.bias else -1
        found.append(Consumer(op_index, inputs[operands.input], bias if bias >= 0 else None))
    return found


def _float_values(model, weight: WeightTensor) -> tuple[np.ndarray, np.ndarray]:
    """The tensor's float values and, per value, how far a matching Keras weight may be."""
    values = flatbuffer.decode_tensor(model, weight.subgraph, weight.tensor)
    tensor = model.subgraphs[weight.subgraph].tensors[weight.tensor]
    if tensor.type == _schema.TensorType.FLOAT32:
        return values, np.zeros((), np.float32)
    dequantized = flatbuffer.dequantize(tensor, values)
    scale = np.asarray(tensor.quantization.scale, np.float32)
    if scale.size > 1:
        shape = [1] * values.ndim
        shape[int(tensor.quantization.quantizedDimension)] = -1
        scale = scale.reshape(shape)
    # Half a step from rounding, and a little for the float arithmetic of the scale.
    return dequantized, 0.5 * scale * (1 + 1e-3) + 1e-7


def _match(model, tensors: list[WeightTensor], keras_model: keras.Model) -> list[WeightTensor]:
    values = {(w.subgraph, w.tensor): _float_values(model, w) for w in tensors}
    matched: dict[tuple[int, int], WeightTensor] = {}
    for layer in keras_layers(keras_model):
        entry = SUPPORTED_LAYERS.get(type(layer))
        if entry is None or not layer.built:
            continue
        attribute, to_tflite = entry
        expected = to_tflite(np.asarray(getattr(layer, attribute).numpy(), np.float32))
        candidates = [
            w
            for w in tensors
            if (w.subgraph, w.tensor) not in matched
            and w.shape == expected.shape
            and _close(*values[(w.subgraph, w.tensor)], expected)
        ]
        if not candidates:
            continue
        # Identical kernels (e.g. all zeros) are told apart by the layer name in the tensor name.
        named = [w for w in candidates if f"/{layer.name}/" in f"/{w.tensor_name}/"]
        chosen = (named or candidates)[0]
        matched[(chosen.subgraph, chosen.tensor)] = dataclasses.replace(
            chosen, layer=layer.name, weight=attribute, layer_type=type(layer).__name__
        )
    return [matched.get((w.subgraph, w.tensor), w) for w in tensors]
