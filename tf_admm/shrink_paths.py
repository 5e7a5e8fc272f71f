"""Where the channels of one filter-pruned layer go, for :mod:`tf_admm.shrink`.

From a Conv/Dense layer with zero filters, :func:`follow_channels` walks the per-channel layers
after it (BatchNormalization, DepthwiseConv, activations, pooling, padding, dropout, Flatten, a
Concatenate along the channels) to the layer that mixes channels, its consumer, and refuses with
a :class:`ShrinkError` what shrink cannot slice along. :func:`constant_inputs` runs that chain
on the layer's bias, giving the fixed values its zero filters feed the consumer, and a
:class:`Chain` says which of them can leave exactly (or be carried by another) and what they
add to the consumer's bias. :func:`channel_images` maps producer channels to consumer channels.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tf_admm import grouping
from tf_admm.graphs import GraphAccess, ShrinkError, describe

__all__ = [
    "DEPTHWISE",
    "Chain",
    "ShrinkError",
    "channel_images",
    "constant_inputs",
    "depth_multiplier",
    "describe",
    "follow_channels",
]


def follow_channels(model, layer, graph, access: GraphAccess):
    """(per-channel layers after ``layer``, the consumer or None, {concatenation: offset of
    this path's channels in its output}) along a single path of ``graph`` (the model's
    :func:`~tf_admm.grouping.layer_graph`), read through ``access``."""
    inputs, consumers, outputs = graph
    types = access.types
    chain = []
    offsets: dict[str, int] = {}
    current = layer
    while True:
        if current.name in outputs:
            return chain, None, offsets
        following = consumers[current.name]
        if len(following) != 1:
            raise ShrinkError(
                f"Layer {describe(current)} (after filter-pruned {describe(layer)}): Expected "
                f"its output to feed one layer, to remove the same channels there; received: "
                f"it feeds {[model.get_layer(n).name for n in following]} (branches after a "
                "concatenation are not grouped)"
            )
        nxt = model.get_layer(following[0])
        if access.is_model(nxt):
            raise ShrinkError(
                f"Layer {describe(nxt)}: Expected a flat model; received a nested model after "
                f"filter-pruned {describe(layer)}"
            )
        if types.is_join(nxt, len(inputs[nxt.name])):
            raise ShrinkError(
                f"Layer {describe(nxt)} joins the channels of filter-pruned {describe(layer)} "
                f"after the concatenation {[s.name for s in chain if s.name in offsets]}: "
                "Expected a join of channels that come straight from Conv/Dense layers; "
                "channels joined after a concatenation are not grouped"
            )
        if getattr(nxt, "data_format", "channels_last") == "channels_first" or (
            isinstance(nxt, types.batch_norm)
            and list(np.atleast_1d(nxt.axis)) not in ([-1], [len(access.input_shape(nxt)) - 1])
        ):
            raise ShrinkError(
                f"Layer {describe(nxt)}: Expected channels last after filter-pruned "
                f"{describe(layer)}; received channels first"
            )
        if isinstance(nxt, types.activation) and nxt.get_config()["activation"] == "softmax":
            raise ShrinkError(
                f"Layer {describe(nxt)}: Expected a per-channel layer after filter-pruned "
                f"{describe(layer)}; received softmax, which mixes channels"
            )
        flattened = any(isinstance(step, types.flatten) for step in chain)
        if isinstance(nxt, types.concatenate) and not flattened:
            sources = inputs[nxt.name]
            rank = len(access.output_shape(nxt))
            if nxt.axis not in (-1, rank - 1) or sources.count(current.name) != 1:
                raise ShrinkError(
                    f"Layer {describe(nxt)} after filter-pruned {describe(layer)}: Expected a "
                    f"concatenation along the channel axis of distinct inputs; received: "
                    f"axis={nxt.axis}, inputs={sources}"
                )
            before = sources[: sources.index(current.name)]
            offsets[nxt.name] = sum(
                int(access.output_shape(model.get_layer(n))[-1]) for n in before
            )
            chain.append(nxt)
            current = nxt
            continue
        if isinstance(nxt, types.elementwise) or (
            not flattened and isinstance(nxt, types.per_channel + (types.flatten,))
        ):
            chain.append(nxt)
            current = nxt
            continue
        if types.is_producer(nxt):
            if getattr(nxt, "groups", 1) != 1:
                raise ShrinkError(
                    f"Layer {describe(nxt)}: Expected groups=1 after filter-pruned "
                    f"{describe(layer)}; received: groups={nxt.groups}"
                )
            return chain, nxt, offsets
        raise ShrinkError(
            f"Layer {describe(nxt)} follows filter-pruned {describe(layer)}: Expected a "
            "per-channel layer (BatchNormalization, DepthwiseConv, activation, pooling, dropout, "
            "padding, Flatten, Concatenate) or a Conv/Dense consumer; received a layer shrink does "
            "not know"
        )


# The tf_keras depthwise convolutions: per-channel layers whose channels may multiply.
DEPTHWISE = grouping.DEPTHWISE


def depth_multiplier(layer) -> int:
    """Output channels per input channel: a depthwise layer's multiplier, else 1."""
    # Either generation's DepthwiseConv1D/2D (only they have a depth_multiplier among the
    # per-channel layers).
    return int(getattr(layer, "depth_multiplier", 1))


def constant_inputs(layer, chain, offsets, access: GraphAccess) -> np.ndarray:
    """What the consumer receives from the zero filters: the chain run on the producer's bias.

    A zero filter outputs its activated bias everywhere, whatever the input, and the chain is per
    channel, so the consumer's input channels fed by it hold these values for every sample.
    Returns the consumer's input for one sample (channels last, or flat after Flatten).
    """
    shape = access.output_shape(layer)
    if any(d is None for d in shape[1:]):
        raise ShrinkError(
            f"Layer {describe(layer)}: Expected a static output shape to fold the constant "
            f"output of its zero filters; received: shape={shape}"
        )
    bias = layer.bias.numpy() if layer.use_bias else np.zeros(shape[-1], np.float32)
    x = access.constant(np.broadcast_to(bias, (1,) + tuple(shape[1:])).astype(np.float32))
    x = layer.activation(x)  # The layer's own activation, applied to its output.
    for step in chain:
        if step.name in offsets:
            # Only this path's channels matter: the other inputs are left at zero.
            start = offsets[step.name]
            joined = np.zeros((1,) + tuple(access.output_shape(step)[1:]), np.float32)
            joined[..., start : start + x.shape[-1]] = np.asarray(x)
            x = access.constant(joined)
        else:
            x = step(x, training=False)
    return np.asarray(np.asarray(x)[0], np.float64)


def channel_images(channels, chain, offsets) -> list[list[int]]:
    """For each producer channel, its channels at the consumer's input (before any Flatten):
    a depthwise convolution with multiplier M maps channel c to c*M .. c*M+M-1, a
    concatenation shifts it by the channels of the inputs before this path's."""
    images = [[c] for c in channels]
    for step in chain:
        m = depth_multiplier(step)
        if m > 1:
            images = [[c * m + j for c in image for j in range(m)] for image in images]
        if step.name in offsets:
            images = [[c + offsets[step.name] for c in image] for image in images]
    return images


@dataclasses.dataclass
class Chain:
    """A producer's path to its consumer and the fixed values its zero filters feed it."""

    chain: list
    consumer: Any
    values: np.ndarray  # The consumer's input for one sample from the producer's bias.
    flatten: Any  # The Flatten on the way, if any.
    offsets: dict[str, int]  # Where a concatenation on the way puts this path's channels.
    access: GraphAccess  # Reads the model's Keras generation.

    def rows(self, image: list[int]) -> np.ndarray:
        """Input rows of the consumer (flat indices after Flatten, else channels) of ``image``."""
        if self.flatten is None:
            return np.asarray(image, np.int64)
        channels = int(self.access.input_shape(self.flatten)[-1])
        # Flatten reads (..., C) row-major: flat index = position * C + channel.
        return np.flatnonzero(np.isin(np.arange(self.values.size) % channels, image))

    def fixed(self, image: list[int]) -> np.ndarray:
        """The fixed input the channels ``image`` give: (positions, channels), or flat."""
        if self.flatten is not None:
            return self.values.reshape(-1)[self.rows(image)]
        return self.values.reshape(-1, self.values.shape[-1])[:, image]

    def why_not(self, image: list[int]) -> str | None:
        """Why these channels cannot be removed exactly, or None if they can."""
        fixed = self.fixed(image)
        consumer = self.consumer
        if not np.any(fixed):
            return None
        if self.flatten is not None:
            return None
        if np.any(fixed != fixed[:1]):
            return "its fixed output varies across positions (padding on the way)"
        pads = (
            not isinstance(consumer, self.access.types.dense)
            and consumer.padding != "valid"
            and any(k > 1 for k in consumer.kernel_size)
        )
        if pads:
            return (
                f"its fixed output ({float(fixed.flat[0]):.3g}) meets the zero padding of "
                f"'{consumer.name}' (padding={consumer.padding!r})"
            )
        return None

    def carriable(self, image: list[int]) -> bool:
        """Whether the channels ``image`` hold one nonzero value each at every position, so
        that another such channel can carry them (a convolution is linear in its input)."""
        if self.flatten is not None:
            return False
        fixed = self.fixed(image)
        return bool(np.any(fixed)) and not np.any(fixed != fixed[:1])

    def fold(self, image: list[int]) -> np.ndarray:
        """What the channels ``image`` add to every output of the consumer, as a bias."""
        kernel = self.consumer.kernel.numpy().astype(np.float64)
        if self.flatten is not None:
            rows = self.rows(image)
            return self.values.reshape(-1)[rows] @ kernel[rows]
        constants = self.fixed(image)[0]
        if isinstance(self.consumer, self.access.types.dense):
            return constants @ kernel[image]
        # A valid (or 1x1) convolution sees every kernel tap on a constant input.
        taps = kernel[..., image, :].reshape(-1, len(image), kernel.shape[-1])
        return np.einsum("pco,c->o", taps, constants)
