"""Tests of the shared-budget allocations."""

import numpy as np
import pytest

from tf_admm import allocation


def test_lamp_scores_by_hand():
    # Squares 1, 4, 9 ascending; suffix energies 14, 13, 9.
    scores = allocation.lamp_scores(np.array([[-3.0, 1.0], [2.0, 0.0]]))
    np.testing.assert_allclose(scores, [[1.0, 1 / 14], [4 / 13, 0.0]])


def test_lamp_scores_do_not_depend_on_the_layer_scale():
    weights = np.random.default_rng(0).normal(size=(30, 7))
    np.testing.assert_allclose(
        allocation.lamp_scores(weights), allocation.lamp_scores(1e-3 * weights), rtol=1e-12
    )


def test_lamp_scores_of_a_zero_layer_are_zero():
    assert not allocation.lamp_scores(np.zeros(5)).any()


@pytest.mark.parametrize("method", ["lamp", "global_magnitude", "uniform"])
@pytest.mark.parametrize("keep", [2, 3, 57, 500, 1100])
def test_counts_add_up_with_the_floor(method, keep):
    rng = np.random.default_rng(1)
    weights = {"a": rng.normal(size=100), "b": 0.01 * rng.normal(size=1000)}
    counts = allocation.allocate(weights, keep, method)
    assert sum(counts.values()) == keep
    assert list(counts) == ["a", "b"]
    assert all(1 <= counts[n] <= np.size(weights[n]) for n in counts)


def test_global_magnitude_starves_the_small_scale_layer_and_lamp_does_not():
    rng = np.random.default_rng(2)
    weights = {"big": rng.normal(size=1000), "small": 0.01 * rng.normal(size=1000)}
    assert allocation.allocate(weights, 100, "global_magnitude") == {"big": 99, "small": 1}
    lamp = allocation.allocate(weights, 100, "lamp")
    # Same distribution up to scale: LAMP splits the budget about evenly.
    assert 35 <= lamp["small"] <= 65


def test_lamp_keeps_the_largest_weights_of_each_layer():
    weights = {"a": np.array([5.0, 0.1, 0.2, 4.0]), "b": np.array([1.0, 0.9, 0.01])}
    # Scores: a 5 -> 1, 4 -> 16/41, 0.2 -> 0.04/41.04, 0.1 -> 0.01/41.05;
    # b 1 -> 1, 0.9 -> 0.81/1.81, 0.01 -> 1e-4/1.8101. The best four: a's 1, 0.39; b's 1, 0.45.
    assert allocation.allocate(weights, 4, "lamp") == {"a": 2, "b": 2}


def test_uniform_gives_each_layer_its_share():
    weights = {"a": np.ones(100), "b": np.ones(300), "c": np.ones(600)}
    assert allocation.allocate(weights, 10, "uniform") == {"a": 1, "b": 3, "c": 6}
    assert allocation.allocate(weights, 15, "uniform") == {"a": 2, "b": 4, "c": 9}


