"""Channel groups: the layers whose output channels must be pruned alike.

A residual ``Add`` (or ``Multiply``, ``Subtract``, ``Average``, ``Maximum``, ``Minimum``) adds
channel ``c`` of one tensor to channel ``c`` of another. Filter pruning can remove channel
``c`` from the network only if every Conv/Dense layer whose output reaches that join removes
its filter ``c``: the layers form one **channel group** sharing one kept-channel set.

:func:`channel_groups` finds them in a functional ``tf_keras`` model (:func:`spaces` in a Keras 3
one too, for ``tf_admm.shrink``, through its :class:`~tf_admm.graphs.GraphAccess`). It follows
every tensor from the layer that made its channels (a Conv1D/2D/3D or Dense **member**) through
the layers that keep channel ``c`` at index ``c`` (BatchNormalization, DepthwiseConv with
multiplier 1, activations, dropout, pooling, padding, cropping, upsampling: the **followers**),
merges the channel sets that meet at a join (union-find), and records who reads the channels (the
**consumers**, Conv/Dense layers whose input channels go with the filters) and what keeps
the channels from leaving (a model input or output in the group, a layer that mixes or
reshapes channels).

Training ties the members of a group with a filter rule (:class:`TiedFilters`): their Z-step
and hard projection keep the ``k`` channels of largest summed squared norm across members
(:func:`tf_admm.projections.project_coupled_filters`), and each BatchNormalization right after
a filter-pruned layer has its ``gamma`` and ``beta`` masked with the filters, so a removed
channel is exactly 0 after it (:func:`attach_ties`). ``tf_admm.shrink`` then removes the shared
channels from every member, follower and consumer.

Example:
  >>> for group in tf_admm.channel_groups(model):
  ...     print(group)
  conv_a, project_1 tied by add_1 (Add); followers bn_a, relu_a, bn_1; read by expand_2
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from tf_admm import cloning, projections
from tf_admm.access import GRAPH as TF_KERAS
from tf_admm.compat import keras, tf
from tf_admm.graphs import GraphAccess, describe
from tf_admm.wrapper import AdmmWrapper

__all__ = [
    "ChannelGroup",
    "TiedFilters",
    "annotate_plan",
    "attach_ties",
    "channel_groups",
    "check_tied",
    "layer_graph",
]

_layers = keras.layers

# The tf_keras layer table (tf_admm.graphs.LayerTypes), and its parts under the names shrink has
# always used.
TYPES = TF_KERAS.types
PRODUCERS = TYPES.producers
NOT_PRODUCERS = TYPES.not_producers
CONSUMERS = PRODUCERS
ELEMENTWISE = TYPES.elementwise
DEPTHWISE = TYPES.depthwise
PER_CHANNEL = TYPES.per_channel
JOINS = TYPES.joins


def is_join(layer, inputs: int) -> bool:
    """Whether ``layer`` (with ``inputs`` input layers) joins channel ``c`` of its inputs."""
    return TYPES.is_join(layer, inputs)


def join(layer, values):
    """``layer`` applied to the tensors ``values`` (one per input, in order)."""
    return TYPES.join(layer, values)


def layer_graph(model) -> tuple[dict[str, list[str]], dict[str, list[str]], set[str]]:
    """({layer: its input layers}, {layer: the layers it feeds}, names of output layers) of a
    tf_keras model (:meth:`tf_admm.access.TfKerasGraph.layer_graph`)."""
    return TF_KERAS.layer_graph(model)


def is_producer(layer) -> bool:
    return TYPES.is_producer(layer)


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Layers whose output channels meet at a join (or branch to several layers).

    Attributes:
      members: the Conv/Dense layers whose filters are the group's channels; filter ``c`` of
        every member is channel ``c`` of the group.
      joins: the Add/Multiply/... layers where the members' channels meet.
      followers: the per-channel layers on the group's channels (sliced with them).
      consumers: the Conv/Dense layers reading the group's channels (their input channels
        are removed with them).
      fixed: why the channels cannot leave the network at all, by layer (``{}`` if they can):
        a model input or output in the group.
      unsupported: layers on the group's channels that ``tf_admm.shrink`` cannot slice, with
        why (``{}`` if none): shrink refuses to remove the group's channels then.
      branches: layers whose output feeds several layers within the group.
    """

    members: tuple[str, ...]
    joins: tuple[str, ...] = ()
    followers: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()
    fixed: dict[str, str] = dataclasses.field(default_factory=dict)
    unsupported: dict[str, str] = dataclasses.field(default_factory=dict)
    branches: tuple[str, ...] = ()

    @property
    def tied(self) -> bool:
        """Whether several members must keep the same channels."""
        return len(self.members) > 1

    def __str__(self) -> str:
        text = ", ".join(self.members)
        if self.joins:
            text += " tied by " + ", ".join(self.joins)
        if self.followers:
            text += "; followers " + ", ".join(self.followers)
        if self.consumers:
            text += "; read by " + ", ".join(self.consumers)
        for layer, reason in {**self.fixed, **self.unsupported}.items():
            text += f"; channels stay: '{layer}' {reason}"
        return text


