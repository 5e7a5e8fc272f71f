"""Rebuilding a Keras model layer by layer, for wrapping and stripping.

Both ``admm_wrap`` and ``strip`` build a new model of the same topology in which each layer is
replaced by what a function returns for it, then copy weights from old to new. Nested models
(a Sequential or Functional model used as a layer) are rebuilt recursively. The user's model is
never modified.
"""

from __future__ import annotations

from collections.abc import Callable

from tf_admm.compat import keras

LayerFn = Callable[[keras.layers.Layer], keras.layers.Layer]
WeightFn = Callable[[keras.layers.Layer, keras.layers.Layer], None]


def _is_graph_model(layer) -> bool:
    return isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False)


def check_built(model: keras.Model) -> None:
    """Raises a clear error for models whose input shape is unknown."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected a tf_keras Model (import Keras through tf_admm.compat or tf_keras); "
            f"received: model of type {type(model).__module__}.{type(model).__name__}"
        )
    if not _is_graph_model(model):
        if isinstance(model, keras.Sequential):
            raise ValueError(
                f"Model '{model.name}': Expected a model with a known input shape; received a "
                "Sequential model that is not built. Start it with keras.Input(shape=...) or "
                "call model.build(input_shape) first"
            )
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}): Expected a Sequential or Functional "
            "model; received a subclassed model. Build the same network functionally"
        )


def rebuild(model: keras.Model, layer_fn: LayerFn, weight_fn: WeightFn) -> keras.Model:
    """Clones ``model`` with ``layer_fn`` applied to every leaf layer, then copies weights.

    Args:
      model: a built Sequential or Functional model.
      layer_fn: returns the new (unbuilt) layer that takes an old leaf layer's place.
      weight_fn: ``weight_fn(old, new)`` fills ``new``'s weights once it is built.

    Returns:
      The new model; Sequential stays Sequential, Functional becomes ``keras.Model``.
    """
    check_built(model)
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone_layer(layer):
        if _is_graph_model(layer):
            return rebuild(layer, layer_fn, weight_fn)
        if isinstance(layer, keras.Model):
            check_built(layer)
        new = layer_fn(layer)
        pairs.append((layer, new))
        return new

    source = model
    if not isinstance(model, keras.Sequential) and type(model) is not keras.Model:
        # A functional view with the plain Model class, so the clone is a plain Model too.
        source = keras.Model(model.inputs, model.outputs, name=model.name)
    clone = keras.models.clone_model(source, clone_function=clone_layer)
    for old, new in pairs:
        weight_fn(old, new)
    return clone


def copy_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A fresh, unbuilt layer with ``layer``'s config."""
    return layer.__class__.from_config(layer.get_config())


def copy_weights(old: keras.layers.Layer, new: keras.layers.Layer) -> None:
    """Copies ``old``'s weights into ``new`` in order (a ``weight_fn`` for :func:`rebuild`).

    Args:
      old: the source layer.
      new: a built layer with the same weights in the same order and shapes.
    """
    new.set_weights(old.get_weights())


def leaf_layers(model: keras.Model):
    """Every non-model layer of ``model``, descending into nested models, in order."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer
