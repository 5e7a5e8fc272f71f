"""Which tensors of a converted file are weights, and which Keras weight each one is.

A *weight tensor* is a constant FLOAT32 operand (INT8 in a full-integer file) in the weight slot
of a FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, CONV_3D or TRANSPOSE_CONV operator: the
operators whose weights every target re-encodes. With ``any_operator=True`` (LiteRT files with
float32 compute, whose decode operators feed any operator a float tensor) also the weight
operands of CONV_3D_TRANSPOSE, BATCH_MATMUL, GATHER, EMBEDDING_LOOKUP and the LSTM and RNN
sequence operators, and any other constant that holds a Keras weight.

The converter renames, re-lays out and splits Keras weights, so a tensor is matched to a Keras
weight by content, whatever the layer type: :func:`tflite_export.layouts.find_layouts` finds the
slice, transpose and reshape that make the tensor from the weight, bit for bit (an INT8 tensor:
within half a quantization step of each value). Every weight of rank 2 or more other than a bias
is looked for (:func:`tflite_export.keras_weights.kernel_weights`). Tensors that match no Keras
weight (the converter folded something into them) keep their TFLite name and are still encoded,
since every encoding is checked in the interpreter; Keras weights found in no weight tensor are
listed, with the reason, by :func:`skipped_weights`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np

from tf_admm.compat import keras
from tflite_export import flatbuffer
from tflite_export.keras_weights import keras_layers, kernel_weights
from tflite_export.layouts import Layout, find_layouts

__all__ = [
    "Consumer",
    "SkippedWeight",
    "WeightTensor",
    "consumers",
    "find_weight_tensors",
    "is_full_integer",
    "skipped_weights",
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

# LiteRT files with float32 compute (any_operator=True): operator -> (weight operand, output
# channel axis in TFLite's layout, negative from the end) for every weight operand. The kernels
# above, then the operators whose constant operands hold Keras weights as they are or sliced
# per gate (operand numbers from TFLite's kernels: LSTM inputs 1-4 input-to-gate and 5-8
# recurrent-to-gate weights, 16 the projection; RNN inputs 1 and 2).
_LSTM_WEIGHTS = tuple((slot, 0) for slot in (1, 2, 3, 4, 5, 6, 7, 8, 16))
_FLOAT_WEIGHT_OPERANDS: dict[int, tuple[tuple[int, int], ...]] = {
    **{code: ((operands.weight, operands.channel_axis),) for code, operands in _OPERANDS.items()},
    _OPS.CONV_3D_TRANSPOSE: ((1, 3),),
    _OPS.BATCH_MATMUL: ((1, -1),),
    _OPS.GATHER: ((0, 0),),
    _OPS.EMBEDDING_LOOKUP: ((1, 0),),
    _OPS.UNIDIRECTIONAL_SEQUENCE_LSTM: _LSTM_WEIGHTS,
    _OPS.LSTM: _LSTM_WEIGHTS,
    _OPS.UNIDIRECTIONAL_SEQUENCE_RNN: ((1, 0), (2, 0)),
    _OPS.RNN: ((1, 0), (2, 0)),
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
      weight: Keras weight name (``kernel``, ``depthwise_kernel``, ``recurrent_kernel``; the
        variable path inside the layer for nested ones, e.g. ``query/kernel`` of a
        MultiHeadAttention, ``forward_lstm/kernel`` of a Bidirectional), or ``None``.
      layer_type: Keras layer class name, or ``None``.
      layout: how the tensor is made from the Keras weight
        (:meth:`~tflite_export.layouts.Layout.describe`), or ``None``.
      part: ``(axis, start, stop)`` of the Keras weight the tensor holds (one gate of an LSTM
        kernel), ``(None, 0, 0)`` for all of it; ``None`` when unmatched.
      name: the label when the layer has more than one weight tensor: ``layer.weight``, with
        the slice for a part (``lstm.kernel[:, 0:16]``); ``None`` otherwise.
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
    layout: str | None = None
    part: tuple[int | None, int, int] | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        """The Keras layer name when it has one weight tensor, else ``layer.weight[slice]``;
        the tensor's name when no Keras weight matched."""
        if self.layer is None:
            return self.tensor_name
        return self.name or self.layer


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


