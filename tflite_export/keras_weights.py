"""The Keras side of matching weights to a converted file: the model's layers (nested models
flattened), the weights of each that may be compressed, and the TFLite layout of the kernels
every target re-encodes. tf_keras and Keras 3 alike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tf_admm.compat import keras, keras3

__all__ = ["SUPPORTED_LAYERS", "keras_kernels", "keras_layers", "kernel_weights"]


def _dense(kernel: np.ndarray) -> np.ndarray:
    return kernel.T


def _conv1d(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(2, 0, 1)[:, None]


def _conv2d(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(3, 0, 1, 2)


def _depthwise(kernel: np.ndarray) -> np.ndarray:
    return kernel.reshape(1, kernel.shape[0], kernel.shape[1], -1)


# Exact layer class -> (weight attribute, Keras layout -> TFLite layout), tf_keras and Keras 3.
# Exact classes only: DepthwiseConv2D subclasses Conv2D but keeps another weight in another
# layout (Keras 3 calls it ``kernel``, tf_keras ``depthwise_kernel``).
SUPPORTED_LAYERS: dict[type, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    keras.layers.Dense: ("kernel", _dense),
    keras.layers.Conv1D: ("kernel", _conv1d),
    keras.layers.Conv2D: ("kernel", _conv2d),
    keras.layers.DepthwiseConv2D: ("depthwise_kernel", _depthwise),
    keras3.layers.Dense: ("kernel", _dense),
    keras3.layers.Conv1D: ("kernel", _conv1d),
    keras3.layers.Conv2D: ("kernel", _conv2d),
    keras3.layers.DepthwiseConv2D: ("kernel", _depthwise),
}


def keras_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of ``model``, nested models flattened, in model order."""
    found = []

    def walk(layer):
        if isinstance(layer, (keras.Model, keras3.Model)):
            for inner in layer.layers:
                walk(inner)
        else:
            found.append(layer)

    walk(model)
    return found


def _weight_name(layer: keras.layers.Layer, variable) -> str:
    """The attribute holding ``variable``, else its variable path inside the layer (RNN cell
    scopes left out: an LSTM's ``kernel``, a MultiHeadAttention's ``query/kernel``)."""
    for attribute, value in vars(layer).items():
        if value is variable and not attribute.startswith("_"):
            return attribute
    # A Keras 3 variable's name is its attribute's ("kernel"); its path has the layer scopes.
    name = variable.path if isinstance(variable, keras3.Variable) else variable.name
    segments = name.split(":")[0].split("/")
    if layer.name in segments[:-1]:
        segments = segments[len(segments) - 1 - segments[::-1].index(layer.name) :]
    segments = segments[1:] or segments
    cells = {
        inner.cell.name
        for inner in layer._flatten_layers()
        if isinstance(getattr(inner, "cell", None), (keras.layers.Layer, keras3.layers.Layer))
    }
    inner = [s for s in segments[:-1] if s not in cells]
    return "/".join([*inner, segments[-1]])


def kernel_weights(layer: keras.layers.Layer) -> list[tuple[str, object]]:
    """``(name, variable)`` of the layer's weights that may be compressed: rank 2 or more, not
    a bias (kernels, embeddings, recurrent kernels, attention projections); unbuilt: none."""
    if not layer.built:
        return []
    found = []
    seen = set()
    for variable in layer.weights:
        if len(variable.shape) < 2 or id(variable) in seen:
            continue
        seen.add(id(variable))
        name = _weight_name(layer, variable)
        if name.split("/")[-1].endswith("bias"):
            continue
        found.append((name, variable))
    return found


def keras_kernels(model: keras.Model) -> dict[str, np.ndarray]:
    """Layer name -> the kernel of every supported layer, in TFLite's layout."""
    kernels = {}
    for layer in keras_layers(model):
        entry = SUPPORTED_LAYERS.get(type(layer))
        if entry is not None and layer.built:
            attribute, to_tflite = entry
            kernels[layer.name] = to_tflite(np.asarray(getattr(layer, attribute).numpy()))
    return kernels
