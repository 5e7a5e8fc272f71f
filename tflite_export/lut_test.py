"""The LUT format: tables, bit packing, headers and decoding (pure numpy)."""

import numpy as np
import pytest

from tflite_export import lut


def _clustered(rng, shape, k, axis=None):
    """Values drawn from ``k`` centroids per tensor, or per slice along ``axis``."""
    if axis is None:
        return rng.choice(rng.standard_normal(k).astype(np.float32), size=shape)
    moved = list(shape)
    channels = moved.pop(axis)
    rows = [
        rng.choice(rng.standard_normal(k).astype(np.float32), size=moved) for _ in range(channels)
    ]
    return np.stack(rows, axis=axis)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 8, 9, 64, 65, 128])
def test_index_bits_is_the_least_width_that_indexes_every_value(count):
    bits = lut.index_bits(count)
    assert 2**bits >= count
    assert bits == 1 or 2 ** (bits - 1) < count


@pytest.mark.parametrize("bits", range(1, 8))
def test_packing_round_trips_and_takes_ceil_bits_over_8_bytes(bits):
    rng = np.random.default_rng(bits)
    indices = rng.integers(0, 2**bits, size=37)
    packed = lut.pack_indices(indices, bits)
    assert packed.size == (37 * bits + 7) // 8
    assert np.array_equal(lut.unpack_indices(packed, bits, 37), indices)
    assert np.array_equal(lut.unpack_indices(packed.tobytes(), bits, 37), indices)


def test_packing_is_most_significant_bit_first():
    # 3-bit indices 1, 2, 7 -> bits 00101011 1(0000000 padding) = 0x2b 0x80.
    assert lut.pack_indices(np.array([1, 2, 7]), 3).tobytes() == bytes([0x2B, 0x80])


def test_packing_matches_tflite_micro():
    micro = pytest.importorskip(
        "tflite_micro.tensorflow.lite.micro.compression.lut",
        reason="needs tflite-micro, the optional [tflm] extra: pip install -e '.[tflm]'",
    )
    rng = np.random.default_rng(0)
    for bits in range(1, 8):
        indices = rng.integers(0, 2**bits, size=29)
        assert lut.pack_indices(indices, bits).tobytes() == micro.pack_indices(indices, bits)


def test_packing_refuses_indices_wider_than_bits():
    with pytest.raises(ValueError, match=r"indices in \[0, 3\]"):
        lut.pack_indices(np.array([0, 4]), 2)


@pytest.mark.parametrize("axis", [None, 0, -1])
def test_fit_decodes_to_the_values_with_sorted_tables(axis):
    rng = np.random.default_rng(1)
    values = _clustered(rng, (6, 3, 5), k=5, axis=axis)
    fit = lut.fit_lut(values, axis)
    assert np.array_equal(fit.decode(), values)
    assert fit.num_tables == (1 if axis is None else values.shape[axis])
    assert fit.stride == int(fit.counts.max()) <= 5
    assert fit.bits == lut.index_bits(fit.stride)
    for table, count in zip(fit.tables, fit.counts):
        assert np.all(np.diff(table[:count]) > 0)
        assert not np.any(table[count:])  # padding entries are zero
    assert fit.index_bytes == (values.size * fit.bits + 7) // 8
    assert fit.table_bytes == fit.num_tables * fit.stride * 4


def test_a_tensor_with_too_many_values_does_not_fit():
    values = np.arange(129, dtype=np.float32)
    assert not lut.fit_lut(values, None).fits
    assert lut.fit_lut(values[:128], None).fits


@pytest.mark.parametrize("axis", [None, 0, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.int8])
def test_decode_of_a_written_pair_gives_the_tensor(axis, dtype):
    rng = np.random.default_rng(2)
    values = _clustered(rng, (4, 3, 3, 6), k=6, axis=axis)
    values = (values * 40).astype(dtype)
    fit = lut.fit_lut(values, axis)
    header = lut.LutHeader(bits=fit.bits, axis=axis, stride=fit.stride)
    ancillary = header.to_bytes() + fit.tables.tobytes()
    encoded = lut.pack_indices(fit.indices, fit.bits)
    decoded = lut.decode(encoded, ancillary, values.shape, dtype)
    assert decoded.dtype == dtype and np.array_equal(decoded, values)
    parsed, tables = lut.parse_ancillary(np.frombuffer(ancillary, np.uint8))
    assert parsed == header and tables == fit.tables.tobytes()


def test_header_layout_is_the_dcm_one():
    header = lut.LutHeader(bits=3, axis=None, stride=6).to_bytes()
    # decode type 0 (LUT), DCM version 1, LUT version 1, axis 15 (one table) | bits 3, stride.
    assert header == bytes([0, 1, 0, 0, 1, 0xF3, 6]) + bytes(9)
    assert lut.LutHeader(bits=2, axis=3, stride=4).to_bytes()[5] == 0x32


def test_malformed_ancillary_data_is_refused():
    good = lut.LutHeader(bits=2, axis=None, stride=4).to_bytes()
    with pytest.raises(ValueError, match="decode type 0"):
        lut.parse_ancillary(bytes([1]) + good[1:])
    with pytest.raises(ValueError, match="at least 16 bytes"):
        lut.parse_ancillary(good[:8])
    with pytest.raises(ValueError, match="16 bytes"):  # 4 float32 entries missing
        lut.decode(bytes(1), good, (4,), np.float32)
    past_stride = lut.LutHeader(bits=2, axis=None, stride=3).to_bytes() + bytes(12)
    with pytest.raises(ValueError, match="below the table stride"):
        lut.decode(lut.pack_indices(np.array([3]), 2), past_stride, (1,), np.float32)