def _is_constant_float(model, tensor) -> bool:
    data = model.buffers[tensor.buffer].data
    return (
        tensor.type == _schema.TensorType.FLOAT32
        and tensor.sparsity is None
        and data is not None
        and len(data) > 0
    )


def find_weight_tensors(
    model,
    keras_model: keras.Model | None = None,
    *,
    quantized: bool = False,
    any_operator: bool = False,
) -> list[WeightTensor]:
    """Weight tensors of a parsed ``ModelT``, matched to ``keras_model``'s weights when given.

    Each tensor appears once even when several operators read it.

    Args:
      model: the parsed file.
      keras_model: the model it was converted from, to name the tensors by layer.
      quantized: look for the INT8 weights of a full-integer file instead of FLOAT32 ones.
      any_operator: float32 weights of every operator that has them, and any other constant
        that holds a Keras weight of ``keras_model`` (LiteRT files with float32 compute);
        otherwise the weights of the kernel operators only (what every target re-encodes).
    """
    if quantized and any_operator:
        raise ValueError("Expected any_operator only for float32 weights; received: quantized")
    found: dict[tuple[int, int], WeightTensor] = {}
    for subgraph_index, subgraph in enumerate(model.subgraphs or []):
        for operator in subgraph.operators or []:
            code = flatbuffer.builtin_code(model, operator)
            if any_operator:
                slots = _FLOAT_WEIGHT_OPERANDS.get(code, ())
            elif code in _OPERANDS:
                slots = ((_OPERANDS[code].weight, _OPERANDS[code].channel_axis),)
            else:
                continue
            for operand, axis in slots:
                if operator.inputs is None or len(operator.inputs) <= operand:
                    continue
                tensor_index = int(operator.inputs[operand])
                key = (subgraph_index, tensor_index)
                if tensor_index < 0 or key in found:
                    continue
                if not _constant_weight(model, subgraph, tensor_index, quantized):
                    continue
                tensor = subgraph.tensors[tensor_index]
                shape = tuple(int(d) for d in tensor.shape)
                found[key] = WeightTensor(
                    subgraph=subgraph_index,
                    tensor=tensor_index,
                    tensor_name=flatbuffer.tensor_name(tensor),
                    shape=shape,
                    operator=_OP_NAMES.get(code, str(code)),
                    channel_axis=axis % len(shape) if shape else 0,
                )
    tensors = list(found.values())
    if keras_model is None:
        return tensors
    extra = _other_constants(model, found) if any_operator else []
    # A weight the converter scaled (MultiHeadAttention's query) or masked (LocallyConnected2D,
    # implementation=2) is named, not matched bit for bit: only float files, whose encodings
    # take the tensor's own values, name such tensors.
    matched = _match(model, tensors + extra, keras_model, folded=any_operator)
    kept = {(w.subgraph, w.tensor) for w in extra if w.layer is None}
    return [w for w in matched if (w.subgraph, w.tensor) not in kept]


def _other_constants(model, weights: dict[tuple[int, int], WeightTensor]) -> list[WeightTensor]:
    """Constant float32 operands of rank 2 or more outside the weight operands, that vary (a
    constant zero state, say, holds no weight), each named after its first reader; channel
    axis 0."""
    found = []
    seen = set(weights)
    for subgraph_index, subgraph in enumerate(model.subgraphs or []):
        for operator in subgraph.operators or []:
            for tensor_index in [] if operator.inputs is None else operator.inputs:
                key = (subgraph_index, int(tensor_index))
                if tensor_index < 0 or key in seen:
                    continue
                seen.add(key)
                tensor = subgraph.tensors[int(tensor_index)]
                # Kernel-like weights have two axes or more, and so do the tensors holding them.
                if not _is_constant_float(model, tensor) or len(tensor.shape) < 2:
                    continue
                values = flatbuffer.decode_tensor(model, subgraph_index, int(tensor_index))
                if values.size < 2 or np.ptp(values) == 0:
                    continue
                code = flatbuffer.builtin_code(model, operator)
                found.append(
                    WeightTensor(
                        subgraph=subgraph_index,
                        tensor=int(tensor_index),
                        tensor_name=flatbuffer.tensor_name(tensor),
                        shape=tuple(int(d) for d in tensor.shape),
                        operator=_OP_NAMES.get(code, str(code)),
                        channel_axis=0,
                    )
                )
    return found


