"""Where a Keras weight's values sit in a converted file, found from the values themselves.

The TFLite converter stores a Keras weight as a constant tensor in the layout the operator
reading it wants: transposed (a Dense kernel is stored output-major), reshaped (an EinsumDense
or MultiHeadAttention kernel becomes a matrix, a DepthwiseConv2D kernel gets a unit axis), or
split (an LSTM's kernel into one matrix per gate for UNIDIRECTIONAL_SEQUENCE_LSTM, a ConvLSTM2D
kernel into one convolution per gate). Rather than a table per layer type, :func:`find_layouts`
searches every transform that only moves values: a contiguous slice along one axis (a gate),
then a permutation of the axes, then a row-major reshape to the tensor's shape. A weight is
found where its values are, whatever layer holds it. With ``folded=True`` a tensor may also hold
the weight times one constant, as when the converter folds MultiHeadAttention's
``1/sqrt(key_dim)`` into the query kernel, or times a 0/1 mask, as LocallyConnected2D with
``implementation=2`` multiplies its kernel. Pure numpy; nothing here knows Keras.

What the converter of TensorFlow 2.21 does, as these searches find it (``u``: units, ``f``:
filters; tested in ``tflite_export/layer_types_test.py``):

===============================================  ==========================  ======================
Keras weight (Keras shape)                       TFLite operator (operand)   layout found
===============================================  ==========================  ======================
Dense, TimeDistributed(Dense) kernel (in, out)   FULLY_CONNECTED (1)         transpose (1, 0)
Conv1D kernel (k, in, out)                       CONV_2D (1)                 transpose (2, 0, 1),
                                                                             reshape to out x 1 x
                                                                             k x in
Conv2D kernel (kh, kw, in, out)                  CONV_2D (1)                 transpose (3, 0, 1, 2)
Conv3D kernel                                    CONV_3D (1)                 as is
DepthwiseConv1D/2D depthwise_kernel              DEPTHWISE_CONV_2D (1)       reshape to 1 x [1 x]
(k[, k], in, m)                                                              k x k x in*m
SeparableConv1D/2D depthwise_kernel,             DEPTHWISE_CONV_2D (1),      as DepthwiseConv,
pointwise_kernel (1[, 1], in*m, out)             CONV_2D (1)                 transpose to out first
Conv1DTranspose kernel (k, out, in)              TRANSPOSE_CONV (1)          transpose (1, 0, 2),
                                                                             reshape (unit axis)
Conv2DTranspose kernel (kh, kw, out, in)         TRANSPOSE_CONV (1)          transpose (2, 0, 1, 3)
Conv3DTranspose kernel                           CONV_3D_TRANSPOSE (1)       as is
Embedding embeddings (vocab, dim)                GATHER (0)                  as is
LocallyConnected1D/2D kernel (implementation 1)  BATCH_MATMUL (1)            as is
LocallyConnected2D kernel (implementation 2)     FULLY_CONNECTED (1)         masked, transpose,
                                                                             reshape
EinsumDense kernel, MultiHeadAttention query/    FULLY_CONNECTED (1)         transpose, reshape to
key/value/attention_output kernels                                           a matrix
LSTM kernel (in, 4u), recurrent_kernel (u, 4u)   UNIDIRECTIONAL_SEQUENCE_    slice [:, g*u:(g+1)*u]
(also in Bidirectional)                          LSTM (1-4, 5-8)             per gate (i, f, c, o),
                                                                             transpose (1, 0)
LSTM with a mask, RNN(LSTMCell), GRU, SimpleRNN  FULLY_CONNECTED (1) in a    transpose (1, 0);
kernels and recurrent kernels                    WHILE body                  GRU(reset_after=
                                                                             False)'s recurrent
                                                                             kernel sliced
                                                                             [:, :2u], [:, 2u:]
ConvLSTM1D/2D kernel, recurrent_kernel           CONV_2D (1) in a WHILE      slice per gate, then
(k[, k], in, 4f)                                 body                        as Conv1D/Conv2D
===============================================  ==========================  ======================

Example:
  >>> kernel = np.arange(6, dtype=np.float32).reshape(2, 3)   # a Dense kernel (in=2, out=3)
  >>> [layout.describe() for layout in find_layouts(kernel, kernel.T)]
  ['transpose (1, 0)']
  >>> gates = np.arange(16, dtype=np.float32).reshape(2, 8)   # two gates of 4 units
  >>> [layout.describe() for layout in find_layouts(gates, gates[:, 4:].T)]
  ['slice [:, 4:8], transpose (1, 0)']
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator

import numpy as np

__all__ = ["Layout", "find_layouts"]

# Permutations of more axes than this (not counting unit axes) are not searched: 7! = 5,040
# transposes of one weight is more than a Keras kernel ever needs.
_MAX_PERMUTED_AXES = 6


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a tensor of the file is made from a Keras weight.

    ``values[slice]`` (all of it when ``axis`` is None), transposed by ``permutation``, reshaped
    (row-major) to ``shape``, times ``scale``.

    Attributes:
      keras_shape: the Keras weight's shape.
      shape: the tensor's shape.
      permutation: the axes of the (sliced) weight in the order the tensor reads them.
      axis: the axis sliced, or ``None`` for the whole weight.
      start: first index of the slice on ``axis``.
      stop: end of the slice on ``axis``.
      scale: the constant the converter multiplied the weight by (1.0: none); such a tensor
        equals the scaled weight to float32 rounding, not bit for bit.
      masked: the converter multiplied the weight by a 0/1 mask: the tensor's nonzeros are the
        weight's, some of the weight's nonzeros are zeros in the tensor (:meth:`apply` gives
        the unmasked values).
    """

    keras_shape: tuple[int, ...]
    shape: tuple[int, ...]
    permutation: tuple[int, ...]
    axis: int | None = None
    start: int = 0
    stop: int = 0
    scale: float = 1.0
    masked: bool = False

    @property
    def whole(self) -> bool:
        """Whether the tensor holds the whole weight (no slice)."""
        return self.axis is None

    @property
    def folded(self) -> bool:
        """Whether the converter changed the values (a scale or a mask), not only moved them."""
        return self.scale != 1.0 or self.masked

    @property
    def region(self) -> tuple[int | None, int, int]:
        """``(axis, start, stop)`` of the part of the weight held; ``(None, 0, 0)`` for all."""
        return (self.axis, self.start, self.stop)

    @property
    def index(self) -> str:
        """The slice in numpy notation (``[:, 5:10]``), empty for the whole weight."""
        if self.axis is None:
            return ""
        parts = [":"] * len(self.keras_shape)
        parts[self.axis] = f"{self.start}:{self.stop}"
        return "[" + ", ".join(parts) + "]"

    def apply(self, values: np.ndarray) -> np.ndarray:
        """The tensor's values made from the Keras weight's ``values``."""
        values = np.asarray(values)
        if self.axis is not None:
            index = [slice(None)] * values.ndim
            index[self.axis] = slice(self.start, self.stop)
            values = values[tuple(index)]
        values = values.transpose(self.permutation).reshape(self.shape)
        return values if self.scale == 1.0 else values * np.float32(self.scale)

    def describe(self) -> str:
        """The steps, e.g. ``slice [:, 0:5], transpose (1, 0)``, or ``as is``."""
        steps = []
        if self.axis is not None:
            steps.append(f"slice {self.index}")
        sliced = list(self.keras_shape)
        if self.axis is not None:
            sliced[self.axis] = self.stop - self.start
        # Unit axes move freely: only the order of the others is a transpose.
        order = [axis for axis in self.permutation if sliced[axis] != 1]
        if order != sorted(order):
            steps.append(f"transpose {tuple(self.permutation)}")
        permuted = tuple(sliced[axis] for axis in self.permutation)
        if permuted != tuple(self.shape):
            steps.append("reshape to " + "x".join(map(str, self.shape)))
        if self.scale != 1.0:
            steps.append(f"scaled by {self.scale:.6g} (folded by the converter)")
        if self.masked:
            steps.append("masked (the converter zeroed some weights)")
        return ", ".join(steps) or "as is"


