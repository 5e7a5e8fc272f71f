"""Property tests for k-means weight clustering and projection onto centroids."""

import numpy as np
import pytest

from tf_admm.compat import tf
from tf_admm.projections.kmeans import (
    assign,
    kmeans,
    kmeans_numpy,
    kmeans_plus_plus,
    linear_init,
    nearest_centroid,
    update_centroids,
)


def _normal(shape, seed, scale=1.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape).astype(np.float32)


def _mask(shape, seed, keep=0.5):
    return (np.random.default_rng(seed + 100).random(shape) < keep).astype(np.float32)


def _inertia(values, centroids):
    values = values.astype(np.float64).reshape(-1)
    centroids = np.asarray(centroids, np.float64)
    return float(np.sum(np.min(np.square(values[:, None] - centroids[None, :]), axis=1)))


# --- fitting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 5, 16])
@pytest.mark.parametrize("init", ["kmeans++", "linear"])
def test_inertia_never_increases_across_lloyd_iterations(seed, k, init):
    w = _normal((2000,), seed=seed) ** 3  # heavy tails: Lloyd takes many rounds
    result = kmeans(w, k, seed=seed, init=init, max_iter=50)
    history = np.array(result.inertia_history)
    assert len(history) == result.iterations + 1
    assert np.all(np.diff(history) <= 1e-12 * history[0])
    assert result.iterations >= 2  # the property was exercised over several rounds
    assert history[-1] == pytest.approx(_inertia(w, result.centroids.numpy()), rel=1e-6)


def test_converged_centroids_are_the_means_of_their_clusters():
    w = _normal((300,), seed=3)
    result = kmeans(w, 4, seed=3, max_iter=500)
    assert result.converged
    centroids = result.centroids.numpy()
    assert centroids.shape == (4,)
    assert np.all(np.diff(centroids) > 0)
    labels = assign(w, centroids).numpy()
    for j in range(4):
        assert centroids[j] == pytest.approx(np.mean(w[labels == j]), rel=1e-5, abs=1e-6)


def test_recovers_well_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([-3.0, 0.5, 4.0])
    w = np.concatenate([c + 0.01 * rng.normal(size=100) for c in centres]).astype(np.float32)
    result = kmeans(w, 3, seed=5)
    np.testing.assert_allclose(result.centroids.numpy(), centres, atol=0.01)
    assert result.converged


def test_exactly_k_distinct_values_are_fitted_without_error():
    # k-means++ never draws a value that is already a centroid (its probability is 0).
    values = np.array([-1.0, -0.25, 0.5, 2.0], np.float32)
    w = np.random.default_rng(1).choice(values, size=200)
    for seed in range(5):
        result = kmeans(w, 4, seed=seed)
        np.testing.assert_array_equal(result.centroids.numpy(), values)
        assert result.inertia_history[-1] == 0.0


def test_pruned_weights_are_ignored():
    w = _normal((20, 10), seed=6, scale=0.1)
    mask = _mask(w.shape, seed=6)
    w[mask == 0] = 50.0
    centroids = kmeans(w, 4, mask=mask, seed=0).centroids.numpy()
    assert np.abs(centroids).max() <= np.abs(w[mask != 0]).max()
    assert np.all(np.isin(kmeans_plus_plus(w, 4, mask, seed=0).numpy(), w[mask != 0]))


def test_kmeans_plus_plus_is_deterministic_for_a_seed():
    w = _normal((500,), seed=7)
    first = kmeans_plus_plus(w, 8, seed=42).numpy()
    np.testing.assert_array_equal(kmeans_plus_plus(w, 8, seed=42).numpy(), first)
    assert not np.array_equal(kmeans_plus_plus(w, 8, seed=43).numpy(), first)
    assert np.all(np.isin(first, w))
    assert np.all(np.diff(first) > 0)
    np.testing.assert_array_equal(kmeans(w, 8, seed=42).centroids, kmeans(w, 8, seed=42).centroids)


def test_lloyd_improves_on_its_initialisation():
    w = _normal((1000,), seed=8)
    initial = _inertia(w, kmeans_plus_plus(w, 8, seed=1).numpy())
    result = kmeans(w, 8, seed=1)
    assert result.inertia_history[0] == pytest.approx(initial)
    assert result.inertia_history[-1] < initial


def test_linear_init_spans_the_kept_range():
    w = np.array([3.0, -1.0, 0.0, 10.0], np.float32)
    np.testing.assert_allclose(linear_init(w, 3, mask=[1, 1, 1, 0]).numpy(), [-1.0, 1.0, 3.0])


def test_max_iter_zero_returns_the_initial_centroids():
    w = _normal((100,), seed=9)
    result = kmeans(w, 4, seed=2, max_iter=0)
    np.testing.assert_array_equal(result.centroids.numpy(), kmeans_plus_plus(w, 4, seed=2).numpy())
    assert result.iterations == 0 and len(result.inertia_history) == 1


