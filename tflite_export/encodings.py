"""How one weight tensor is stored: pure numpy, no TensorFlow and no flatbuffers.

Two independent ideas, combined by the exporter:

* **Integer codes on uniform levels.** A tensor whose nonzero values are all integer multiples
  ``c * q`` of one step ``q`` (per tensor, or one ``q`` per output channel) is stored as the
  integer codes ``c`` with ``q`` as the TFLite quantization scale and zero point 0. Decoding is
  ``float32(c) * q`` rounded once to float32, which is how tf_admm builds its levels, so the
  decoded weights are the trained ones bit for bit (:func:`fit_uniform_levels` checks that).
  The codes take the narrowest signed type that holds them: INT4, INT8 or INT16.
* **A sparse layout.** TFLite's ``SparsityParameters`` describe a tensor level by level, in a
  traversal order (here always the identity, no blocks): a level is either DENSE (every
  coordinate ``0 .. dense_size-1``) or SPARSE_CSR (a ``segments`` array of ``parents + 1``
  offsets into an ``indices`` array listing the coordinates that have a nonzero below them).
  :func:`best_sparse_layout` tries every DENSE/CSR pattern over the dimensions and keeps the one
  with the fewest bytes, index arrays in the narrowest unsigned type (uint8, uint16 or int32).

Example:
  >>> w = np.array([[0.0, 0.5, 0.0], [-1.0, 0.0, 0.0]], np.float32)
  >>> fit = fit_uniform_levels(w)
  >>> float(fit.scale), fit.codes.tolist(), fit.exact
  (0.5, [[0, 1, 0], [-2, 0, 0]], True)
  >>> layout = sparse_layout(w != 0, ("dense", "csr"))
  >>> [s.tolist() if s is not None else None for s in layout.segments]
  [None, [0, 1, 2]]
  >>> [i.tolist() if i is not None else None for i in layout.indices]
  [None, [1, 0]]
  >>> w.reshape(-1)[layout.positions].tolist()
  [0.5, -1.0]
"""

from __future__ import annotations

import dataclasses
import enum
import itertools

import numpy as np

from tf_admm import grid

__all__ = [
    "CodeType",
    "DimFormat",
    "Encoding",
    "SparseLayout",
    "UniformFit",
    "best_sparse_layout",
    "code_type",
    "decode_codes",
    "densify",
    "float16_error",
    "fit_uniform_levels",
    "index_dtype",
    "pack_int4",
    "quantize_symmetric_int8",
    "sparse_layout",
    "storage_type",
    "unpack_int4",
]

_MAX_PATTERNS_RANK = 6


