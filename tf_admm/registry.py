"""Which weights of a layer ADMM may compress.

Built-in layers are listed in a table from class to weight attribute names. A custom layer
opts in by implementing :class:`CompressibleLayer`, i.e. a ``get_admm_weights()`` method that
returns the attribute names (or the variables themselves) of its compressible weights::

    class Gated(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1], 8))
        def call(self, x):
            return tf.sigmoid(x @ self.w)
        def get_admm_weights(self):
            return ["w"]

The wrapper substitutes the compressed tensor for the attribute while the layer runs, so a
custom layer must read its weights through those attributes in ``call``.
"""

from __future__ import annotations

from tf_admm.compat import keras, tf

__all__ = ["CompressibleLayer", "compressible_weights", "supports"]

_layers = keras.layers

# Exact classes only: DepthwiseConv2D subclasses Conv2D in Keras but keeps another weight.
_REGISTRY: dict[type, tuple[str, ...]] = {
    _layers.Dense: ("kernel",),
    _layers.Conv1D: ("kernel",),
    _layers.Conv2D: ("kernel",),
    _layers.Conv3D: ("kernel",),
    _layers.Conv1DTranspose: ("kernel",),
    _layers.Conv2DTranspose: ("kernel",),
    _layers.Conv3DTranspose: ("kernel",),
    _layers.DepthwiseConv1D: ("depthwise_kernel",),
    _layers.DepthwiseConv2D: ("depthwise_kernel",),
    _layers.SeparableConv1D: ("depthwise_kernel", "pointwise_kernel"),
    _layers.SeparableConv2D: ("depthwise_kernel", "pointwise_kernel"),
    _layers.Embedding: ("embeddings",),
    _layers.LocallyConnected1D: ("kernel",),
    _layers.LocallyConnected2D: ("kernel",),
}


class CompressibleLayer:
    """Interface for custom layers: name the weights that ADMM may compress."""

    def get_admm_weights(self) -> list[str | tf.Variable]:
        """Attribute names (or variables) of the compressible weights of this layer."""
        raise NotImplementedError


def supports(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` offers compressible weights (registered or through the interface)."""
    return type(layer) in _REGISTRY or callable(getattr(layer, "get_admm_weights", None))


def _attribute_of(layer: keras.layers.Layer, variable: tf.Variable) -> str:
    for attribute, value in vars(layer).items():
        if value is variable:
            return attribute
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}): Expected get_admm_weights() to return "
        f"attributes of the layer; received: variable {variable.name!r} that is not one"
    )


def compressible_weights(layer: keras.layers.Layer) -> tuple[str, ...]:
    """Attribute names of the weights ADMM compresses by default in a built layer.

    Raises:
      ValueError: naming the layer, if it offers no compressible weights.
    """
    if type(layer) in _REGISTRY:
        return _REGISTRY[type(layer)]
    getter = getattr(layer, "get_admm_weights", None)
    if not callable(getter):
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no compressible weights: "
            f"Expected one of {sorted(t.__name__ for t in _REGISTRY)} or a layer implementing "
            "get_admm_weights() (see tf_admm.CompressibleLayer)"
        )
    names = []
    for item in getter():
        names.append(item if isinstance(item, str) else _attribute_of(layer, item))
    if not names:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}): Expected get_admm_weights() to "
            "name at least one weight; received: []"
        )
    return tuple(names)