@dataclasses.dataclass
class _Space:
    """A set of channels under construction (one per member; merged at joins)."""

    members: list[str] = dataclasses.field(default_factory=list)
    joins: list[str] = dataclasses.field(default_factory=list)
    followers: list[str] = dataclasses.field(default_factory=list)
    consumers: list[str] = dataclasses.field(default_factory=list)
    tensors: list[str] = dataclasses.field(default_factory=list)  # Layers outputting them.
    fixed: dict[str, str] = dataclasses.field(default_factory=dict)
    unsupported: dict[str, str] = dataclasses.field(default_factory=dict)
    branches: list[str] = dataclasses.field(default_factory=list)  # Tensors feeding several.

    def absorb(self, other: _Space) -> None:
        for field in ("members", "joins", "followers", "consumers", "tensors"):
            getattr(self, field).extend(getattr(other, field))
        self.fixed.update(other.fixed)
        self.unsupported.update(other.unsupported)


def topological(inputs: dict[str, list[str]], names=None) -> list[str]:
    """``names`` (default: every layer), every layer after those of its inputs among them."""
    names = list(inputs) if names is None else list(names)
    chosen = set(names)
    done: list[str] = []
    seen: set[str] = set()
    pending = names
    while pending:
        left = []
        for name in pending:
            if all(source in seen or source not in chosen for source in inputs[name]):
                done.append(name)
                seen.add(name)
            else:
                left.append(name)
        if len(left) == len(pending):
            raise ValueError(f"Expected an acyclic layer graph; received a cycle among {left}")
        pending = left
    return done


def _channels(model, name: str, access: GraphAccess):
    shape = access.output_shape(model.get_layer(name))
    return (shape[0] if isinstance(shape, list) else shape)[-1]


def channels_last(layer, access: GraphAccess | None = None) -> bool:
    """Whether ``layer`` keeps its channels on the last axis."""
    access = access or TF_KERAS
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return False
    if isinstance(layer, access.types.batch_norm):
        axis = list(np.atleast_1d(layer.axis))
        spec = layer.input_spec  # A wrapped layer has no input_shape; its input_spec the rank.
        spec = spec[0] if isinstance(spec, list) else spec
        rank = spec.ndim if spec is not None and spec.ndim else len(access.input_shape(layer))
        return axis in ([-1], [rank - 1])
    return True


