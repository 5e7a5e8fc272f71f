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