class Encoding(str, enum.Enum):
    """How the exporter stores one weight tensor.

    LiteRT, float32 compute (weight-only encodings, expanded once when the interpreter prepares
    the model):

    ``FLOAT32``: dense float32, as the converter writes it (the baseline).
    ``SPARSE_FLOAT32``: the nonzeros as float32 in TFLite's sparse format, expanded by a
    DENSIFY operator. Exact.
    ``LEVELS``: integer codes (INT4, INT8 or INT16) with the level step as quantization scale
    and zero point 0, expanded by DEQUANTIZE. Exact; only for weights on uniform levels.
    ``SPARSE_LEVELS``: the nonzero codes as INT8 in the sparse format, DENSIFY then DEQUANTIZE.
    Exact; only for weights on uniform levels with codes in INT8.
    ``FLOAT16``: dense float16, expanded by DEQUANTIZE. Exact only when every weight is a
    float16 value (e.g. k-means centroids rounded to float16); otherwise lossy and used only
    when asked for.
    ``SPARSE_FLOAT16``: the nonzeros as float16 in the sparse format, DENSIFY then DEQUANTIZE.
    Exact under the same condition as ``FLOAT16``.
    ``INT8``: symmetric per-channel INT8, step ``max|w| / 127`` (TFLite's dynamic-range weight
    quantization), expanded by DEQUANTIZE. Lossy: never chosen unless asked for.
    ``SPARSE_INT8``: the same INT8 codes in the sparse format, DENSIFY then DEQUANTIZE. Lossy.
    ``SPARSE_BLOCKS``: a FULLY_CONNECTED filter whose zeros are whole 1x4 blocks, as float32
    in the schema's block layout, read by the FULLY_CONNECTED kernel itself (no DENSIFY;
    :mod:`tflite_export.blocks`). Exact, but the XNNPACK delegate (LiteRT's default) reads
    such a filter as dense and fails verification: only when asked for, never by "auto".

    Full-integer files (LiteRT with int8 activations, ``tflm_int8``), where the kernels read
    INT8 weights themselves:

    ``INT8``: the converter's per-channel INT8 weights, as it wrote them (the baseline).
    ``SPARSE_INT8``: the converter's INT8 codes in the sparse format, expanded by DENSIFY.
    ``LEVELS``: the level indices themselves as INT8 or INT4 codes, with the level step as the
    weight scale (biases rescaled to match): exact weights.
    ``SPARSE_LEVELS``: the level indices as sparse INT8, expanded by DENSIFY. Exact weights.

    TFLite Micro only:

    ``LUT``: bit-packed indices into value tables (one per tensor or per channel) in TFLite
    Micro's DECODE format (:mod:`tflite_export.lut`), expanded by the ``TFLM_DECODE``
    operator. Exact: the decoded weights are the file's uncompressed weights.
    """

    FLOAT32 = "float32"
    SPARSE_FLOAT32 = "sparse_float32"
    LEVELS = "levels"
    SPARSE_LEVELS = "sparse_levels"
    FLOAT16 = "float16"
    SPARSE_FLOAT16 = "sparse_float16"
    INT8 = "int8"
    SPARSE_INT8 = "sparse_int8"
    LUT = "lut"
    SPARSE_BLOCKS = "sparse_blocks"

    @property
    def exact(self) -> bool:
        """Whether it stores any weights exactly (float16: only float16 values)."""
        return self not in (
            Encoding.INT8,
            Encoding.SPARSE_INT8,
            Encoding.FLOAT16,
            Encoding.SPARSE_FLOAT16,
        )

    @property
    def sparse(self) -> bool:
        """Whether it stores the nonzeros only (TFLite's sparse format)."""
        return self.value.startswith("sparse_")

    @property
    def litert(self) -> bool:
        """Whether the LiteRT target can write it."""
        return self is not Encoding.LUT


class CodeType(str, enum.Enum):
    """Signed integer type of the stored codes; values are TFLite ``TensorType`` names."""

    INT4 = "int4"
    INT8 = "int8"
    INT16 = "int16"

    @property
    def bits(self) -> int:
        """Bits per code: 4, 8 or 16."""
        return {"int4": 4, "int8": 8, "int16": 16}[self.value]

    @property
    def limits(self) -> tuple[int, int]:
        """Smallest and largest code the type holds, e.g. ``(-128, 127)`` for INT8."""
        half = 2 ** (self.bits - 1)
        return -half, half - 1

    def stored_bytes(self, count: int) -> int:
        """Bytes of ``count`` codes (INT4 packs two per byte)."""
        return (count * self.bits + 7) // 8


class DimFormat(str, enum.Enum):
    """Storage of one level of a sparse tensor (TFLite ``DimensionType``)."""

    DENSE = "dense"
    CSR = "csr"


@dataclasses.dataclass(frozen=True, eq=False)
class UniformFit:
    """Integer codes on uniform levels: ``values == float32(codes) * scale`` (along ``axis``).

    The file stores ``codes + zero_point`` in ``code_type``; the zero point is 0 unless the
    codes span the type's width without fitting its symmetric range, e.g. 8-bit levels
    ``-127 .. +128`` stored as INT8 with zero point -1.

    Attributes:
      scale: float32 step ``q``; shape ``()`` per tensor, ``(channels,)`` per channel.
      axis: the channel axis of a per-channel scale, else ``None``.
      codes: int32 codes, the shape of the values (0 where the value is 0).
      code_type: narrowest signed type holding every stored code.
      max_error: largest ``|decoded - values|`` (0.0 when exact).
      zero_point: added to every code when stored.
    """

    scale: np.ndarray
    axis: int | None
    codes: np.ndarray
    code_type: CodeType
    max_error: float
    zero_point: int = 0

    @property
    def exact(self) -> bool:
        """Whether the codes decode to the values exactly (``max_error == 0.0``)."""
        return self.max_error == 0.0

    @property
    def stored(self) -> np.ndarray:
        """The codes as stored: ``codes + zero_point``, int32."""
        return self.codes + self.zero_point

    def decode(self) -> np.ndarray:
        """The float32 values the codes stand for, as TFLite's DEQUANTIZE computes them."""
        return decode_codes(self.codes, self.scale, self.axis)


