"""Small models and faked compressed weights for the tests of :mod:`tflite_export`.

Compressed weights are faked by setting kernels directly: magnitude pruning keeps the largest
``keep`` weights; levels put every kept weight on ``{±q, ..., ±2**(bits-1) q}`` the way
tf_admm builds them (``float32(q) * float32(code)``).
"""

from __future__ import annotations

import numpy as np

from tf_admm.compat import keras

__all__ = [
    "LAYER_KINDS",
    "kernel_of",
    "on_centroids",
    "on_levels",
    "prune",
    "random_zeros",
    "small_model",
]

LAYER_KINDS = ("dense", "conv2d", "depthwise")


def small_model(kind: str, seed: int = 0) -> keras.Model:
    """A two-layer model whose first layer is ``kind`` (named ``target``) and last a Dense."""
    keras.utils.set_random_seed(seed)
    if kind == "dense":
        inputs = keras.Input((24,), name="features")
        hidden = keras.layers.Dense(40, activation="relu", name="target")(inputs)
    elif kind == "conv2d":
        inputs = keras.Input((9, 9, 3), name="image")
        hidden = keras.layers.Conv2D(16, 3, activation="relu", name="target")(inputs)
        hidden = keras.layers.Flatten(name="flatten")(hidden)
    elif kind == "depthwise":
        inputs = keras.Input((9, 9, 4), name="image")
        hidden = keras.layers.DepthwiseConv2D(
            3, depth_multiplier=2, activation="relu", name="target"
        )(inputs)
        hidden = keras.layers.Flatten(name="flatten")(hidden)
    else:
        raise ValueError(f"Expected kind in {LAYER_KINDS}; received: kind={kind!r}")
    outputs = keras.layers.Dense(6, name="head")(hidden)
    model = keras.Model(inputs, outputs, name=f"small_{kind}")
    # Nonzero biases, so that the converter keeps them.
    for layer in model.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.linspace(-0.1, 0.1, layer.bias.shape[0]).astype(np.float32))
    return model


def kernel_of(layer: keras.layers.Layer):
    """The layer's compressible kernel variable."""
    return layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel


def prune(values: np.ndarray, keep: int) -> np.ndarray:
    """``values`` with all but the ``keep`` largest magnitudes set to zero."""
    flat = np.asarray(values, np.float32).reshape(-1)
    kept = np.argsort(-np.abs(flat), kind="stable")[:keep]
    out = np.zeros_like(flat)
    out[kept] = flat[kept]
    return out.reshape(np.shape(values))


def on_levels(values: np.ndarray, bits: int, axis: int | None = None) -> np.ndarray:
    """Nonzeros moved to the nearest uniform level ``±q .. ±2**(bits-1) q`` (zeros stay).

    ``q`` is ``max|w| / 2**(bits-1)``, per tensor or per slice along ``axis``.
    """
    values = np.asarray(values, np.float32)
    top = 2 ** (bits - 1)
    if axis is None:
        step = np.float32(np.max(np.abs(values)) / top)
    else:
        reduce = tuple(i for i in range(values.ndim) if i != axis % values.ndim)
        step = (np.max(np.abs(values), axis=reduce, keepdims=True) / top).astype(np.float32)
    step = np.where(step > 0, step, np.float32(1.0)).astype(np.float32)  # all-zero slices
    codes = np.clip(np.rint(values / step), -top, top)
    codes = np.where((values != 0) & (codes == 0), np.sign(values), codes)
    return (codes.astype(np.float32) * step).astype(np.float32) * (values != 0)


def random_zeros(values: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """``values`` with a random ``fraction`` of them set to zero (whatever their magnitude,
    so that weights on levels keep every level)."""
    values = np.asarray(values, np.float32)
    mask = np.random.default_rng(seed).random(values.shape) >= fraction
    return (values * mask).astype(np.float32)


def on_centroids(values: np.ndarray, centroids) -> np.ndarray:
    """Nonzeros moved to the nearest of ``centroids`` (zeros stay): k-means weights."""
    values = np.asarray(values, np.float32)
    centroids = np.asarray(centroids, np.float32)
    nearest = centroids[np.argmin(np.abs(values[..., None] - centroids), axis=-1)]
    return np.where(values != 0, nearest, np.float32(0)).astype(np.float32)
