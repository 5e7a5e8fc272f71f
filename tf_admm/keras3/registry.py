"""Which weights of a Keras 3 layer ADMM may compress, and where the layer reads them.

A weight is named by its Keras 3 variable name within the layer (``"kernel"``; the tf_keras
adapter's :mod:`tf_admm.registry` names attribute paths). Keras 3 layers keep a variable in an
attribute that is not always its name (``Dense`` keeps ``kernel`` in ``_kernel`` behind a
property that adds LoRA), so :func:`resolve` looks for the attribute that holds the variable
itself: that is where the wrapper hands the layer the masked weight while it runs.

Registered today: ``Dense``, ``Conv1D``, ``Conv2D``, ``Conv3D``, ``DepthwiseConv1D``,
``DepthwiseConv2D``, ``SeparableConv1D`` and ``SeparableConv2D`` (a subclass inherits its base's
entry). Any other layer's variables can be chosen by a rule's ``weights``, by name. Which of
these weights structured pruning takes, and in which layout, is :mod:`tf_admm.layouts`' table,
shared with tf_keras (:func:`structure_layout`, :func:`filter_bias`).
"""

from __future__ import annotations

from collections.abc import Iterator

import keras

from tf_admm import layouts

__all__ = [
    "compressible_weights",
    "filter_bias",
    "find",
    "leaf_layers",
    "own_variables",
    "resolve",
    "structure_layout",
    "supports",
]

_layers = keras.layers

STRUCTURED_LAYERS = layouts.STRUCTURED_LAYERS

# Looked up along the class's MRO, most derived first.
_REGISTRY: dict[type, tuple[str, ...]] = {
    _layers.Dense: ("kernel",),
    _layers.Conv1D: ("kernel",),
    _layers.Conv2D: ("kernel",),
    _layers.Conv3D: ("kernel",),
    _layers.DepthwiseConv1D: ("kernel",),
    _layers.DepthwiseConv2D: ("kernel",),
    _layers.SeparableConv1D: ("depthwise_kernel", "pointwise_kernel"),
    _layers.SeparableConv2D: ("depthwise_kernel", "pointwise_kernel"),
}


def _registered(layer) -> tuple[str, ...] | None:
    for cls in type(layer).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def own_variables(layer) -> dict[str, keras.Variable]:
    """The layer's own variables (not those of layers inside it), by name."""
    found: dict[str, keras.Variable] = {}
    for variable in layer._trainable_variables + layer._non_trainable_variables:
        found.setdefault(variable.name, variable)
    return found


def supports(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is of a registered type (or a subclass of one)."""
    return _registered(layer) is not None


def compressible_weights(layer: keras.layers.Layer) -> tuple[str, ...]:
    """Names of the weights ADMM compresses by default in a built layer.

    Raises:
      ValueError: naming the layer, if it offers none.
    """
    names = _registered(layer)
    if names is None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no compressible weights: "
            f"Expected one of {sorted(t.__name__ for t in _REGISTRY)} or a subclass of one; "
            "or name its variables with a rule's weights"
        )
    for name in names:
        resolve(layer, name)
    return names


def find(layer: keras.layers.Layer, weight) -> str:
    """The name of ``weight``: a variable name of the layer, its path (``"dense/kernel"``) or
    the variable itself.

    Raises:
      ValueError: naming the layer and its variables, if nothing matches.
    """
    own = own_variables(layer)
    for name, variable in own.items():
        if weight is variable or weight in (name, variable.path):
            return name
    # Worded as the tf_keras registry's error, with what a rule's weights takes as the keys.
    paths = {name: variable.path for name, variable in own.items()}
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}): Expected a weight among its "
        f"variables (variable name: path) {paths}; received: weight={weight!r} "
        "(no variable matches)"
    )


def resolve(layer: keras.layers.Layer, name: str) -> tuple[keras.Variable, str]:
    """``(variable, attribute)``: the layer's variable called ``name`` and the attribute of the
    layer that holds it (where the wrapper substitutes the masked weight).

    Raises:
      ValueError: if the layer has no such variable, or reads it through no attribute.
    """
    variable = own_variables(layer).get(name)
    if variable is None:
        find(layer, name)  # Raises, listing the layer's variables.
    for attribute, value in vars(layer).items():
        if value is variable:
            return variable, attribute
    raise ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}), weight '{name}': Expected the layer to "
        "hold the variable in an attribute that its call() reads; found none"
    )


def structure_layout(layer: keras.layers.Layer, name: str) -> str | None:
    """The GEMM-view layout (``"dense"`` or ``"depthwise"``) of the layer's variable ``name``
    for structured pruning, or None (:func:`tf_admm.layouts.structure_layout`)."""
    return layouts.structure_layout(layer, name)


def filter_bias(layer: keras.layers.Layer, name: str) -> str | None:
    """The name of the bias that goes with the filters of weight ``name`` (``"bias"`` for a
    Dense/Conv kernel or a depthwise kernel), or None (no bias, or a separable convolution,
    whose bias belongs to its pointwise filters)."""
    if not layouts.filter_bias_follows(layer, name):
        return None
    return "bias" if "bias" in own_variables(layer) else None


def leaf_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of ``model``, nested Sequential and Functional models flattened."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer
