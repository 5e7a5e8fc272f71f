"""A physically smaller model after filter pruning: removed filters leave the network.

``shrink(model)`` finds the filters (output channels) of Conv1D/2D/3D and Dense layers whose
kernel is entirely zero, as filter pruning (``Rule(structure="filter")``) leaves them, and
rebuilds the model without them. A removed filter takes with it its output channel, its bias,
the matching entries of every per-channel layer on the way to the next layer that mixes
channels (BatchNormalization, DepthwiseConv1D/2D, activations, pooling, padding, dropout, and
a Concatenate along the channels, where the channels sit at their input's offset) and the
matching input channels of that consumer (Conv1D/2D/3D or Dense, also after Flatten or global
pooling).

A zero filter still outputs a value that does not depend on the input: its bias, through the
per-channel layers after it (a BatchNormalization's shift, a ReLU). So that the smaller model
computes exactly what the masked one does, that value is folded into the consumer's bias: for
a Dense consumer always (each removed input contributes a fixed vector), for a convolution
when the value is the same at every position and the convolution pads nothing
(``padding="valid"`` or a 1x1 kernel). Constant channels that meet a zero-padded window (or a
consumer without bias) cannot become a bias, but the consumer is linear in its inputs: one of
them stays as a carrier, its consumer weights taking the others' scaled by the ratio of their
values, and the others go. A channel whose value varies across positions (zero padding on the
way) stays; :func:`shrink_plan` says which and why. With ``structure="filter"`` the bias is
masked with the filters, so without a BatchNormalization after it a removed filter outputs 0
and nothing needs folding.

A consumer without bias gets one when a fixed value must be folded into it.

Channels the consumer ignores leave too: an output channel of a Conv/Dense layer on a plain
chain whose input rows in the consumer are all zero (column pruning of a Dense consumer,
``Rule(structure="column")``, leaves such rows; after a Flatten every position of the channel
must be zero) is removed with its filter, whatever it computes. So column pruning of fc2
removes fc1's units, and of fc1 removes a conv channel when all of its positions go.

Layers whose outputs meet at a residual Add (Multiply, Subtract, Average, Maximum, Minimum)
or that feed several layers form channel groups (:mod:`tf_admm.grouping`): the channels zero
in every member of a group leave every member, the per-channel layers on them and every
layer reading them, with the same folding of fixed values. A group reaching a model input or
output keeps its channels (:func:`shrink_plan` says why). Still refused, with a
:class:`ShrinkError` naming the layer, never shrunk wrongly: tied channels reaching a layer
that reshapes or mixes them (Reshape, Flatten, Concatenate, softmax), a depthwise multiplier
other than 1 on tied channels, zero filters of depthwise layers, nested and subclassed
models, and channels-first data.

The plan and the slicing are written once for tf_keras and Keras 3 (TensorFlow and JAX
backends): what differs, reading the layer graph and shapes, making tensors and copying the
model with new layers, is the :class:`~tf_admm.graphs.GraphAccess` of the model's Keras
(:data:`tf_admm.access.GRAPH`, :data:`tf_admm.keras3.access.GRAPH`). A Keras 3 graph with a
``keras.ops`` call on Keras tensors (``x + h``, no layer) is refused.

Example:
  >>> small = tf_admm.shrink(tf_admm.strip(admm))  # admm trained with structure="filter"
  >>> np.allclose(small(x), tf_admm.strip(admm)(x), atol=1e-5)
  True
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tf_admm import compat, grouping
from tf_admm.access import GRAPH as TF_KERAS
from tf_admm.compat import keras
from tf_admm.shrink_paths import (
    Chain,
    ShrinkError,
    channel_images,
    constant_inputs,
    depth_multiplier,
    describe,
    follow_channels,
)

__all__ = ["LayerShrink", "ShrinkError", "shrink", "shrink_plan"]


@dataclasses.dataclass(frozen=True)
class LayerShrink:
    """What shrinking does to one layer with zero filters.

    Attributes:
      layer: the layer's name.
      filters: its output channels before.
      removed: the output channels removed (indices), their inputs with them.
      kept_zero: zero filters kept, with why (``{index: reason}``).
      chain: the per-channel layers sliced along, in order.
      consumer: the layer whose input channels are removed (None: the filters feed the output
        and nothing is removed).
      carrier: a zero filter kept to carry the fixed outputs of ``carried`` into the consumer
        (they meet its zero padding, so no bias can stand for them): the consumer's weights
        for the carrier's channel take theirs, scaled by the ratio of the fixed values.
      carried: the removed filters whose fixed outputs the carrier carries.
      group: for a layer tied to others by a residual join or a branch (see
        :mod:`tf_admm.grouping`), every member of its group: they all lose the same
        channels, those zero in every member. Empty for a plain chain.
      joins: the joins (Add, Multiply, ...) tying the group.
      consumers: every layer whose input channels are removed (for a group, all the layers
        reading its channels; ``consumer`` is the first).
      unused: the removed channels that are not zero filters but that the consumer ignores
        (its input rows for them are zero, as column pruning of a Dense consumer leaves them);
        plain chains only, not groups.
    """

    layer: str
    filters: int
    removed: tuple[int, ...]
    kept_zero: dict[int, str]
    chain: tuple[str, ...]
    consumer: str | None
    carrier: int | None = None
    carried: tuple[int, ...] = ()
    group: tuple[str, ...] = ()
    joins: tuple[str, ...] = ()
    consumers: tuple[str, ...] = ()
    unused: tuple[int, ...] = ()


def _unused(path: Chain, filters: int) -> list[int]:
    """The producer channels whose every input row of the consumer is zero: the consumer
    ignores them, so they leave exactly whatever they hold (column pruning of a Dense leaves
    such rows; after a Flatten a channel needs all of its positions' rows zero)."""
    channels = list(range(filters))
    kernel = path.consumer.kernel.numpy()
    kernel = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])  # (taps, inputs, outputs)
    unused = []
    for channel, image in zip(channels, channel_images(channels, path.chain, path.offsets)):
        if not np.any(kernel[:, path.rows(image), :]):
            unused.append(channel)
    return unused