def _key(weight: WeightTensor) -> tuple[int, int]:
    return (weight.subgraph, weight.tensor)


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


def _locate(
    expected: np.ndarray,
    tensors: Sequence[WeightTensor],
    values: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]],
    folded: bool = False,
) -> list[tuple[WeightTensor, Layout]]:
    """Every ``(tensor, layout)`` where a tensor holds ``expected`` or a slice of it (times a
    constant or a mask, if ``folded``)."""
    hits = []
    for weight in tensors:
        size = int(np.prod(weight.shape, dtype=np.int64))
        if size == 0 or size > expected.size:
            continue
        tensor_values, allowed = values[_key(weight)]
        for layout in find_layouts(expected, tensor_values, allowed, folded=folded):
            hits.append((weight, layout))
    return hits


def _choose(
    hits: list[tuple[WeightTensor, Layout]], layer_name: str
) -> list[tuple[WeightTensor, Layout]]:
    """One tensor for the whole weight, else one per slice along the axis most slices are
    found on, without overlaps. Identical candidates (e.g. all-zero kernels) are told apart
    by the layer name in the tensor name."""

    def unnamed(weight: WeightTensor) -> bool:
        return f"/{layer_name}/" not in f"/{weight.tensor_name}/"

    # Values as they are before values the converter changed (scaled, masked).
    exact = [hit for hit in hits if not hit[1].folded]
    hits = exact or hits
    whole = [hit for hit in hits if hit[1].whole]
    if whole:
        return [sorted(whole, key=lambda hit: unnamed(hit[0]))[0]]
    by_axis: dict[int, list[tuple[WeightTensor, Layout]]] = collections.defaultdict(list)
    for hit in hits:
        by_axis[hit[1].axis].append(hit)
    if not by_axis:
        return []
    axis = max(by_axis, key=lambda a: (len({hit[1].region for hit in by_axis[a]}), -a))
    chosen: list[tuple[WeightTensor, Layout]] = []
    for weight, layout in sorted(by_axis[axis], key=lambda h: (h[1].start, unnamed(h[0]))):
        if any(_key(weight) == _key(w) for w, _ in chosen):
            continue
        if any(layout.start < other.stop and other.start < layout.stop for _, other in chosen):
            continue
        chosen.append((weight, layout))
    return chosen


def _match(
    model, tensors: list[WeightTensor], keras_model: keras.Model, folded: bool = False
) -> list[WeightTensor]:
    values = {_key(w): _float_values(model, w) for w in tensors}
    matched: dict[tuple[int, int], WeightTensor] = {}
    for layer in keras_layers(keras_model):
        named = kernel_weights(layer)
        found = []
        for name, variable in named:
            expected = np.asarray(variable.numpy(), np.float32)
            free = [w for w in tensors if _key(w) not in matched]
            hits = _locate(expected, free, values, folded)
            for weight, layout in _choose(hits, layer.name):
                found.append((weight, name, layout))
                matched[_key(weight)] = weight
        single = len(named) == 1 and len(found) == 1 and found[0][2].whole
        for weight, name, layout in found:
            matched[_key(weight)] = dataclasses.replace(
                weight,
                layer=layer.name,
                weight=name,
                layer_type=type(layer).__name__,
                layout=layout.describe(),
                part=layout.region,
                name=None if single else f"{layer.name}.{name}{layout.index}",
            )
    return [matched.get(_key(w), w) for w in tensors]


@dataclasses.dataclass(frozen=True)
class SkippedWeight:
    """A Keras weight (or part of one) that no weight tensor of the file holds, and why.

    Attributes:
      layer: Keras layer name.
      layer_type: Keras layer class name.
      weight: the weight's name (as :attr:`WeightTensor.weight`).
      shape: its Keras shape.
      reason: why the file stores it as the converter wrote it, or not at all.
    """

    layer: str
    layer_type: str
    weight: str
    shape: tuple[int, ...]
    reason: str

    @property
    def label(self) -> str:
        """``layer.weight``."""
        return f"{self.layer}.{self.weight}"

    def to_dict(self) -> dict:
        """The fields for JSON (``shape`` as a list)."""
        return {**dataclasses.asdict(self), "shape": list(self.shape)}


