"""Relative indexing and codebooks: the bit costs of storing one sparse layer.

Pure numpy. The encoding is Deep Compression's (Han et al. 2016, §2), described with a worked
example in :mod:`tf_admm.storage`: each stored entry is a value code of ``b`` bits and an index
code of ``p`` bits counting the zeros skipped since the previous entry, with zero-valued filler
entries where a gap is longer than ``2**p``. Here are the gaps, filler counts and costs per
index width, the best width, and the value-code and codebook sizes;
:func:`tf_admm.storage.layer_storage` puts them together per layer.

Example:
  >>> count_fillers([0, 3, 4, 20, 39], index_bits=3), best_index_bits([0, 3, 4, 20, 39], 2)
  (3, 5)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "BASELINE_BITS",
    "DEFAULT_MAX_INDEX_BITS",
    "MAX_INDEX_BITS",
    "MAX_VALUE_BITS",
    "SparseEncodingCost",
    "StorageError",
    "argmin_index_bits",
    "as_positions",
    "best_index_bits",
    "bits_for_levels",
    "check_int",
    "codebook_size_bits",
    "count_fillers",
    "fail",
    "fillers_by_index_bits",
    "is_int",
    "relative_gaps",
    "relative_index_cost",
    "zero_runs",
]

BASELINE_BITS = 32
"""Bits per weight of the uncompressed baseline (32-bit floats), as in both papers."""

MAX_INDEX_BITS = 32
"""Largest relative-index width accepted; gaps beyond 2**32 need no wider codes in practice."""

DEFAULT_MAX_INDEX_BITS = 16
"""Widest relative index tried when searching for the best width."""

MAX_VALUE_BITS = 64
"""Widest value code accepted."""


class StorageError(ValueError):
    """A storage description was given a value outside what it accepts."""


def fail(where: str, expected: str, field: str, value: Any) -> StorageError:
    """The error "<where>: Expected <expected>; received: <field>=<value>" (to raise)."""
    shown = value
    if isinstance(value, np.ndarray):
        shown = f"array(shape={value.shape}, dtype={value.dtype})"
    return StorageError(f"{where}: Expected {expected}; received: {field}={shown!r}")


def is_int(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer (not a bool)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_int(where: str, field: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int, refused unless an integer in ``[low, high]`` (no upper bound if
    ``high`` is None)."""
    if not is_int(value) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise fail(where, f"{field} to be an integer {bound}", field, value)
    return int(value)


def as_positions(where: str, positions: Any, num_weights: int | None = None) -> np.ndarray:
    """Validates flat nonzero positions and returns them as a 1-D int64 array."""
    array = np.asarray(positions)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise fail(where, "positions to be a 1-D array of integers", "positions", array)
    array = array.astype(np.int64, copy=False)
    if array[0] < 0:
        raise fail(where, "positions >= 0", "positions[0]", int(array[0]))
    steps = np.diff(array)
    if steps.size and steps.min() <= 0:
        bad = int(np.argmax(steps <= 0))
        raise fail(
            where,
            "strictly increasing positions",
            f"positions[{bad}:{bad + 2}]",
            array[bad : bad + 2].tolist(),
        )
    if num_weights is not None and array[-1] >= num_weights:
        raise fail(
            where, f"positions < num_weights ({num_weights})", "positions[-1]", int(array[-1])
        )
    return array


def zero_runs(positions: np.ndarray) -> np.ndarray:
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
    return np.diff(as_positions("relative_gaps", positions), prepend=-1)


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
    p = check_int(where, "index_bits", index_bits, 1, MAX_INDEX_BITS)
    runs = zero_runs(as_positions(where, positions))
    return int(np.sum(runs >> p))


def fillers_by_index_bits(
    positions: Any, max_index_bits: int = DEFAULT_MAX_INDEX_BITS
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
    top = check_int(where, "max_index_bits", max_index_bits, 1, MAX_INDEX_BITS)
    runs = zero_runs(as_positions(where, positions))
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
    p = check_int(where, "index_bits", index_bits, 1, MAX_INDEX_BITS)
    b = check_int(where, "bits_per_value", bits_per_value, 1, MAX_VALUE_BITS)
    array = as_positions(where, positions)
    fillers = int(np.sum(zero_runs(array) >> p))
    return SparseEncodingCost(p, b, int(array.size), fillers)


def argmin_index_bits(num_nonzeros: int, fillers: Mapping[int, int], bits_per_value: int) -> int:
    """The width ``p`` among ``fillers`` (``{p: F(p)}``) with the fewest bits
    ``(k + F(p)) * (b + p)``; the smallest on ties."""
    costs = {p: (num_nonzeros + f) * (bits_per_value + p) for p, f in fillers.items()}
    return min(costs, key=lambda p: (costs[p], p))


def best_index_bits(
    positions: Any, bits_per_value: int, max_index_bits: int = DEFAULT_MAX_INDEX_BITS
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
    b = check_int(where, "bits_per_value", bits_per_value, 1, MAX_VALUE_BITS)
    top = check_int(where, "max_index_bits", max_index_bits, 1, MAX_INDEX_BITS)
    array = as_positions(where, positions)
    return argmin_index_bits(int(array.size), fillers_by_index_bits(array, top), b)


def bits_for_levels(num_levels: int) -> int:
    """Bits per value code for ``num_levels`` distinct values: ``ceil(log2(num_levels))``, >= 1.

    In sparse storage the fillers store the value zero, so count zero among the levels when the
    quantizer's levels do not already include it.

    Example:
      >>> bits_for_levels(8), bits_for_levels(9), bits_for_levels(2), bits_for_levels(1)
      (3, 4, 1, 1)
    """
    levels = check_int("bits_for_levels", "num_levels", num_levels, 1)
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
    count = check_int(where, "num_shared_values", num_shared_values, 0)
    bits = check_int(where, "bits_per_shared_value", bits_per_shared_value, 1, MAX_VALUE_BITS)
    return count * bits
