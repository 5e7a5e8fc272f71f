"""Small models and data for tests and examples (no downloads, seconds to train)."""

from __future__ import annotations

import numpy as np

from tf_admm.compat import keras


def small_convnet(
    name: str = "small", *, units: int = 24, sequential: bool = False, keras_module=None
):
    """Conv2D -> DepthwiseConv2D -> Dense -> Dense on 8x8x1 inputs, 3 classes.

    Args:
      name: the model's name.
      units: width of the hidden Dense layer ``fc1``.
      sequential: a ``Sequential`` model instead of a functional one.
      keras_module: the Keras to build it with (``import keras`` for Keras 3); default
        tf_keras.
    """
    api = keras if keras_module is None else keras_module
    layers = [
        api.layers.Conv2D(6, 3, activation="relu", name="conv"),
        api.layers.DepthwiseConv2D(3, name="depthwise"),
        api.layers.Flatten(name="flatten"),
        api.layers.Dense(units, activation="relu", name="fc1"),
        api.layers.Dense(3, name="fc2"),
    ]
    if sequential:
        return api.Sequential([api.Input((8, 8, 1)), *layers], name=name)
    h = inputs = api.Input((8, 8, 1), name="image")
    for layer in layers:
        h = layer(h)
    return api.Model(inputs, h, name=name)


def mobilenet_v2_like(name: str = "mobile_v2") -> keras.Model:
    """A small MobileNet-v2-style model on 8x8x1 inputs, 3 classes: inverted residual blocks
    (1x1 expand, 3x3 depthwise, linear 1x1 project, BatchNorm after each convolution,
    ReLU6) with residual Adds, as in Sandler et al. (2018).

    The stem and the projections of blocks 1 and 2 meet at ``add1`` and ``add2`` (one channel
    group; the stem's output also feeds block 1's depthwise convolution); the projections of
    blocks 3 and 4 meet at ``add4``.
    """
    layers = keras.layers

    def norm(h, label, relu=True):
        h = layers.BatchNormalization(name=f"bn_{label}")(h)
        return layers.ReLU(6.0, name=f"relu_{label}")(h) if relu else h

    def block(h, index, expand, out, stride=1):
        x = h
        if expand:
            h = layers.Conv2D(expand, 1, use_bias=False, name=f"expand{index}")(h)
            h = norm(h, f"expand{index}")
        h = layers.DepthwiseConv2D(
            3, strides=stride, padding="same", use_bias=False, name=f"depthwise{index}"
        )(h)
        h = norm(h, f"depthwise{index}")
        h = layers.Conv2D(out, 1, use_bias=False, name=f"project{index}")(h)
        h = norm(h, f"project{index}", relu=False)
        if stride == 1 and int(x.shape[-1]) == out:
            h = layers.Add(name=f"add{index}")([x, h])
        return h

    inputs = keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    h = norm(h, "stem")
    h = block(h, 1, None, 8)
    h = block(h, 2, 16, 8)
    h = block(h, 3, 16, 12, stride=2)
    h = block(h, 4, 24, 12)
    h = layers.Conv2D(16, 1, use_bias=False, name="head")(h)
    h = norm(h, "head")
    h = layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = layers.Dense(3, name="classifier")(h)
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


# Models beyond CNNs, small enough to train in seconds on synthetic data.


