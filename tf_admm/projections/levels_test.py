"""Property tests for projection onto quantization levels and the scale search."""

import numpy as np
import pytest

from tf_admm.compat import tf
from tf_admm.projections.levels import (
    SMALLEST_SCALE,
    LevelScheme,
    fit_scale,
    fraction_on_levels,
    make_levels,
    nearest_level_in,
    nearest_level_index,
    onto_grid,
    paper_grid_multipliers,
    power_of_two_levels,
    project_to_levels,
    relative_error,
    uniform_levels,
)

SCHEMES = ["uniform", "power_of_two"]
BITS = [1, 2, 3, 4, 8]
SHAPES = [(9,), (6, 5), (3, 3, 2, 4)]


def _normal(shape, seed, scale=1.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape).astype(np.float32)


def _mask(shape, seed, keep=0.6):
    return (np.random.default_rng(seed + 100).random(shape) < keep).astype(np.float32)


def _brute_force_nearest_distance(w, levels):
    """Smallest float32 distance from each entry of flat ``w`` to any of the flat ``levels``."""
    return np.min(np.abs(levels[None, :] - w[:, None]), axis=1)


def _sq_error(w, projected, mask):
    w = w.astype(np.float64)
    return float(np.sum(mask * np.square(w - projected.astype(np.float64))))


def _paper_baseline_error(w, mask, bits, scheme):
    """Ye et al.-style search: q on a grid around max|w| / top, exact nearest level, best error.

    Written independently of the library: levels enumerated in float64, nearest by argmin.
    """
    per_side = 2 ** (bits - 1)
    if scheme == "uniform":
        unit = np.arange(1, per_side + 1, dtype=np.float64)
    else:
        unit = 2.0 ** np.arange(per_side, dtype=np.float64)
    unit = np.concatenate([-unit, unit])
    kept = w[mask != 0].astype(np.float64)
    best = np.inf
    for t in np.linspace(0.5, 1.5, 21):
        q = t * np.max(np.abs(kept)) / np.max(unit)
        levels = q * unit
        nearest = levels[np.argmin(np.abs(kept[:, None] - levels[None, :]), axis=1)]
        best = min(best, float(np.sum(np.square(kept - nearest))))
    return best


# --- level sets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("scheme", SCHEMES)
def test_level_set_has_2_to_the_bits_sorted_symmetric_nonzero_levels(scheme, bits):
    levels = make_levels(0.5, bits, scheme).numpy()
    assert levels.shape == (2**bits,)
    assert np.all(np.diff(levels) > 0)
    assert np.all(levels != 0)
    np.testing.assert_array_equal(levels, -levels[::-1])


def test_level_values_match_definitions():
    np.testing.assert_allclose(uniform_levels(0.5, 3).numpy(), [-2, -1.5, -1, -0.5, 0.5, 1, 1.5, 2])
    np.testing.assert_allclose(
        power_of_two_levels(0.25, 3).numpy(), [-2, -1, -0.5, -0.25, 0.25, 0.5, 1, 2]
    )
    assert power_of_two_levels(2.0**-120, 8).numpy().max() == 2.0**7  # 128 exponents fit float32


def test_per_channel_scales_give_one_level_row_per_channel():
    scales = tf.constant([0.5, 1.0, 2.0])
    levels = uniform_levels(scales, 2).numpy()
    assert levels.shape == (3, 4)
    for row, scale in zip(levels, [0.5, 1.0, 2.0], strict=True):
        np.testing.assert_allclose(row, uniform_levels(scale, 2).numpy())


# --- projection onto fixed levels ---------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", [1, 3])
def test_projection_is_idempotent_and_lands_on_levels(shape, scheme, bits):
    w = _normal(shape, seed=bits)
    mask = _mask(shape, seed=bits)
    levels = make_levels(0.3, bits, scheme)
    z = project_to_levels(w, levels, mask).numpy()
    np.testing.assert_array_equal(project_to_levels(z, levels, mask).numpy(), z)
    kept = mask != 0
    assert np.all(z[~kept] == 0)
    assert np.all(z[kept] != 0)
    assert np.all(np.isin(z[kept], levels.numpy()))
    assert len(np.unique(z[kept])) <= 2**bits


