"""Small models and data for tests and examples (no downloads, seconds to train)."""

from __future__ import annotations

import numpy as np

from tf_admm.compat import keras


def small_convnet(name: str = "small") -> keras.Model:
    """Conv2D -> DepthwiseConv2D -> Dense -> Dense on 8x8x1 inputs, 3 classes."""
    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.DepthwiseConv2D(3, name="depthwise")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(24, activation="relu", name="fc1")(h)
    outputs = keras.layers.Dense(3, name="fc2")(h)
    return keras.Model(inputs, outputs, name=name)


def small_data(count: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 3-class images: the class sets which quadrant is bright."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=count)
    images = rng.normal(0.0, 0.3, size=(count, 8, 8, 1)).astype(np.float32)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 2)
        images[i, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4, 0] += 1.0
    return images, labels.astype(np.int64)


def compile_for_classification(model: keras.Model, learning_rate: float = 1e-2) -> keras.Model:
    """Compiles ``model`` with Adam, sparse categorical cross-entropy on logits and accuracy.

    Args:
      model: a model whose outputs are class logits.
      learning_rate: Adam's learning rate.

    Returns:
      ``model``, compiled in place.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
