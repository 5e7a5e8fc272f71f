"""Property tests for the top-k projection, in the style of optax's projection tests."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tf_admm.projections import keep_count, project_top_k, sparsity, top_k_mask

SHAPES = [(7,), (5, 6), (3, 3, 4, 2)]


def _random(shape, seed):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [0, 1, 5])
def test_projection_keeps_exactly_k_nonzeros_of_largest_magnitude(shape, k):
    x = _random(shape, seed=k)
    z = project_top_k(x, k).numpy()
    assert np.count_nonzero(z) == k
    kept = np.abs(x.numpy()[z != 0])
    dropped = np.abs(x.numpy()[z == 0])
    if k and dropped.size:
        assert kept.min() >= dropped.max()
    np.testing.assert_array_equal(z[z != 0], x.numpy()[z != 0])


@pytest.mark.parametrize("shape", SHAPES)
def test_projection_is_idempotent(shape):
    x = _random(shape, seed=1)
    z = project_top_k(x, 4)
    np.testing.assert_array_equal(project_top_k(z, 4).numpy(), z.numpy())


def test_point_inside_set_is_unchanged():
    x = tf.constant([[0.0, 3.0, 0.0], [-1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(project_top_k(x, 2).numpy(), x.numpy())
    np.testing.assert_array_equal(project_top_k(x, 3).numpy(), x.numpy())


def test_projection_is_the_closest_point_brute_force():
    x = _random((6,), seed=3).numpy()
    best = min(
        (np.sum((x - x * np.isin(np.arange(6), support)) ** 2), support)
        for support in itertools.combinations(range(6), 3)
    )
    z = project_top_k(tf.constant(x), 3).numpy()
    assert np.sum((x - z) ** 2) == pytest.approx(best[0])


def test_ties_keep_lowest_flat_index():
    x = tf.constant([[1.0, -1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(top_k_mask(x, 2).numpy(), [[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(top_k_mask(x, 3).numpy(), [[1.0, 1.0], [1.0, 0.0]])


def test_works_inside_tf_function():
    x = _random((4, 5), seed=4)
    graph = tf.function(lambda t: project_top_k(t, 6))
    np.testing.assert_array_equal(graph(x).numpy(), project_top_k(x, 6).numpy())


@pytest.mark.parametrize(
    "size,sparsity,expected",
    [(500, 0.8, 100), (25000, 0.92, 2000), (400000, 0.991, 3600), (5000, 0.93, 350), (10, 0.99, 1)],
)
def test_keep_count_matches_paper_layer_budgets(size, sparsity, expected):
    # Budgets of the 71.2x LeNet-5 configuration of Ye et al. 2018 (Table 1).
    assert keep_count(size, sparsity) == expected


@pytest.mark.parametrize("size,sparsity", [(0, 0.5), (10, 1.0), (10, -0.1)])
def test_keep_count_rejects_bad_input(size, sparsity):
    with pytest.raises(ValueError, match="Expected"):
        keep_count(size, sparsity)


def test_k_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="k="):
        top_k_mask(tf.zeros([3]), 4)


def test_stage_keep_count_examples_and_bounds():
    assert sparsity.stage_keep_count(1000, 10, 0.25) == 40
    assert sparsity.stage_keep_count(1000, 10, 1.0) == 10
    assert sparsity.stage_keep_count(1000, 10, 0.3) == 33  # 33.3 rounds down.
    assert sparsity.stage_keep_count(1000, 400, 0.1) == 1000  # Never more than all.
    assert sparsity.stage_keep_count(500, 100, 1 / 3) == 300
    counts = [sparsity.stage_keep_count(10_000, 37, f / 20) for f in range(1, 21)]
    assert counts == sorted(counts, reverse=True) and counts[-1] == 37
    for bad in [(10, 0, 0.5), (10, 11, 0.5), (10, 5, 0.0), (10, 5, 1.5)]:
        with pytest.raises(ValueError, match="Expected"):
            sparsity.stage_keep_count(*bad)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [0, 1, 5])
def test_numpy_top_k_keeps_the_same_entries_as_tensorflow(shape, k):
    rng = np.random.default_rng(k)
    # Rounded to one decimal so that equal magnitudes (ties) occur.
    x = np.round(rng.normal(size=shape), 1).astype(np.float32)
    x[..., 0] = -x[..., -1]
    np.testing.assert_array_equal(sparsity.top_k_mask_numpy(x, k), top_k_mask(x, k).numpy())
    np.testing.assert_array_equal(
        sparsity.project_top_k_numpy(x, k), project_top_k(tf.constant(x), k).numpy()
    )


def test_numpy_top_k_rejects_k_out_of_range():
    with pytest.raises(ValueError, match="Expected k in"):
        sparsity.top_k_mask_numpy(np.ones(3), 4)