def decode_codes(codes: np.ndarray, scale: np.ndarray, axis: int | None) -> np.ndarray:
    """``float32(codes) * scale`` with one rounding to float32, per tensor or along ``axis``.

    TFLite computes ``static_cast<float>(double(scale) * (code - zero_point))``: the exact
    product of a float32 and a small integer fits a double, so one rounding happens, as in a
    float32 multiply.
    """
    codes = np.asarray(codes)
    scale = np.asarray(scale, np.float32)
    if axis is not None:
        shape = [1] * codes.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    return (codes.astype(np.float64) * scale.astype(np.float64)).astype(np.float32)


def code_type(codes: np.ndarray) -> CodeType | None:
    """Narrowest of INT4, INT8, INT16 holding every code with zero point 0, or ``None``."""
    found = storage_type(codes)
    return found[0] if found is not None and found[1] == 0 else None


def storage_type(codes: np.ndarray) -> tuple[CodeType, int] | None:
    """Narrowest type and zero point (closest to 0) that store every code, or ``None``.

    Example:
      >>> storage_type(np.array([-3, 7]))
      (<CodeType.INT4: 'int4'>, 0)
      >>> storage_type(np.array([-127, 128]))
      (<CodeType.INT8: 'int8'>, -1)
    """
    codes = np.asarray(codes)
    low = int(codes.min(initial=0))
    high = int(codes.max(initial=0))
    for kind in CodeType:
        lo, hi = kind.limits
        if high - low > hi - lo:
            continue
        # zero_point in [lo - low, hi - high], the value nearest 0.
        return kind, int(np.clip(0, lo - low, hi - high))
    return None


def fit_uniform_levels(
    values: np.ndarray, axis: int | None = None, *, rtol: float = 1e-6
) -> UniformFit | None:
    """Integer codes and step(s) for weights on uniform levels ``{c * q}``, if they are.

    Zeros stay code 0. The step is searched among the smallest magnitude and the smallest gap
    between magnitudes, each divided by 1..16, so a layer that never uses ``±q`` itself is
    still found. A fit whose decoded values miss the
    given ones by more than ``rtol`` of their largest magnitude is no fit.

    Args:
      values: float array.
      axis: fit one step per slice along this axis (per-channel levels) instead of one step.
      rtol: largest accepted decoding error relative to ``max|values|``.

    Returns:
      A :class:`UniformFit` (check ``exact``), or ``None`` when the values are not on uniform
      levels or the codes do not fit INT16 (with a zero point).
    """
    values = np.asarray(values, np.float32)
    if axis is None:
        fit = grid.fit_step(values.reshape(-1))
        if fit is None:
            return None
        codes, scale, error = fit[0].reshape(values.shape), np.asarray(fit[1], np.float32), fit[2]
    else:
        axis = axis % values.ndim
        moved = np.moveaxis(values, axis, 0)
        rows, scales, error = [], [], 0.0
        for row in moved.reshape(moved.shape[0], -1):
            fit = grid.fit_step(row)
            if fit is None:
                return None
            rows.append(fit[0])
            scales.append(fit[1])
            error = max(error, fit[2])
        codes = np.moveaxis(np.stack(rows).reshape(moved.shape), 0, axis)
        scale = np.asarray(scales, np.float32)
    storage = storage_type(codes)
    magnitude = float(np.max(np.abs(values), initial=0.0))
    if storage is None or error > rtol * magnitude:
        return None
    return UniformFit(scale, axis, codes.astype(np.int32), storage[0], error, storage[1])