def spaces(
    model,
    unwrap: Callable[[Any], Any] = lambda layer: layer,
    access: GraphAccess | None = None,
) -> tuple[list[_Space], dict[str, _Space]]:
    """(every channel set, {layer name: the set its output is in}) of a functional model.

    ``unwrap`` maps a layer of ``model`` to the layer whose type decides (an ADMM wrapper to
    the layer it wraps); names in the result are ``model``'s layer names. ``access`` reads the
    model's Keras generation (default: tf_keras).
    """
    access = access or TF_KERAS
    types = access.types
    inputs, consumers, outputs = access.layer_graph(model)
    parent: dict[int, _Space] = {}

    def find(space: _Space) -> _Space:
        while id(space) in parent:
            space = parent[id(space)]
        return space

    of: dict[str, _Space] = {}
    made: list[_Space] = []

    def new(name: str, **fields) -> _Space:
        space = _Space(tensors=[name], **fields)
        made.append(space)
        return space

    for name in topological(inputs):
        if not inputs[name]:  # An input layer (not among a Sequential model's layers).
            of[name] = new(name, fixed={name: "is a model input"})
            continue
        layer = unwrap(model.get_layer(name))
        sources = [find(of[s]) for s in inputs[name] if s in of]
        if access.is_model(layer):
            for space in sources:
                space.unsupported[name] = "is a nested model (shrink it on its own)"
            of[name] = new(name, fixed={name: "is a nested model"})
            continue
        if types.is_producer(layer):
            (source,) = sources[:1] or [None]
            if source is not None:
                source.consumers.append(name)
                if getattr(layer, "groups", 1) != 1:
                    source.unsupported[name] = f"reads them with groups={layer.groups}"
                if not channels_last(layer, access):
                    source.unsupported[name] = "reads them channels first"
            of[name] = new(name, members=[name])
            if not channels_last(layer, access):
                of[name].unsupported[name] = "writes them channels first"
            continue
        single = len(inputs[name]) == 1
        if single and isinstance(layer, types.per_channel):
            (space,) = sources
            reason = None
            if not channels_last(layer, access):
                reason = "is channels first"
            elif isinstance(layer, types.depthwise) and int(layer.depth_multiplier) != 1:
                reason = f"has depth_multiplier={layer.depth_multiplier}"
            elif (
                isinstance(layer, types.activation)
                and layer.get_config()["activation"] == "softmax"
            ):
                reason = "is a softmax, which mixes channels"
            if reason is not None:
                space.unsupported[name] = reason
                of[name] = new(name, fixed={name: f"comes from {describe(layer)}"})
                continue
            space.followers.append(name)
            space.tensors.append(name)
            of[name] = space
            continue
        if types.is_join(layer, len(inputs[name])) and len(sources) == len(inputs[name]):
            channels = {_channels(model, source, access) for source in inputs[name]}
            target = sources[0]
            for space in sources[1:]:
                if space is not target:
                    target.absorb(space)
                    parent[id(space)] = target
            target.joins.append(name)
            target.tensors.append(name)
            if len(channels) != 1:
                target.unsupported[name] = f"joins different channel counts {sorted(channels)}"
            of[name] = target
            continue
        # Anything else (Flatten, Concatenate, Reshape, a layer shrink does not know) ends
        # the channel sets it reads, as far as grouping goes.
        for space in sources:
            space.unsupported[name] = f"reads them and is a {type(layer).__name__}"
        of[name] = new(name, fixed={name: f"comes from {describe(layer)}"})
    for name in outputs:
        find(of[name]).fixed[name] = "is a model output"
    of = {name: find(space) for name, space in of.items()}
    unique = list({id(space): space for space in of.values()}.values())
    for space in unique:
        space.branches = [t for t in space.tensors if len(consumers[t]) > 1]
    return unique, of


def _group(space: _Space, name: Callable[[str], str]) -> ChannelGroup:
    names = lambda items: tuple(name(i) for i in items)  # noqa: E731
    return ChannelGroup(
        members=names(space.members),
        joins=names(space.joins),
        followers=names(space.followers),
        consumers=names(space.consumers),
        fixed={name(k): v for k, v in space.fixed.items()},
        unsupported={name(k): v for k, v in space.unsupported.items()},
        branches=names(space.branches),
    )


