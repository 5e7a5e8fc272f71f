"""Copies of subclassed Keras models: their input signature, deep copies and config copies.

A subclassed ``keras.Model`` is copied as ``cls.from_config(model.get_config())`` when its class
has a config (:func:`implements_config`), built by tracing a call on the model's input signature
(:func:`input_signature`) and checked to hold the same layers, with the original's layer names
and weights (:func:`copy_model`); otherwise by :func:`deep_copy`, which copies the objects and
shares no variable with the original. :mod:`tf_admm.subclassed` wraps, strips and saves the
copies.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

from tf_keras.src.utils import generic_utils

from tf_admm import cloning
from tf_admm.cloning import CONTAINER, GRAPH, LEAF
from tf_admm.compat import keras, tf
from tf_admm.wrapper import AdmmWrapper

__all__ = [
    "GraphFn",
    "copy_model",
    "deep_copy",
    "describe",
    "implements_config",
    "in_graph",
    "input_signature",
    "layer_name",
    "symbolic_inputs",
    "trace",
]

GraphFn = Callable[[keras.Model], keras.Model]


def describe(model: keras.Model) -> str:
    """``Model '<name>' (<class>)``, how error messages name a model."""
    return f"Model '{model.name}' ({type(model).__name__})"


def implements_config(model: keras.Model) -> bool:
    """Whether ``type(model).from_config(model.get_config())`` can rebuild ``model``.

    True when the class overrides ``get_config``, or when Keras derives the config from the
    constructor's arguments (all of basic types). Otherwise Keras' ``get_config`` returns ``{}``
    and ``from_config`` would call the constructor without the arguments the model was made with.
    """
    return not generic_utils.is_default(model.get_config) or bool(
        getattr(model, "_auto_get_config", False)
    )


# The input signature, from the model's first call or its build().


def _is_shape(value: Any) -> bool:
    if isinstance(value, tf.TensorShape):
        return True
    return isinstance(value, (list, tuple)) and all(d is None or isinstance(d, int) for d in value)


def _specs_from_shapes(shape: Any) -> Any:
    if _is_shape(shape):
        dims = tf.TensorShape(shape).as_list()
        return tf.TensorSpec([None] + dims[1:], tf.float32)
    if isinstance(shape, dict):
        return {key: _specs_from_shapes(value) for key, value in shape.items()}
    return [_specs_from_shapes(value) for value in shape]


def input_signature(model: keras.Model) -> Any:
    """The ``tf.TensorSpec`` (or list or dict of them) ``model`` is called on, batch size None.

    Taken from the model's first call (its save spec), else from ``model.build(shape)``
    (float32 then).

    Raises:
      ValueError: if the model was never called or built, or takes more than one argument.
    """
    saved = model.save_spec(dynamic_batch=True)
    if saved is not None:
        args, kwargs = saved
        if kwargs or len(args) != 1:
            raise ValueError(
                f"{describe(model)}: Expected a model called with one input (a tensor, or a "
                f"list or dict of tensors); received: a call with {len(args)} positional and "
                f"keyword arguments {sorted(kwargs)}"
            )
        return args[0]
    shape = getattr(model, "_build_input_shape", None)
    if shape is None:
        raise ValueError(
            f"{describe(model)}: Expected a built model with a known input shape; received a "
            "subclassed model that was never called or built. Call it on a batch first "
            "(model(x)) or call model.build(input_shape)"
        )
    return _specs_from_shapes(shape)


def symbolic_inputs(signature: Any) -> Any:
    """``keras.Input`` tensors with the structure, shapes and dtypes of ``signature``."""
    return tf.nest.map_structure(
        lambda spec: keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype), signature
    )


def in_graph(fn: Callable[[Any], Any], signature: Any) -> Any:
    """``fn(inputs)`` on placeholders with ``signature`` in a scratch graph; runs nothing.

    A plain graph, as ``Model.build`` uses, not a ``tf.function``: one that creates variables
    is traced twice, and a layer created inside call() would fail there with TensorFlow's
    error rather than tf_admm's.
    """
    graph = tf.__internal__.FuncGraph("tf_admm_trace")
    with graph.as_default():
        inputs = tf.nest.map_structure(
            lambda spec: tf.compat.v1.placeholder(spec.dtype, spec.shape), signature
        )
        return fn(inputs)


def trace(model: keras.Model, signature: Any) -> None:
    """Traces one call of ``model`` (building what is not built); runs nothing."""
    in_graph(lambda inputs: model(inputs, training=False), signature)


# Copies.


class _Dropped:
    """Stands for the compile state (optimizer, losses, ...) that a deep copy leaves behind."""


_DROPPED = _Dropped()

# Compile and fit state of a model, with the value an uncompiled model has (a callable for a
# fresh object, _REMOVE for an attribute only compile() sets).
_REMOVE = object()
_COMPILE_STATE = {
    "optimizer": None,
    "compiled_loss": None,
    "compiled_metrics": None,
    "history": None,
    "train_function": None,
    "test_function": None,
    "predict_function": None,
    "train_tf_function": None,
    "_steps_per_execution": None,
    "_training_state": None,
    "_is_compiled": False,
    "_compiled_trainable_state": weakref.WeakKeyDictionary,
    "loss": _REMOVE,
    "_compile_config": _REMOVE,
    "_pss_evaluation_shards": _REMOVE,
}
_ATOMIC = (type(None), bool, int, float, str)


def _forget_compile_state(model: keras.Model) -> None:
    state = vars(model)
    for key, fresh in _COMPILE_STATE.items():
        if key not in state:
            continue
        if fresh is _REMOVE:
            del state[key]
        else:
            state[key] = fresh() if callable(fresh) else fresh
    dependencies = state.get("_self_unconditional_checkpoint_dependencies")
    if dependencies is not None:
        dependencies[:] = [d for d in dependencies if d.ref is not _DROPPED]
    names = state.get("_self_unconditional_dependency_names")
    if names is not None:
        for name in [n for n, ref in names.items() if ref is _DROPPED]:
            del names[name]
    counts = state.get("_obj_reference_counts_dict")
    if counts is not None and _DROPPED in counts:
        del counts[_DROPPED]


def _copy_graph(graph: keras.Model) -> keras.Model:
    return cloning.rebuild(graph, cloning.copy_layer, cloning.copy_weights)


def deep_copy(model: keras.Model, graph_fn: GraphFn = _copy_graph) -> keras.Model:
    """A copy of built ``model`` that shares no variable (nor layer) with it.

    Keras' own ``copy.deepcopy`` of a built model goes through a saved file and needs the class
    registered with a config; this copies the objects instead (``Layer.__getstate__``), without
    the compile state (optimizer, losses, metrics, fit functions: the copy is uncompiled) and
    without the model's calls in Keras graphs (its nodes). A Sequential or Functional model it
    holds is copied by ``graph_fn`` instead (by default rebuilt with copied layers and weights):
    a graph keeps the ids of its tensors, which a deep copy would not match.

    Raises:
      ValueError: naming the model, if some attribute cannot be copied.
    """
    memo: dict[int, Any] = {}
    # The model's nodes tie it to the Keras graphs it was called in (an AdmmModel's, say); the
    # nodes of layers inside a nested Sequential or Functional model are that model's graph.
    for attribute in ("_inbound_nodes_value", "_outbound_nodes_value"):
        nodes = vars(model).get(attribute)
        if isinstance(nodes, list):
            memo[id(nodes)] = []
    inside_graphs: set[int] = set()
    for located in cloning.walk(model):
        if located.kind == GRAPH:
            memo[id(located.layer)] = graph_fn(located.layer)
            inside_graphs.update(
                id(layer) for layer in located.layer._flatten_layers(include_self=True)
            )
    layers = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if id(layer) not in inside_graphs
    ]
    for layer in layers:
        strategy = vars(layer).get("_distribution_strategy")
        if strategy is not None:
            memo[id(strategy)] = strategy  # One strategy per program: shared, not copied.
    models = [layer for layer in layers if isinstance(layer, keras.Model)]
    for nested in models:
        for key in _COMPILE_STATE:
            value = vars(nested).get(key)
            if not isinstance(value, _ATOMIC):
                memo[id(value)] = _DROPPED
    # Innermost models first, so that an outer model's state finds its nested models copied
    # (Keras' Model.__deepcopy__ would save and load them instead).
    for nested in reversed(models):
        state = nested.__getstate__()
        new = type(nested).__new__(type(nested))
        memo[id(nested)] = new
        try:
            new.__setstate__(copy.deepcopy(state, memo))
        except Exception as error:
            raise ValueError(
                f"{describe(model)}: Expected get_config() or a deep-copyable model (its class "
                f"has no config, so tf_admm deep-copies it); copying {describe(nested)} failed: "
                f"{type(error).__name__}: {error}. Implement get_config() (and from_config if "
                "needed) for the model's class"
            ) from error
        _forget_compile_state(new)
    return memo[id(model)]


def layer_name(layer: keras.layers.Layer) -> str:
    """The layer's name, seen through an ADMM wrapper."""
    return layer.layer.name if isinstance(layer, AdmmWrapper) else layer.name