# --- projection onto fixed centroids ------------------------------------------------------------


def test_nearest_centroid_projection_properties():
    w = _normal((12, 9), seed=10)
    mask = _mask(w.shape, seed=10)
    centroids = kmeans(w, 5, mask=mask, seed=0).centroids
    z = nearest_centroid(w, centroids, mask).numpy()
    kept = mask != 0
    assert np.all(z[~kept] == 0)
    assert np.all(np.isin(z[kept], centroids.numpy()))
    np.testing.assert_array_equal(nearest_centroid(z, centroids, mask).numpy(), z)
    brute = np.min(np.abs(centroids.numpy()[None, :] - w[kept][:, None]), axis=1)
    np.testing.assert_array_equal(np.abs(z[kept] - w[kept]), brute)


def test_assign_indexes_the_projection_and_marks_pruned():
    w = _normal((7, 7), seed=11)
    mask = _mask(w.shape, seed=11)
    centroids = tf.constant([-1.0, -0.1, 0.3, 1.2])
    index = assign(w, centroids, mask).numpy()
    assert index.dtype == np.int32
    assert np.all(index[mask == 0] == -1)
    assert np.all((index[mask != 0] >= 0) & (index[mask != 0] < 4))
    z = nearest_centroid(w, centroids, mask).numpy()
    np.testing.assert_array_equal(centroids.numpy()[index[mask != 0]], z[mask != 0])


def test_update_centroids_moves_to_cluster_means_and_lowers_inertia():
    w = _normal((400,), seed=12)
    mask = _mask(w.shape, seed=12)
    centroids = tf.constant([-2.0, -0.3, 0.1, 1.0, 9.0])  # 9.0 attracts nothing and stays
    updated = update_centroids(w, centroids, mask).numpy()
    kept = w[mask != 0]
    labels = assign(kept, centroids).numpy()
    for j in range(4):
        assert updated[j] == pytest.approx(np.mean(kept[labels == j]), rel=1e-5)
    assert updated[4] == 9.0
    assert _inertia(kept, updated) <= _inertia(kept, centroids.numpy())


def test_centroid_functions_run_inside_tf_function():
    w = tf.constant(_normal((6, 5), seed=13))
    mask = tf.constant(_mask((6, 5), seed=13))
    centroids = tf.constant([-0.8, 0.0, 0.9])
    graph = tf.function(
        lambda w, m: (
            nearest_centroid(w, centroids, m),
            assign(w, centroids, m),
            update_centroids(w, centroids, m),
        )
    )
    for graph_value, eager_value in zip(
        graph(w, mask),
        (
            nearest_centroid(w, centroids, mask),
            assign(w, centroids, mask),
            update_centroids(w, centroids, mask),
        ),
        strict=True,
    ):
        np.testing.assert_array_equal(graph_value.numpy(), eager_value.numpy())


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 0, 6])
def test_k_out_of_range_is_rejected(k):
    w = np.arange(8, dtype=np.float32)
    mask = np.array([1, 1, 1, 1, 1, 0, 0, 0])
    with pytest.raises(
        ValueError, match=rf"Expected 2 <= k <= number of kept weights \(5\); received: k={k}"
    ):
        kmeans(w, k, mask=mask)


def test_bad_arguments_are_rejected():
    w = np.arange(8, dtype=np.float32)
    with pytest.raises(TypeError, match="received: k=2.5"):
        kmeans(w, 2.5)
    with pytest.raises(ValueError, match="received: init='random'"):
        kmeans(w, 2, init="random")
    with pytest.raises(ValueError, match="received: max_iter=-1"):
        kmeans(w, 2, max_iter=-1)
    with pytest.raises(ValueError, match="mask.size=3"):
        kmeans(w, 2, mask=[1, 1, 1])


def test_kmeans_inside_tf_function_fails_loudly():
    @tf.function
    def fit(w):
        return kmeans(w, 2).centroids

    with pytest.raises(RuntimeError, match="Expected eager execution"):
        fit(tf.constant([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("init", ["kmeans++", "linear"])
def test_numpy_kmeans_equals_kmeans_and_runs_inside_tf_function(init):
    w = np.random.default_rng(5).normal(size=(7, 9)).astype(np.float32)
    mask = (np.abs(w) > 0.4).astype(np.float32)
    host = kmeans_numpy(w, 5, mask=mask, seed=3, init=init)
    eager = kmeans(w, 5, mask=mask, seed=3, init=init)
    assert isinstance(host.centroids, np.ndarray) and host.centroids.dtype == np.float32
    np.testing.assert_array_equal(host.centroids, eager.centroids.numpy())
    assert host.inertia_history == eager.inertia_history
    # No TensorFlow inside: it may run where TensorFlow is not executing eagerly.
    tf.function(lambda: tf.constant(kmeans_numpy(w, 5, mask=mask).centroids))()
