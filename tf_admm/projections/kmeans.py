"""Weight clustering: k-means on the kept weights, and projection onto the centroids.

Clustering (Ye et al. 2018; Han et al. 2016) lets the kept weights take ``k`` free values, the
centroids, instead of a fixed level grid. Fitting the centroids is 1-D k-means on the kept
weights; projecting onto fixed centroids is ``project_to_levels`` with the centroids as levels.

``kmeans`` and ``kmeans_plus_plus`` are NumPy-backed and eager-only: the number of Lloyd rounds
depends on the data and k-means++ draws random samples, neither of which maps well onto a
graph, and the fit runs once per ADMM round rather than once per training step. The functions
that use fixed centroids (``nearest_centroid``, ``assign``, ``update_centroids``) are TensorFlow
ops and also run inside ``tf.function``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tf_admm.compat import tf
from tf_admm.projections.levels import nearest_level_index, project_to_levels

__all__ = [
    "KMeansResult",
    "assign",
    "kmeans",
    "kmeans_numpy",
    "kmeans_plus_plus",
    "linear_init",
    "nearest_centroid",
    "update_centroids",
]

_INITS = ("kmeans++", "linear")


class KMeansResult(NamedTuple):
    """Result of ``kmeans``.

    Attributes:
      centroids: float32 ``[k]`` tensor sorted ascending.
      inertia_history: within-cluster sum of squares ``Σ (w - c(w))²`` over the kept weights, after
        each assignment step: entry 0 for the initial centroids, entry ``i`` after ``i`` Lloyd
        rounds. Never increases.
      iterations: number of centroid updates performed.
      converged: True if the assignments stopped changing before ``max_iter``.
    """

    centroids: tf.Tensor
    inertia_history: tuple[float, ...]
    iterations: int
    converged: bool


def _kept_values(w, mask, k: int, caller: str) -> np.ndarray:
    """The kept weights as a float64 vector, after validating ``k`` against their number."""
    if caller != "kmeans_numpy" and not tf.executing_eagerly():
        raise RuntimeError(
            f"Expected eager execution for {caller} (NumPy-backed; call it outside tf.function); "
            "received: executing_eagerly=False"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"Expected k to be an int; received: k={k!r}")
    values = np.asarray(w, dtype=np.float64).reshape(-1)
    if mask is not None:
        kept = np.asarray(mask).reshape(-1)
        if kept.shape != values.shape:
            raise ValueError(
                f"Expected mask with {values.size} entries like w; received: mask.size={kept.size}"
            )
        values = values[kept != 0]
    if not 2 <= k <= values.size:
        raise ValueError(
            f"Expected 2 <= k <= number of kept weights ({values.size}); received: k={k}"
        )
    return values


def _boundaries(sorted_values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Cluster ``j`` of sorted data is ``sorted_values[cuts[j]:cuts[j + 1]]`` (nearest centroid).

    In 1-D the points nearest to sorted centroids form contiguous runs split at the midpoints, so
    one binary search per centroid replaces a search per point. A point on a midpoint goes to the
    lower centroid.
    """
    midpoints = (centroids[:-1] + centroids[1:]) / 2.0
    inner = np.searchsorted(sorted_values, midpoints, side="right")
    return np.concatenate([[0], inner, [sorted_values.size]])


