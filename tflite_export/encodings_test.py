"""Properties of the pure-numpy encodings: level fits, INT4 packing, sparse layouts."""

import doctest
import itertools

import numpy as np
import pytest

from tflite_export import encodings
from tflite_export.encodings import CodeType, DimFormat
from tflite_export.testing import on_levels, prune


def _weights(shape, seed=0, keep=None):
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return prune(values, keep) if keep is not None else values


def test_docstring_examples():
    assert doctest.testmod(encodings).failed == 0


@pytest.mark.parametrize("bits", [1, 2, 4, 7])
def test_weights_on_levels_fit_exactly_in_the_narrowest_code_type(bits):
    values = on_levels(_weights((30, 20), seed=bits, keep=300), bits)
    fit = encodings.fit_uniform_levels(values)
    assert fit is not None and fit.exact
    np.testing.assert_array_equal(fit.decode(), values)
    assert np.all((fit.codes == 0) == (values == 0))
    low, high = fit.code_type.limits
    assert low <= fit.stored.min() and fit.stored.max() <= high
    width = fit.codes.max() - fit.codes.min()
    narrower = [t for t in CodeType if t.bits < fit.code_type.bits]
    assert all(width > t.limits[1] - t.limits[0] for t in narrower)


def test_eight_bit_levels_up_to_plus_128_use_int8_with_a_zero_point():
    values = _weights((40, 40))
    values *= np.sign(values.flat[np.argmax(np.abs(values))])  # +128 used, -128 not
    values = on_levels(values, 8)
    fit = encodings.fit_uniform_levels(values)
    assert fit is not None and fit.exact
    assert fit.codes.max() == 128
    assert (fit.code_type, fit.zero_point) == (CodeType.INT8, -1)
    assert fit.stored.min() >= -128 and fit.stored.max() <= 127
    np.testing.assert_array_equal(fit.decode(), values)


def test_codes_beyond_int8_use_int16():
    values = on_levels(_weights((40, 40)), 8)
    values[0, 0] = values.max() * 2  # code 256
    fit = encodings.fit_uniform_levels(values)
    assert fit is not None and fit.exact and fit.code_type is CodeType.INT16


def test_step_found_when_the_smallest_level_is_unused():
    step = np.float32(0.0625 / 3)
    codes = np.array([3, -6, 9, 0, 12, -3], np.float32)
    values = codes * step
    fit = encodings.fit_uniform_levels(values)
    assert fit is not None and fit.exact
    np.testing.assert_array_equal(fit.decode(), values)
    assert np.max(np.abs(fit.codes)) <= 12


def test_step_found_from_the_gaps_when_small_codes_are_all_unused():
    step = np.float32(0.01)
    values = np.array([17, -18, 20, 31, -32], np.float32) * step
    fit = encodings.fit_uniform_levels(values)
    assert fit is not None and fit.exact
    np.testing.assert_array_equal(fit.decode(), values)
    assert fit.code_type is CodeType.INT8


def test_per_channel_levels_fit_along_the_axis_only():
    values = on_levels(_weights((8, 30), keep=120), 3, axis=0)
    assert (
        encodings.fit_uniform_levels(values) is None
        or not encodings.fit_uniform_levels(values).exact
    )
    fit = encodings.fit_uniform_levels(values, axis=0)
    assert fit is not None and fit.exact and fit.scale.shape == (8,)
    np.testing.assert_array_equal(fit.decode(), values)


def test_random_floats_are_not_on_levels():
    assert encodings.fit_uniform_levels(_weights((50, 50), keep=500)) is None


def test_all_zero_tensor_fits_with_zero_codes():
    fit = encodings.fit_uniform_levels(np.zeros((3, 4), np.float32))
    assert fit.exact and not fit.codes.any()


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_symmetric_int8_error_is_at_most_half_a_step(axis):
    values = _weights((16, 12), seed=3)
    fit = encodings.quantize_symmetric_int8(values, axis)
    assert fit.code_type is CodeType.INT8 and np.max(np.abs(fit.codes)) <= 127
    assert fit.max_error <= np.max(fit.scale) / 2 + 1e-7
    assert fit.max_error > 0


@pytest.mark.parametrize("count", [1, 2, 7, 16])
def test_int4_pack_round_trip(count):
    codes = np.random.default_rng(count).integers(-8, 8, size=count)
    packed = encodings.pack_int4(codes)
    assert packed.size == (count + 1) // 2
    np.testing.assert_array_equal(encodings.unpack_int4(packed, count), codes)


def test_int4_packs_the_first_code_in_the_low_nibble():
    assert encodings.pack_int4(np.array([1, -1])).tolist() == [0xF1]


def test_int4_rejects_out_of_range_codes():
    with pytest.raises(ValueError, match="INT4"):
        encodings.pack_int4(np.array([8]))


@pytest.mark.parametrize("shape", [(7,), (5, 9), (3, 4, 5), (2, 3, 3, 4)])
def test_every_sparse_pattern_densifies_back(shape):
    values = _weights(shape, seed=len(shape), keep=max(1, int(np.prod(shape)) // 5))
    for pattern in itertools.product(list(DimFormat), repeat=len(shape)):
        layout = encodings.sparse_layout(values != 0, pattern)
        stored = values.reshape(-1)[layout.positions]
        dense = encodings.densify(shape, pattern, layout.segments, layout.indices, stored)
        np.testing.assert_array_equal(dense, values)
        assert np.all(np.diff(layout.positions) > 0)  # storage order is C order
        assert layout.num_entries >= np.count_nonzero(values)


def test_all_csr_layout_stores_only_the_nonzeros():
    values = _weights((6, 7, 8), keep=20)
    layout = encodings.sparse_layout(values != 0, ["csr"] * 3)
    assert layout.num_entries == 20


def test_best_layout_is_the_cheapest_pattern():
    values = _weights((20, 3, 3, 10), keep=60)
    best = encodings.best_sparse_layout(values != 0, 4)
    costs = [
        encodings.sparse_layout(values != 0, p).stored_bytes(4)
        for p in itertools.product(list(DimFormat), repeat=4)
        if DimFormat.CSR in p
    ]
    assert best.stored_bytes(4) == min(costs)


def test_index_bytes_use_the_narrowest_type():
    mask = np.zeros((2, 300), bool)
    mask[0, [1, 299]] = True
    layout = encodings.sparse_layout(mask, ["dense", "csr"])
    # segments [0, 2, 2] in uint8 (3 bytes); indices [1, 299] need uint16 (4 bytes).
    assert layout.index_bytes == 3 + 4
    assert encodings.index_dtype(np.array([255])) == np.uint8
    assert encodings.index_dtype(np.array([256])) == np.uint16
    assert encodings.index_dtype(np.array([65536])) == np.int32


def test_densify_rejects_inconsistent_arrays():
    with pytest.raises(ValueError, match="segments"):
        encodings.densify((2, 3), ["dense", "csr"], [None, [0, 1]], [None, [0]], [1.0])
    with pytest.raises(ValueError, match="indices"):
        encodings.densify((2, 3), ["dense", "csr"], [None, [0, 1, 1]], [None, [3]], [1.0])


def test_sparse_layout_rejects_wrong_formats():
    with pytest.raises(ValueError, match="one format per dimension"):
        encodings.sparse_layout(np.ones((2, 2), bool), ["csr"])
    with pytest.raises(ValueError, match="formats"):
        encodings.sparse_layout(np.ones((2, 2), bool), ["csr", "coo"])
