"""Bit-level storage accounting in the terms of Deep Compression and Ye et al. 2018.

Pure numpy; no TensorFlow or Keras. A compressed layer is described by how many weights it has,
which of them are nonzero, how many bits each stored value takes and how big its codebook is.
From that this module counts bits the way the papers do, per layer and in total, and prints the
ratios they print.

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
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

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

BASELINE_BITS = 32
"""Bits per weight of the uncompressed baseline (32-bit floats), as in both papers."""

MAX_INDEX_BITS = 32
"""Largest relative-index width accepted; gaps beyond 2**32 need no wider codes in practice."""

_DEFAULT_MAX_INDEX_BITS = 16
_MAX_VALUE_BITS = 64


class StorageError(ValueError):
    """A storage description was given a value outside what it accepts."""


def _fail(where: str, expected: str, field: str, value: Any) -> StorageError:
    shown = value
    if isinstance(value, np.ndarray):
        shown = f"array(shape={value.shape}, dtype={value.dtype})"
    return StorageError(f"{where}: Expected {expected}; received: {field}={shown!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_int(where: str, field: str, value: Any, low: int, high: int | None = None) -> int:
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise _fail(where, f"{field} to be an integer {bound}", field, value)
    return int(value)


def _as_positions(where: str, positions: Any, num_weights: int | None = None) -> np.ndarray:
    """Validates flat nonzero positions and returns them as a 1-D int64 array."""
    array = np.asarray(positions)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise _fail(where, "positions to be a 1-D array of integers", "positions", array)
    array = array.astype(np.int64, copy=False)
    if array[0] < 0:
        raise _fail(where, "positions >= 0", "positions[0]", int(array[0]))
    steps = np.diff(array)
    if steps.size and steps.min() <= 0:
        bad = int(np.argmax(steps <= 0))
        raise _fail(
            where,
            "strictly increasing positions",
            f"positions[{bad}:{bad + 2}]",
            array[bad : bad + 2].tolist(),
        )
    if num_weights is not None and array[-1] >= num_weights:
        raise _fail(
            where, f"positions < num_weights ({num_weights})", "positions[-1]", int(array[-1])
        )
    return array


def _zero_runs(positions: np.ndarray) -> np.ndarray:
    """Zeros skipped before each nonzero, ``g - 1``, for validated positions."""
    return np.diff(positions, prepend=-1) - 1


def relative_gaps(positions: Any) -> np.ndarray:
    """Gaps between consecutive nonzeros, the first counted from position -1.

    Args:
      positions: strictly increasing flat indices of the nonzeros.

    Returns:
      int64 array ``g`` with ``g[0] = positions[0] + 1`` and ``g[i] = positions[i] -
      positions[i - 1]``; every gap is >= 1.

    Raises:
      StorageError: if the positions are not strictly increasing non-negative integers.

    Example:
      >>> relative_gaps([0, 3, 4, 20, 39]).tolist()
      [1, 3, 1, 16, 19]
    """
    return np.diff(_as_positions("relative_gaps", positions), prepend=-1)


def count_fillers(positions: Any, index_bits: int) -> int:
    """Filler entries relative indexing with ``index_bits`` bits needs for these nonzeros.

    ``F(p) = sum_i floor((g_i - 1) / 2**p)`` with the gaps of :func:`relative_gaps` (see the
    module docstring for the encoding).

    Args:
      positions: strictly increasing flat indices of the nonzeros.
      index_bits: bits ``p`` per relative index, in ``[1, MAX_INDEX_BITS]``.

    Returns:
      The number of filler (zero-valued) entries.

    Raises:
      StorageError: on invalid positions or index bits.

    Example:
      >>> count_fillers([0, 3, 4, 20, 39], index_bits=3)
      3
    """
    where = "count_fillers"
    p = _check_int(where, "index_bits", index_bits, 1, MAX_INDEX_BITS)
    runs = _zero_runs(_as_positions(where, positions))
    return int(np.sum(runs >> p))


def fillers_by_index_bits(
    positions: Any, max_index_bits: int = _DEFAULT_MAX_INDEX_BITS
) -> dict[int, int]:
    """Filler counts for every index width ``p = 1 .. max_index_bits`` in one pass per ``p``.

    Args:
      positions: strictly increasing flat indices of the nonzeros.
      max_index_bits: largest ``p`` to evaluate, in ``[1, MAX_INDEX_BITS]``.

    Returns:
      ``{p: F(p)}`` for ``p = 1 .. max_index_bits``.

    Raises:
      StorageError: on invalid positions or ``max_index_bits``.

    Example:
      >>> fillers_by_index_bits([0, 3, 4, 20, 39], max_index_bits=5)
      {1: 17, 2: 7, 3: 3, 4: 1, 5: 0}
    """
    where = "fillers_by_index_bits"
    top = _check_int(where, "max_index_bits", max_index_bits, 1, MAX_INDEX_BITS)
    runs = _zero_runs(_as_positions(where, positions))
    counts: dict[int, int] = {}
    # floor(z / 2**p) == (z >> (p - 1)) >> 1: shift in place once per p instead of from scratch,
    # and stop scanning once every run fits (all later counts are zero).
    for p in range(1, top + 1):
        if runs.size:
            runs >>= 1
            runs = runs[runs > 0] if p % 4 == 0 else runs
        counts[p] = int(runs.sum()) if runs.size else 0
    return counts


@dataclasses.dataclass(frozen=True)
class SparseEncodingCost:
    """Bits of one layer's nonzeros under relative indexing with a fixed index width.

    Attributes:
      index_bits_per_entry: bits ``p`` per relative index.
      bits_per_value: bits ``b`` per stored value.
      num_nonzeros: nonzero weights ``k``.
      num_fillers: filler entries ``F(p)``.
    """

    index_bits_per_entry: int
    bits_per_value: int
    num_nonzeros: int
    num_fillers: int

    @property
    def num_entries(self) -> int:
        """Stored entries: nonzeros plus fillers."""
        return self.num_nonzeros + self.num_fillers

    @property
    def value_bits(self) -> int:
        """Bits of all stored value codes, fillers included."""
        return self.num_entries * self.bits_per_value

    @property
    def index_bits(self) -> int:
        """Bits of all relative indices, fillers included."""
        return self.num_entries * self.index_bits_per_entry

    @property
    def total_bits(self) -> int:
        """Value plus index bits (no codebook)."""
        return self.value_bits + self.index_bits


def relative_index_cost(positions: Any, index_bits: int, bits_per_value: int) -> SparseEncodingCost:
    """Cost of storing the nonzeros at ``positions`` with ``index_bits``-bit relative indices.

    Args:
      positions: strictly increasing flat indices of the nonzeros.
      index_bits: bits ``p`` per relative index, in ``[1, MAX_INDEX_BITS]``.
      bits_per_value: bits ``b`` per stored value, in ``[1, 64]``.

    Returns:
      A :class:`SparseEncodingCost` (codebook not included).

    Raises:
      StorageError: on invalid arguments.

    Example:
      >>> cost = relative_index_cost([0, 3, 4, 20, 39], index_bits=3, bits_per_value=2)
      >>> cost.num_fillers, cost.value_bits, cost.index_bits, cost.total_bits
      (3, 16, 24, 40)
    """
    where = "relative_index_cost"
    p = _check_int(where, "index_bits", index_bits, 1, MAX_INDEX_BITS)
    b = _check_int(where, "bits_per_value", bits_per_value, 1, _MAX_VALUE_BITS)
    array = _as_positions(where, positions)
    fillers = int(np.sum(_zero_runs(array) >> p))
    return SparseEncodingCost(p, b, int(array.size), fillers)


def _argmin_index_bits(num_nonzeros: int, fillers: Mapping[int, int], bits_per_value: int) -> int:
    costs = {p: (num_nonzeros + f) * (bits_per_value + p) for p, f in fillers.items()}
    return min(costs, key=lambda p: (costs[p], p))


def best_index_bits(
    positions: Any, bits_per_value: int, max_index_bits: int = _DEFAULT_MAX_INDEX_BITS
) -> int:
    """Index width ``p`` that minimises ``(k + F(p)) * (b + p)``; the smallest on ties.

    Args:
      positions: strictly increasing flat indices of the nonzeros.
      bits_per_value: bits ``b`` per stored value, in ``[1, 64]``.
      max_index_bits: search ``p = 1 .. max_index_bits``, at most ``MAX_INDEX_BITS``.

    Returns:
      The best ``p``.

    Raises:
      StorageError: on invalid arguments.

    Example:
      >>> best_index_bits([0, 3, 4, 20, 39], bits_per_value=2)
      5
    """
    where = "best_index_bits"
    b = _check_int(where, "bits_per_value", bits_per_value, 1, _MAX_VALUE_BITS)
    top = _check_int(where, "max_index_bits", max_index_bits, 1, MAX_INDEX_BITS)
    array = _as_positions(where, positions)
    return _argmin_index_bits(int(array.size), fillers_by_index_bits(array, top), b)


def bits_for_levels(num_levels: int) -> int:
    """Bits per value code for ``num_levels`` distinct values: ``ceil(log2(num_levels))``, >= 1.

    In sparse storage the fillers store the value zero, so count zero among the levels when the
    quantizer's levels do not already include it.

    Example:
      >>> bits_for_levels(8), bits_for_levels(9), bits_for_levels(2), bits_for_levels(1)
      (3, 4, 1, 1)
    """
    levels = _check_int("bits_for_levels", "num_levels", num_levels, 1)
    return max(1, (levels - 1).bit_length())


def codebook_size_bits(num_shared_values: int, bits_per_shared_value: int = BASELINE_BITS) -> int:
    """Codebook bits: ``num_shared_values * bits_per_shared_value``.

    Use ``2**b`` (or the number of clusters) shared 32-bit values for trained quantization,
    ``1`` (the scale) for uniform levels, ``0`` for raw floats.

    Example:
      >>> codebook_size_bits(256), codebook_size_bits(1), codebook_size_bits(0)
      (8192, 32, 0)
    """
    where = "codebook_size_bits"
    count = _check_int(where, "num_shared_values", num_shared_values, 0)
    bits = _check_int(where, "bits_per_shared_value", bits_per_shared_value, 1, _MAX_VALUE_BITS)
    return count * bits


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
            raise _fail("LayerStorage", "name to be a non-empty string", "name", self.name)
        where = f"layer {self.name!r}"
        set_ = object.__setattr__  # frozen: normalise numpy integers to int for JSON
        set_(self, "num_weights", _check_int(where, "num_weights", self.num_weights, 1))
        set_(
            self,
            "num_nonzeros",
            _check_int(where, "num_nonzeros", self.num_nonzeros, 0, self.num_weights),
        )
        set_(
            self,
            "bits_per_value",
            _check_int(where, "bits_per_value", self.bits_per_value, 1, _MAX_VALUE_BITS),
        )
        set_(self, "codebook_bits", _check_int(where, "codebook_bits", self.codebook_bits, 0))
        if not isinstance(self.sparse, (bool, np.bool_)):
            raise _fail(where, "sparse to be a bool", "sparse", self.sparse)
        set_(self, "sparse", bool(self.sparse))
        if self.sparse:
            p = _check_int(
                where, "index_bits_per_entry", self.index_bits_per_entry, 1, MAX_INDEX_BITS
            )
            room = self.num_weights - self.num_nonzeros  # fillers sit on zero positions
            fillers = _check_int(where, "num_fillers", self.num_fillers, 0, room)
        else:
            p = _check_int(where, "index_bits_per_entry (dense)", self.index_bits_per_entry, 0, 0)
            fillers = _check_int(where, "num_fillers (dense)", self.num_fillers, 0, 0)
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
    max_index_bits: int = _DEFAULT_MAX_INDEX_BITS,
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
        raise _fail("layer_storage", "name to be a non-empty string", "name", name)
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
            raise _fail(where, "a non-empty weights array", "weights.size", 0)
        if num_weights is not None and _check_int(where, "num_weights", num_weights, 1) != (
            flat.size
        ):
            raise _fail(
                where, f"num_weights == weights.size ({flat.size})", "num_weights", num_weights
            )
        n = int(flat.size)
        nonzero_positions = np.flatnonzero(flat)
    else:
        if num_weights is None:
            raise _fail(where, "num_weights together with positions", "num_weights", None)
        n = _check_int(where, "num_weights", num_weights, 1)
        nonzero_positions = _as_positions(where, positions, n)
    b = _check_int(where, "bits_per_value", bits_per_value, 1, _MAX_VALUE_BITS)
    codebook = _check_int(where, "codebook_bits", codebook_bits, 0)
    if not isinstance(sparse, (bool, np.bool_)):
        raise _fail(where, "sparse to be a bool", "sparse", sparse)
    k = int(nonzero_positions.size)
    if not sparse:
        return LayerStorage(name, n, k, b, codebook, sparse=False)
    if index_bits is not None:
        p = _check_int(where, "index_bits", index_bits, 1, MAX_INDEX_BITS)
        fillers = int(np.sum(_zero_runs(nonzero_positions) >> p))
    else:
        top = _check_int(where, "max_index_bits", max_index_bits, 1, MAX_INDEX_BITS)
        by_p = fillers_by_index_bits(nonzero_positions, top)
        p = _argmin_index_bits(k, by_p, b)
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
            raise _fail("StorageReport", "at least one layer", "layers", self.layers)
        for index, layer in enumerate(layers):
            if not isinstance(layer, LayerStorage):
                raise _fail("StorageReport", "LayerStorage items", f"layers[{index}]", layer)
        names = [layer.name for layer in layers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise _fail("StorageReport", "unique layer names", "duplicate names", duplicates)
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
        raise _fail("format_report", "a StorageReport", "report", report)
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
