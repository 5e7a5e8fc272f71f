"""Model definitions from the papers, as tf_keras functional models."""

from __future__ import annotations

from tf_admm.compat import keras


def lenet5(num_classes: int = 10) -> keras.Model:
    """Caffe's LeNet-5 ("LeNet-5" in Han et al. 2015 and Ye et al. 2018).

    conv1 20@5x5, max-pool 2, conv2 50@5x5, max-pool 2, fc1 500 with ReLU, fc2 10 (logits):
    500 + 25,000 + 400,000 + 5,000 = 430,500 weights (plus 580 biases).
    """
    inputs = keras.Input((28, 28, 1), name="image")
    h = keras.layers.Conv2D(20, 5, name="conv1")(inputs)
    h = keras.layers.MaxPool2D(2, name="pool1")(h)
    h = keras.layers.Conv2D(50, 5, name="conv2")(h)
    h = keras.layers.MaxPool2D(2, name="pool2")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(500, activation="relu", name="fc1")(h)
    outputs = keras.layers.Dense(num_classes, name="fc2")(h)
    return keras.Model(inputs, outputs, name="lenet5")
