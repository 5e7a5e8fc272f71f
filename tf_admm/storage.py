"""Bit-level storage accounting in the terms of Deep Compression and Ye et al. 2018.

Pure numpy; no TensorFlow or Keras. A compressed layer is described by how many weights it has,
which of them are nonzero, how many bits each stored value takes and how big its codebook is.
From that this module counts bits the way the papers do, per layer and in total, and prints the
ratios they print. The bit costs of the encoding itself (gaps, fillers, the best index width,
codebooks) are in :mod:`tf_admm.sparse_encoding`; their names are re-exported here.

Storage model
-------------
A layer with ``n`` weights is stored either **dense** (all ``n`` values, ``b`` bits each, no
index) or **sparse** with **relative indexing** (Han et al. 2016, "Deep Compression", §2):

* The weights are read in flattened (C) order of the array given; ``positions`` are the flat
  indices of the nonzeros, strictly increasing.
* Each stored entry keeps a value code of ``b`` bits and an index code of ``p`` bits. The index
  code ``c`` in ``[0, 2**p - 1]`` counts the zeros skipped since the previous entry (the first
  entry counts from the start), i.e. the entry sits ``c + 1`` places after the previous one.
  In "gap" terms a gap ``g = position - previous_position`` (with ``previous = -1`` for the first
  nonzero) of ``1 .. 2**p`` fits in one entry. This is Deep Compression's convention (with 3 bits
  "the difference exceeds 8, the largest 3-bit unsigned number" needs a filler) and EIE's (with 4
  bits a filler is added after more than 15 zeros).
* When a gap is larger, **filler** entries holding the value zero are inserted, each as far
  ahead as the code allows. A filler covers ``2**p`` positions (``2**p - 1`` skipped zeros plus
  its own), so a gap ``g`` needs ``floor((g - 1) / 2**p)`` fillers and a layer needs::

      F(p) = sum_i floor((g_i - 1) / 2**p)

  Every filler costs a value slot of ``b`` bits and an index slot of ``p`` bits, like a nonzero.
  (Storing the gap itself in ``p`` bits, code 0 unused, would give ``floor((g - 1) / (2**p - 1))``
  fillers instead: never fewer, so we do not use it.)
* Zeros after the last nonzero cost nothing: the number of entries is metadata, and like the
  papers we do not count per-layer metadata (entry count, shape, column pointers).

Per sparse layer with ``k`` nonzeros and codebook ``C`` bits::

    entries      = k + F(p)
    value_bits   = entries * b                  (fillers included)
    index_bits   = entries * p
    total_bits   = value_bits + index_bits + C

and ``p`` is, unless fixed by the caller, the argmin of ``(k + F(p)) * (b + p)`` over
``p = 1 .. max_index_bits`` (smallest ``p`` on ties). A dense layer has ``value_bits = n * b``,
no index and no fillers.

The **codebook** is what decoding a value code needs: ``2**b`` (or ``k``) shared values of 32
bits for Deep Compression's trained quantization, a single 32-bit scale for uniform levels, or
nothing for plain 32-bit floats. :func:`codebook_size_bits` spells this out.

Ratios (baseline: every weight a dense 32-bit float, ``32 * N`` bits for ``N`` weights in all):

* ``pruning_ratio = N / sum(k)``.
* ``weight_data_ratio = 32 * N / sum(weight_data_bits)`` where ``weight_data_bits = k * b + C``
  for a sparse layer and ``n * b + C`` for a dense one: the values of the weights that exist plus
  the codebook needed to read them. Fillers are **not** weight data: they exist only because of
  the index format, so they are charged to the next ratio. This is the "storage reduction of
  weight data" of Ye et al. (their 1,910x for LeNet-5).
* ``ratio_with_indices = 32 * N / sum(total_bits)``: everything, fillers and indices included
  (Ye et al.'s figure "including indices"; Deep Compression's P+Q compression rate).

Worked example (positions given by hand, ``n = 40``, ``b = 2`` bits, ``p = 3`` bits, no
codebook)::

    positions          0   3   4  20  39
    gaps g             1   3   1  16  19        (first gap counts from -1)
    zeros skipped g-1  0   2   0  15  18
    fillers (g-1)//8   0   0   0   1   2        F(3) = 3, placed at 12, 28 and 36
    entries            5 nonzeros + 3 fillers = 8
    value bits         8 * 2 = 16               (weight data: 5 * 2 = 10)
    index bits         8 * 3 = 24
    total bits         40
    ratios             32 * 40 / 10 = 128x weight data, 32 * 40 / 40 = 32x with indices

With ``p = 2``: ``F = 0+0+0+3+4 = 7``, ``12 * (2 + 2) = 48`` bits; with ``p = 4``: ``F = 1``,
``6 * 6 = 36`` bits; with ``p = 5``: ``F = 0``, ``5 * 7 = 35`` bits (the best ``p``).

Example:
  >>> import numpy as np
  >>> mask = np.zeros(40)
  >>> mask[[0, 3, 4, 20, 39]] = 1
  >>> layer = layer_storage("fc", weights=mask, bits_per_value=2, index_bits=3)
  >>> layer.num_fillers, layer.value_bits, layer.index_bits, layer.total_bits
  (3, 16, 24, 40)
  >>> report = storage_report([layer])
  >>> report.weight_data_ratio, report.ratio_with_indices
  (128.0, 32.0)
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from tf_admm.sparse_encoding import (
    BASELINE_BITS,
    DEFAULT_MAX_INDEX_BITS,
    MAX_INDEX_BITS,
    MAX_VALUE_BITS,
    SparseEncodingCost,
    StorageError,
    argmin_index_bits,
    as_positions,
    best_index_bits,
    bits_for_levels,
    check_int,
    codebook_size_bits,
    count_fillers,
    fail,
    fillers_by_index_bits,
    relative_gaps,
    relative_index_cost,
    zero_runs,
)

__all__ = [
    "BASELINE_BITS",
    "MAX_INDEX_BITS",
    "LayerStorage",
    "SparseEncodingCost",
    "StorageError",
    "StorageReport",
    "best_index_bits",
    "bits_for_levels",
    "codebook_size_bits",
    "count_fillers",
    "fillers_by_index_bits",
    "format_bits",
    "format_report",
    "layer_storage",
    "relative_gaps",
    "relative_index_cost",
    "storage_report",
]


@dataclasses.dataclass(frozen=True)
class LayerStorage:
    """Storage profile of one layer's weights (built by :func:`layer_storage`).

    Attributes:
      name: layer (or weight) name.
      num_weights: weights ``n`` in the layer.
      num_nonzeros: nonzero weights ``k``.
      bits_per_value: bits ``b`` per stored value code.
      codebook_bits: bits ``C`` of the codebook (shared values or scale).
      sparse: whether stored sparse with relative indexing (else dense).
      index_bits_per_entry: bits ``p`` per relative index; 0 when dense.
      num_fillers: filler entries ``F(p)``; 0 when dense.
    """

    name: str
    num_weights: int
    num_nonzeros: int
    bits_per_value: int
    codebook_bits: int = 0
    sparse: bool = True
    index_bits_per_entry: int = 0
    num_fillers: int = 0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise fail("LayerStorage", "name to be a non-empty string", "name", self.name)
        where = f"layer {self.name!r}"
        set_ = object.__setattr__  # frozen: normalise numpy integers to int for JSON
        set_(self, "num_weights", check_int(where, "num_weights", self.num_weights, 1))
        set_(
            self,
            "num_nonzeros",
            check_int(where, "num_nonzeros", self.num_nonzeros, 0, self.num_weights),
        )
        set_(
            self,
            "bits_per_value",
            check_int(where, "bits_per_value", self.bits_per_value, 1, MAX_VALUE_BITS),
        )
        set_(self, "codebook_bits", check_int(where, "codebook_bits", self.codebook_bits, 0))
        if not isinstance(self.sparse, (bool, np.bool_)):
            raise fail(where, "sparse to be a bool", "sparse", self.sparse)
        set_(self, "sparse", bool(self.sparse))
        if self.sparse:
            p = check_int(
                where, "index_bits_per_entry", self.index_bits_per_entry, 1, MAX_INDEX_BITS
            )
            room = self.num_weights - self.num_nonzeros  # fillers sit on zero positions
            fillers = check_int(where, "num_fillers", self.num_fillers, 0, room)
        else:
            p = check_int(where, "index_bits_per_entry (dense)", self.index_bits_per_entry, 0, 0)
            fillers = check_int(where, "num_fillers (dense)", self.num_fillers, 0, 0)
        set_(self, "index_bits_per_entry", p)
        set_(self, "num_fillers", fillers)

    @property
    def num_entries(self) -> int:
        """Stored value slots: nonzeros plus fillers if sparse, every weight if dense."""
        return self.num_nonzeros + self.num_fillers if self.sparse else self.num_weights

    @property
    def value_bits(self) -> int:
        """Bits of all stored value codes, fillers included."""
        return self.num_entries * self.bits_per_value

    @property
    def index_bits(self) -> int:
        """Bits of all relative indices (fillers included); 0 when dense."""
        return self.num_entries * self.index_bits_per_entry

    @property
    def weight_data_bits(self) -> int:
        """Values of the real weights plus codebook; no fillers, no indices."""
        stored = self.num_nonzeros if self.sparse else self.num_weights
        return stored * self.bits_per_value + self.codebook_bits

    @property
    def total_bits(self) -> int:
        """Everything: values, fillers, indices and codebook."""
        return self.value_bits + self.index_bits + self.codebook_bits

    @property
    def baseline_bits(self) -> int:
        """``32 * num_weights`` bits: every weight of the layer as a dense 32-bit float."""
        return BASELINE_BITS * self.num_weights

    @property
    def ratio_with_indices(self) -> float:
        """``32 n / total_bits`` for this layer."""
        return _ratio(self.baseline_bits, self.total_bits)

    def to_dict(self) -> dict[str, Any]:
        """Fields and derived bit counts as a JSON-serialisable dict."""
        data = dataclasses.asdict(self)
        for key in ("num_entries", "value_bits", "index_bits", "weight_data_bits", "total_bits"):
            data[key] = getattr(self, key)
        data["ratio_with_indices"] = _finite_or_none(self.ratio_with_indices)
        return data


def _ratio(numerator: int, denominator: int) -> float:
    return math.inf if denominator == 0 else numerator / denominator


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def layer_storage(
    name: str,
    *,
    weights: Any = None,
    positions: Any = None,
    num_weights: int | None = None,
    bits_per_value: int = BASELINE_BITS,
    codebook_bits: int = 0,
    sparse: bool = True,
    index_bits: int | None = None,
    max_index_bits: int = DEFAULT_MAX_INDEX_BITS,
) -> LayerStorage:
    """Storage profile of one layer from its weights, or from its nonzero positions.

    Give either ``weights`` (any array; nonzero entries are read in flattened C order, so a
    Keras ``(h, w, in, out)`` kernel gives other gaps than Caffe's ``(out, in, h, w)``: transpose
    first to match a paper) or ``positions`` and ``num_weights``.

    Args:
      name: layer name, used in reports and errors.
      weights: the layer's weights (numpy array, tensor or anything ``np.asarray`` takes).
      positions: strictly increasing flat indices of the nonzeros, instead of ``weights``.
      num_weights: total weights ``n``; required with ``positions``, checked with ``weights``.
      bits_per_value: bits ``b`` per stored value (``bits_for_levels(levels)``; 32 for floats).
      codebook_bits: codebook size in bits (see :func:`codebook_size_bits`).
      sparse: store with relative indexing (``True``) or dense (``False``).
      index_bits: fix the index width ``p`` (e.g. Deep Compression's 5 or 8); by default the
        ``p`` in ``1 .. max_index_bits`` with the fewest total bits.
      max_index_bits: upper end of the search for ``p``.

    Returns:
      A :class:`LayerStorage`.

    Raises:
      StorageError: with the layer name, on missing, conflicting or invalid inputs.

    Example:
      >>> layer = layer_storage("fc2", positions=[0, 3, 4, 20, 39], num_weights=40,
      ...                       bits_per_value=2)
      >>> layer.index_bits_per_entry, layer.num_fillers, layer.total_bits
      (5, 0, 35)
    """
    if not isinstance(name, str) or not name:
        raise fail("layer_storage", "name to be a non-empty string", "name", name)
    where = f"layer {name!r}"
    if (weights is None) == (positions is None):
        raise StorageError(
            f"{where}: Expected exactly one of weights or positions; received: "
            f"weights={'given' if weights is not None else None}, "
            f"positions={'given' if positions is not None else None}"
        )
    if weights is not None:
        flat = np.asarray(weights).reshape(-1)
        if flat.size == 0:
            raise fail(where, "a non-empty weights array", "weights.size", 0)
        if num_weights is not None and check_int(where, "num_weights", num_weights, 1) != (
            flat.size
        ):
            raise fail(
                where, f"num_weights == weights.size ({flat.size})", "num_weights", num_weights
            )
        n = int(flat.size)
        nonzero_positions = np.flatnonzero(flat)
    else:
        if num_weights is None:
            raise fail(where, "num_weights together with positions", "num_weights", None)
        n = check_int(where, "num_weights", num_weights, 1)
        nonzero_positions = as_positions(where, positions, n)
    b = check_int(where, "bits_per_value", bits_per_value, 1, MAX_VALUE_BITS)
    codebook = check_int(where, "codebook_bits", codebook_bits, 0)
    if not isinstance(sparse, (bool, np.bool_)):
        raise fail(where, "sparse to be a bool", "sparse", sparse)
    k = int(nonzero_positions.size)
    if not sparse:
        return LayerStorage(name, n, k, b, codebook, sparse=False)
    if index_bits is not None:
        p = check_int(where, "index_bits", index_bits, 1, MAX_INDEX_BITS)
        fillers = int(np.sum(zero_runs(nonzero_positions) >> p))
    else:
        top = check_int(where, "max_index_bits", max_index_bits, 1, MAX_INDEX_BITS)
        by_p = fillers_by_index_bits(nonzero_positions, top)
        p = argmin_index_bits(k, by_p, b)
        fillers = by_p[p]
    return LayerStorage(
        name, n, k, b, codebook, sparse=True, index_bits_per_entry=p, num_fillers=fillers
    )


@dataclasses.dataclass(frozen=True)
class StorageReport:
    """Per-layer storage profiles and the totals and ratios the papers print.

    Attributes:
      layers: one :class:`LayerStorage` per layer, names unique.
    """

    layers: tuple[LayerStorage, ...]

    def __post_init__(self):
        layers = tuple(self.layers)
        if not layers:
            raise fail("StorageReport", "at least one layer", "layers", self.layers)
        for index, layer in enumerate(layers):
            if not isinstance(layer, LayerStorage):
                raise fail("StorageReport", "LayerStorage items", f"layers[{index}]", layer)
        names = [layer.name for layer in layers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise fail("StorageReport", "unique layer names", "duplicate names", duplicates)
        object.__setattr__(self, "layers", layers)

    def _sum(self, attribute: str) -> int:
        return sum(getattr(layer, attribute) for layer in self.layers)

    @property
    def num_weights(self) -> int:
        """Weights of all layers."""
        return self._sum("num_weights")

    @property
    def num_nonzeros(self) -> int:
        """Nonzero weights of all layers."""
        return self._sum("num_nonzeros")

    @property
    def num_fillers(self) -> int:
        """Filler entries of all layers (0 for dense layers)."""
        return self._sum("num_fillers")

    @property
    def value_bits(self) -> int:
        """Bits of all stored value codes, fillers included, over all layers."""
        return self._sum("value_bits")

    @property
    def index_bits(self) -> int:
        """Bits of all relative indices over all layers."""
        return self._sum("index_bits")

    @property
    def codebook_bits(self) -> int:
        """Bits of all codebooks over all layers."""
        return self._sum("codebook_bits")

    @property
    def weight_data_bits(self) -> int:
        """Bits of the real weights' values plus codebooks over all layers."""
        return self._sum("weight_data_bits")

    @property
    def total_bits(self) -> int:
        """Bits of everything over all layers: values, fillers, indices, codebooks."""
        return self._sum("total_bits")

    @property
    def baseline_bits(self) -> int:
        """``32 * N``: every weight as a dense 32-bit float."""
        return BASELINE_BITS * self.num_weights

    @property
    def pruning_ratio(self) -> float:
        """``N / sum(k)``."""
        return _ratio(self.num_weights, self.num_nonzeros)

    @property
    def weight_data_ratio(self) -> float:
        """``32 N / sum(weight_data_bits)``: nonzero values and codebooks, no fillers or indices."""
        return _ratio(self.baseline_bits, self.weight_data_bits)

    @property
    def ratio_with_indices(self) -> float:
        """``32 N / sum(total_bits)``: values, fillers, indices and codebooks."""
        return _ratio(self.baseline_bits, self.total_bits)

    def to_dict(self) -> dict[str, Any]:
        """Layers and totals as a JSON-serialisable dict (infinite ratios become ``None``)."""
        totals = {
            key: getattr(self, key)
            for key in (
                "num_weights",
                "num_nonzeros",
                "num_fillers",
                "value_bits",
                "index_bits",
                "codebook_bits",
                "weight_data_bits",
                "total_bits",
                "baseline_bits",
            )
        }
        for key in ("pruning_ratio", "weight_data_ratio", "ratio_with_indices"):
            totals[key] = _finite_or_none(getattr(self, key))
        return {"layers": [layer.to_dict() for layer in self.layers], "totals": totals}

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as JSON; ``kwargs`` go to ``json.dumps``."""
        return json.dumps(self.to_dict(), **kwargs)


def storage_report(layers: Iterable[LayerStorage]) -> StorageReport:
    """Collects layer profiles into a :class:`StorageReport`.

    Example:
      >>> report = storage_report([
      ...     layer_storage("a", positions=[1], num_weights=4, bits_per_value=2, index_bits=2),
      ...     layer_storage("b", weights=np.ones(4), bits_per_value=32, sparse=False)])
      >>> report.total_bits, report.pruning_ratio
      (132, 1.6)
    """
    return StorageReport(tuple(layers))


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bits(bits: float) -> str:
    """A bit count as bytes with binary prefixes.

    Example:
      >>> format_bits(8), format_bits(12), format_bits(8 * 1536), format_bits(8 * 3 * 2**20)
      ('1 B', '1.5 B', '1.50 KiB', '3.00 MiB')
    """
    size = bits / 8
    unit = 0
    while size >= 1024 and unit < len(_UNITS) - 1:
        size /= 1024
        unit += 1
    if unit == 0:
        return f"{size:.1f} B".replace(".0 B", " B")
    return f"{size:.2f} {_UNITS[unit]}"


def _format_ratio(ratio: float) -> str:
    return "inf" if not math.isfinite(ratio) else f"{ratio:,.1f}×"


def format_report(report: StorageReport) -> str:
    """Renders a report as a fixed-width text table with totals and the three ratios.

    Sizes are bytes with binary prefixes (KiB, MiB); ``p`` is the relative-index width, or
    ``dense``; the last column is the layer's ``32 n / total_bits``.

    Args:
      report: the :class:`StorageReport` to render.

    Returns:
      The table as one string (no trailing newline).
    """
    if not isinstance(report, StorageReport):
        raise fail("format_report", "a StorageReport", "report", report)
    header = (
        "layer",
        "weights",
        "nonzeros",
        "fillers",
        "b",
        "p",
        "values",
        "indices",
        "codebook",
        "total",
        "ratio",
    )
    rows = [
        (
            layer.name,
            f"{layer.num_weights:,}",
            f"{layer.num_nonzeros:,}",
            f"{layer.num_fillers:,}",
            str(layer.bits_per_value),
            str(layer.index_bits_per_entry) if layer.sparse else "dense",
            format_bits(layer.value_bits),
            format_bits(layer.index_bits),
            format_bits(layer.codebook_bits),
            format_bits(layer.total_bits),
            _format_ratio(layer.ratio_with_indices),
        )
        for layer in report.layers
    ]
    rows.append(
        (
            "total",
            f"{report.num_weights:,}",
            f"{report.num_nonzeros:,}",
            f"{report.num_fillers:,}",
            "",
            "",
            format_bits(report.value_bits),
            format_bits(report.index_bits),
            format_bits(report.codebook_bits),
            format_bits(report.total_bits),
            _format_ratio(report.ratio_with_indices),
        )
    )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    rule = "-" * len(line(header))
    lines = [line(header), rule, *(line(row) for row in rows[:-1]), rule, line(rows[-1])]
    lines += [
        "",
        f"dense 32-bit baseline:            {format_bits(report.baseline_bits)}",
        f"pruning (weights / nonzeros):     {_format_ratio(report.pruning_ratio)}",
        f"weight data (values + codebooks): {_format_ratio(report.weight_data_ratio)}"
        f"  ({format_bits(report.weight_data_bits)})",
        f"with indices and fillers:         {_format_ratio(report.ratio_with_indices)}"
        f"  ({format_bits(report.total_bits)})",
    ]
    return "\n".join(lines)