def _plan_layer(model, layer, graph, access):
    kernel = layer.kernel.numpy()
    filters = kernel.shape[-1]
    zero = [int(o) for o in np.flatnonzero(~np.any(kernel.reshape(-1, filters) != 0, axis=0))]
    try:
        chain, consumer, offsets = follow_channels(model, layer, graph, access)
        values = None if consumer is None else constant_inputs(layer, chain, offsets, access)
    except ShrinkError:
        if zero:
            raise
        # No zero filter: only channels the consumer ignores could go; a path shrink cannot
        # follow (branches, dynamic shapes) keeps them, as it did before they were looked for.
        return None
    names = tuple(step.name for step in chain)
    if consumer is None:
        if not zero:
            return None
        reason = "its output is a model output"
        return LayerShrink(layer.name, filters, (), {o: reason for o in zero}, names, None), None
    flatten = next((s for s in chain if isinstance(s, access.types.flatten)), None)
    path = Chain(chain, consumer, values, flatten, offsets, access)
    ignored = set(_unused(path, filters))
    unused = tuple(sorted(ignored - set(zero)))
    if not zero and not unused:
        return None
    kept_zero: dict[int, str] = {}
    removed = list(unused)
    images = dict(zip(zero, channel_images(zero, chain, offsets)))
    for channel in zero:
        # A fixed output the consumer ignores needs no bias to stand for it.
        reason = None if channel in ignored else path.why_not(images[channel])
        if reason is None:
            removed.append(channel)
        else:
            kept_zero[channel] = reason
    removed.sort()
    carriable = [c for c in kept_zero if path.carriable(images[c])]
    carrier, carried = None, ()
    if len(carriable) >= 2:
        # One kept channel carries the others: the consumer is linear in its input channels.
        carrier, carried = carriable[0], tuple(carriable[1:])
        kept_zero[carrier] = (
            f"carries the fixed outputs of removed filters {list(carried)} into "
            f"'{consumer.name}' ({kept_zero[carrier]})"
        )
        for channel in carried:
            del kept_zero[channel]
        removed = sorted(removed + list(carried))
    if len(removed) == filters:
        kept_zero[removed[-1]] = "a layer keeps at least one filter"
        removed = removed[:-1]
    plan = LayerShrink(
        layer.name,
        filters,
        tuple(removed),
        kept_zero,
        names,
        consumer.name,
        carrier,
        carried,
        unused=tuple(c for c in unused if c in set(removed)),
    )
    return plan, path