def quantize_symmetric_int8(values: np.ndarray, axis: int | None) -> UniformFit:
    """Lossy symmetric INT8 (codes -127..127, step ``max|w| / 127``), per tensor or channel.

    This is TFLite's dynamic-range weight quantization; the error is reported in the fit.
    """
    values = np.asarray(values, np.float32)
    if axis is None:
        peak = np.asarray(np.max(np.abs(values), initial=0.0), np.float64)
        shaped = peak
    else:
        axis = axis % values.ndim
        reduce = tuple(i for i in range(values.ndim) if i != axis)
        peak = np.max(np.abs(values), axis=reduce).astype(np.float64)
        shape = [1] * values.ndim
        shape[axis] = -1
        shaped = peak.reshape(shape)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    shaped_scale = np.where(shaped > 0, shaped / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(values / shaped_scale), -127, 127).astype(np.int32)
    decoded = decode_codes(codes, scale, axis)
    error = float(np.max(np.abs(decoded.astype(np.float64) - values), initial=0.0))
    return UniformFit(scale, axis, codes, CodeType.INT8, error)


def float16_error(values: np.ndarray) -> float:
    """Largest ``|float32(float16(w)) - w|``: 0.0 when every value is a float16 value.

    Example:
      >>> float16_error(np.array([0.5, -1.25], np.float32))
      0.0
      >>> float16_error(np.array([0.1], np.float32)) > 0
      True
    """
    values = np.asarray(values, np.float32)
    with np.errstate(over="ignore"):
        rounded = values.astype(np.float16).astype(np.float32)
    diff = np.abs(rounded.astype(np.float64) - values)
    if diff.size and not np.all(np.isfinite(diff)):
        return float("inf")
    return float(np.max(diff, initial=0.0))


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """INT4 codes in TFLite's packing: two per byte, the first in the low nibble."""
    flat = np.asarray(codes).reshape(-1).astype(np.int8)
    if flat.size and (flat.min() < -8 or flat.max() > 7):
        raise ValueError(
            f"Expected INT4 codes in [-8, 7]; received: range=[{flat.min()}, {flat.max()}]"
        )
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, np.int8)])
    nibbles = flat.view(np.uint8) & 0x0F
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`pack_int4`: ``count`` int8 codes."""
    packed = np.asarray(packed, np.uint8)
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=1).reshape(-1)[:count]
    return np.where(nibbles >= 8, nibbles.astype(np.int16) - 16, nibbles).astype(np.int8)


def index_dtype(array: np.ndarray) -> np.dtype:
    """Narrowest index type TFLite accepts for a segments/indices array: uint8, uint16, int32."""
    high = int(np.max(array, initial=0))
    if high < 2**8:
        return np.dtype(np.uint8)
    if high < 2**16:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class SparseLayout:
    """A tensor in TFLite's sparse format, traversal order = identity, no blocks.

    Attributes:
      shape: dense shape.
      formats: DENSE or CSR per dimension.
      segments: per dimension, the CSR segments array (``None`` for DENSE).
      indices: per dimension, the CSR indices array (``None`` for DENSE).
      positions: flat (C-order) positions in the dense tensor of the stored values, in storage
        order; explicit zeros appear where a DENSE level lies below a CSR level.
    """

    shape: tuple[int, ...]
    formats: tuple[DimFormat, ...]
    segments: tuple[np.ndarray | None, ...]
    indices: tuple[np.ndarray | None, ...]
    positions: np.ndarray

    @property
    def num_entries(self) -> int:
        """Stored values, explicit zeros included."""
        return int(self.positions.size)

    @property
    def index_bytes(self) -> int:
        """Bytes of every segments and indices array in its narrowest type."""
        arrays = [a for a in (*self.segments, *self.indices) if a is not None]
        return sum(a.size * index_dtype(a).itemsize for a in arrays)

    def stored_bytes(self, bytes_per_value: float) -> int:
        """Values plus index arrays (traversal order and dense sizes not counted)."""
        return int(np.ceil(self.num_entries * bytes_per_value)) + self.index_bytes


def _check_formats(shape: tuple[int, ...], formats) -> tuple[DimFormat, ...]:
    try:
        parsed = tuple(DimFormat(f) for f in formats)
    except ValueError:
        raise ValueError(
            f"Expected formats from {[f.value for f in DimFormat]}; received: formats={formats!r}"
        ) from None
    if len(parsed) != len(shape):
        raise ValueError(
            f"Expected one format per dimension ({len(shape)}); received: formats={formats!r}"
        )
    return parsed


def sparse_layout(mask: np.ndarray, formats) -> SparseLayout:
    """The sparse layout of the nonzeros in ``mask`` with the given level formats.

    Args:
      mask: boolean array, ``True`` where a value must be stored.
      formats: one :class:`DimFormat` (or its string) per dimension.

    Returns:
      The :class:`SparseLayout`.
    """
    mask = np.asarray(mask, bool)
    shape = tuple(int(d) for d in mask.shape)
    formats = _check_formats(shape, formats)
    parents = np.zeros(1, np.int64)  # flat positions of the prefixes reached so far
    segments: list[np.ndarray | None] = []
    indices: list[np.ndarray | None] = []
    for level, (size, kind) in enumerate(zip(shape, formats)):
        children = parents[:, None] * size + np.arange(size, dtype=np.int64)
        if kind is DimFormat.DENSE:
            segments.append(None)
            indices.append(None)
            parents = children.reshape(-1)
            continue
        prefix_count = int(np.prod(shape[: level + 1], dtype=np.int64))
        occupied = mask.reshape(prefix_count, -1).any(axis=1)
        keep = occupied[children]
        segments.append(np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64))
        indices.append(np.nonzero(keep)[1].astype(np.int64))
        parents = children[keep]
    return SparseLayout(shape, formats, tuple(segments), tuple(indices), parents)


def best_sparse_layout(mask: np.ndarray, bytes_per_value: float) -> SparseLayout:
    """The DENSE/CSR pattern with the fewest stored bytes for these nonzeros.

    Every pattern of the ``2**rank`` is tried (rank at most 6); ties go to the pattern with
    fewer CSR levels, then to the earlier one.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim == 0 or mask.ndim > _MAX_PATTERNS_RANK:
        raise ValueError(
            f"Expected a tensor of rank 1..{_MAX_PATTERNS_RANK}; received: rank={mask.ndim}"
        )
    best = None
    for pattern in itertools.product((DimFormat.DENSE, DimFormat.CSR), repeat=mask.ndim):
        if DimFormat.CSR not in pattern:
            continue
        layout = sparse_layout(mask, pattern)
        key = (layout.stored_bytes(bytes_per_value), pattern.count(DimFormat.CSR))
        if best is None or key < best[0]:
            best = (key, layout)
    return best[1]


