"""Rebuilding a Keras model layer by layer, for wrapping and stripping; finding its layers.

Both ``admm_wrap`` and ``strip`` build a new model of the same topology in which each layer is
replaced by what a function returns for it, then copy weights from old to new. Nested models
(a Sequential or Functional model used as a layer) are rebuilt recursively. The user's model is
never modified.

A subclassed model has no graph to rebuild: its layers are found through Keras' layer tracking,
as the attributes (or the items of lists, tuples and dicts held in attributes) that hold them,
by :func:`walk`; :mod:`tf_admm.subclassed` copies such a model and replaces layers there.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

from tf_admm import registry
from tf_admm.compat import keras

LayerFn = Callable[[keras.layers.Layer], keras.layers.Layer]
WeightFn = Callable[[keras.layers.Layer, keras.layers.Layer], None]


def _is_graph_model(layer) -> bool:
    return isinstance(layer, keras.Model) and getattr(layer, "_is_graph_network", False)


def is_subclassed(layer) -> bool:
    """Whether ``layer`` is a subclassed ``keras.Model`` (not Sequential, not Functional)."""
    return (
        isinstance(layer, keras.Model)
        and not _is_graph_model(layer)
        and not isinstance(layer, keras.Sequential)
    )


def check_built(model: keras.Model, *, subclassed: bool = True) -> None:
    """Raises a clear error for models whose input shape is unknown.

    Args:
      model: the model to check.
      subclassed: whether a (built) subclassed model is accepted here.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Expected a tf_keras Model (tf_admm.compat.keras) or a Keras 3 Model (import "
            f"keras); received: model of type {type(model).__module__}.{type(model).__name__}"
        )
    if _is_graph_model(model):
        return
    if isinstance(model, keras.Sequential):
        raise ValueError(
            f"Model '{model.name}': Expected a model with a known input shape; received a "
            "Sequential model that is not built. Start it with keras.Input(shape=...) or "
            "call model.build(input_shape) first"
        )
    if not subclassed:
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}): Expected a Sequential or Functional "
            "model; received a subclassed model where tf_admm takes none: admm_wrap, plan and "
            "strip take a subclassed model as the whole model, not nested in a Sequential or "
            "Functional model (and sensitivity analysis takes none). Wrap the subclassed model "
            "itself, or build the outer network functionally"
        )
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}): Expected a built model; received "
            "a subclassed model that was never called, so its layers have no weights yet. Call "
            "it on a batch first (model(x)) or call model.build(input_shape)"
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
    check_built(model, subclassed=False)
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone_layer(layer):
        if _is_graph_model(layer):
            return rebuild(layer, layer_fn, weight_fn)
        if isinstance(layer, keras.Model):
            check_built(layer, subclassed=False)
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