def text_classifier(vocabulary: int = 200, length: int = 16, name: str = "text") -> keras.Model:
    """Embedding -> LSTM -> Dense: a text classifier over token ids, 3 classes."""
    inputs = keras.Input((length,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(vocabulary, 16, name="embedding")(inputs)
    h = keras.layers.LSTM(32, name="lstm")(h)
    outputs = keras.layers.Dense(3, name="head")(h)
    return keras.Model(inputs, outputs, name=name)


def keyword_spotter(frames: int = 20, features: int = 10, name: str = "kws") -> keras.Model:
    """Conv1D -> GRU -> Dense over audio features, 3 keywords."""
    inputs = keras.Input((frames, features), name="features")
    h = keras.layers.Conv1D(24, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.GRU(32, name="gru")(h)
    outputs = keras.layers.Dense(3, name="head")(h)
    return keras.Model(inputs, outputs, name=name)


def bilstm_classifier(frames: int = 12, features: int = 8, name: str = "bilstm") -> keras.Model:
    """Bidirectional LSTM -> Dense over sequences, 3 classes."""
    inputs = keras.Input((frames, features), name="sequence")
    h = keras.layers.Bidirectional(keras.layers.LSTM(24), name="bilstm")(inputs)
    outputs = keras.layers.Dense(3, name="head")(h)
    return keras.Model(inputs, outputs, name=name)


def transformer_encoder(
    length: int = 8, width: int = 32, blocks: int = 2, name: str = "transformer"
) -> keras.Model:
    """Dense embedding, then ``blocks`` of MultiHeadAttention + FFN with residuals and
    LayerNorm, mean pooling and a 3-class head."""
    inputs = keras.Input((length, 6), name="sequence")
    h = keras.layers.Dense(width, name="embed")(inputs)
    for b in range(blocks):
        attention = keras.layers.MultiHeadAttention(4, width // 4, name=f"attention{b}")(h, h)
        h = keras.layers.LayerNormalization(name=f"norm{b}a")(h + attention)
        ffn = keras.layers.Dense(2 * width, activation="relu", name=f"ffn{b}a")(h)
        ffn = keras.layers.Dense(width, name=f"ffn{b}b")(ffn)
        h = keras.layers.LayerNormalization(name=f"norm{b}b")(h + ffn)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    outputs = keras.layers.Dense(3, name="head")(h)
    return keras.Model(inputs, outputs, name=name)


def sequence_data(
    model: keras.Model, count: int = 96, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 3-class data for any of the sequence models above: the class is where the
    input's mass sits (token ids: which third of the vocabulary; features: which third of the
    time steps is shifted up)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=count)
    spec = model.inputs[0]
    shape = tuple(int(d) for d in spec.shape[1:])
    if spec.dtype == "int32":
        vocabulary = int(model.get_layer("embedding").input_dim)
        third = vocabulary // 3
        tokens = rng.integers(0, third, size=(count, *shape)) + labels[:, None] * third
        return tokens.astype(np.int32), labels.astype(np.int64)
    x = rng.normal(0.0, 0.5, size=(count, *shape)).astype(np.float32)
    third = shape[0] // 3
    for i, label in enumerate(labels):
        x[i, label * third : (label + 1) * third] += 1.0
    return x, labels.astype(np.int64)


def random_positions(num_weights: int, num_nonzeros: int, seed: int) -> np.ndarray:
    """Flat positions of exactly ``num_nonzeros`` nonzeros, uniformly at random."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_weights, size=num_nonzeros, replace=False))


def randomize_weights(model, seed: int = 0):
    """Adds Gaussian noise (sd 0.3) to every weight of ``model``, a tf_keras or Keras 3 model,
    so biases and BatchNormalization statistics are nonzero too (moving variances kept > 0.5);
    returns the model."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        weights = [w + rng.normal(scale=0.3, size=w.shape).astype(np.float32) for w in weights]
        if any(c.__name__ == "BatchNormalization" for c in type(layer).__mro__):
            weights[-1] = np.abs(weights[-1]) + 0.5  # Moving variance.
        layer.set_weights(weights)
    return model


def zero_filters(model, filters: dict):
    """Sets the given output channels of each named layer's first weight (its kernel) to zero:
    ``{"conv": [0, 2]}``; returns the model."""
    for name, zero in filters.items():
        layer = model.get_layer(name)
        weights = layer.get_weights()
        weights[0][..., zero] = 0.0
        layer.set_weights(weights)
    return model