def test_keep_for_ratio():
    assert allocation.keep_for_ratio(430_500, 167) == 2578
    assert allocation.keep_for_ratio(10, 1e9, layers=3) == 3


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: allocation.allocate({"a": np.ones(4)}, 5), r"keep in \[1, 4\]"),
        (lambda: allocation.allocate({"a": np.ones(4), "b": np.ones(4)}, 1), r"keep in \[2, 8\]"),
        (lambda: allocation.allocate({}, 1), "at least one layer"),
        (lambda: allocation.allocate({"a": np.ones(4)}, 2, "best"), "method in"),
        (lambda: allocation.allocate({"a": np.ones(4)}, 2, "sensitivity"), "measured losses"),
        (lambda: allocation.allocate({"a": np.ones(2)}, 2, floor=3), "Layer 'a'.*floor=3"),
        (lambda: allocation.keep_for_ratio(10, 0.5), "ratio >= 1"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_sensitivity_spends_the_budget_where_pruning_hurts():
    sizes = {"fragile": 1000, "robust": 1000}
    curves = {
        # Loss increase when the layer alone keeps so many weights.
        "fragile": [(10, 2.0), (100, 0.5), (300, 0.0)],
        "robust": [(10, 0.01), (100, 0.0)],
    }
    counts = allocation.allocate_by_sensitivity(sizes, curves, keep=320)
    assert sum(counts.values()) == 320
    assert counts["fragile"] >= 290
    assert counts["robust"] <= 30


def test_sensitivity_counts_add_up_exactly():
    sizes = {"a": 500, "b": 25_000, "c": 400_000}
    curves = {n: [(s // 100, 1.0), (s // 10, 0.1), (s, 0.0)] for n, s in sizes.items()}
    for keep in (100, 2578, 10_000):
        counts = allocation.allocate_by_sensitivity(sizes, curves, keep)
        assert sum(counts.values()) == keep
        assert all(1 <= counts[n] <= sizes[n] for n in sizes)


def test_sensitivity_needs_a_curve_per_layer():
    with pytest.raises(ValueError, match=r"missing: \['b'\]"):
        allocation.allocate_by_sensitivity({"a": 10, "b": 10}, {"a": [(1, 0.0)]}, 5)


# Validation-loss increases measured on the dense LeNet-5 of the recipe (seed 0, 2026-12-03) by
# tf_admm.sensitivity_curves: flat, then steep, so not convex. A Lagrangian split of these kept
# 1 / 1 / 2,575 / 1 at 167x (summed increase about 10); the search must not.
LENET5_CURVES = {
    "conv1": [(1, 4.75), (2, 4.56), (3, 4.44), (5, 5.52), (10, 5.55), (17, 3.01), (30, 3.59),
              (52, 1.39), (92, 0.323), (162, 0.0365), (284, 0.00156), (500, 0.0)],
    "conv2": [(1, 2.71), (3, 2.6), (6, 2.51), (16, 2.2), (40, 1.84), (100, 1.37), (251, 0.989),
              (629, 0.557), (1579, 0.112), (3966, 0.00906), (9957, -0.000269), (25000, 0.0)],
    "fc1": [(1, 2.27), (3, 2.27), (10, 2.26), (34, 2.26), (109, 2.19), (352, 2.09),
            (1137, 1.75), (3672, 0.967), (11864, 0.216), (38327, 0.00443), (123817, -0.00415),
            (400000, 0.0)],
    "fc2": [(1, 2.26), (2, 2.26), (5, 2.23), (10, 2.18), (22, 2.15), (48, 1.83), (104, 1.46),
            (226, 0.904), (490, 0.348), (1063, 0.0802), (2305, 0.00145), (5000, 0.0)],
}  # fmt: skip
LENET5_SIZES = {"conv1": 500, "conv2": 25_000, "fc1": 400_000, "fc2": 5_000}


def _summed_increase(counts):
    total = 0.0
    for name, kept in counts.items():
        xs, ys = zip(*LENET5_CURVES[name])
        ys = np.minimum.accumulate(ys)
        total += float(np.interp(np.log(kept), np.log(xs), ys))
    return total


def test_sensitivity_on_measured_non_convex_curves_beats_every_split_on_a_grid():
    counts = allocation.allocate_by_sensitivity(LENET5_SIZES, LENET5_CURVES, keep=2_578)
    assert sum(counts.values()) == 2_578
    # Brute force over 24 geometric counts per conv/fc2 layer, fc1 taking the rest.
    grid = lambda n: np.unique(np.geomspace(1, n, 24).round().astype(int))  # noqa: E731
    best = min(
        _summed_increase({"conv1": a, "conv2": b, "fc1": 2_578 - a - b - d, "fc2": d})
        for a in grid(500)
        for b in grid(2_000)
        for d in grid(2_000)
        if a + b + d < 2_578
    )
    assert _summed_increase(counts) <= best + 1e-9
    assert min(counts.values()) > 100  # Every layer gets a real share, none is starved.


def test_loss_increase_is_linear_in_log_kept_monotone_and_held_beyond_the_ends():
    curve = [(100, 0.0), (1, 2.0), (10, 0.5), (1000, 0.1)]  # Unsorted; 1000 costs more than 100.
    got = allocation.loss_increase(curve, [1, np.sqrt(10), 10, 1000, 5000])
    # Halfway between 1 and 10 in log(kept): (2.0 + 0.5) / 2; keeping 1000 is held to 100's 0.
    np.testing.assert_allclose(got, [2.0, 1.25, 0.5, 0.0, 0.0])
    assert allocation.loss_increase(curve, [0.5])[0] == 2.0


def test_saturated_names_the_layer_a_300x_split_of_lenet5_starves():
    at_167x = allocation.allocate_by_sensitivity(LENET5_SIZES, LENET5_CURVES, keep=2_578)
    assert allocation.saturated(LENET5_CURVES, at_167x) == {}
    at_300x = allocation.allocate_by_sensitivity(LENET5_SIZES, LENET5_CURVES, keep=1_435)
    assert at_300x["fc1"] < 100  # fc1 keeps fewer than 100 of 400,000 weights ...
    found = allocation.saturated(LENET5_CURVES, at_300x)
    assert list(found) == ["fc1"]  # ... because alone it costs nearly all it can there.
    at, worst = found["fc1"]
    assert worst == 2.27 and 0.9 * 2.27 <= at < 2.27
    assert allocation.saturated(LENET5_CURVES, at_300x, fraction=0.99) == {}
