"""How the Keras-independent code finds layers, weights and graphs in tf_keras models.

:data:`ACCESS` is the tf_keras :class:`~tf_admm.resolution.LayerAccess` of spec resolution
(:mod:`tf_admm.resolution`): layers through :func:`tf_admm.cloning.leaf_layers` (nested models
flattened), weights by attribute path through :mod:`tf_admm.registry`. :data:`GRAPH` is the
tf_keras :class:`~tf_admm.graphs.GraphAccess` of :mod:`tf_admm.shrink` and
:mod:`tf_admm.grouping`: the layer graph, shapes, copying with new layers. The Keras 3 twins are
:data:`tf_admm.keras3.access.ACCESS` and :data:`tf_admm.keras3.access.GRAPH`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tf_admm import cloning, registry
from tf_admm.compat import keras, tf
from tf_admm.graphs import LayerTypes, ShrinkError, read_graph
from tf_admm.strip import strip
from tf_admm.wrapper import AdmmWrapper

__all__ = ["ACCESS", "GRAPH", "TfKerasAccess", "TfKerasGraph"]


class TfKerasAccess:
    """:class:`tf_admm.resolution.LayerAccess` for tf_keras models."""

    structured_layers = registry.STRUCTURED_LAYERS

    @staticmethod
    def leaf_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
        """The model's layers, nested models flattened, in layer order."""
        return cloning.leaf_layers(model)

    @staticmethod
    def is_wrapped(layer: keras.layers.Layer) -> bool:
        """Whether the layer is already an :class:`~tf_admm.wrapper.AdmmWrapper`."""
        return isinstance(layer, AdmmWrapper)

    @staticmethod
    def supports(layer: keras.layers.Layer) -> bool:
        """Whether the layer offers compressible weights by default (see the registry)."""
        return registry.supports(layer)

    @staticmethod
    def compressible_weights(layer: keras.layers.Layer) -> tuple[str, ...]:
        """Attribute paths of the weights compressed by default (raises ValueError if none)."""
        return registry.compressible_weights(layer)

    @staticmethod
    def find(layer: keras.layers.Layer, weight) -> str:
        """The attribute path of the weight a rule's ``weights`` entry means."""
        return registry.find(layer, weight)

    @staticmethod
    def shape(layer: keras.layers.Layer, name: str) -> tuple[int, ...]:
        """The shape of the weight at attribute path ``name``."""
        return tuple(int(d) for d in registry.variable(layer, name).shape)

    @staticmethod
    def values(layer: keras.layers.Layer, name: str) -> np.ndarray:
        """The current values of the weight at attribute path ``name``."""
        return registry.variable(layer, name).numpy()

    @staticmethod
    def untouched(layer: keras.layers.Layer) -> tuple[str, ...]:
        """The layer's trainable weights of rank 2 or more, as ``"path shape"``."""
        return tuple(
            f"{path} {'x'.join(str(d) for d in w.shape)}"
            for path, w in registry.variable_paths(layer).items()
            if w.trainable and w.shape.rank >= 2
        )

    @staticmethod
    def structure_layout(layer: keras.layers.Layer, name: str) -> str | None:
        """The GEMM-view layout of weight ``name`` for structured pruning, or None."""
        return registry.structure_layout(layer, name)


ACCESS = TfKerasAccess()


class TfKerasGraph:
    """:class:`tf_admm.graphs.GraphAccess` for tf_keras models."""

    types = LayerTypes.of(keras.layers)
    rebuild = staticmethod(cloning.rebuild)
    constant = staticmethod(tf.constant)

    @staticmethod
    def layer_graph(model: keras.Model):
        """({layer: its input layers}, {layer: the layers it feeds}, names of output layers).

        Read from the model's own nodes (not its config, which custom layers may not offer); a
        layer's inputs are in the order it was called with them.
        """
        view = model
        if isinstance(model, keras.Sequential):
            view = keras.Model(model.inputs, model.outputs, name=model.name)
        return read_graph(view, lambda item: item.layer)

    @staticmethod
    def output_shape(layer) -> tuple:
        """The layer's ``output_shape``."""
        return layer.output_shape

    @staticmethod
    def input_shape(layer) -> tuple:
        """The layer's ``input_shape``."""
        return layer.input_shape

    @staticmethod
    def is_model(layer) -> bool:
        """Whether ``layer`` is a tf_keras model."""
        return isinstance(layer, keras.Model)

    @staticmethod
    def prepare(model: keras.Model) -> keras.Model:
        """``model`` built, stripped if it is an ADMM model, and not subclassed."""
        cloning.check_built(model)
        if hasattr(model, "admm_wrappers"):
            model = strip(model)
        if cloning.is_subclassed(model):
            raise ShrinkError(
                f"Model '{model.name}': Expected a Sequential or functional model; received a "
                "subclassed model"
            )
        return model


GRAPH = TfKerasGraph()