def shrink_plan(model: keras.Model) -> list[LayerShrink]:
    """What :func:`shrink` would remove, per layer with zero filters, without rebuilding.

    Raises:
      ShrinkError: as :func:`shrink` does.
    """
    model, access = _plain(model)
    found, groups = _plans(model, access)
    return [plan for plan, _ in found] + [plan for group in groups for plan in group.plans]


def _plans(model, access):
    """([(plan, Chain)] for layers on a plain chain, [_Group] for channel groups)."""
    graph = access.layer_graph(model)
    for layer in model.layers:
        if access.is_model(layer):
            raise ShrinkError(
                f"Layer {describe(layer)}: Expected a flat Sequential or functional model; "
                "received a nested model (shrink it on its own)"
            )
    spaces = grouping.grouped_spaces(model, access)
    groups = [_Group(model, space, graph, access) for space in spaces]
    grouped = {name for group in groups for name in group.space.members}
    found = []
    for layer in model.layers:
        if access.types.is_producer(layer) and layer.built and layer.name not in grouped:
            result = _plan_layer(model, layer, graph, access)
            if result is not None:
                found.append(result)
    return found, [group for group in groups if group.plans]


def _zero_filters(layer) -> set[int]:
    kernel = layer.kernel.numpy()
    filters = kernel.shape[-1]
    return {int(o) for o in np.flatnonzero(~np.any(kernel.reshape(-1, filters) != 0, axis=0))}


