"""Tests for relative indexing: hand-checked gaps and fillers, agreement with a brute-force
encoder written as the papers describe it, and code and codebook sizes."""

import numpy as np
import pytest

from tf_admm.sparse_encoding import (
    StorageError,
    argmin_index_bits,
    best_index_bits,
    bits_for_levels,
    codebook_size_bits,
    count_fillers,
    fillers_by_index_bits,
    relative_gaps,
    relative_index_cost,
)
from tf_admm.testing import random_positions


def _brute_force_encode(positions, index_bits):
    """Relative-index encoder written as the papers describe it, one entry at a time.

    Returns a list of ``(code, is_filler)``: ``code`` is the number of zeros skipped since the
    previous entry; when more than ``2**p - 1`` zeros lie ahead, a filler entry is placed as far
    ahead as the code allows.
    """
    largest_code = 2**index_bits - 1
    entries = []
    previous = -1
    for position in positions:
        while position - previous - 1 > largest_code:
            previous += largest_code + 1
            entries.append((largest_code, True))
        entries.append((int(position - previous - 1), False))
        previous = int(position)
    return entries


def _decode(entries):
    positions, cursor = [], -1
    for code, is_filler in entries:
        cursor += code + 1
        if not is_filler:
            positions.append(cursor)
    return positions


def test_hand_checked_gaps_fillers_and_cost():
    # n = 40 weights, nonzeros at 0, 3, 4, 20, 39; p = 3: zeros skipped 0, 2, 0, 15, 18, so
    # fillers (g - 1) // 8 = 0, 0, 0, 1, 2 (at 12, 28, 36); 8 entries of 2 + 3 bits.
    positions = [0, 3, 4, 20, 39]
    assert relative_gaps(positions).tolist() == [1, 3, 1, 16, 19]
    assert count_fillers(positions, index_bits=3) == 3
    assert _brute_force_encode(positions, 3) == [
        (0, False),
        (2, False),
        (0, False),
        (7, True),  # filler at 4 + 8 = 12
        (7, False),  # 20 = 12 + 7 + 1
        (7, True),  # filler at 28
        (7, True),  # filler at 36
        (2, False),  # 39 = 36 + 2 + 1
    ]
    cost = relative_index_cost(positions, index_bits=3, bits_per_value=2)
    assert (cost.num_entries, cost.value_bits, cost.index_bits, cost.total_bits) == (8, 16, 24, 40)
    # Costs per p as in tf_admm/storage_test.py's hand-checked best width: 66, 48, 40, 36, 35.
    assert argmin_index_bits(5, {1: 17, 2: 7, 3: 3, 4: 1, 5: 0}, bits_per_value=2) == 5
    assert argmin_index_bits(5, {5: 0, 6: 0}, bits_per_value=2) == 5  # smallest p on ties


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("density", [0.005, 0.05, 0.3, 0.9])
def test_filler_count_matches_brute_force_encoder(seed, density):
    num_weights = 3000
    positions = random_positions(num_weights, max(1, int(density * num_weights)), seed)
    counts = fillers_by_index_bits(positions, max_index_bits=12)
    for p in range(1, 13):
        entries = _brute_force_encode(positions, p)
        assert _decode(entries) == positions.tolist()  # the reference encoder is lossless
        assert all(0 <= code < 2**p for code, _ in entries)
        fillers = sum(is_filler for _, is_filler in entries)
        assert count_fillers(positions, p) == fillers
        assert counts[p] == fillers
        cost = relative_index_cost(positions, index_bits=p, bits_per_value=3)
        assert cost.total_bits == len(entries) * (3 + p)


def test_filler_counts_with_huge_gaps_and_wide_indices():
    # Gaps far beyond 2**16 exercise the shrinking loop in fillers_by_index_bits.
    positions = np.array([5, 70_000, 70_001, 5_000_000, 2**31 + 17], dtype=np.int64)
    counts = fillers_by_index_bits(positions, max_index_bits=32)
    for p in (1, 3, 4, 5, 8, 12, 16, 17, 24, 31, 32):
        expected = sum(int(z) >> p for z in np.diff(positions, prepend=-1) - 1)
        assert counts[p] == count_fillers(positions, p) == expected
    assert counts[32] == 0


def test_search_range_is_respected():
    positions = [0, 1000, 2000]  # wants p = 10 (no fillers) when b is large
    assert best_index_bits(positions, bits_per_value=32, max_index_bits=16) == 10
    assert best_index_bits(positions, bits_per_value=32, max_index_bits=4) <= 4


def test_bits_for_levels_and_codebook_size():
    assert [bits_for_levels(k) for k in (1, 2, 3, 4, 5, 8, 9, 256, 257)] == [
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        8,
        9,
    ]
    assert codebook_size_bits(32) == 1024
    assert codebook_size_bits(1, 16) == 16


def test_bad_inputs_name_the_field():
    with pytest.raises(StorageError, match="received: index_bits=0"):
        count_fillers([1, 2], index_bits=0)
    with pytest.raises(StorageError, match="received: num_levels=0"):
        bits_for_levels(0)
    with pytest.raises(StorageError, match="received: num_shared_values=-1"):
        codebook_size_bits(-1)
    with pytest.raises(StorageError, match=r"strictly increasing positions; received"):
        count_fillers([3, 3], index_bits=2)