def _regions(keras_shape: tuple[int, ...], size: int) -> Iterator[tuple[int | None, int, int]]:
    """The whole weight when it has ``size`` values, else every contiguous slice along one
    axis that does, starting at multiples of ``gcd(slice length, axis length)`` (gates)."""
    total = math.prod(keras_shape)
    if total == size:
        yield (None, 0, 0)
        return
    if size == 0 or size > total:
        return
    for axis, length in enumerate(keras_shape):
        rest = total // length
        if size % rest:
            continue
        span = size // rest
        if not 0 < span < length:
            continue
        step = math.gcd(span, length)
        for start in range(0, length - span + 1, step):
            yield (axis, start, start + span)


def _permutations(shape: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    """Axis orders that give different row-major orders, the identity first: unit axes go
    first (where they sit changes no order), the others in every order."""
    units = [axis for axis, length in enumerate(shape) if length == 1]
    others = [axis for axis, length in enumerate(shape) if length != 1]
    if len(others) > _MAX_PERMUTED_AXES:
        yield tuple(range(len(shape)))
        return
    for order in itertools.permutations(others):
        yield (*units, *order)


def _scale_of(part_sorted: np.ndarray, ordered: np.ndarray) -> float | None:
    """The positive constant ``c`` with ``ordered ~ c * part_sorted`` (to float32 rounding),
    or ``None``."""
    top = float(np.max(np.abs(ordered), initial=0.0))
    base = float(np.max(np.abs(part_sorted), initial=0.0))
    if top == 0.0 or base == 0.0:
        return None
    scale = top / base
    close = np.abs(ordered.astype(np.float64) - scale * part_sorted) <= _SCALED_RTOL * top
    return scale if bool(np.all(close)) else None


# How far a scaled tensor's values may be from scale * weight, relative to its largest value:
# a few float32 roundings.
_SCALED_RTOL = 1e-6
# A masked match needs this many nonzeros in the tensor, each equal to the weight's value there.
_MIN_MASKED_NONZEROS = 8


def _within_mask(part_sorted: np.ndarray, ordered: np.ndarray) -> bool:
    """Whether the tensor's nonzero values (``ordered``, sorted) are some of the weight's
    nonzero values (``part_sorted``), each used at most as often as the weight has it."""
    kept = ordered[ordered != 0]
    if kept.size < _MIN_MASKED_NONZEROS or kept.size > np.count_nonzero(part_sorted):
        return False
    values, counts = np.unique(part_sorted[part_sorted != 0], return_counts=True)
    wanted, wanted_counts = np.unique(kept, return_counts=True)
    where = np.searchsorted(values, wanted)
    if np.any(where >= values.size) or not np.array_equal(values[where], wanted):
        return False
    return bool(np.all(wanted_counts <= counts[where]))


def find_layouts(
    keras_values: np.ndarray,
    tensor_values: np.ndarray,
    tolerance: np.ndarray | float = 0.0,
    *,
    folded: bool = False,
) -> list[Layout]:
    """Every part of ``keras_values`` the tensor holds, with the layout it holds it in.

    A part is the whole weight or a contiguous slice along one axis; for each part, the first
    axis order (identity first) whose values equal the tensor's. Parts are tried only when
    their sorted values agree with the tensor's (a permutation keeps the values), so the
    search costs one sort per part of the right size.

    Args:
      keras_values: the Keras weight.
      tensor_values: the tensor's values (dense, float).
      tolerance: how far each tensor value may be from the weight's (0: bit for bit); an array
        broadcastable to the tensor's shape (e.g. half an int8 step per channel).
      folded: also find parts the tensor holds times a positive constant (to float32
        rounding) or times a 0/1 mask (exact float tolerances only), where no part matches as
        it is.

    Returns:
      The layouts, whole weight first, then slices by axis and start; empty when none holds.
    """
    keras_values = np.asarray(keras_values)
    tensor_values = np.asarray(tensor_values)
    tolerance = np.asarray(tolerance, np.float64)
    exact = not np.any(tolerance)
    widest = float(np.max(tolerance)) if tolerance.size else 0.0
    if tensor_values.size == 0:
        return []
    ordered = None
    nonzeros = int(np.count_nonzero(tensor_values))
    low, high = float(np.min(tensor_values)), float(np.max(tensor_values))
    found = []
    rescaled = []
    for axis, start, stop in _regions(keras_values.shape, tensor_values.size):
        part = keras_values
        if axis is not None:
            index = [slice(None)] * keras_values.ndim
            index[axis] = slice(start, stop)
            part = keras_values[tuple(index)]
        # Cheap tests first: most parts of the right size hold other values.
        part_nonzeros = int(np.count_nonzero(part))
        as_is = (
            (not exact or part_nonzeros == nonzeros)
            and abs(float(np.min(part)) - low) <= widest
            and abs(float(np.max(part)) - high) <= widest
        )
        changed = folded and (
            part_nonzeros == nonzeros
            or (exact and part_nonzeros > nonzeros >= _MIN_MASKED_NONZEROS)
        )
        if not (as_is or changed):
            continue
        if ordered is None:
            ordered = np.sort(tensor_values, axis=None)
        # Sorting is 1-Lipschitz in the max norm: values within `widest` stay so when sorted.
        part_sorted = np.sort(part, axis=None)
        if exact:
            same_values = np.array_equal(part_sorted, ordered)
        else:
            difference = np.abs(part_sorted.astype(np.float64) - ordered)
            same_values = float(np.max(difference, initial=0.0)) <= widest
        scale, masked = 1.0, False
        if not same_values:
            scale = _scale_of(part_sorted, ordered) if folded else None
            if scale is None:
                masked = folded and exact and _within_mask(part_sorted, ordered)
                if not masked:
                    continue
                scale = 1.0
        kept = tensor_values != 0
        for permutation in _permutations(part.shape):
            candidate = part.transpose(permutation).reshape(tensor_values.shape)
            if masked:
                same = np.array_equal(candidate[kept], tensor_values[kept])
            elif scale != 1.0:
                bound = _SCALED_RTOL * float(np.max(np.abs(ordered))) + tolerance
                same = bool(
                    np.all(np.abs(tensor_values - scale * candidate.astype(np.float64)) <= bound)
                )
            elif exact:
                same = np.array_equal(candidate, tensor_values)
            else:
                same = bool(
                    np.all(np.abs(tensor_values.astype(np.float64) - candidate) <= tolerance)
                )
            if same:
                layout = Layout(
                    tuple(keras_values.shape),
                    tuple(tensor_values.shape),
                    permutation,
                    axis,
                    start,
                    stop,
                    scale,
                    masked,
                )
                (rescaled if layout.folded else found).append(layout)
                break
    return found or rescaled
