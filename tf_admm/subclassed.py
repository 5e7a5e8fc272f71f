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

The copies are made by :mod:`tf_admm.subclassed_copy` (its public functions are re-exported
here). :func:`strip` gives back an instance of the user's class with the effective weights.
:func:`wrapping_config` and :func:`rewrap` let an ``AdmmModel`` save and load the wrapping in a
``.keras`` file (the user's class must then be registered with Keras, or passed in
``custom_objects``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tf_admm import cloning
from tf_admm.cloning import GRAPH, LEAF, Path
from tf_admm.compat import keras, tf
from tf_admm.subclassed_copy import (
    GraphFn,
    copy_model,
    deep_copy,
    describe,
    implements_config,
    in_graph,
    input_signature,
    layer_name,
    symbolic_inputs,
    trace,
)
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

    in_graph(forward, signature)

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
            f"{describe(model)}: Expected call() to use the layers the model holds; received: "
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
            f"{describe(model)}: Expected every variable call() reads to be reachable through "
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
            f"{describe(model)}: Expected the output of call(training=True) to depend on "
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
    trace(new, signature)  # Builds the wrappers.
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
            f"{describe(model)}: Expected a class with a config to save an ADMM model of it "
            f"(tf_admm rebuilds it with {type(model).__name__}.from_config); received a class "
            "without get_config() whose constructor takes arguments Keras cannot serialize. "
            "Implement get_config() and register the class with "
            "keras.utils.register_keras_serializable(), or keep the ADMM state in checkpoints "
            "(tf_admm.callbacks(backup_dir=...), model.save_weights) instead of a .keras file"
        )
    wrapped, graphs, names = [], [], []
    for located in cloning.walk(model):
        paths = [_json_path(p) for p in located.paths]
        names.append([paths[0], layer_name(located.layer)])
        if isinstance(located.layer, AdmmWrapper):
            targets = [t.get_config() for t in located.layer.targets]
            wrapped.append({"paths": paths, "targets": targets})
        elif located.kind == GRAPH:
            leaves = list(cloning.leaf_layers(located.layer))
            if any(isinstance(leaf, AdmmWrapper) for leaf in leaves):
                layers = [
                    {
                        "name": layer_name(leaf),
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
    trace(model, input_signature(model))