def _constants(model, quantized: bool) -> list[WeightTensor]:
    """Every constant tensor read by an operator (float32, or INT8 with a scale)."""
    found: dict[tuple[int, int], WeightTensor] = {}
    for subgraph_index, subgraph in enumerate(model.subgraphs or []):
        for operator in subgraph.operators or []:
            code = flatbuffer.builtin_code(model, operator)
            for tensor_index in [] if operator.inputs is None else operator.inputs:
                key = (subgraph_index, int(tensor_index))
                if tensor_index < 0 or key in found:
                    continue
                if not _constant_weight(model, subgraph, int(tensor_index), quantized):
                    continue
                tensor = subgraph.tensors[int(tensor_index)]
                found[key] = WeightTensor(
                    subgraph=subgraph_index,
                    tensor=int(tensor_index),
                    tensor_name=flatbuffer.tensor_name(tensor),
                    shape=tuple(int(d) for d in tensor.shape),
                    operator=_OP_NAMES.get(code, str(code)),
                    channel_axis=0,
                )
    return list(found.values())


def _readers(model, weight: WeightTensor) -> list[str]:
    subgraph = model.subgraphs[weight.subgraph]
    names = []
    for operator in subgraph.operators or []:
        if operator.inputs is not None and weight.tensor in [int(i) for i in operator.inputs]:
            name = _OP_NAMES.get(flatbuffer.builtin_code(model, operator), "?")
            if name not in names:
                names.append(name)
    return names


def skipped_weights(
    model, keras_model: keras.Model, weights: Sequence[WeightTensor], *, quantized: bool = False
) -> list[SkippedWeight]:
    """Every compressible Keras weight (:func:`tflite_export.keras_weights.kernel_weights`) of
    ``keras_model``, or part of one, that none of ``weights`` (the file's matched weight
    tensors) holds, and why.

    Args:
      model: the parsed file.
      keras_model: the model it was converted from.
      weights: the weight tensors the target re-encodes, matched (:func:`find_weight_tensors`).
      quantized: a full-integer file (its constants are INT8).
    """
    covered: dict[tuple[str, str], list[tuple[int | None, int, int]]] = collections.defaultdict(
        list
    )
    for weight in weights:
        if weight.layer is not None and weight.part is not None:
            covered[(weight.layer, weight.weight)].append(weight.part)
    constants = None
    values: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    encoded = {_key(w) for w in weights}
    skipped = []
    for layer in keras_layers(keras_model):
        for name, variable in kernel_weights(layer):
            parts = covered.get((layer.name, name), [])
            shape = tuple(int(d) for d in variable.shape)
            if any(axis is None for axis, _, _ in parts):
                continue
            if parts:
                axis = parts[0][0]
                held = sum(stop - start for _, start, stop in parts)
                if held >= shape[axis]:
                    continue
                spans = ", ".join(f"{start}:{stop}" for _, start, stop in sorted(parts))
                reason = (
                    f"only slices {spans} of axis {axis} are in weight tensors; the rest is in "
                    "none (the converter changed or dropped it)"
                )
            else:
                if constants is None:
                    constants = _constants(model, quantized)
                    values = {_key(w): _float_values(model, w) for w in constants}
                expected = np.asarray(variable.numpy(), np.float32)
                hits = [
                    (w, layout)
                    for w, layout in _locate(expected, constants, values)
                    if _key(w) not in encoded
                ]
                if hits:
                    holder = hits[0][0]
                    readers = ", ".join(_readers(model, holder)) or "no operator"
                    reason = (
                        f"held as the converter wrote it by tensor {holder.tensor_name!r} "
                        f"(read by {readers}): not a weight operand this target re-encodes"
                    )
                else:
                    reason = (
                        "in no constant tensor of the file: the converter folded it into "
                        "another constant (e.g. a BatchNormalization into a kernel), computes "
                        "it at run time, or dropped it"
                    )
            skipped.append(SkippedWeight(layer.name, type(layer).__name__, name, shape, reason))
    return skipped
