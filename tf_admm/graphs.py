"""What shrink and grouping know of a Keras graph, written once for both Keras generations.

:class:`LayerTypes` sorts layers into producers (Conv/Dense), per-channel layers, joins, ...,
from one generation's ``layers`` module (tf_keras and Keras 3 name their classes alike).
:class:`GraphAccess` is what an adapter hands :mod:`tf_admm.shrink` and :mod:`tf_admm.grouping`
to read its models: the layer graph (:func:`read_graph` over the model's nodes), shapes,
tensors, and a copy with new layers. The tf_keras one is :data:`tf_admm.access.GRAPH`, the
Keras 3 one :data:`tf_admm.keras3.access.GRAPH`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

__all__ = [
    "JOIN_SYMBOLS",
    "GraphAccess",
    "LayerTypes",
    "ShrinkError",
    "describe",
    "read_graph",
]


class ShrinkError(ValueError):
    """The model has a structure ``shrink`` cannot rebuild without changing its outputs."""


def describe(layer) -> str:
    """``'name' (Class)``, as error messages name a layer."""
    return f"'{layer.name}' ({type(layer).__name__})"


_ELEMENTWISE_NAMES = (
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "ThresholdedReLU",
    "Dropout",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
)
_PER_CHANNEL_NAMES = (
    "BatchNormalization",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
)


def _classes(layers, names) -> tuple[type, ...]:
    # A Keras generation may lack a class (Keras 3 has no ThresholdedReLU).
    return tuple(getattr(layers, name) for name in names if hasattr(layers, name))


@dataclasses.dataclass(frozen=True)
class LayerTypes:
    """The layer classes shrink and grouping tell apart, from one Keras generation's
    ``layers`` module (tf_keras' or Keras 3's: they name their classes alike).

    Attributes:
      producers: layers whose filters filter pruning removes (their kernel's last axis is the
        output channel): Conv1D/2D/3D and Dense. They are also the consumers, the layers that
        mix channels and so end a chain: their input channels are removed.
      not_producers: subclasses of those that are not producers (transposed, depthwise and
        separable convolutions).
      elementwise: layers without weights, identity at inference or one function of each
        value: a removed channel passes them anywhere, after a Flatten too.
      depthwise: the depthwise convolutions (per-channel, their channels may multiply).
      per_channel: layers on a (..., channels) tensor that keep channel ``c`` at ``c`` (or at
        ``c * M .. c * M + M - 1`` for a depthwise multiplier M); BatchNormalization and the
        depthwise convolutions have per-channel weights, sliced along.
      joins: elementwise layers of several inputs: channel c of each input meets channel c of
        the others.
      batch_norm, dense, flatten, concatenate, activation: single classes looked for by name.
    """

    producers: tuple[type, ...]
    not_producers: tuple[type, ...]
    elementwise: tuple[type, ...]
    depthwise: tuple[type, ...]
    per_channel: tuple[type, ...]
    joins: tuple[type, ...]
    batch_norm: type
    dense: type
    flatten: type
    concatenate: type
    activation: type

    @classmethod
    def of(cls, layers) -> LayerTypes:
        """The table of the Keras generation whose ``layers`` module is given."""
        elementwise = _classes(layers, _ELEMENTWISE_NAMES)
        depthwise = _classes(layers, ("DepthwiseConv1D", "DepthwiseConv2D"))
        return cls(
            producers=_classes(layers, ("Conv1D", "Conv2D", "Conv3D", "Dense")),
            not_producers=_classes(
                layers,
                (
                    "Conv1DTranspose",
                    "Conv2DTranspose",
                    "Conv3DTranspose",
                    "DepthwiseConv1D",
                    "DepthwiseConv2D",
                    "SeparableConv1D",
                    "SeparableConv2D",
                ),
            ),
            elementwise=elementwise,
            depthwise=depthwise,
            per_channel=elementwise + depthwise + _classes(layers, _PER_CHANNEL_NAMES),
            joins=_classes(
                layers, ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
            ),
            batch_norm=layers.BatchNormalization,
            dense=layers.Dense,
            flatten=layers.Flatten,
            concatenate=layers.Concatenate,
            activation=layers.Activation,
        )

    def is_producer(self, layer) -> bool:
        """Whether ``layer`` is a Conv1D/2D/3D or Dense layer whose filters can go."""
        return isinstance(layer, self.producers) and not isinstance(layer, self.not_producers)

    def is_join(self, layer, inputs: int) -> bool:
        """Whether ``layer`` (with ``inputs`` input layers) joins channel ``c`` of its inputs."""
        if isinstance(layer, self.joins):
            return True
        return getattr(layer, "symbol", None) in JOIN_SYMBOLS and inputs == 2

    def join(self, layer, values):
        """``layer`` applied to the tensors ``values`` (one per input, in order)."""
        if isinstance(layer, self.joins):
            return layer(values, training=False)
        return layer.function(*values)


# The same joins written as operators on Keras tensors (``x + h``): tf_keras records them as
# TFOpLambda layers of these symbols.
JOIN_SYMBOLS = frozenset(
    {
        "__operators__.add",
        "math.add",
        "math.subtract",
        "math.multiply",
        "math.maximum",
        "math.minimum",
    }
)


class GraphAccess(Protocol):
    """How shrink and grouping read a Keras generation's functional graphs (the tf_keras one
    is :data:`tf_admm.access.GRAPH`, the Keras 3 one :data:`tf_admm.keras3.access.GRAPH`)."""

    types: LayerTypes

    def layer_graph(self, model) -> tuple[dict[str, list[str]], dict[str, list[str]], set[str]]:
        """({layer: its input layers}, {layer: the layers it feeds}, names of output layers)."""

    def output_shape(self, layer) -> tuple:
        """The layer's output shape (batch first; a list of them for several outputs)."""

    def input_shape(self, layer) -> tuple:
        """The layer's input shape (batch first)."""

    def is_model(self, layer) -> bool:
        """Whether ``layer`` is a model (nested in another)."""

    def constant(self, array: np.ndarray):
        """``array`` as a tensor the generation's layers and activations take."""

    def prepare(self, model):
        """A plain Sequential or functional model to shrink: ``model`` stripped if it holds ADMM
        wrappers; raises ShrinkError (or ValueError) for what shrink cannot take."""

    def rebuild(self, model, new_layer, fill):
        """A copy of ``model`` with ``new_layer(old)`` for every layer, ``fill(old, new)``
        setting the new layers' weights."""


def read_graph(
    view, operation: Callable[[Any], Any]
) -> tuple[dict[str, list[str]], dict[str, list[str]], set[str]]:
    """:meth:`GraphAccess.layer_graph` of a functional ``view``, for either Keras generation:
    ``operation`` gives the layer of a node or of a tensor's Keras history (tf_keras calls it
    ``layer``, Keras 3 ``operation``)."""
    inputs: dict[str, list[str]] = {}
    for depth in sorted(view._nodes_by_depth, reverse=True):  # Inputs first.
        for node in view._nodes_by_depth[depth]:
            names = inputs.setdefault(operation(node).name, [])
            names.extend(operation(parent).name for parent in node.parent_nodes)
    rank = {layer.name: index for index, layer in enumerate(view.layers)}
    inputs = dict(sorted(inputs.items(), key=lambda item: rank.get(item[0], -1)))
    consumers: dict[str, list[str]] = {name: [] for name in inputs}
    for name, sources in inputs.items():
        for source in sources:
            consumers[source].append(name)
    outputs = {operation(tensor._keras_history).name for tensor in view.outputs}
    return inputs, consumers, outputs