def _seed_plus_plus(values: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centroids = np.empty(k)
    centroids[0] = values[rng.integers(values.size)]
    distance = np.square(values - centroids[0])
    for j in range(1, k):
        total = distance.sum()
        if total > 0:
            # Draw with probability proportional to the squared distance to the nearest centroid.
            target = rng.random() * total
            index = min(
                int(np.searchsorted(np.cumsum(distance), target, side="right")), values.size - 1
            )
        else:
            # Fewer distinct values than k: every point is already a centroid.
            index = int(rng.integers(values.size))
        centroids[j] = values[index]
        distance = np.minimum(distance, np.square(values - centroids[j]))
    return np.sort(centroids)


def kmeans_plus_plus(w, k: int, mask=None, seed: int = 0) -> tf.Tensor:
    """k-means++ initial centroids (Arthur & Vassilvitskii 2007) drawn from the kept weights.

    The first centroid is a uniformly drawn kept weight; each next one is a kept weight drawn with
    probability proportional to its squared distance to the nearest centroid so far. The draws
    come from ``numpy.random.default_rng(seed)``, so a seed gives the same centroids every time.
    If the kept weights have fewer than ``k`` distinct values, some centroids repeat.

    Example:
      >>> kmeans_plus_plus(tf.constant([0.0, 0.1, 5.0, 5.1]), k=2, seed=0).shape
      TensorShape([2])

    Args:
      w: weights, any shape (eager tensor or array).
      k: number of centroids, 2 <= k <= number of kept weights.
      mask: optional 0/1 array of ``w``'s shape; 0 marks a pruned weight. None keeps all.
      seed: seed of the random draws.

    Returns:
      A float32 ``[k]`` tensor of centroids, sorted ascending.

    Raises:
      ValueError: if ``k`` is out of range. RuntimeError: inside ``tf.function``.
    """
    values = _kept_values(w, mask, k, "kmeans_plus_plus")
    return tf.constant(_seed_plus_plus(values, k, seed), dtype=tf.float32)


def linear_init(w, k: int, mask=None) -> tf.Tensor:
    """``k`` centroids evenly spaced between the smallest and largest kept weight.

    Han et al. (2016) found this initialisation best for weight sharing, because it keeps
    centroids on the rare large weights that density-based initialisations neglect.

    Args:
      w: weights, any shape (eager tensor or array).
      k: number of centroids, 2 <= k <= number of kept weights.
      mask: optional 0/1 array of ``w``'s shape; None keeps all.

    Returns:
      A float32 ``[k]`` tensor of centroids, sorted ascending.
    """
    values = _kept_values(w, mask, k, "linear_init")
    return tf.constant(np.linspace(values.min(), values.max(), k), dtype=tf.float32)


def _reseed_empty(
    sorted_values: np.ndarray, labels: np.ndarray, centroids: np.ndarray, counts: np.ndarray
) -> np.ndarray:
    """Moves centroids of empty clusters onto the worst-served weights.

    An empty cluster contributes nothing to the inertia, so moving its centroid leaves the
    inertia unchanged until the next assignment, which can then only lower it.
    """
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return centroids
    error = np.square(sorted_values - centroids[labels])
    worst = np.argsort(-error, kind="stable")
    centroids = centroids.copy()
    for slot, index in zip(empty, worst, strict=False):
        if error[index] > 0:
            centroids[slot] = sorted_values[index]
    return centroids


def kmeans(
    w,
    k: int,
    mask=None,
    seed: int = 0,
    max_iter: int = 100,
    init: str = "kmeans++",
) -> KMeansResult:
    """Fits ``k`` centroids to the kept weights with Lloyd's algorithm.

    Approximately solves ``argmin_{c_1..c_k} Σ_{i kept} min_j (w_i - c_j)²`` (exactly solving it
    is possible in 1-D by dynamic programming, but costs O(k·n²)). Starting from ``init``
    centroids, it alternates assigning every kept weight to its nearest centroid and moving every
    centroid to the mean of its weights, until the assignments stop changing or ``max_iter``
    updates are done. Neither step increases the inertia; ``inertia_history`` records it. A
    centroid left without weights is moved onto the worst-served weight.

    The arithmetic is float64 NumPy; centroids are returned as float32.

    Example:
      >>> result = kmeans(tf.constant([0.0, 0.2, 0.9, 1.1, 5.0]), k=2)
      >>> result.centroids.numpy()
      array([0.55, 5.  ], dtype=float32)

    Args:
      w: weights, any shape (eager tensor or array).
      k: number of clusters, 2 <= k <= number of kept weights.
      mask: optional 0/1 array of ``w``'s shape; 0 marks a pruned weight. None keeps all.
      seed: seed of the k-means++ draws.
      max_iter: largest number of centroid updates, >= 0.
      init: ``"kmeans++"`` (default) or ``"linear"`` (``linear_init``).

    Returns:
      A ``KMeansResult`` with sorted centroids and the inertia after each round.

    Raises:
      ValueError: for ``k`` out of range, negative ``max_iter`` or an unknown ``init``.
      RuntimeError: inside ``tf.function``.
    """
    result = kmeans_numpy(w, k, mask, seed, max_iter, init, caller="kmeans")
    return result._replace(centroids=tf.constant(result.centroids, dtype=tf.float32))


def kmeans_numpy(
    w,
    k: int,
    mask=None,
    seed: int = 0,
    max_iter: int = 100,
    init: str = "kmeans++",
    *,
    caller: str = "kmeans_numpy",
) -> KMeansResult:
    """:func:`kmeans` on host values, without TensorFlow: the same centroids as a float32
    NumPy array (for Keras 3 on JAX, whose Z-step runs on host copies between steps).

    Example:
      >>> kmeans_numpy(np.array([0.0, 0.2, 0.9, 1.1, 5.0]), k=2).centroids
      array([0.55, 5.  ], dtype=float32)
    """
    values = _kept_values(w, mask, k, caller)
    if max_iter < 0:
        raise ValueError(f"Expected max_iter >= 0; received: max_iter={max_iter}")
    if init == "kmeans++":
        centroids = _seed_plus_plus(values, k, seed)
    elif init == "linear":
        centroids = np.linspace(values.min(), values.max(), k)
    else:
        raise ValueError(f"Expected init in {_INITS}; received: init={init!r}")

    sorted_values = np.sort(values)
    cluster_ids = np.arange(k)

    def assignment(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        cuts = _boundaries(sorted_values, centroids)
        labels = np.repeat(cluster_ids, np.diff(cuts))
        inertia = float(np.sum(np.square(sorted_values - centroids[labels])))
        return cuts, labels, inertia

    cuts, labels, inertia = assignment(centroids)
    history = [inertia]
    iterations = 0
    converged = False
    while iterations < max_iter:
        counts = np.diff(cuts)
        sums = np.bincount(labels, weights=sorted_values, minlength=k)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        centroids = np.sort(_reseed_empty(sorted_values, labels, means, counts))
        iterations += 1
        new_cuts, labels, inertia = assignment(centroids)
        history.append(inertia)
        if np.array_equal(new_cuts, cuts):
            converged = True
            break
        cuts = new_cuts
    return KMeansResult(
        centroids=centroids.astype(np.float32),
        inertia_history=tuple(history),
        iterations=iterations,
        converged=converged,
    )


def nearest_centroid(w, centroids, mask=None) -> tf.Tensor:
    """Euclidean projection of the kept weights onto fixed centroids; pruned weights become 0.

    Solves ``argmin_z ||z - w||_2^2`` with ``z_i ∈ centroids`` where ``mask_i != 0`` and
    ``z_i = 0`` where ``mask_i == 0`` (``project_to_levels``; ties go to the centroid of smaller
    magnitude). Runs inside ``tf.function``.

    Args:
      w: weights, any shape.
      centroids: ``[k]`` centroids sorted ascending.
      mask: optional 0/1 tensor of ``w``'s shape; None keeps all.

    Returns:
      A tensor of ``w``'s shape and dtype.
    """
    return project_to_levels(w, centroids, mask)


def assign(w, centroids, mask=None) -> tf.Tensor:
    """Index of the nearest centroid for every weight, -1 at pruned positions.

    The codebook indices of Deep Compression's storage format; ties as in ``nearest_centroid``.

    Args:
      w: weights, any shape.
      centroids: ``[k]`` centroids sorted ascending.
      mask: optional 0/1 tensor of ``w``'s shape; None keeps all.

    Returns:
      An int32 tensor of ``w``'s shape with values in ``[0, k)``, or -1 where pruned.
    """
    return nearest_level_index(w, centroids, mask)


def update_centroids(w, centroids, mask=None) -> tf.Tensor:
    """One centroid update: every centroid moves to the mean of the kept weights nearest to it.

    Solves ``argmin_c Σ_{i kept} (w_i - c_{a(i)})²`` for the assignment ``a = assign(w,
    centroids, mask)`` held fixed; a centroid with no weights keeps its value. This is the
    centroid-updating step that Ye et al. interleave with training on clustered weights. Runs
    inside ``tf.function``.

    Args:
      w: weights, any shape.
      centroids: ``[k]`` centroids sorted ascending.
      mask: optional 0/1 tensor of ``w``'s shape; None keeps all.

    Returns:
      The updated ``[k]`` centroids, sorted ascending, in ``centroids``' dtype.
    """
    w = tf.convert_to_tensor(w)
    centroids = tf.convert_to_tensor(centroids, dtype=w.dtype)
    index = tf.reshape(assign(w, centroids, mask), [-1])
    values = tf.reshape(w, [-1])
    kept = index >= 0
    index = tf.boolean_mask(index, kept)
    values = tf.cast(tf.boolean_mask(values, kept), tf.float64)
    count = tf.shape(centroids)[0]
    sums = tf.math.unsorted_segment_sum(values, index, count)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(values), index, count)
    means = tf.cast(tf.math.divide_no_nan(sums, counts), w.dtype)
    return tf.sort(tf.where(counts > 0, means, centroids))
