"""Finding a weight's layout in a tensor from the values alone."""

import itertools

import numpy as np
import pytest

from tflite_export.layouts import Layout, find_layouts


def _weight(shape, seed=0, zeros=0.8):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(np.float32)
    return values * (rng.random(shape) >= zeros)


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(4))))
def test_any_axis_order_and_reshape_is_found_and_reproduces_the_tensor(permutation):
    weight = _weight((2, 3, 4, 5))
    tensor = weight.transpose(permutation).reshape(-1, 5 if permutation[-1] == 3 else 1)
    layouts = find_layouts(weight, tensor)
    assert len(layouts) == 1 and layouts[0].whole
    np.testing.assert_array_equal(layouts[0].apply(weight), tensor)


def test_each_gate_slice_is_found_with_its_index():
    kernel = _weight((6, 4 * 5), zeros=0.5)  # an LSTM kernel: 4 gates of 5 units
    for gate in range(4):
        tensor = kernel[:, 5 * gate : 5 * (gate + 1)].T
        (layout,) = find_layouts(kernel, tensor)
        assert layout.region == (1, 5 * gate, 5 * (gate + 1))
        assert layout.index == f"[:, {5 * gate}:{5 * (gate + 1)}]"
        assert layout.describe() == f"slice {layout.index}, transpose (1, 0)"
        np.testing.assert_array_equal(layout.apply(kernel), tensor)


def test_unequal_slices_of_a_gru_recurrent_kernel_are_found():
    kernel = _weight((5, 15), zeros=0.5)  # reset_after=False: [:, :10] and [:, 10:]
    assert [x.region for x in find_layouts(kernel, kernel[:, :10].T)] == [(1, 0, 10)]
    assert [x.region for x in find_layouts(kernel, kernel[:, 10:].T)] == [(1, 10, 15)]


def test_other_values_are_not_found():
    weight = _weight((4, 6))
    other = weight.copy()
    other[np.nonzero(other)[0][0], np.nonzero(other)[1][0]] += 1.0
    assert find_layouts(weight, other.T) == []
    assert find_layouts(weight, _weight((6, 4), seed=1)) == []


def test_tolerance_accepts_quantized_values_within_half_a_step():
    weight = _weight((3, 8), zeros=0.0)
    step = np.float32(0.05)
    codes = np.round(weight.T / step)
    within = (codes * step).astype(np.float32)
    (layout,) = find_layouts(weight, within, np.float32(0.5 * step * 1.001))
    assert layout.permutation == (1, 0)
    assert find_layouts(weight, within) == []


def test_a_folded_scale_or_mask_is_found_only_when_asked_and_after_exact_matches():
    weight = _weight((8, 8), zeros=0.5)
    scaled = (weight.T * np.float32(0.125**0.5)).astype(np.float32)
    assert find_layouts(weight, scaled) == []
    (layout,) = find_layouts(weight, scaled, folded=True)
    assert layout.folded and layout.describe().startswith("transpose (1, 0), scaled by 0.353553")
    mask = np.random.default_rng(2).random(weight.shape) < 0.5
    masked = (weight * mask).T
    (layout,) = find_layouts(weight, masked, folded=True)
    assert layout.masked and not find_layouts(weight, masked)


def test_an_all_zero_weight_matches_as_is_first():
    zeros = np.zeros((4, 4), np.float32)
    layouts = find_layouts(zeros, zeros)
    assert layouts[0] == Layout((4, 4), (4, 4), (0, 1)) and layouts[0].describe() == "as is"
