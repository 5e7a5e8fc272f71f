"""Byte accounting of a written ``.tflite`` file, and the report :func:`export` returns.

:func:`account` reads the file's own bytes with the schema's plain (non-object) reader, so it
checks the writer rather than repeating it. Every byte of the file falls in exactly one part:

* per tensor: **value bytes** (its buffer's data; a buffer shared by several tensors is counted
  on the first), **index bytes** (sparse tensors: traversal order, block map and the segments
  and indices arrays of each level) and **quantization bytes** (scale, zero point, min, max);
* **metadata bytes**: buffers referenced by the model's metadata entries;
* **overhead**: everything else (tables, vtables, shapes, names, operators, signatures,
  vector length prefixes, alignment padding); of it, **name bytes** are the tensor name strings
  (``tensor_names="io"`` drops most, :mod:`tflite_export.names`).

Their sum is the file size by construction; the tests check the parts against what was
written (e.g. ``n`` bytes for ``n`` INT8 codes).

A TFLite Micro file's LUT weights are two UINT8 tensors each: the packed indices and the
ancillary tensor (16-byte DCM header and value tables). :class:`LutBytes` splits them into
index, table and header bytes; they are the value bytes of those two rows of :func:`account`.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from typing import Any

import numpy as np

from tflite_export import flatbuffer, names
from tflite_export.encodings import Encoding
from tflite_export.verify import RuntimeCheck
from tflite_export.weights import SkippedWeight

__all__ = [
    "ExportReport",
    "FileBytes",
    "IoQuantization",
    "LutBytes",
    "SkippedWeight",
    "TensorBytes",
    "WeightChoice",
    "account",
    "gzip_size",
]

_schema = flatbuffer.schema
_INDEX_ITEM_BYTES = {
    _schema.SparseIndexVector.Int32Vector: (4, _schema.Int32Vector),
    _schema.SparseIndexVector.Uint16Vector: (2, _schema.Uint16Vector),
    _schema.SparseIndexVector.Uint8Vector: (1, _schema.Uint8Vector),
}


def gzip_size(data: bytes) -> int:
    """Size of ``data`` gzipped at level 9 (what tfmot's size comparisons use)."""
    return len(gzip.compress(bytes(data), compresslevel=9, mtime=0))


@dataclasses.dataclass(frozen=True)
class TensorBytes:
    """Bytes one tensor takes in the file.

    Attributes:
      subgraph: subgraph index.
      tensor: tensor index.
      name: tensor name in the file.
      shape: dense shape.
      storage: stored type, ``sparse`` prefixed for sparse tensors (e.g. ``sparse int8``).
      value_bytes: bytes of its buffer's data.
      index_bytes: bytes of its sparse index arrays.
      quantization_bytes: bytes of its quantization parameters.
      label: the Keras layer whose weights it stores (``fc1``), if any.
      encoding: the exporter's :class:`Encoding` for it, if it stores a weight.
    """

    subgraph: int
    tensor: int
    name: str
    shape: tuple[int, ...]
    storage: str
    value_bytes: int
    index_bytes: int
    quantization_bytes: int
    label: str | None = None
    encoding: str | None = None

    @property
    def total_bytes(self) -> int:
        """Bytes of values, indices and quantization parameters."""
        return self.value_bytes + self.index_bytes + self.quantization_bytes

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``total_bytes``, for JSON (``shape`` as a list)."""
        return {
            **dataclasses.asdict(self),
            "shape": list(self.shape),
            "total_bytes": self.total_bytes,
        }


@dataclasses.dataclass(frozen=True)
class FileBytes:
    """A file split into tensor parts, metadata and overhead (they sum to ``file_bytes``);
    ``name_bytes`` of the overhead are the tensor name strings
    (:func:`tflite_export.names.string_bytes`)."""

    file_bytes: int
    tensors: tuple[TensorBytes, ...]
    metadata_bytes: int
    name_bytes: int = 0

    @property
    def tensor_bytes(self) -> int:
        """Bytes of all tensors' values, indices and quantization parameters."""
        return sum(t.total_bytes for t in self.tensors)

    @property
    def overhead_bytes(self) -> int:
        """Bytes in neither tensors nor metadata: the graph, flatbuffer tables, padding."""
        return self.file_bytes - self.tensor_bytes - self.metadata_bytes


def _buffer_bytes(buffer) -> int:
    if buffer is None:
        return 0
    if buffer.Offset() > 1:
        # Data stored after the flatbuffer (models over 2 GiB); ``size`` bytes at ``offset``.
        return int(buffer.Size())
    return int(buffer.DataLength())


def _quantization_bytes(tensor) -> int:
    quantization = tensor.Quantization()
    if quantization is None:
        return 0
    return (
        4 * quantization.ScaleLength()
        + 8 * quantization.ZeroPointLength()
        + 4 * quantization.MinLength()
        + 4 * quantization.MaxLength()
    )


def _index_vector_bytes(kind: int, table) -> int:
    if table is None or kind not in _INDEX_ITEM_BYTES:
        return 0
    item_bytes, cls = _INDEX_ITEM_BYTES[kind]
    vector = cls()
    vector.Init(table.Bytes, table.Pos)
    return item_bytes * vector.ValuesLength()


def _sparsity_bytes(tensor) -> int:
    sparsity = tensor.Sparsity()
    if sparsity is None:
        return 0
    total = 4 * sparsity.TraversalOrderLength() + 4 * sparsity.BlockMapLength()
    for level in range(sparsity.DimMetadataLength()):
        metadata = sparsity.DimMetadata(level)
        total += _index_vector_bytes(metadata.ArraySegmentsType(), metadata.ArraySegments())
        total += _index_vector_bytes(metadata.ArrayIndicesType(), metadata.ArrayIndices())
    return total


def account(data: bytes, labels: dict[tuple[int, int], tuple[str, str]] | None = None) -> FileBytes:
    """Splits a ``.tflite`` file's bytes into tensor parts, metadata and overhead.

    Args:
      data: the file's bytes.
      labels: optional ``(subgraph, tensor) -> (label, encoding)`` for the weight tensors.

    Returns:
      A :class:`FileBytes` listing every tensor that owns bytes (data, sparse indices or
      quantization parameters).
    """
    data = bytes(data)
    labels = labels or {}
    model = _schema.Model.GetRootAs(data, 0)
    counted_buffers: set[int] = set()
    rows = []
    name_bytes = 0
    for subgraph_index in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(subgraph_index)
        for tensor_index in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(tensor_index)
            if tensor.Name() is not None:
                name_bytes += names.string_bytes(len(tensor.Name()))
            buffer_index = tensor.Buffer()
            value_bytes = 0
            if buffer_index not in counted_buffers and buffer_index < model.BuffersLength():
                value_bytes = _buffer_bytes(model.Buffers(buffer_index))
                if value_bytes:
                    counted_buffers.add(buffer_index)
            index_bytes = _sparsity_bytes(tensor)
            quantization_bytes = _quantization_bytes(tensor)
            if not (value_bytes or index_bytes or quantization_bytes):
                continue
            name = tensor.Name().decode("utf-8", "replace") if tensor.Name() else ""
            storage = flatbuffer.type_name(tensor.Type())
            if tensor.Sparsity() is not None:
                storage = f"sparse {storage}"
            label, encoding = labels.get((subgraph_index, tensor_index), (None, None))
            rows.append(
                TensorBytes(
                    subgraph=subgraph_index,
                    tensor=tensor_index,
                    name=name,
                    shape=tuple(int(d) for d in tensor.ShapeAsNumpy())
                    if tensor.ShapeLength()
                    else (),
                    storage=storage,
                    value_bytes=value_bytes,
                    index_bytes=index_bytes,
                    quantization_bytes=quantization_bytes,
                    label=label,
                    encoding=encoding,
                )
            )
    metadata_bytes = 0
    for index in range(model.MetadataLength()):
        buffer_index = model.Metadata(index).Buffer()
        if buffer_index not in counted_buffers and buffer_index < model.BuffersLength():
            counted_buffers.add(buffer_index)
            metadata_bytes += _buffer_bytes(model.Buffers(buffer_index))
    return FileBytes(len(data), tuple(rows), metadata_bytes, name_bytes)


@dataclasses.dataclass(frozen=True)
class WeightChoice:
    """The encoding chosen for one weight tensor, and why.

    Attributes:
      label: Keras layer name, or the tensor name when no Keras weight matched.
      layer_type: Keras layer class, if matched.
      tensor_name: the weight tensor's name in the float file.
      shape: shape in the TFLite layout.
      num_weights: weights in the tensor.
      nonzeros: nonzero weights.
      encoding: the chosen :class:`Encoding`.
      detail: what is stored (code type, scale per tensor/channel, sparse level formats).
      stored_bytes: value + index + quantization bytes in the written file.
      max_weight_error: largest ``|decoded - original|`` (0.0 for exact encodings).
      reason: why this encoding.
      rejected: ``(encoding, reason)`` for every encoding considered and not used.
      operator: the TFLite operator that reads the tensor (e.g. ``FULLY_CONNECTED``,
        ``UNIDIRECTIONAL_SEQUENCE_LSTM``).
      layout: how the tensor is made from the Keras weight (e.g. ``slice [:, 0:16],
        transpose (1, 0)``), if matched.
    """

    label: str
    layer_type: str | None
    tensor_name: str
    shape: tuple[int, ...]
    num_weights: int
    nonzeros: int
    encoding: Encoding
    detail: str
    stored_bytes: int
    max_weight_error: float
    reason: str
    rejected: tuple[tuple[str, str], ...] = ()
    operator: str | None = None
    layout: str | None = None

    @classmethod
    def for_weight(
        cls,
        weight: Any,
        values: np.ndarray,
        *,
        encoding: Encoding,
        detail: str,
        stored_bytes: int,
        max_weight_error: float,
        reason: str,
        rejected: Any = (),
    ) -> WeightChoice:
        """The choice for a :class:`~tflite_export.weights.WeightTensor` holding ``values``.

        Every target builds its choices here: name, type, shape and counts come from the
        weight and its values (nonzeros: the stored values' nonzeros, codes for integer files).
        """
        values = np.asarray(values)
        return cls(
            label=weight.label,
            layer_type=weight.layer_type,
            tensor_name=weight.tensor_name,
            shape=tuple(weight.shape),
            num_weights=int(values.size),
            nonzeros=int(np.count_nonzero(values)),
            encoding=encoding,
            detail=detail,
            stored_bytes=int(stored_bytes),
            max_weight_error=float(max_weight_error),
            reason=reason,
            rejected=tuple(tuple(item) for item in rejected),
            operator=weight.operator,
            layout=weight.layout,
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields for JSON: ``encoding`` as its value, ``rejected`` as dicts."""
        out = dataclasses.asdict(self)
        out["shape"] = list(self.shape)
        out["encoding"] = self.encoding.value
        out["rejected"] = [{"encoding": e, "reason": r} for e, r in self.rejected]
        return out


@dataclasses.dataclass(frozen=True)
class LutBytes:
    """One LUT-compressed weight of a TFLite Micro file: its layout and bytes.

    Attributes:
      label: the weight's Keras layer (or tensor name).
      mode: ``per_tensor`` (one table) or ``per_channel``.
      axis: the channel axis of per-channel tables (TFLite layout), else ``None``.
      index_bits: bits per index, ``ceil(log2 k)`` for ``k`` entries per table.
      num_tables: value tables.
      table_entries: entries per table (the largest count of distinct values).
      value_type: type of the table values (``float32``, ``int8``).
      index_bytes: the packed indices.
      table_bytes: the value tables (unused entries included).
      header_bytes: the 16-byte DCM header.
      quantization_bytes: scales and zero points, kept on the decoded tensor.
    """

    label: str
    mode: str
    axis: int | None
    index_bits: int
    num_tables: int
    table_entries: int
    value_type: str
    index_bytes: int
    table_bytes: int
    header_bytes: int
    quantization_bytes: int

    @property
    def total_bytes(self) -> int:
        """Bytes of indices, tables, header and quantization parameters."""
        return self.index_bytes + self.table_bytes + self.header_bytes + self.quantization_bytes

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``total_bytes``, for JSON."""
        return {**dataclasses.asdict(self), "total_bytes": self.total_bytes}


@dataclasses.dataclass(frozen=True)
class IoQuantization:
    """How an integer model's input or output maps to real values: ``real = scale * (q - zp)``.

    Attributes:
      name: the Keras input or output name.
      kind: ``input`` or ``output``.
      dtype: the file's type (``int8``).
      scale: the quantization scale.
      zero_point: the quantization zero point.
    """

    name: str
    kind: str
    dtype: str
    scale: float
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as a flat dict, for JSON."""
        return dataclasses.asdict(self)


def _short(name: str, width: int = 40) -> str:
    """A fused tensor name cut to its last ``width`` characters."""
    return name if len(name) <= width else "..." + name[-(width - 3) :]


def _kib(size: int) -> str:
    return f"{size:,} B" if size < 1024 else f"{size / 1024:,.2f} KiB"


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What :func:`tflite_export.export` wrote and how it checked it.

    Attributes:
      path: the written file.
      target: the export target (``litert``, ``tflm``, ``tflm_int8``).
      interpreter: the interpreter package used for verification.
      file: the file's byte accounting.
      float_file_bytes: size of the converter's dense float32 file of the same model.
      gzip_bytes: size of the written file gzipped.
      float_gzip_bytes: size of the dense float32 file gzipped.
      weights: one :class:`WeightChoice` per weight tensor.
      checks: verification of the written file, one per runtime and reference.
      batch_size: inputs per verification batch.
      lut: TFLite Micro targets: the LUT-compressed weights and their bytes.
      uncompressed_file_bytes: the converter's file before the weights were re-encoded:
        TFLite Micro targets: before LUT compression (float32 or full-integer int8); LiteRT
        with int8 activations: the converter's full-integer file.
      io_quantization: integer inputs and outputs (``tflm_int8``, LiteRT with ``int8_io``):
        how to quantize inputs and dequantize outputs.
      activations: ``float32``, or ``int8`` for a full-integer file.
      skipped_weights: the Keras weights (kernels, embeddings, recurrent kernels: rank 2 or
        more, no biases) that no re-encoded weight tensor holds, each with the reason (folded
        by the converter, or read by an operator this target does not re-encode).
      file_batch_size: the batch the file's inputs are fixed to, or ``None`` (dynamic).
      notes: what else a user of the file should know (a fixed batch, state kept in variable
        tensors between invocations).
    """

    path: str
    target: str
    interpreter: str
    file: FileBytes
    float_file_bytes: int
    gzip_bytes: int
    float_gzip_bytes: int
    weights: tuple[WeightChoice, ...]
    checks: tuple[RuntimeCheck, ...]
    batch_size: int
    lut: tuple[LutBytes, ...] = ()
    uncompressed_file_bytes: int | None = None
    io_quantization: tuple[IoQuantization, ...] = ()
    activations: str = "float32"
    skipped_weights: tuple[SkippedWeight, ...] = ()
    file_batch_size: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def file_bytes(self) -> int:
        """Size of the written file, in bytes."""
        return self.file.file_bytes

    @property
    def compression_ratio(self) -> float:
        """Dense float32 file size over the written file's size."""
        return self.float_file_bytes / self.file_bytes

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict, with the file's byte split and every part's dict."""
        return {
            "path": self.path,
            "target": self.target,
            "activations": self.activations,
            "interpreter": self.interpreter,
            "file_bytes": self.file_bytes,
            "tensor_bytes": self.file.tensor_bytes,
            "metadata_bytes": self.file.metadata_bytes,
            "overhead_bytes": self.file.overhead_bytes,
            "name_bytes": self.file.name_bytes,
            "float_file_bytes": self.float_file_bytes,
            "gzip_bytes": self.gzip_bytes,
            "float_gzip_bytes": self.float_gzip_bytes,
            "compression_ratio": self.compression_ratio,
            "batch_size": self.batch_size,
            "tensors": [t.to_dict() for t in self.file.tensors],
            "weights": [w.to_dict() for w in self.weights],
            "checks": [c.to_dict() for c in self.checks],
            "lut": [t.to_dict() for t in self.lut],
            "uncompressed_file_bytes": self.uncompressed_file_bytes,
            "io_quantization": [q.to_dict() for q in self.io_quantization],
            "skipped_weights": [w.to_dict() for w in self.skipped_weights],
            "file_batch_size": self.file_batch_size,
            "notes": list(self.notes),
        }

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as JSON; ``kwargs`` go to ``json.dumps``."""
        return json.dumps(self.to_dict(), default=_json_default, **kwargs)

    def format(self) -> str:
        """Fixed-width tables: weights and their encodings, then every byte of the file."""
        weight_rows = [("weight", "shape", "nonzeros", "encoding", "stored as", "bytes", "why")] + [
            (
                w.label,
                "x".join(map(str, w.shape)),
                f"{w.nonzeros:,}/{w.num_weights:,}",
                w.encoding.value,
                w.detail,
                f"{w.stored_bytes:,}",
                w.reason,
            )
            for w in self.weights
        ]
        byte_rows = [("tensor", "shape", "storage", "values", "indices", "quant", "total")]
        for t in self.file.tensors:
            byte_rows.append(
                (
                    t.label or _short(t.name) or f"#{t.tensor} (no name)",
                    "x".join(map(str, t.shape)) or "scalar",
                    t.storage,
                    f"{t.value_bytes:,}",
                    f"{t.index_bytes:,}",
                    f"{t.quantization_bytes:,}",
                    f"{t.total_bytes:,}",
                )
            )
        byte_rows.append(("metadata", "", "", "", "", "", f"{self.file.metadata_bytes:,}"))
        byte_rows.append(
            ("flatbuffer overhead", "", "", "", "", "", f"{self.file.overhead_bytes:,}")
        )
        byte_rows.append(("file", "", "", "", "", "", f"{self.file_bytes:,}"))
        what = self.target if self.activations == "float32" else f"{self.target}, int8"
        lines = [f"{self.path} ({what}, verified with {self.interpreter})", ""]
        lines += _table(weight_rows, left=(0, 3, 4, 6), rule_before_last=False)
        lines.append("")
        lines += _table(byte_rows, left=(0, 2), rule_before_last=True)
        if self.lut:
            lut_rows = [
                (
                    "lut weight",
                    "tables",
                    "index",
                    "values",
                    "indices",
                    "tables",
                    "header",
                    "quant",
                    "total",
                )
            ]
            for t in self.lut:
                where = "1 per tensor" if t.axis is None else f"{t.num_tables} on axis {t.axis}"
                lut_rows.append(
                    (
                        t.label,
                        f"{where} x {t.table_entries}",
                        f"{t.index_bits}-bit",
                        t.value_type,
                        f"{t.index_bytes:,}",
                        f"{t.table_bytes:,}",
                        f"{t.header_bytes:,}",
                        f"{t.quantization_bytes:,}",
                        f"{t.total_bytes:,}",
                    )
                )
            lines.append("")
            lines += _table(lut_rows, left=(0, 1, 3), rule_before_last=False)
        lines += [
            "",
            f"file:        {_kib(self.file_bytes):>14}   gzip {_kib(self.gzip_bytes):>14}",
            f"dense float: {_kib(self.float_file_bytes):>14}   gzip "
            f"{_kib(self.float_gzip_bytes):>14}   ({self.compression_ratio:.1f}x smaller)",
            f"tensor names: {_kib(self.file.name_bytes):>13}   (of the flatbuffer overhead)",
        ]
        if self.uncompressed_file_bytes is not None:
            micro = self.target.startswith("tflm")
            before, whose = ("before LUT:", "") if micro else ("int8 file:", "the converter's, ")
            lines.append(
                f"{before:<12} {_kib(self.uncompressed_file_bytes):>14}   "
                f"({whose}{self.uncompressed_file_bytes / self.file_bytes:.1f}x smaller)"
            )
        lines += [
            f"{q.kind} {q.name}: {q.dtype}, real = {q.scale:.6g} * (q - {q.zero_point})"
            for q in self.io_quantization
        ]
        lines += [
            f"not re-encoded: {w.label} ({w.layer_type}, {'x'.join(map(str, w.shape))}): {w.reason}"
            for w in self.skipped_weights
        ]
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"check {c.describe()}" for c in self.checks]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Encoding):
        return value.value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _table(rows: list[tuple[str, ...]], left: tuple[int, ...], rule_before_last: bool) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row):
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(rows[0]))
    body = [line(row) for row in rows[1:]]
    if rule_before_last:
        body.insert(len(body) - 3, rule)
    return [line(rows[0]), rule, *body]