def _unwrapped(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer.layer if isinstance(layer, AdmmWrapper) else layer


def _align_names(source: keras.Model, target: keras.Model) -> None:
    """Gives ``target``'s layers the names of ``source``'s layers at the same paths."""
    names = {
        path: layer_name(entry.layer) for entry in cloning.walk(source) for path in entry.paths
    }
    graphs = {
        path: entry.layer
        for entry in cloning.walk(source)
        if entry.kind == GRAPH
        for path in entry.paths
    }
    for entry in cloning.walk(target):
        path = entry.paths[0]
        if path in names:
            entry.layer._name = names[path]
        if entry.kind == GRAPH and path in graphs and entry.layer.built:
            pairs = zip(cloning.leaf_layers(graphs[path]), cloning.leaf_layers(entry.layer))
            for old, new in pairs:
                new._name = layer_name(old)


def _structure(model: keras.Model) -> list[tuple[str, str, str, tuple]]:
    """(paths, kind, class, weight shapes) of every layer, wrappers seen through."""
    rows = []
    for entry in cloning.walk(model):
        layer = _unwrapped(entry.layer)
        if entry.kind == GRAPH:
            leaves = [_unwrapped(leaf) for leaf in cloning.leaf_layers(layer)]
            shapes = tuple(tuple(w.shape) for leaf in leaves for w in leaf.weights)
            kind = f"{GRAPH} of {[type(leaf).__name__ for leaf in leaves]}"
        elif entry.kind == CONTAINER:
            shapes = tuple(tuple(w.shape) for w in cloning.own_variables(layer))
            kind = CONTAINER
        else:
            shapes = tuple(tuple(w.shape) for w in layer.weights)
            kind = LEAF
        paths = ", ".join(sorted(cloning.path_name(p) for p in entry.paths))
        rows.append((paths, kind, type(layer).__name__, shapes))
    return rows


def _check_same(source: keras.Model, target: keras.Model, how: str) -> None:
    expected, received = _structure(source), _structure(target)
    own = (tuple(w.shape) for w in cloning.own_variables(source))
    if tuple(own) != tuple(tuple(w.shape) for w in cloning.own_variables(target)):
        received = received + [("(the model itself)", "own variables", "", ())]
    if expected == received:
        return
    for index in range(max(len(expected), len(received))):
        old = expected[index] if index < len(expected) else None
        new = received[index] if index < len(received) else None
        if old != new:
            break

    def show(row):
        if row is None:
            return "nothing"
        paths, kind, cls, shapes = row
        return f"'{paths}': {cls} ({kind}) with weights {list(shapes)}"

    raise ValueError(
        f"{describe(source)}: Expected {how} to rebuild the same layers; received at layer "
        f"{index}: {show(new)} where the model has {show(old)}. Make get_config() return every "
        "constructor argument (or implement from_config)"
    )


def _copy_variables(
    source: keras.Model, target: keras.Model, values: Callable[[keras.layers.Layer], list]
) -> None:
    """Fills ``target``'s variables from ``source`` (same structure), ``values(layer)`` giving a
    leaf layer's weights."""
    for old, new in zip(cloning.own_variables(source), cloning.own_variables(target)):
        new.assign(old)
    for old, new in zip(cloning.walk(source), cloning.walk(target)):
        if old.kind == CONTAINER:
            for a, b in zip(cloning.own_variables(old.layer), cloning.own_variables(new.layer)):
                b.assign(a)
        elif old.kind == GRAPH:
            leaves = zip(cloning.leaf_layers(old.layer), cloning.leaf_layers(new.layer))
            for a, b in leaves:
                b.set_weights(values(a))
        else:
            new.layer.set_weights(values(old.layer))


def _weights(layer: keras.layers.Layer) -> list:
    return layer.stripped_weights() if isinstance(layer, AdmmWrapper) else layer.get_weights()


def copy_model(model: keras.Model, signature: Any) -> keras.Model:
    """A built copy of subclassed ``model`` with its layer names and weights (effective weights
    where ``model`` holds wrappers, which the copy does not have); shares no variable with it.

    Raises:
      ValueError: if the class's config does not rebuild the same layers.
    """
    if not implements_config(model):
        return deep_copy(model)
    cls = type(model)
    how = f"{cls.__name__}.from_config(model.get_config())"
    try:
        new = cls.from_config(model.get_config())
    except Exception as error:
        raise ValueError(
            f"{describe(model)}: Expected {how} to rebuild the model; it failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    new._name = model.name
    _align_names(model, new)  # Before building, so that variables take the names too.
    trace(new, signature)
    _align_names(model, new)  # Layers created in build().
    _check_same(model, new, how)
    _copy_variables(model, new, _weights)
    return new
