"""Lookup-table (LUT) weights in TFLite Micro's DECODE format: pure numpy, no TensorFlow.

A tensor with few distinct values (k-means clusters, uniform levels, a pruned tensor's zeros
among them) is stored as bit-packed **indices** into a **value table**: one table for the whole
tensor, or one per slice along a channel axis. TFLite Micro expands it at run time with its
``TFLM_DECODE`` custom operator, which reads two tensors:

* the *encoded* tensor (UINT8): the indices, ``bits`` each, packed most significant bit first
  in C order, the last byte padded with zero bits;
* the *ancillary* tensor (UINT8): a 16-byte DECODE Common Metadata header (DCM) then the
  tables. DCM byte 0 is the decode type (0 = LUT), byte 1 the DCM version (1); bytes 4..15
  are LUT fields: byte 4 the LUT version (1), byte 5 ``axis << 4 | bits`` (axis 15 = one
  table), byte 6 the table stride (entries per table); the tables follow from byte 16, each
  ``stride`` values of the decoded tensor's type, unused entries zero.

An index needs ``ceil(log2 k)`` bits for ``k`` values (at least 1, at most 7, so at most 128
values per table). The layout is written by ``tflite_micro``'s compression library; this
module plans it (:func:`fit_lut`) and decodes a written file independently
(:func:`parse_ancillary`, :func:`decode`), which is how the exporter proves that the file's
weights are the original ones.

Example:
  >>> w = np.array([[0.5, -1.0, 0.5], [2.0, 2.0, 0.0]], np.float32)
  >>> fit = fit_lut(w, axis=None)
  >>> fit.bits, fit.tables.tolist(), fit.indices.tolist()
  (2, [[-1.0, 0.0, 0.5, 2.0]], [[2, 0, 2], [3, 3, 1]])
  >>> packed = pack_indices(fit.indices, fit.bits)
  >>> packed.tobytes().hex()
  '8bd0'
  >>> header = LutHeader(bits=2, axis=None, stride=4)
  >>> decode(packed, header.to_bytes() + fit.tables.tobytes(), w.shape, np.float32).tolist()
  [[0.5, -1.0, 0.5], [2.0, 2.0, 0.0]]
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "DCM_BYTES",
    "MAX_BITS",
    "LutFit",
    "LutHeader",
    "decode",
    "fit_lut",
    "index_bits",
    "pack_indices",
    "parse_ancillary",
    "unpack_indices",
]

DCM_BYTES = 16
MAX_BITS = 7
_DECODE_TYPE_LUT = 0
_DCM_VERSION = 1
_LUT_VERSION = 1
_PER_TENSOR_AXIS = 0xF


def index_bits(count: int) -> int:
    """Bits of an index into a table of ``count`` values: ``ceil(log2 count)``, at least 1.

    Example:
      >>> [index_bits(k) for k in (1, 2, 3, 4, 5, 16, 17, 128)]
      [1, 1, 2, 2, 3, 4, 5, 7]
    """
    if count < 1:
        raise ValueError(f"Expected a table of at least one value; received: count={count}")
    return max(1, int(count - 1).bit_length())


@dataclasses.dataclass(frozen=True, eq=False)
class LutFit:
    """A tensor as indices into value tables, as TFLite Micro's compression library builds it.

    Each table holds its slice's distinct values in ascending order (``np.unique``), padded
    with zeros to ``stride`` entries.

    Attributes:
      axis: the channel axis with one table per slice, or ``None`` for one table.
      tables: ``(num_tables, stride)`` values in the tensor's dtype.
      counts: distinct values of each table (``<= stride``).
      indices: int32 indices, the tensor's shape.
      bits: index width, ``index_bits(stride)``.
    """

    axis: int | None
    tables: np.ndarray
    counts: np.ndarray
    indices: np.ndarray
    bits: int

    @property
    def stride(self) -> int:
        """Entries per table, padding included."""
        return int(self.tables.shape[1])

    @property
    def num_tables(self) -> int:
        """Value tables: one, or one per slice along ``axis``."""
        return int(self.tables.shape[0])

    @property
    def index_bytes(self) -> int:
        """Bytes of the packed indices."""
        return (self.indices.size * self.bits + 7) // 8

    @property
    def table_bytes(self) -> int:
        """Bytes of the value tables (padding entries included)."""
        return int(self.tables.nbytes)

    @property
    def fits(self) -> bool:
        """Whether the format can hold it: at most ``2**MAX_BITS`` values per table."""
        return self.bits <= MAX_BITS

    def decode(self) -> np.ndarray:
        """The tensor the indices and tables stand for."""
        if self.axis is None:
            return self.tables[0][self.indices]
        moved = np.moveaxis(self.indices, self.axis, 0)
        rows = np.arange(moved.shape[0]).reshape((-1,) + (1,) * (moved.ndim - 1))
        return np.moveaxis(self.tables[rows, moved], 0, self.axis)


def fit_lut(values: np.ndarray, axis: int | None) -> LutFit:
    """Value tables and indices for ``values``: one table, or one per slice along ``axis``.

    Values are compared as numbers (``-0.0`` and ``0.0`` share an entry, as in ``np.unique``).

    Args:
      values: any numeric array.
      axis: channel axis for one table per slice, or ``None``.

    Returns:
      A :class:`LutFit`; check ``fits`` before writing it.
    """
    values = np.asarray(values)
    if axis is None:
        slices = [values.reshape(-1)]
    else:
        axis = axis % values.ndim
        moved = np.moveaxis(values, axis, 0)
        slices = list(moved.reshape(moved.shape[0], -1))
    tables, indices = [], []
    for flat in slices:
        table, inverse = np.unique(flat, return_inverse=True)
        tables.append(table)
        indices.append(inverse.reshape(-1).astype(np.int32))
    counts = np.asarray([t.size for t in tables], np.int64)
    stride = int(counts.max(initial=1))
    padded = np.zeros((len(tables), stride), values.dtype)
    for row, table in enumerate(tables):
        padded[row, : table.size] = table
    if axis is None:
        index_array = indices[0].reshape(values.shape)
    else:
        index_array = np.moveaxis(np.stack(indices).reshape(moved.shape), 0, axis)
    return LutFit(axis, padded, counts, index_array, index_bits(stride))


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """Indices in C order, ``bits`` each, most significant bit first, as uint8 bytes."""
    flat = np.asarray(indices).reshape(-1).astype(np.int64)
    if not 1 <= bits <= 8:
        raise ValueError(f"Expected 1 <= bits <= 8; received: bits={bits}")
    if flat.size and (flat.min() < 0 or flat.max() >= 2**bits):
        raise ValueError(
            f"Expected indices in [0, {2**bits - 1}]; received: range=[{flat.min()}, {flat.max()}]"
        )
    shifts = np.arange(bits - 1, -1, -1)
    bit_stream = ((flat[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bit_stream)


def _as_bytes(data: np.ndarray | bytes) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return np.asarray(data, np.uint8).tobytes()


def unpack_indices(packed: np.ndarray | bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`: ``count`` int32 indices."""
    bit_stream = np.unpackbits(np.frombuffer(_as_bytes(packed), np.uint8))
    if bit_stream.size < count * bits:
        raise ValueError(
            f"Expected at least {count * bits} bits of indices; received: {bit_stream.size}"
        )
    groups = bit_stream[: count * bits].reshape(count, bits).astype(np.int32)
    weights = 1 << np.arange(bits - 1, -1, -1, dtype=np.int32)
    return groups @ weights


