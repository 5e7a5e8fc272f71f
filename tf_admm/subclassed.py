"""Subclassed Keras models: copying, wrapping, stripping and saving them.

A subclassed ``keras.Model`` has no layer graph that ``clone_model`` could rebuild. tf_admm
finds its layers through Keras' layer tracking instead (:func:`tf_admm.cloning.walk`: the
attributes that hold layers, lists, tuples and dicts of layers, nested subclassed models and
custom container layers), and works on a copy of the model:

* the copy is ``cls.from_config(model.get_config())`` when the class has a config (its own
  ``get_config``, or the one Keras derives from constructor arguments of basic types), built by
  tracing a call on the model's input signature, with the original's layer names and weights;
  otherwise a deep copy that shares no variable with the original;
* each layer a rule takes is replaced, in the copy's attribute (or list, tuple or dict item),
  by an :class:`~tf_admm.wrapper.AdmmWrapper` around it; a Sequential or Functional model held
  by the subclassed model is rebuilt with its wrapped layers, as for functional models;
* a traced call then checks that ``call`` uses what it holds: no layer or variable appears
  that tracking cannot reach (a layer created inside ``call``), and every wrapped layer's
  effective weight reaches the output (no call around the wrapper).

:func:`strip` gives back an instance of the user's class with the effective weights.
:func:`wrapping_config` and :func:`rewrap` let an ``AdmmModel`` save and load the wrapping in a
``.keras`` file (the user's class must then be registered with Keras, or passed in
``custom_objects``).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

from tf_keras.src.utils import generic_utils

from tf_admm import cloning
from tf_admm.cloning import CONTAINER, GRAPH, LEAF, Path
from tf_admm.compat import keras, tf
from tf_admm.wrapper import AdmmWrapper

__all__ = [
    "check_calls",
    "copy_model",
    "deep_copy",
    "implements_config",
    "input_signature",
    "prepare",
    "rewrap",
    "strip",
    "symbolic_inputs",
    "wrap",
    "wrapping_config",
]

GraphFn = Callable[[keras.Model], keras.Model]


def _describe(model: keras.Model) -> str:
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
                f"{_describe(model)}: Expected a model called with one input (a tensor, or a "
                f"list or dict of tensors); received: a call with {len(args)} positional and "
                f"keyword arguments {sorted(kwargs)}"
            )
        return args[0]
    shape = getattr(model, "_build_input_shape", None)
    if shape is None:
        raise ValueError(
            f"{_describe(model)}: Expected a built model with a known input shape; received a "
            "subclassed model that was never called or built. Call it on a batch first "
            "(model(x)) or call model.build(input_shape)"
        )
    return _specs_from_shapes(shape)


def symbolic_inputs(signature: Any) -> Any:
    """``keras.Input`` tensors with the structure, shapes and dtypes of ``signature``."""
    return tf.nest.map_structure(
        lambda spec: keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype), signature
    )


def _in_graph(fn: Callable[[Any], Any], signature: Any) -> Any:
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


def _trace(model: keras.Model, signature: Any) -> None:
    """Traces one call of ``model`` (building what is not built); runs nothing."""
    _in_graph(lambda inputs: model(inputs, training=False), signature)


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
                f"{_describe(model)}: Expected get_config() or a deep-copyable model (its class "
                f"has no config, so tf_admm deep-copies it); copying {_describe(nested)} failed: "
                f"{type(error).__name__}: {error}. Implement get_config() (and from_config if "
                "needed) for the model's class"
            ) from error
        _forget_compile_state(new)
    return memo[id(model)]


def _name(layer: keras.layers.Layer) -> str:
    return layer.layer.name if isinstance(layer, AdmmWrapper) else layer.name


def _unwrapped(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer.layer if isinstance(layer, AdmmWrapper) else layer


def _align_names(source: keras.Model, target: keras.Model) -> None:
    """Gives ``target``'s layers the names of ``source``'s layers at the same paths."""
    names = {path: _name(entry.layer) for entry in cloning.walk(source) for path in entry.paths}
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
                new._name = _name(old)


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
        f"{_describe(source)}: Expected {how} to rebuild the same layers; received at layer "
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
            f"{_describe(model)}: Expected {how} to rebuild the model; it failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    new._name = model.name
    _align_names(model, new)  # Before building, so that variables take the names too.
    _trace(new, signature)
    _align_names(model, new)  # Layers created in build().
    _check_same(model, new, how)
    _copy_variables(model, new, _weights)
    return new


# Replacing layers in a model's attributes.


def _follow(root: Any, steps: Path) -> Any:
    value = root
    for kind, key in steps:
        value = getattr(value, key) if kind == "attr" else value[key]
    return value


def _replaced(structure: Any, keys: list, new: Any) -> Any:
    """A plain copy of ``structure`` (nested lists, tuples, dicts) with ``new`` at ``keys``."""
    key, rest = keys[0], keys[1:]
    item = new if not rest else _replaced(structure[key], rest, new)
    if isinstance(structure, dict):
        return {k: (item if k == key else v) for k, v in structure.items()}
    values = [item if i == key else v for i, v in enumerate(structure)]
    if isinstance(structure, list):
        return values
    cls = structure.__class__
    return cls(*values) if hasattr(cls, "_fields") else tuple(values)


class _Replacer:
    """Replaces layers in attributes, keeping the order in which Keras tracks sublayers (and
    so the order of ``model.weights``) as it was.

    Keras appends a newly assigned attribute to the tracked sublayers, and a tracked list
    changed in place (``lst[0] = x``) can no longer be checkpointed; so the attribute gets a new
    list (tuple, dict) and :meth:`finish` puts it back where the old one was.
    """

    def __init__(self, root: keras.Model):
        self.root = root
        self.before: dict[int, tuple[keras.layers.Layer, list]] = {}
        self.renewed: dict[int, Any] = {}

    def replace(self, paths: list[Path], new: keras.layers.Layer) -> None:
        for path in paths:
            last = max(i for i, (kind, _) in enumerate(path) if kind == "attr")
            container = _follow(self.root, path[:last])
            name = path[last][1]
            old = getattr(container, name)
            items = [key for _, key in path[last + 1 :]]
            value = _replaced(old, items, new) if items else new
            self.before.setdefault(
                id(container), (container, list(container._self_tracked_trackables))
            )
            setattr(container, name, value)
            self.renewed[id(old)] = getattr(container, name)

    def finish(self) -> None:
        for container, before in self.before.values():
            current = container._self_tracked_trackables
            order: list = []
            for item in before:
                while id(item) in self.renewed:
                    item = self.renewed[id(item)]
                if any(item is c for c in current) and not any(item is o for o in order):
                    order.append(item)
            order += [c for c in current if not any(c is o for o in order)]
            current[:] = order


# Checks of what call() does.


def _layer_of(variable: tf.Variable) -> str:
    parts = variable.name.split(":")[0].split("/")
    return parts[-2] if len(parts) > 1 else parts[0]


def check_calls(
    model: keras.Model, signature: Any, rule_for: Callable[[str], str | None] | None = None
) -> None:
    """Traces a training call of built ``model`` and checks that it uses what it holds.

    Args:
      model: a built (wrapped) subclassed model.
      signature: its input signature.
      rule_for: maps a layer name to where the spec rule taking it is, for the message.

    Raises:
      ValueError: naming the layers, if the call creates layers or variables that tracking
        cannot reach, assigns new layers to attributes, or does not pass through a wrapper.
    """
    wrappers = [w for w in cloning.leaf_layers(model) if isinstance(w, AdmmWrapper)]
    masks = [slot.mask for w in wrappers for slot in w.slots]
    before = [(e.layer, e.paths) for e in cloning.walk(model)]
    seen: dict[str, Any] = {}

    def forward(inputs):
        with tf.GradientTape() as tape:
            tape.watch(masks)
            outputs = model(inputs, training=True)
        floats = [o for o in tf.nest.flatten(outputs) if o.dtype.is_floating]
        seen["read"] = tape.watched_variables()
        if floats and masks:
            seen["reached"] = tape.gradient(floats, masks)

    _in_graph(forward, signature)

    def rule_note(name: str) -> str:
        where = rule_for(name) if rule_for is not None else None
        return f" (spec {where} would take it)" if where else ""

    held = {id(layer) for layer, _ in before}
    added = [e for e in cloning.walk(model) if id(e.layer) not in held]
    if added:
        found = ", ".join(
            f"'{e.layer.name}' ({type(e.layer).__name__}) at "
            f"'{cloning.path_name(e.paths[0])}'{rule_note(e.layer.name)}"
            for e in added
        )
        raise ValueError(
            f"{_describe(model)}: Expected call() to use the layers the model holds; received: "
            f"call() assigned new layers {found}. A layer created inside call() is a new layer "
            "with new weights at every call, which ADMM cannot train: create it in __init__() "
            "or build()"
        )
    tracked = {id(v) for v in model.variables}
    foreign = [v for v in seen["read"] if id(v) not in tracked]
    if foreign:
        layers = sorted({_layer_of(v) for v in foreign})
        found = ", ".join(f"'{name}'{rule_note(name)}" for name in layers)
        raise ValueError(
            f"{_describe(model)}: Expected every variable call() reads to be reachable through "
            f"Keras' layer tracking; received: call() reads variables "
            f"{sorted(v.name for v in foreign)} of layers {found} that the model does not hold "
            "(a layer created inside call(), or held where Keras does not track it). tf_admm "
            "can neither find nor wrap such a layer: create it in __init__() or build() and "
            "assign it to an attribute (or a list or dict in one)"
        )
    # A wrapper that the call never ran was never built either.
    lost = [wrapper for wrapper in wrappers if not wrapper.built]
    reached = seen.get("reached")
    if reached is not None:
        index = 0
        for wrapper in wrappers:
            grads = reached[index : index + len(wrapper.slots)]
            index += len(wrapper.slots)
            if any(g is None for g in grads) and wrapper not in lost:
                lost.append(wrapper)
    if lost:
        found = ", ".join(
            f"'{w.layer.name}' ({type(w.layer).__name__}, weights {[t.weight for t in w.targets]})"
            for w in lost
        )
        raise ValueError(
            f"{_describe(model)}: Expected the output of call(training=True) to depend on "
            f"every compressed layer through the attribute that holds it; received: layers "
            f"{found} whose compressed weights do not reach the output. call() runs them "
            "some other way (a closure, a copy of the attribute taken in __init__) or not "
            "at all; read layers through their attributes in call(), or leave such layers "
            "to no rule"
        )


# Wrapping and stripping.


def prepare(
    model: keras.Model, rule_for: Callable[[str], str | None] | None = None
) -> tuple[keras.Model, Any]:
    """A built copy of subclassed ``model`` (see :func:`copy_model`) whose call() is checked
    (see :func:`check_calls`), and the model's input signature: the first half of wrapping,
    run before the spec is resolved so that a layer created inside call() is named as such.

    Args:
      model: a built subclassed model; never modified.
      rule_for: maps a layer name to where the spec rule taking it is, for error messages.
    """
    signature = input_signature(model)
    new = copy_model(model, signature)
    check_calls(new, signature, rule_for)
    return new, signature


def wrap(
    model: keras.Model,
    prepared: tuple[keras.Model, Any],
    targets: dict[int, Any],
    fraction: float,
    graph_fn: GraphFn,
    rule_for: Callable[[str], str | None] | None = None,
) -> keras.Model:
    """Puts ADMM wrappers in the copy from :func:`prepare` at the layers in ``targets``.

    Args:
      model: the built subclassed model the copy was made from; never modified.
      prepared: what :func:`prepare` returned for ``model``.
      targets: ``{id(layer): targets}`` for layers of ``model`` (as from ``_plan``).
      fraction: the first pruning stage's fraction, for the wrappers' ``initialize``.
      graph_fn: rebuilds a Sequential or Functional model held by ``model`` with its targeted
        layers wrapped (and initialized).
      rule_for: maps a layer name to where the spec rule taking it is, for error messages.

    Returns:
      The wrapped copy, an instance of ``type(model)``.
    """
    new, signature = prepared
    replacer = _Replacer(new)
    direct = []
    for old, located in zip(cloning.walk(model), cloning.walk(new)):
        if located.kind == LEAF and id(old.layer) in targets:
            wrapper = AdmmWrapper(located.layer, targets[id(old.layer)])
            replacer.replace(located.paths, wrapper)
            direct.append(wrapper)
        elif located.kind == GRAPH and any(
            id(layer) in targets for layer in cloning.leaf_layers(old.layer)
        ):
            replacer.replace(located.paths, graph_fn(old.layer))
    replacer.finish()
    _trace(new, signature)  # Builds the wrappers.
    for wrapper in direct:
        wrapper.initialize(fraction)
    check_calls(new, signature, rule_for)
    return new


def strip(model: keras.Model, graph_fn: GraphFn) -> keras.Model:
    """An instance of ``type(model)`` without ADMM wrappers, with the effective weights.

    Args:
      model: a built subclassed model (with wrappers, e.g. an AdmmModel's ``wrapped_model``).
      graph_fn: strips a Sequential or Functional model held by ``model``.
    """
    signature = input_signature(model)
    if implements_config(model):
        return copy_model(model, signature)
    new = deep_copy(model, graph_fn)
    replacer = _Replacer(new)
    unwrapped = []
    for located in cloning.walk(new):
        if isinstance(located.layer, AdmmWrapper):
            replacer.replace(located.paths, located.layer.layer)
            unwrapped.append(located.layer)
    replacer.finish()
    for wrapper in unwrapped:
        wrapper.layer.set_weights(wrapper.stripped_weights())
    return new


# Saving: what is wrapped where, as a config, and back.


def _json_path(path: Path) -> list:
    return [[kind, key] for kind, key in path]


def _from_json(path: list) -> Path:
    return tuple((kind, key) for kind, key in path)


def wrapping_config(model: keras.Model) -> dict[str, Any]:
    """Where ``model`` (a wrapped subclassed model) holds wrappers, with their targets, and the
    names of its layers: what :func:`rewrap` needs to wrap a fresh instance the same way.

    Raises:
      NotImplementedError: if the model's class has no config, so it cannot be saved.
    """
    if not implements_config(model):
        raise NotImplementedError(
            f"{_describe(model)}: Expected a class with a config to save an ADMM model of it "
            f"(tf_admm rebuilds it with {type(model).__name__}.from_config); received a class "
            "without get_config() whose constructor takes arguments Keras cannot serialize. "
            "Implement get_config() and register the class with "
            "keras.utils.register_keras_serializable(), or keep the ADMM state in checkpoints "
            "(tf_admm.callbacks(backup_dir=...), model.save_weights) instead of a .keras file"
        )
    wrapped, graphs, names = [], [], []
    for located in cloning.walk(model):
        paths = [_json_path(p) for p in located.paths]
        names.append([paths[0], _name(located.layer)])
        if isinstance(located.layer, AdmmWrapper):
            targets = [t.get_config() for t in located.layer.targets]
            wrapped.append({"paths": paths, "targets": targets})
        elif located.kind == GRAPH:
            leaves = list(cloning.leaf_layers(located.layer))
            if any(isinstance(leaf, AdmmWrapper) for leaf in leaves):
                layers = [
                    {
                        "name": _name(leaf),
                        "targets": [t.get_config() for t in leaf.targets]
                        if isinstance(leaf, AdmmWrapper)
                        else None,
                    }
                    for leaf in leaves
                ]
                graphs.append({"paths": paths, "layers": layers})
    return {"wrapped": wrapped, "graphs": graphs, "names": names}


def rewrap(model: keras.Model, config: dict[str, Any]) -> None:
    """Wraps built subclassed ``model`` (fresh from its config) as :func:`wrapping_config`
    says, in place, and builds the wrappers; their variables are to be loaded afterwards."""
    for path, name in config["names"]:
        try:
            _follow(model, _from_json(path))._name = name
        except (AttributeError, KeyError, IndexError):
            pass  # Names are cosmetic; the structure is checked by the wrapping below.
    replacer = _Replacer(model)
    for item in config["wrapped"]:
        paths = [_from_json(p) for p in item["paths"]]
        replacer.replace(paths, AdmmWrapper(_follow(model, paths[0]), item["targets"]))
    for item in config["graphs"]:
        paths = [_from_json(p) for p in item["paths"]]
        graph = _follow(model, paths[0])
        # Leaves in order (nested graphs flattened), as wrapping_config listed them.
        leaves = {
            id(leaf): entry for leaf, entry in zip(cloning.leaf_layers(graph), item["layers"])
        }
        for leaf in cloning.leaf_layers(graph):
            leaf._name = leaves[id(leaf)]["name"]

        def wrap_layer(layer, leaves=leaves):
            fresh = cloning.copy_layer(layer)
            targets = leaves[id(layer)]["targets"]
            return fresh if targets is None else AdmmWrapper(fresh, targets)

        replacer.replace(paths, cloning.rebuild(graph, wrap_layer, lambda old, new: None))
    replacer.finish()
    _trace(model, input_signature(model))