def channel_groups(model: keras.Model) -> list[ChannelGroup]:
    """The channel groups of a Sequential or functional model: members' channels that meet at
    a join or branch to several layers (a plain chain from one layer to the next is no group).

    Args:
      model: a built Sequential or functional ``tf_keras`` model, plain or ADMM-wrapped
        (wrapped layers go by the names of the layers they wrap).

    Returns:
      One :class:`ChannelGroup` per group with at least one member, in layer order.
    """
    return [
        _group(space, lambda n: _inner(model.get_layer(n)).name)
        for space in _grouped(model)
        if space.members
    ]


def _inner(layer):
    return getattr(layer, "layer", layer) if _is_wrapper(layer) else layer


def _is_wrapper(layer) -> bool:
    return isinstance(layer, AdmmWrapper)


def _grouped(model) -> list[_Space]:
    found, _ = spaces(model, _inner)
    return [s for s in found if s.joins or s.branches]


def grouped_spaces(model, access: GraphAccess | None = None) -> list[_Space]:
    """The channel sets of ``model`` (plain, functional; read through ``access``, default
    tf_keras) that meet at a join or branch and have members, for ``tf_admm.shrink``."""
    found, _ = spaces(model, access=access)
    return [s for s in found if (s.joins or s.branches) and s.members]


# Training: tied filters and masked BatchNormalization.


class TiedFilters:
    """The filter-pruned slots of one channel group: they keep the same filters.

    :meth:`mask_for` is what a tied slot's projection calls instead of its own filter
    projection. The wrapper transitions (``initialize``, ``admm_update``, ``hard_project``,
    ``begin_stage``) run member after member, each changing its own state; so the first member
    to ask computes every member's mask from their values as they are then (``values_of``,
    the same expression the transition uses), and the others get theirs from that
    computation as long as the values they hand in are the ones it used.
    """

    def __init__(self, slots, names: tuple[str, ...]):
        self.slots = list(slots)
        self.names = names
        self._cache: dict[int, tuple[int, tf.Tensor, tf.Tensor]] = {}

    def mask_for(self, slot, values: tf.Tensor, keep: int, values_of: Callable) -> tf.Tensor:
        """The mask of member ``slot`` keeping the group's ``keep`` shared filters: computed for
        every member by the coupled projection at the first call, reused while values hold."""
        cached = self._cache.pop(id(slot), None)
        if cached is not None and cached[0] == keep:
            if bool(tf.reduce_all(tf.equal(cached[1], values))):
                return cached[2]
        current = [values if member is slot else values_of(member) for member in self.slots]
        layouts = [member.target.layout for member in self.slots]
        masks = projections.coupled_filter_masks(current, keep, layouts)
        self._cache = {
            id(member): (keep, value, mask)
            for member, value, mask in zip(self.slots, current, masks)
            if member is not slot
        }
        return masks[self.slots.index(slot)]


class _MaskedByFilters:
    """A variable constraint: zero where the slot's filters are pruned (then any constraint
    the variable had)."""

    def __init__(self, slot, previous):
        self.slot, self.previous = slot, previous

    def __call__(self, value):
        value = value * tf.cast(self.slot.filter_mask(), value.dtype)
        return value if self.previous is None else self.previous(value)


def _filter_slot(wrapper):
    for slot in wrapper.slots:
        if slot.target.structure == "filter" and slot.owner is wrapper.layer:
            return slot
    return None


def _chain_batch_norms(model, name: str, consumers, outputs) -> list:
    """The BatchNormalization layers on the single path right after layer ``name`` (through
    per-channel layers, up to a join, a branch or a consumer)."""
    found = []
    current = name
    while current not in outputs and len(consumers[current]) == 1:
        layer = _inner(model.get_layer(consumers[current][0]))
        if not isinstance(layer, PER_CHANNEL) or not channels_last(layer):
            break
        if isinstance(layer, DEPTHWISE):
            break  # Its channels mix positions; a zero input is zero after it anyway.
        if isinstance(layer, _layers.BatchNormalization):
            found.append(layer)
        current = consumers[current][0]
    return found