def test_pruned_positions_stay_zero_even_when_far_from_zero():
    w = tf.constant([5.0, -5.0, 0.1, 0.0])
    mask = tf.constant([0.0, 0.0, 1.0, 1.0])
    z = project_to_levels(w, uniform_levels(1.0, 2), mask).numpy()
    np.testing.assert_array_equal(z, [0.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_point_on_the_grid_is_unchanged(scheme):
    levels = make_levels(0.125, 3, scheme).numpy()
    rng = np.random.default_rng(7)
    mask = _mask((5, 7), seed=7)
    w = rng.choice(levels, size=(5, 7)).astype(np.float32) * mask
    np.testing.assert_array_equal(project_to_levels(w, levels, mask).numpy(), w)
    assert float(fraction_on_levels(w, levels, mask)) == 1.0


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", BITS)
def test_every_output_is_a_nearest_level_brute_force(scheme, bits):
    w = _normal((400,), seed=bits, scale=2.0)
    levels = make_levels(0.05 if scheme == "uniform" else 0.01, bits, scheme).numpy()
    z = project_to_levels(w, levels).numpy()
    np.testing.assert_array_equal(np.abs(z - w), _brute_force_nearest_distance(w, levels))


def test_per_channel_projection_uses_each_channels_levels():
    w = _normal((4, 5, 3), seed=11)
    mask = _mask((4, 5, 3), seed=11)
    scales = np.array([0.1, 0.5, 2.0], dtype=np.float32)
    levels = uniform_levels(scales, 2)
    z = project_to_levels(w, levels, mask, axis=-1).numpy()
    for channel, scale in enumerate(scales):
        expected = project_to_levels(w[..., channel], uniform_levels(scale, 2), mask[..., channel])
        np.testing.assert_array_equal(z[..., channel], expected.numpy())
    # The same along a leading axis.
    z0 = project_to_levels(np.moveaxis(w, -1, 0), levels, np.moveaxis(mask, -1, 0), axis=0)
    np.testing.assert_array_equal(np.moveaxis(z0.numpy(), 0, -1), z)


def test_ties_go_to_smaller_magnitude_and_kept_zero_goes_positive():
    levels = uniform_levels(1.0, 2)  # [-2, -1, 1, 2]
    w = tf.constant([1.5, -1.5, 0.0, 2.5, -9.0])
    np.testing.assert_array_equal(project_to_levels(w, levels).numpy(), [1, -1, 1, 2, -2])
    np.testing.assert_array_equal(nearest_level_index(w, levels).numpy(), [2, 1, 2, 3, 0])


def test_projection_is_odd_on_symmetric_levels():
    w = _normal((200,), seed=5)
    levels = power_of_two_levels(0.1, 3)
    np.testing.assert_array_equal(
        project_to_levels(-w, levels).numpy(), -project_to_levels(w, levels).numpy()
    )


def test_nearest_level_index_matches_projection_and_marks_pruned():
    w = _normal((6, 4), seed=2)
    mask = _mask((6, 4), seed=2)
    levels = uniform_levels(0.4, 2)
    index = nearest_level_index(w, levels, mask).numpy()
    assert np.all(index[mask == 0] == -1)
    z = project_to_levels(w, levels, mask).numpy()
    np.testing.assert_array_equal(levels.numpy()[index[mask != 0]], z[mask != 0])


def test_single_level_set_maps_every_kept_weight_to_it():
    z = project_to_levels(tf.constant([-3.0, 0.0, 4.0]), tf.constant([0.5]))
    np.testing.assert_array_equal(z.numpy(), [0.5, 0.5, 0.5])


def test_graph_mode_matches_eager():
    w = tf.constant(_normal((5, 6), seed=3))
    mask = tf.constant(_mask((5, 6), seed=3))
    levels = uniform_levels(0.3, 3)
    per_channel = power_of_two_levels(tf.constant([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), 2)
    graph = tf.function(lambda w, lv, m: project_to_levels(w, lv, m))
    np.testing.assert_array_equal(
        graph(w, levels, mask).numpy(), project_to_levels(w, levels, mask).numpy()
    )
    np.testing.assert_array_equal(
        graph(w, per_channel, mask).numpy(), project_to_levels(w, per_channel, mask).numpy()
    )
    graph_index = tf.function(lambda w: nearest_level_index(w, levels, mask))
    np.testing.assert_array_equal(
        graph_index(w).numpy(), nearest_level_index(w, levels, mask).numpy()
    )


# --- scale search -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", BITS)
def test_fitted_scale_is_no_worse_than_paper_grid_search(scheme, bits):
    w = _normal((40, 12), seed=bits, scale=0.1)
    mask = _mask((40, 12), seed=bits)
    fit = fit_scale(w, bits, scheme, mask=mask)
    ours = _sq_error(w, fit.projected.numpy(), mask)
    baseline = _paper_baseline_error(w, mask, bits, scheme)
    assert ours <= baseline * (1 + 1e-6)
    np.testing.assert_array_equal(fit.levels.numpy(), make_levels(fit.scale, bits, scheme).numpy())
    np.testing.assert_array_equal(
        fit.projected.numpy(), project_to_levels(w, fit.levels, mask).numpy()
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_refinement_never_hurts_and_usually_beats_the_grid(scheme):
    w = _normal((30, 30), seed=21)
    errors = {
        steps: _sq_error(w, fit_scale(w, 3, scheme, refine_steps=steps).projected.numpy(), 1.0)
        for steps in (0, 8)
    }
    assert errors[8] <= errors[0]


def test_one_bit_uniform_scale_is_mean_absolute_value():
    # For levels ±q with signs fixed by w, the error Σ(|w| - q)² is minimal at q = mean|w|.
    w = _normal((50, 20), seed=4)
    mask = _mask((50, 20), seed=4)
    fit = fit_scale(w, 1, "uniform", mask=mask)
    assert float(fit.scale) == pytest.approx(np.mean(np.abs(w[mask != 0])), rel=1e-5)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_per_channel_scales_are_at_least_as_good_as_per_tensor(scheme, bits):
    # Channels with very different spreads, as in real Dense/Conv kernels.
    w = _normal((3, 3, 4, 6), seed=bits) * np.array([0.01, 0.1, 1.0, 0.5, 0.05, 2.0], np.float32)
    mask = _mask(w.shape, seed=bits)
    tensor_fit = fit_scale(w, bits, scheme, mask=mask)
    channel_fit = fit_scale(w, bits, scheme, mask=mask, axis=-1)
    assert channel_fit.scale.shape == (6,)
    assert channel_fit.levels.shape == (6, 2**bits)
    per_tensor = _sq_error(w, tensor_fit.projected.numpy(), mask)
    per_channel = _sq_error(w, channel_fit.projected.numpy(), mask)
    assert per_channel < per_tensor
    for channel in range(6):
        slot = (..., channel)
        assert _sq_error(w[slot], channel_fit.projected.numpy()[slot], mask[slot]) <= _sq_error(
            w[slot], tensor_fit.projected.numpy()[slot], mask[slot]
        ) * (1 + 1e-6)


def test_fit_keeps_pruned_zero_and_maps_kept_to_nonzero_levels():
    w = _normal((8, 8), seed=9)
    mask = _mask((8, 8), seed=9)
    w[mask == 0] = 100.0  # Pruned values must influence neither the scale nor the output.
    fit = fit_scale(w, 2, mask=mask)
    z = fit.projected.numpy()
    assert np.all(z[mask == 0] == 0)
    assert np.all(np.isin(z[mask != 0], fit.levels.numpy()))
    assert np.abs(fit.levels.numpy()).max() < 10.0


def test_channel_with_only_zero_weights_gets_a_tiny_positive_scale():
    w = np.zeros((4, 2), dtype=np.float32)
    w[:, 1] = [0.5, -1.0, 0.25, 1.0]
    fit = fit_scale(w, 2, axis=-1)
    scale = fit.scale.numpy()
    assert 0 < scale[0] <= np.finfo(np.float32).tiny
    assert np.all(np.isfinite(fit.projected.numpy()))


def test_eight_bit_power_of_two_levels_stay_finite_and_nonzero():
    fit = fit_scale(_normal((64,), seed=1, scale=10.0), 8, "power_of_two")
    levels = fit.levels.numpy()
    assert np.all(np.isfinite(levels)) and np.all(levels != 0)


def test_fit_scale_runs_inside_tf_function():
    w = tf.constant(_normal((6, 4), seed=8))
    mask = tf.constant(_mask((6, 4), seed=8))
    eager = fit_scale(w, 3, "power_of_two", mask, axis=-1)
    graph = tf.function(lambda w, m: fit_scale(w, 3, "power_of_two", m, axis=-1))(w, mask)
    np.testing.assert_array_equal(graph.scale.numpy(), eager.scale.numpy())
    np.testing.assert_array_equal(graph.projected.numpy(), eager.projected.numpy())


def test_paper_grid_is_centred_on_max_over_top():
    grid = paper_grid_multipliers()
    assert grid[0] == 0.5 and grid[-1] == 1.5 and 1.0 in grid


# --- metrics ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["uniform", "power_of_two"])
def test_onto_grid_is_the_least_squares_scaled_grid_per_row(scheme):
    unit = make_levels(1.0, 3, scheme).numpy()
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, (2, 8))
    moved = (np.stack([0.2 * unit, 0.05 * unit]) + noise).astype(np.float32)
    snapped = onto_grid(tf.constant(moved), 3, scheme).numpy()
    scale = np.sum(moved * unit, axis=-1) / np.sum(unit * unit)
    np.testing.assert_allclose(snapped, scale[:, None] * unit, rtol=1e-6)
    # A scaled grid exactly (so integer codes export), and no other scale is closer.
    np.testing.assert_array_equal(snapped, (snapped[:, -1:] / unit[-1]) * unit)
    for row in range(2):
        for other in (0.99, 1.01):
            worse = other * snapped[row]
            assert np.sum((moved[row] - snapped[row]) ** 2) < np.sum((moved[row] - worse) ** 2)
    np.testing.assert_allclose(onto_grid(moved, 3, scheme, np), snapped, rtol=1e-6)


@pytest.mark.parametrize("per_channel", [False, True])
def test_nearest_level_in_any_namespace_agrees_with_nearest_level_index(per_channel):
    w = _normal((5, 4, 6), 3)
    if per_channel:  # One grid per entry of the last axis, scales 0.1 .. 0.6.
        levels = np.stack([make_levels(0.1 * (c + 1), 3).numpy() for c in range(6)])
    else:
        levels = make_levels(0.3, 3).numpy()
    expected = nearest_level_index(tf.constant(w), tf.constant(levels)).numpy()
    assert len(np.unique(expected)) > 4  # The weights spread over many levels.
    np.testing.assert_array_equal(nearest_level_in(w, levels, np), expected)
    tensor = nearest_level_in(tf.constant(w), tf.constant(levels), tf.experimental.numpy)
    np.testing.assert_array_equal(tensor.numpy(), expected)


@pytest.mark.parametrize("xp", [np, tf.experimental.numpy], ids=["numpy", "tf"])
def test_nearest_level_in_breaks_ties_as_nearest_level_index(xp):
    # Every midpoint of [-1, -0.5, 0.5, 1] and [-0.25, 0.5, 1.5] is exact in float32. Ties go to
    # the smaller magnitude: -0.75 to -0.5, 0.75 to 0.5, 0.125 to -0.25; 0 between -0.5 and 0.5
    # goes to +0.5.
    for levels, w, expected in [
        ([-1.0, -0.5, 0.5, 1.0], [-0.75, 0.0, 0.75], [1, 2, 2]),
        ([-0.25, 0.5, 1.5], [0.125, 1.0], [0, 1]),
    ]:
        levels = np.array(levels, np.float32)
        w = np.array(w, np.float32)
        reference = nearest_level_index(tf.constant(w), tf.constant(levels)).numpy()
        np.testing.assert_array_equal(reference, expected)
        found = nearest_level_in(xp.asarray(w), xp.asarray(levels), xp)
        np.testing.assert_array_equal(np.asarray(found), expected)


def test_onto_grid_keeps_the_scale_positive():
    # Levels whose least-squares scale is negative (the grid flipped) get the smallest scale.
    flipped = onto_grid(np.array([0.5, -0.5], np.float32), 1, "uniform", np)
    np.testing.assert_array_equal(flipped, np.float32(SMALLEST_SCALE) * np.array([-1.0, 1.0]))


def test_fraction_on_levels_counts_kept_weights_only():
    levels = uniform_levels(1.0, 2)
    w = tf.constant([1.0, 2.0, 1.5, 7.0])
    assert float(fraction_on_levels(w, levels)) == pytest.approx(0.5)
    assert float(fraction_on_levels(w, levels, mask=[1.0, 1.0, 0.0, 0.0])) == 1.0
    assert float(fraction_on_levels(w, levels, mask=[0.0, 0.0, 0.0, 0.0])) == 1.0


def test_relative_error_values():
    assert float(relative_error([3.0, 4.0], [3.0, 0.0])) == pytest.approx(0.8)
    assert float(relative_error([3.0, 4.0, 9.0], [3.0, 0.0, 0.0], mask=[1, 1, 0])) == pytest.approx(
        0.8
    )
    assert float(relative_error([0.0, 0.0], [0.0, 0.0])) == 0.0


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [0, 9, -1])
def test_bits_out_of_range_are_rejected(bits):
    with pytest.raises(ValueError, match=f"Expected bits in \\[1, 8\\]; received: bits={bits}"):
        uniform_levels(1.0, bits)
    with pytest.raises(ValueError, match="bits="):
        fit_scale(np.ones(4, np.float32), bits)


def test_non_integer_bits_are_rejected():
    with pytest.raises(TypeError, match="received: bits=2.0"):
        power_of_two_levels(1.0, 2.0)


def test_unknown_scheme_is_rejected():
    with pytest.raises(ValueError, match="received: scheme='ternary'"):
        make_levels(1.0, 2, "ternary")
    assert make_levels(1.0, 2, LevelScheme.POWER_OF_TWO).shape == (4,)


def test_non_positive_scale_is_rejected():
    with pytest.raises(ValueError, match="Expected scale > 0"):
        uniform_levels(0.0, 2)


def test_unsorted_or_mismatched_levels_are_rejected():
    with pytest.raises(ValueError, match="sorted ascending"):
        project_to_levels(tf.ones([3]), tf.constant([1.0, -1.0]))
    with pytest.raises(ValueError, match="one level row per channel"):
        project_to_levels(tf.ones([2, 3]), uniform_levels(tf.ones([4]), 1), axis=-1)
    with pytest.raises(ValueError, match="received: axis=2"):
        fit_scale(np.ones((2, 3), np.float32), 2, axis=2)
