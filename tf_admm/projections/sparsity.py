"""Projection onto the set of tensors with at most ``k`` nonzero entries."""

import math

import numpy as np
import tensorflow as tf


def keep_count(size: int, sparsity: float) -> int:
    """Number of entries to keep so that a tensor of ``size`` entries has ``sparsity``.

    ``round(size * (1 - sparsity))``, but never 0 for a sparsity below 1: a layer that keeps
    nothing cuts the network. Rounding is to the nearest integer with halves rounded up, so the
    count does not depend on Python's banker's rounding.

    Args:
      size: number of entries of the tensor, >= 1.
      sparsity: fraction of entries pruned, in [0, 1).

    Returns:
      The number of entries kept, in [1, size].

    Raises:
      ValueError: if ``size`` < 1 or ``sparsity`` is outside [0, 1).
    """
    if size < 1:
        raise ValueError(f"Expected size >= 1; received: size={size}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"Expected sparsity in [0, 1); received: sparsity={sparsity}")
    return min(size, max(1, math.floor(size * (1.0 - sparsity) + 0.5)))


def stage_keep_count(size: int, keep: int, fraction: float) -> int:
    """Entries kept in a pruning stage that reaches ``fraction`` of the final compression ratio.

    The final stage keeps ``keep`` of ``size`` entries (ratio ``size / keep``); a stage at
    ``fraction`` of that ratio keeps ``keep / fraction`` entries, rounded half up, and never
    fewer than ``keep`` nor more than ``size``. E.g. 1,000 entries, 10 kept at the end: a stage
    at 1/4 of the final 100x keeps 40 (25x).

    Args:
      size: number of entries of the tensor, >= 1.
      keep: entries kept at the end, in [1, size].
      fraction: the stage's fraction of the final compression ratio, in (0, 1].

    Returns:
      The number of entries kept in the stage, in [keep, size].

    Raises:
      ValueError: if an argument is out of its range.
    """
    if not 1 <= keep <= size:
        raise ValueError(f"Expected 1 <= keep <= size; received: keep={keep}, size={size}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"Expected fraction in (0, 1]; received: fraction={fraction}")
    return min(size, max(keep, math.floor(keep / fraction + 0.5)))


def top_k_mask(x: tf.Tensor, k: int) -> tf.Tensor:
    """0/1 mask of the ``k`` entries of ``x`` with the largest magnitude.

    Exactly ``k`` entries are 1. Among equal magnitudes the entry with the lower index in
    row-major (flattened) order is kept, so the result is deterministic.

    Args:
      x: a tensor of any shape.
      k: number of entries to keep, 0 <= k <= size of ``x``.

    Returns:
      A tensor of ``x``'s shape and dtype holding exactly ``k`` ones.
    """
    x = tf.convert_to_tensor(x)
    flat = tf.reshape(tf.abs(x), [-1])
    size = flat.shape[0]
    if size is not None and not 0 <= k <= size:
        raise ValueError(f"Expected k in [0, {size}]; received: k={k}")
    # tf.math.top_k is stable: among equal values the lower index comes first.
    _, indices = tf.math.top_k(flat, k=k, sorted=False)
    ones = tf.ones([k], dtype=x.dtype)
    mask = tf.scatter_nd(indices[:, None], ones, shape=tf.shape(flat, out_type=indices.dtype))
    return tf.reshape(mask, tf.shape(x))


def project_top_k(x: tf.Tensor, k: int) -> tf.Tensor:
    """Euclidean projection onto the tensors with at most ``k`` nonzero entries.

    Solves ``argmin_{z : ||z||_0 <= k} ||z - x||_2^2``: keep the ``k`` entries of largest
    magnitude and zero the rest (ties as in ``top_k_mask``).

    Example:
      >>> project_top_k(tf.constant([0.5, -2.0, 1.0, 0.1]), 2).numpy()
      array([ 0., -2.,  1.,  0.], dtype=float32)

    Args:
      x: a tensor of any shape.
      k: number of entries to keep.

    Returns:
      The projection, of ``x``'s shape and dtype.
    """
    return x * top_k_mask(x, k)


def top_k_mask_numpy(x: np.ndarray, k: int) -> np.ndarray:
    """:func:`top_k_mask` on host values: NumPy in, NumPy out, the same entries kept.

    For Keras adapters whose backend is not TensorFlow (Keras 3 on JAX), which run their Z-step
    on host copies of the weights between training steps.

    Args:
      x: an array of any shape.
      k: number of entries to keep, 0 <= k <= size of ``x``.

    Returns:
      An array of ``x``'s shape and dtype holding exactly ``k`` ones.
    """
    x = np.asarray(x)
    flat = np.abs(x).reshape(-1)
    if not 0 <= k <= flat.size:
        raise ValueError(f"Expected k in [0, {flat.size}]; received: k={k}")
    # A stable sort of the negated magnitudes puts the lower index first among equal ones, as
    # tf.math.top_k does.
    kept = np.argsort(-flat, kind="stable")[:k]
    mask = np.zeros(flat.size, dtype=x.dtype)
    mask[kept] = 1
    return mask.reshape(x.shape)


def project_top_k_numpy(x: np.ndarray, k: int) -> np.ndarray:
    """:func:`project_top_k` on host values: ``argmin_{z : ||z||_0 <= k} ||z - x||_2^2``.

    Example:
      >>> project_top_k_numpy(np.array([0.5, -2.0, 1.0, 0.1]), 2)
      array([ 0., -2.,  1.,  0.])
    """
    x = np.asarray(x)
    return x * top_k_mask_numpy(x, k)