def check_tied(model: keras.Model, targets: dict[int, tuple]) -> list[str]:
    """Lines describing the tied filter groups of ``model`` under the resolved ``targets``
    (``{id(layer): targets}``), for the training plan.

    Raises:
      ValueError: when the filter-pruned members of a group keep different numbers of filters.
    """
    if not _functional(model):
        return []
    lines = []
    for group in channel_groups(model):
        if not group.tied:
            continue
        kept = {}
        for member in group.members:
            layer = model.get_layer(member)
            for target in targets.get(id(layer), ()):
                if target.structure == "filter" and target.weight == "kernel":
                    kept[member] = target.kept_groups(tuple(layer.kernel.shape))
        loose = [m for m in group.members if m not in kept]
        if len(set(kept.values())) > 1:
            raise ValueError(
                f"Layers {sorted(kept)} meet at {list(group.joins)} and must keep the same "
                f"filters: Expected one number of kept filters; received: {kept}. Give them one "
                "rule (e.g. Rule(layer_type='Conv2D', structure='filter', sparsity=...)) or "
                "equal keep counts"
            )
        if not kept:
            continue  # No member is filter-pruned: nothing to tie.
        line = f"tied filters: {group}"
        line += f"; each keeps the same {next(iter(kept.values()))} channels"
        if loose:
            line += f"; not filter-pruned: {', '.join(loose)} (their channels stay)"
        lines.append(line)
    return lines


def annotate_plan(model: keras.Model, targets: dict[int, tuple], plan):
    """``plan`` (a :class:`tf_admm.planning.Plan`) with the tied filter groups listed; see
    :func:`check_tied`."""
    return dataclasses.replace(plan, groups=tuple(check_tied(model, targets)))


def _functional(model) -> bool:
    if cloning.is_subclassed(model):
        return False
    return not any(isinstance(layer, keras.Model) for layer in model.layers)


def attach_ties(model) -> list[TiedFilters]:
    """Ties the filter-pruned members of each channel group of an ADMM model and masks the
    BatchNormalization after each filter-pruned layer with its filters.

    Called when an ``AdmmModel`` is made (wrapped or loaded). A fresh model (round 0) has its
    tied members' Z projected jointly at once; a loaded one gets its Z from the saved weights.

    Returns:
      The ties made.
    """
    if getattr(model, "subclassed", False) or not _functional(model):
        return []
    inputs, consumers, outputs = layer_graph(model)
    wrappers = {layer.name: layer for layer in model.layers if _is_wrapper(layer) and layer.slots}
    for name, wrapper in wrappers.items():
        slot = _filter_slot(wrapper)
        if slot is None:
            continue
        for norm in _chain_batch_norms(model, name, consumers, outputs):
            for variable in (norm.gamma, norm.beta):
                if variable is not None and variable.shape == (slot.groups,):
                    # Keras' optimizers apply variable.constraint after every update; the
                    # layer's own constraint argument is read only when it builds. A
                    # distributed variable reads its components' constraint.
                    for part in getattr(variable, "values", (variable,)):
                        part._constraint = _MaskedByFilters(slot, part.constraint)
                    slot.followers.append(variable)
    ties = []
    for space in _grouped(model):
        slots = [_filter_slot(wrappers[m]) for m in space.members if m in wrappers]
        slots = [s for s in slots if s is not None]
        if len(slots) < 2 or len({s.keep for s in slots}) != 1:
            continue
        tie = TiedFilters(slots, tuple(_inner(model.get_layer(m)).name for m in space.members))
        for slot in slots:
            slot.tie = tie
        ties.append(tie)
        fresh = int(model.admm_round.numpy()) == 0 and int(model.admm_phase.numpy()) == 0
        if fresh:
            fraction = model.spec.prune_stages[0]
            for slot in slots:
                keep = slot.keep_at(fraction)
                slot.auxiliary.assign(slot.project_keep(slot.variable, keep, _variable))
    return ties


def _variable(slot) -> tf.Tensor:
    return tf.convert_to_tensor(slot.variable)