def densify(
    shape: tuple[int, ...],
    formats,
    segments,
    indices,
    values: np.ndarray,
) -> np.ndarray:
    """Dense array from a sparse layout's arrays, the way TFLite's format converter reads them.

    An independent decoder for tests and read-back: it walks the levels from the file's arrays
    and never uses :class:`SparseLayout.positions`.
    """
    shape = tuple(int(d) for d in shape)
    formats = _check_formats(shape, formats)
    parents = np.zeros(1, np.int64)
    for size, kind, segment, index in zip(shape, formats, segments, indices):
        if kind is DimFormat.DENSE:
            parents = (parents[:, None] * size + np.arange(size, dtype=np.int64)).reshape(-1)
            continue
        segment = np.asarray(segment, np.int64)
        index = np.asarray(index, np.int64)
        if segment.size != parents.size + 1 or segment[-1] != index.size:
            raise ValueError(
                "Expected segments of length parents + 1 ending at len(indices); received: "
                f"len(segments)={segment.size}, parents={parents.size}, "
                f"segments[-1]={segment[-1] if segment.size else None}, len(indices)={index.size}"
            )
        if index.size and (index.min() < 0 or index.max() >= size):
            raise ValueError(
                f"Expected indices in [0, {size}); received: range=[{index.min()}, {index.max()}]"
            )
        counts = np.diff(segment)
        parents = np.repeat(parents, counts) * size + index
    values = np.asarray(values).reshape(-1)
    if values.size != parents.size:
        raise ValueError(
            f"Expected {parents.size} stored values; received: len(values)={values.size}"
        )
    dense = np.zeros(int(np.prod(shape, dtype=np.int64)), values.dtype)
    dense[parents] = values
    return dense.reshape(shape)
