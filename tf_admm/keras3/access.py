"""How the Keras-independent code finds layers, weights and graphs in Keras 3 models.

:data:`ACCESS` is the Keras 3 :class:`~tf_admm.resolution.LayerAccess` of spec resolution
(:mod:`tf_admm.resolution`): layers through :func:`tf_admm.keras3.registry.leaf_layers`, weights
by variable name through :mod:`tf_admm.keras3.registry`. :data:`GRAPH` is the Keras 3
:class:`~tf_admm.graphs.GraphAccess` of :mod:`tf_admm.shrink` (and the channel groups it
reads): the layer graph from Keras 3's nodes, shapes from the layers' symbolic tensors, copying
with ``keras.models.clone_model``. The tf_keras twins are :data:`tf_admm.access.ACCESS` and
:data:`tf_admm.access.GRAPH`.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_admm.graphs import LayerTypes, ShrinkError, describe, read_graph
from tf_admm.keras3 import registry
from tf_admm.keras3.strip import strip
from tf_admm.keras3.wrapper import AdmmWrapper

__all__ = ["ACCESS", "GRAPH", "Keras3Access", "Keras3Graph"]


class Keras3Access:
    """:class:`tf_admm.resolution.LayerAccess` for Keras 3 models."""

    leaf_layers = staticmethod(registry.leaf_layers)
    supports = staticmethod(registry.supports)
    compressible_weights = staticmethod(registry.compressible_weights)
    find = staticmethod(registry.find)

    @staticmethod
    def is_wrapped(layer) -> bool:
        """Whether the layer is already a Keras 3 :class:`~tf_admm.keras3.wrapper.AdmmWrapper`."""
        return isinstance(layer, AdmmWrapper)

    @staticmethod
    def shape(layer, name: str) -> tuple[int, ...]:
        """The shape of the layer's variable ``name``."""
        return tuple(registry.resolve(layer, name)[0].shape)

    @staticmethod
    def values(layer, name: str) -> np.ndarray:
        """The current values of the layer's variable ``name``, on the host."""
        return keras.ops.convert_to_numpy(registry.resolve(layer, name)[0])

    @staticmethod
    def untouched(layer) -> tuple[str, ...]:
        """The layer's trainable variables of rank 2 or more, as ``"name shape"``."""
        return tuple(
            f"{name} {'x'.join(str(d) for d in variable.shape)}"
            for name, variable in registry.own_variables(layer).items()
            if variable.trainable and len(variable.shape) >= 2
        )

    structured_layers = registry.STRUCTURED_LAYERS
    structure_layout = staticmethod(registry.structure_layout)


ACCESS = Keras3Access()


def _functional_view(model: keras.Model) -> keras.Model:
    """A plain functional model of ``model``'s graph (a Sequential one's inner graph)."""
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, model.outputs, name=model.name)


class Keras3Graph:
    """:class:`tf_admm.graphs.GraphAccess` for Keras 3 models, on any backend."""

    types = LayerTypes.of(keras.layers)

    @staticmethod
    def layer_graph(model: keras.Model):
        """The graph of layers of a Sequential or functional Keras 3 model.

        Raises:
          ShrinkError: naming the operation, for a ``keras.ops`` call on Keras tensors in
            the graph (``x + h``), which is no layer shrink could slice or copy.
        """
        view = _functional_view(model)
        for operation in view.operations:
            if not isinstance(operation, keras.layers.Layer):
                raise ShrinkError(
                    f"Operation {describe(operation)} in model '{model.name}': Expected "
                    "layers only in a Keras 3 model to shrink; received a keras.ops operation "
                    "on Keras tensors (write it as a layer, e.g. keras.layers.Add()([x, h]) "
                    "for x + h)"
                )
        return read_graph(view, lambda item: item.operation)

    @staticmethod
    def output_shape(layer) -> tuple:
        """The shape of the layer's symbolic output."""
        return tuple(layer.output.shape)

    @staticmethod
    def input_shape(layer) -> tuple:
        """The shape of the layer's symbolic input."""
        return tuple(layer.input.shape)

    @staticmethod
    def is_model(layer) -> bool:
        """Whether ``layer`` is a Keras 3 model."""
        return isinstance(layer, keras.Model)

    constant = staticmethod(keras.ops.convert_to_tensor)

    @staticmethod
    def prepare(model: keras.Model) -> keras.Model:
        """``model`` with a known input shape, stripped if it holds ADMM wrappers, and a
        Sequential or functional one."""
        if isinstance(model, keras.Sequential):
            if not model.built or not model.inputs:
                raise ValueError(
                    f"Model '{model.name}': Expected a model with a known input shape; "
                    "received a Sequential model that is not built. Start it with "
                    "keras.Input(shape=...)"
                )
        elif not hasattr(model, "_run_through_graph"):
            raise ShrinkError(
                f"Model '{model.name}': Expected a Sequential or functional model; received a "
                "subclassed model"
            )
        if any(isinstance(la, AdmmWrapper) for la in registry.leaf_layers(model)):
            model = strip(model)
        return model

    @staticmethod
    def rebuild(model: keras.Model, new_layer, fill) -> keras.Model:
        """``keras.models.clone_model`` with ``new_layer(old)`` for every layer (input layers
        but for), then ``fill(old, new)``; a Sequential model stays Sequential."""
        pairs = []

        def clone(layer):
            new = new_layer(layer)
            pairs.append((layer, new))
            return new

        if isinstance(model, keras.Sequential):
            copy = keras.models.clone_model(model, clone_function=clone)
        else:
            # New inputs named as the model's: clone_model would name them after the tensors.
            view = _functional_view(model)
            inputs = [
                keras.Input(
                    batch_shape=x.shape, dtype=x.dtype, name=x._keras_history.operation.name
                )
                for x in view.inputs
            ]
            copy = keras.models.clone_model(
                view, input_tensors=inputs[0] if len(inputs) == 1 else inputs, clone_function=clone
            )
        for old, new in pairs:
            fill(old, new)
        return copy


GRAPH = Keras3Graph()