class _Group:
    """What shrinking does to one channel group: the channels zero in every member leave
    every member, follower and consumer, unless the group reaches a model input or output or
    a consumer cannot take their fixed value as a bias."""

    def __init__(self, model, space, graph, access):
        self.model, self.space, self.access = model, space, access
        self.inputs = graph[0]
        self.removed: list[int] = []
        self.values: dict[str, np.ndarray] = {}
        self.plans: list[LayerShrink] = []
        self.paths: dict[str, Chain] = {}
        members = [model.get_layer(name) for name in space.members]
        zeros = {m.name: _zero_filters(m) for m in members if m.built}
        if not any(zeros.values()):
            return
        filters = int(members[0].kernel.shape[-1])
        common = set.intersection(*[zeros.get(m.name, set()) for m in members])
        kept: dict[int, str] = {}
        for channel in sorted(set().union(*zeros.values()) - common):
            alive = [m.name for m in members if channel not in zeros.get(m.name, set())]
            kept[channel] = f"filter {channel} of tied {alive} is not zero"
        if common and space.fixed:
            name, reason = next(iter(space.fixed.items()))
            for channel in common:
                kept[channel] = f"the tied channels reach '{name}', which {reason}"
            common = set()
        if common and space.unsupported:
            name, reason = next(iter(space.unsupported.items()))
            raise ShrinkError(
                f"Layer {describe(model.get_layer(name))} {reason}: Expected per-channel "
                "layers, joins (Add, Multiply, ...) and Conv/Dense consumers on the channels "
                f"tied to filter-pruned {list(space.members)}; received a layer shrink cannot "
                "slice along them"
            )
        if common:
            self.values = self._fixed_values(members)
            for name in space.consumers:
                consumer = model.get_layer(name)
                (source,) = self.inputs[name]
                path = Chain([], consumer, self.values[source], None, {}, access)
                self.paths[name] = path
                for channel in sorted(common):
                    reason = path.why_not([channel])
                    if reason is not None:
                        kept.setdefault(channel, f"(tied, at '{name}') {reason}")
                        common.discard(channel)
        removed = sorted(common)
        if len(removed) == filters:
            kept[removed[-1]] = "a layer keeps at least one filter"
            removed = removed[:-1]
        self.removed = removed
        consumer_names = tuple(space.consumers)
        for member in members:
            own = zeros.get(member.name, set())
            if not own:
                continue
            self.plans.append(
                LayerShrink(
                    member.name,
                    filters,
                    tuple(removed),
                    {c: r for c, r in sorted(kept.items()) if c in own},
                    tuple(space.followers),
                    consumer_names[0] if consumer_names else None,
                    group=tuple(space.members),
                    joins=tuple(space.joins),
                    consumers=consumer_names,
                )
            )

    def _fixed_values(self, members) -> dict[str, np.ndarray]:
        """The output of every layer of the group when its members output their fixed values
        (activated biases): one sample, as the consumers see it for removed channels."""
        values: dict[str, Any] = {}
        access = self.access
        for member in members:
            shape = access.output_shape(member)
            if any(d is None for d in shape[1:]):
                raise ShrinkError(
                    f"Layer {describe(member)}: Expected a static output shape to fold the "
                    f"constant output of its zero filters; received: shape={shape}"
                )
            bias = member.bias.numpy() if member.use_bias else np.zeros(shape[-1], np.float32)
            x = np.broadcast_to(bias, (1,) + tuple(shape[1:])).astype(np.float32)
            values[member.name] = member.activation(access.constant(x))
        order = [n for n in self.inputs if n in set(self.space.tensors)]
        for name in grouping.topological(self.inputs, order):
            if name in values:
                continue
            layer = self.model.get_layer(name)
            sources = [values[s] for s in self.inputs[name]]
            if access.types.is_join(layer, len(sources)):
                values[name] = access.types.join(layer, sources)
            else:
                values[name] = layer(sources[0], training=False)
        return {n: np.asarray(np.asarray(v)[0], np.float64) for n, v in values.items()}

    def edits(self, drop, edits) -> None:
        removed = self.removed
        if not removed:
            return
        for name in self.space.members:
            drop(name, "drop_out", removed)
        types = self.access.types
        for name in self.space.followers:
            step = self.model.get_layer(name)
            if isinstance(step, types.batch_norm):
                drop(name, "drop_channels", removed)
            elif isinstance(step, types.depthwise):
                drop(name, "drop_channels", removed)
                drop(name, "drop_bias", removed)
        for name, path in self.paths.items():
            drop(name, "drop_in", removed)
            consumer = edits.setdefault(name, {})
            consumer["fold"] = consumer.get("fold", 0.0) + path.fold(removed)


def _plain(model):
    """(``model`` ready to shrink: stripped, checked; the GraphAccess of its Keras)."""
    adapter = compat.keras3_adapter(model)
    access = TF_KERAS if adapter is None else adapter.GRAPH
    return access.prepare(model), access