def leaf_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every non-model layer of ``model``, descending into nested models, in order.

    In a subclassed model (see :func:`walk`) the layers are those Keras tracks, in tracking
    order; custom container layers without variables of their own are descended into.
    """
    if is_subclassed(model):
        for located in walk(model):
            if located.kind == GRAPH:
                yield from leaf_layers(located.layer)
            elif located.kind == LEAF:
                yield located.layer
        return
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


# Finding the layers of a subclassed model through Keras' layer tracking.

# One step from an object to what it holds: ("attr", name) or ("item", index or key).
Step = tuple[str, str | int]
Path = tuple[Step, ...]

LEAF, GRAPH, CONTAINER = "leaf", "graph", "container"


@dataclasses.dataclass
class Located:
    """A layer of a subclassed model and every path from the model to it.

    Attributes:
      layer: the layer.
      paths: paths from the model, e.g. ``(("attr", "stack"), ("item", 0))`` for
        ``model.stack[0]``; a layer held in two places has two.
      kind: ``LEAF`` (a layer tf_admm may wrap), ``GRAPH`` (a Sequential or Functional model,
        rebuilt as a whole) or ``CONTAINER`` (a subclassed model or custom container layer,
        whose own layers are listed after it).
    """

    layer: keras.layers.Layer
    paths: list[Path]
    kind: str


def path_name(path: Path) -> str:
    """``(("attr", "stack"), ("item", 0), ("attr", "fc"))`` -> ``"stack[0].fc"``."""
    text = ""
    for kind, key in path:
        text += f".{key}" if kind == "attr" else f"[{key!r}]"
    return text.lstrip(".")


@functools.cache
def _keras_attributes() -> frozenset[str]:
    # Keras' own attributes of a model (its tracking lists among them), not the user's. A name
    # is given so that the probe takes no auto-generated model name from the user's models.
    return frozenset(vars(keras.Model(name="tf_admm_attribute_probe")))


def _is_library_layer(layer) -> bool:
    return type(layer).__module__.split(".")[0] in ("tf_keras", "keras", "tensorflow")


def own_variables(layer: keras.layers.Layer) -> list:
    """The variables ``layer`` created itself (not those of its sublayers)."""
    return list(layer._trainable_weights) + list(layer._non_trainable_weights)


def _tracked(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return [
        sub
        for sub in layer._flatten_layers(include_self=False, recursive=False)
        if not isinstance(sub, keras.metrics.Metric)
    ]


def _is_container(layer: keras.layers.Layer) -> bool:
    """Subclassed models, and custom layers that only hold other layers."""
    if is_subclassed(layer):
        return True
    return (
        not isinstance(layer, (keras.Model, keras.layers.Wrapper))
        and not _is_library_layer(layer)
        and not registry.supports(layer)
        and not own_variables(layer)
        and bool(_tracked(layer))
    )


def sublayer_paths(container: keras.layers.Layer) -> list[tuple[Path, keras.layers.Layer]]:
    """(path, layer) for every place in ``container``'s attributes that holds a tracked layer.

    Raises:
      ValueError: naming the layer, if Keras tracks a layer that no attribute (list, tuple or
        dict item) of ``container`` holds, so that it cannot be replaced.
    """
    order = _tracked(container)
    tracked = {id(layer): layer for layer in order}
    found: list[tuple[Path, keras.layers.Layer]] = []

    def visit(value: Any, path: Path) -> None:
        if isinstance(value, keras.layers.Layer):
            if id(value) in tracked:
                found.append((path, value))
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, (str, int)):
                    visit(item, path + (("item", key),))
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                visit(item, path + (("item", index),))

    skipped = _keras_attributes()
    for name, value in vars(container).items():
        if name not in skipped:
            visit(value, (("attr", name),))
    held = {id(layer) for _, layer in found}
    lost = [layer for key, layer in tracked.items() if key not in held]
    if lost:
        names = ", ".join(f"'{layer.name}' ({type(layer).__name__})" for layer in lost)
        raise ValueError(
            f"Layer '{container.name}' ({type(container).__name__}): Expected every layer it "
            "tracks to be held in an attribute, or in a list, tuple or dict held in one; "
            f"received: layers {names} tracked some other way, which tf_admm cannot replace"
        )
    # Keras' tracking order (the order of the model's weights), not the attributes' order,
    # which changes when an attribute is assigned again.
    position = {id(layer): index for index, layer in enumerate(order)}
    return sorted(found, key=lambda item: position[id(item[1])])


def walk(model: keras.Model) -> list[Located]:
    """The layers of subclassed ``model``, depth first in Keras' tracking order.

    Nested subclassed models and custom layers whose only variables are their sublayers' are
    ``CONTAINER`` entries followed by their own layers; Sequential and Functional models are
    ``GRAPH`` entries (not descended); every other layer (Keras' own layers, AdmmWrapper, custom
    layers with variables of their own) is a ``LEAF``. A layer held in several places is
    listed once, with all its paths.
    """
    entries: list[Located] = []
    seen: dict[int, Located] = {}

    def visit(container: keras.layers.Layer, prefix: Path) -> None:
        for path, layer in sublayer_paths(container):
            full = prefix + path
            if id(layer) in seen:
                seen[id(layer)].paths.append(full)
                continue
            if _is_container(layer):
                kind = CONTAINER
            elif isinstance(layer, keras.Model):
                kind = GRAPH
            else:
                kind = LEAF
            located = Located(layer, [full], kind)
            seen[id(layer)] = located
            entries.append(located)
            if kind == CONTAINER:
                visit(layer, full)

    visit(model, ())
    return entries