@dataclasses.dataclass(frozen=True)
class LutHeader:
    """The LUT fields of a DCM header.

    Attributes:
      bits: index width (1..7).
      axis: channel axis of per-slice tables, ``None`` for one table.
      stride: entries per table.
      lut_version: LUT format version (1).
    """

    bits: int
    axis: int | None
    stride: int
    lut_version: int = _LUT_VERSION

    def to_bytes(self) -> bytes:
        """The 16-byte DCM header."""
        header = bytearray(DCM_BYTES)
        header[0] = _DECODE_TYPE_LUT
        header[1] = _DCM_VERSION
        header[4] = self.lut_version
        axis = _PER_TENSOR_AXIS if self.axis is None else self.axis
        header[5] = (axis & 0x0F) << 4 | (self.bits & 0x07)
        header[6] = self.stride
        return bytes(header)


def parse_ancillary(ancillary: np.ndarray | bytes) -> tuple[LutHeader, bytes]:
    """Splits an ancillary tensor into its LUT header and the table bytes.

    Raises:
      ValueError: when the header is not a version-1 DCM of decode type LUT.
    """
    raw = _as_bytes(ancillary)
    if len(raw) < DCM_BYTES:
        raise ValueError(
            f"Expected an ancillary tensor of at least {DCM_BYTES} bytes; received: {len(raw)}"
        )
    if raw[0] != _DECODE_TYPE_LUT or raw[1] != _DCM_VERSION:
        raise ValueError(
            f"Expected a DCM of decode type {_DECODE_TYPE_LUT} (LUT), version {_DCM_VERSION}; "
            f"received: type={raw[0]}, version={raw[1]}"
        )
    axis = raw[5] >> 4
    header = LutHeader(
        bits=raw[5] & 0x07,
        axis=None if axis == _PER_TENSOR_AXIS else int(axis),
        stride=raw[6],
        lut_version=raw[4],
    )
    if header.lut_version != _LUT_VERSION or not 1 <= header.bits <= MAX_BITS:
        raise ValueError(
            f"Expected LUT version {_LUT_VERSION} with 1..{MAX_BITS}-bit indices; received: "
            f"version={header.lut_version}, bits={header.bits}"
        )
    return header, raw[DCM_BYTES:]


def decode(
    encoded: np.ndarray | bytes,
    ancillary: np.ndarray | bytes,
    shape: tuple[int, ...],
    dtype: np.dtype | type,
) -> np.ndarray:
    """The tensor a (encoded, ancillary) pair decodes to, as ``TFLM_DECODE`` computes it.

    Args:
      encoded: the packed indices.
      ancillary: DCM header and value tables.
      shape: the decoded tensor's shape.
      dtype: the decoded tensor's numpy dtype.

    Raises:
      ValueError: for a malformed header, too few table bytes, or an index past its table.
    """
    header, table_bytes = parse_ancillary(ancillary)
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in shape)
    count = int(np.prod(shape, dtype=np.int64))
    num_tables = 1 if header.axis is None else shape[header.axis]
    needed = num_tables * header.stride * dtype.itemsize
    if len(table_bytes) < needed:
        raise ValueError(
            f"Expected {num_tables} tables of {header.stride} {dtype.name} values "
            f"({needed} bytes); received: {len(table_bytes)} bytes"
        )
    tables = np.frombuffer(table_bytes[:needed], dtype).reshape(num_tables, header.stride)
    indices = unpack_indices(encoded, header.bits, count).reshape(shape)
    if indices.size and indices.max() >= header.stride:
        raise ValueError(
            f"Expected indices below the table stride {header.stride}; received: "
            f"max index={int(indices.max())}"
        )
    fit = LutFit(header.axis, tables, np.full(num_tables, header.stride), indices, header.bits)
    return fit.decode()