def shrink(model: keras.Model) -> keras.Model:
    """A smaller model computing what ``model`` computes, without its zero filters.

    Example:
      >>> spec = tf_admm.Spec(rules=[tf_admm.Rule(layer_type="Conv2D", structure="filter",
      ...                                          sparsity=0.5)])
      >>> # ... admm_wrap, fit ...
      >>> small = tf_admm.shrink(admm)  # strips first

    Args:
      model: a stripped (or ADMM, stripped first) Sequential or functional model, ``tf_keras``
        or Keras 3 (TensorFlow or JAX backend).

    Returns:
      A new model of the same class and layer names whose pruned Conv/Dense layers have fewer
      filters (and their per-channel followers and consumers fewer channels); its outputs
      equal ``model``'s up to float rounding.

    Raises:
      ShrinkError: naming the layer, for a structure shrink cannot rebuild exactly (tied
        channels reaching a Reshape/Flatten/Concatenate, nested or subclassed models).
    """
    model, access = _plain(model)
    types = access.types
    # Per layer: channels dropped (sets, as several paths may meet at a concatenation's
    # followers) and the bias folded in.
    edits: dict[str, dict[str, Any]] = {}

    def drop(layer_name: str, field: str, channels) -> None:
        edits.setdefault(layer_name, {}).setdefault(field, set()).update(channels)

    found, groups = _plans(model, access)
    for group in groups:
        group.edits(drop, edits)
    for plan, path in found:
        if not plan.removed:
            continue
        drop(plan.layer, "drop_out", plan.removed)
        channels = list(plan.removed)
        for step in path.chain:
            if isinstance(step, types.batch_norm):
                drop(step.name, "drop_channels", channels)
            elif isinstance(step, types.depthwise):
                m = depth_multiplier(step)
                drop(step.name, "drop_channels", channels)
                channels = [c * m + j for c in channels for j in range(m)]
                drop(step.name, "drop_bias", channels)
            elif step.name in path.offsets:
                channels = [c + path.offsets[step.name] for c in channels]
        consumer = edits.setdefault(path.consumer.name, {})
        drop(path.consumer.name, "drop_in", path.rows(channels).tolist())
        folded = [c for c in plan.removed if c not in set(plan.carried)]
        folded_image = sorted(
            ch for image in channel_images(folded, path.chain, path.offsets) for ch in image
        )
        if folded_image:
            consumer["fold"] = consumer.get("fold", 0.0) + path.fold(folded_image)
        if plan.carrier is not None:
            (image,) = channel_images([plan.carrier], path.chain, path.offsets)
            values = path.fixed(image)[0]
            target = image[int(np.argmax(np.abs(values)))]
            scale = values[int(np.argmax(np.abs(values)))]
            ratios: dict[int, float] = {}
            for image in channel_images(list(plan.carried), path.chain, path.offsets):
                for channel, value in zip(image, path.fixed(image)[0]):
                    ratios[channel] = value / scale
            consumer.setdefault("carry", []).append((target, ratios))
    return _copy(model, edits, access)


def _kept(size: int, dropped) -> list[int]:
    dropped = set(dropped or ())
    return [i for i in range(size) if i not in dropped]


def _adds_bias(layer, change) -> bool:
    """Whether a consumer without bias gets one, for the fixed inputs folded into it."""
    return (
        "fold" in change and not getattr(layer, "use_bias", True) and bool(np.any(change["fold"]))
    )


def _copy(model, edits, access):
    types = access.types

    def new_layer(layer):
        config = layer.get_config()
        change = edits.get(layer.name, {})
        if "drop_out" in change:
            field = "filters" if "filters" in config else "units"
            config[field] -= len(change["drop_out"])
        if _adds_bias(layer, change):
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def fill(old, new):
        change = edits.get(old.name)
        weights = [w.copy() for w in old.get_weights()]
        if not change:
            new.set_weights(weights)
            return
        if isinstance(old, types.batch_norm):
            keep = _kept(weights[0].shape[0], change["drop_channels"])
            weights = [w[keep] for w in weights]
        elif isinstance(old, types.depthwise):
            kernel = weights[0]
            weights[0] = kernel[..., _kept(kernel.shape[-2], change["drop_channels"]), :]
            if old.use_bias:
                weights[1] = weights[1][_kept(weights[1].shape[0], change["drop_bias"])]
        else:
            kernel = weights[0]
            for target, ratios in change.get("carry", []):
                carried = kernel.astype(np.float64)[..., target, :]
                for channel, ratio in ratios.items():
                    carried = carried + ratio * kernel[..., channel, :].astype(np.float64)
                kernel = kernel.copy()
                kernel[..., target, :] = carried.astype(kernel.dtype)
            if _adds_bias(old, change):
                # The fixed inputs removed need a bias to stand for them: the layer gets one.
                weights.insert(1, np.zeros(kernel.shape[-1], kernel.dtype))
            if "fold" in change and len(weights) > 1:
                folded = weights[1].astype(np.float64) + change["fold"]
                weights[1] = folded.astype(weights[1].dtype)
            if "drop_in" in change:
                kernel = np.take(kernel, _kept(kernel.shape[-2], change["drop_in"]), axis=-2)
            if "drop_out" in change:
                keep = _kept(kernel.shape[-1], change["drop_out"])
                kernel = kernel[..., keep]
                if len(weights) > 1:
                    weights[1] = weights[1][keep]
            weights[0] = kernel
        new.set_weights(weights)

    return access.rebuild(model, new_layer, fill)
