"""The Keras wrapper that holds the ADMM state of one layer.

For every compressed weight ``W`` of the wrapped layer the wrapper owns, as variables: the
auxiliary variable ``Z`` (the projection of ``W + U`` onto the constraint set), the scaled dual
variable ``U``, the 0/1 ``mask`` of kept weights, the penalty parameter ``rho`` and the last dual
residual ``rho * ||Z - Z_prev||``. A quantized weight also has its ``levels`` (uniform or
power-of-two grid, or k-means centroids; per channel along the last axis if asked), the level
``assignment`` of every weight and the 0/1 ``locked`` map of weights fixed on their level. The
update rules live in :mod:`tf_admm.projections`; this module only holds state and applies them.

While the layer runs, the wrapper hands it the *effective* weight in place of the variable:

    effective = mask * (locked * levels[assignment] + (1 - locked) * W)

so pruned weights contribute nothing and get no gradient whatever the optimizer keeps in its
slots, and locked weights sit exactly on their levels: their gradient flows to the shared level
(k-means centroids train that way), never to ``W``. With ``structure="filter"`` the layer's bias
is masked with the filters too (a removed filter outputs exactly its activation of 0, which
lets ``tf_admm.shrink`` drop the channel). ``strip`` writes the effective weights back into a
plain layer.

Under a mixed-precision policy (``mixed_float16``) the wrapper takes the wrapped layer's policy:
the ADMM state has the weight's float32 dtype and is never autocast, the effective weight is
computed in float32 and cast to the layer's compute dtype only to run the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tf_admm import projections, registry
from tf_admm.compat import keras, tf
from tf_admm.planning import Target
from tf_admm.rule import Scheme
from tf_admm.spec import CentroidUpdate

__all__ = ["AdmmWrapper"]


class _Slot:
    """ADMM variables of one compressed weight (plain holder, tracked through the wrapper).

    ``keep`` counts what the pruning projection keeps: entries, or groups for a structured
    target (every run of ``m`` keeps ``n`` for ``n_of_m``, whatever ``keep`` says).
    """

    def __init__(self, target: Target, variable: tf.Variable):
        self.target = target
        self.variable = variable
        shape = tuple(int(d) for d in variable.shape)
        self.groups = target.groups(shape)
        self.keep = target.kept_groups(shape)
        self.kept_entries = target.kept(shape)
        # Where the layer reads the weight: getattr(owner, attribute) is the variable (the
        # owner is the layer itself, or a layer inside it such as an RNN's cell).
        self.owner: object = None
        self.attribute: str = ""
        self.auxiliary: tf.Variable = None
        self.dual: tf.Variable = None
        self.mask: tf.Variable = None
        self.rho: tf.Variable = None
        self.dual_residual: tf.Variable = None
        self.levels: tf.Variable | None = None
        self.assignment: tf.Variable | None = None
        self.locked: tf.Variable | None = None
        self.level_counts: tf.Variable | None = None
        # The layer's bias, masked with the filters for structure="filter": a removed filter
        # takes its bias with it (tf_admm.shrink can then drop the channel).
        self.bias: tf.Variable | None = None
        # Layers tied to this one by a residual join keep the same filters: set by
        # tf_admm.grouping.attach_ties, which also lists the BatchNormalization gamma and beta after
        # the layer, masked with its filters.
        self.tie = None
        self.followers: list[tf.Variable] = []

    def filter_mask(self) -> tf.Tensor:
        """1 for each kept filter (output channel of the GEMM view), 0 for a removed one."""
        return tf.reduce_max(tf.reshape(self.mask, [-1, self.groups]), axis=0)

    def effective_bias(self) -> tf.Tensor:
        """The bias the layer computes with: zero for removed filters."""
        return tf.cast(self.bias, self.mask.dtype) * self.filter_mask()

    def keep_at(self, fraction: float) -> int:
        """Weights (or groups) kept in a pruning stage at ``fraction`` of the final ratio."""
        return projections.stage_keep_count(self.groups, self.keep, fraction)

    def keep_mask(self, values: tf.Tensor, keep: int, values_of=None) -> tf.Tensor:
        """0/1 mask of the projection of ``values`` onto the set keeping ``keep`` weights or
        groups: top-k magnitudes, or the target's structure. A tied slot keeps the filters its
        tie keeps, chosen from every member's ``values_of(slot)`` (``values`` for this one)."""
        target = self.target
        if self.tie is not None and values_of is not None:
            return self.tie.mask_for(self, values, keep, values_of)
        if target.structure is None:
            return projections.top_k_mask(values, keep)
        return target.structure_mask(values, keep)

    def project_keep(self, values: tf.Tensor, keep: int, values_of=None) -> tf.Tensor:
        """The Euclidean projection of ``values`` whose mask :meth:`keep_mask` gives."""
        return values * self.keep_mask(values, keep, values_of)

    @property
    def channels(self) -> int:
        return int(self.variable.shape[-1]) if self.target.per_channel else 1

    def weight(self) -> tf.Tensor:
        """W in the dtype of the ADMM state (float32 under a mixed-precision policy too)."""
        return tf.cast(self.variable, self.mask.dtype)

    def masked(self) -> tf.Tensor:
        """W with pruned positions zeroed (the weight ADMM constrains)."""
        return self.weight() * self.mask

    def level_values(self, index: tf.Tensor | None = None) -> tf.Tensor:
        """levels[index] (default: the locked ``assignment``), per channel where the levels are."""
        index = self.assignment if index is None else index
        flat_index = index
        if self.target.per_channel:
            channel = tf.range(self.channels, dtype=index.dtype)
            flat_index = index + channel * self.target.num_levels
        flat_levels = tf.reshape(self.levels, [-1])
        values = tf.gather(flat_levels, flat_index)
        if self.target.level_update == CentroidUpdate.MEAN.value:
            # Same value; the gradient reaching a level is the mean of its members' gradients.
            if self.target.straight_through:  # Members are the locked weights nearest to it.
                members = tf.reshape(self.locked * self.mask, [-1])
                counts = tf.math.unsorted_segment_sum(
                    members, tf.reshape(flat_index, [-1]), num_segments=tf.size(flat_levels)
                )
            else:
                counts = tf.reshape(self.level_counts, [-1])
            counts = tf.gather(counts, flat_index)
            values = tf.stop_gradient(values) + (values - tf.stop_gradient(values)) / tf.maximum(
                counts, 1.0
            )
        return values

    def effective(self) -> tf.Tensor:
        """The weight the layer computes with, in the dtype of the ADMM state."""
        weight = self.weight()
        if self.locked is not None:
            if self.target.straight_through:
                # The nearest level's value, with W's gradient passed straight through.
                index = self.nearest(weight, tf.convert_to_tensor(self.levels))
                on_level = self.level_values(index) + (weight - tf.stop_gradient(weight))
            else:
                on_level = self.level_values()
            weight = self.locked * on_level + (1.0 - self.locked) * weight
        return weight * self.mask

    # Quantization helpers: eager, between steps.

    def fit_levels(self, values: tf.Tensor) -> tf.Tensor:
        """Levels fitted to the kept entries of ``values`` (scale search or k-means)."""
        target = self.target
        if target.scheme == Scheme.KMEANS.value:
            result = projections.kmeans(values, target.num_levels, mask=self.mask, seed=0)
            return tf.constant(result.centroids, tf.float32)
        fit = projections.fit_scale(
            values,
            target.bits,
            scheme=target.scheme,
            mask=self.mask,
            axis=-1 if target.per_channel else None,
        )
        return tf.convert_to_tensor(fit.levels, tf.float32)

    # Trained k-means centroids can pass each other, so ``levels`` (the variable's order, which
    # assignments index) need not be sorted; the projections want them sorted.

    def project(self, values: tf.Tensor, levels: tf.Tensor) -> tf.Tensor:
        levels = tf.sort(levels, axis=-1)
        return projections.project_to_levels(values, levels, mask=self.mask, axis=-1)

    def nearest(self, values: tf.Tensor, levels: tf.Tensor) -> tf.Tensor:
        """Index into ``levels`` (as stored, sorted or not) of each weight's nearest level."""
        levels = tf.convert_to_tensor(levels)
        # Per-channel grids (rank 2) are fitted, never trained: they stay sorted.
        order = tf.argsort(levels, stable=True) if levels.shape.rank == 1 else None
        ascending = levels if order is None else tf.gather(levels, order)
        index = projections.nearest_level_index(values, ascending, mask=self.mask, axis=-1)
        index = tf.maximum(index, 0)  # Pruned positions (-1) point at level 0, masked anyway.
        return index if order is None else tf.gather(order, index)


def _shifted(slot: _Slot) -> tf.Tensor:
    """W + U on the kept positions: what the pruning Z-step projects."""
    return (slot.masked() + slot.dual) * slot.mask


def _masked(slot: _Slot) -> tf.Tensor:
    """W on the kept positions: what the hard projection and a new stage project."""
    return slot.masked()


@keras.utils.register_keras_serializable(package="tf_admm")
class AdmmWrapper(keras.layers.Wrapper):
    """Wraps a layer whose weights ADMM compresses.

    Args:
      layer: the layer to wrap (built or not).
      targets: one :class:`Target` (or its config dict) per compressed weight.
      **kwargs: passed to ``keras.layers.Wrapper``.
    """

    def __init__(self, layer: keras.layers.Layer, targets, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"Expected a keras layer to wrap; received: layer={layer!r} "
                f"of type {type(layer).__name__}"
            )
        kwargs.setdefault("name", f"admm_{layer.name}")
        # The wrapper runs the layer's call in its own __call__, so it takes the layer's dtype
        # policy: inputs and weights are cast to the layer's compute dtype (float16 under
        # mixed_float16) as the layer's own __call__ would have done.
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.targets = tuple(Target.from_config(t, layer.name) for t in targets)
        if not self.targets:
            raise ValueError(f"Layer '{layer.name}': Expected at least one target weight")
        self._slots: list[_Slot] = []

    @property
    def slots(self) -> list[_Slot]:
        """The ADMM state of each compressed weight, one per target (empty until built)."""
        return self._slots

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        # Some layers build what they contain only when first called (MultiHeadAttention's
        # projections): their weights appear in the first call, which creates the slots then.
        if all(registry.reachable(self.layer, t.weight) for t in self.targets):
            self._create_slots()
        super().build(input_shape)

    def _create_slots(self) -> None:
        for target in self.targets:
            owner, attribute = registry.resolve(self.layer, target.weight)
            variable = getattr(owner, attribute)
            slot = _Slot(target, variable)
            slot.owner, slot.attribute = owner, attribute
            if target.structure == "filter" and owner is self.layer:
                bias = registry.filter_bias(self.layer, target.weight)
                if bias is not None and getattr(self.layer, bias).shape == (slot.groups,):
                    slot.bias = getattr(self.layer, bias)
            if target.quantizes and target.num_levels > slot.kept_entries:
                raise ValueError(
                    f"Layer '{self.layer.name}', weight '{target.weight}': Expected at most as "
                    f"many levels as kept weights ({slot.kept_entries}); received: "
                    f"{'clusters' if target.clusters else 'levels'}={target.num_levels}"
                )
            shape, name = variable.shape, target.weight
            # The ADMM state has the weight's variable dtype (float32 under mixed precision) and
            # is never autocast: the penalty, the projections and the effective weight are
            # computed in it, and only the effective weight is cast to the compute dtype.
            # (Inside __call__ an autocast variable's dtype is the cast one; true_dtype is its own.)
            exact = dict(dtype=getattr(variable, "true_dtype", variable.dtype), autocast=False)
            state = dict(initializer="zeros", trainable=False, **exact)
            slot.auxiliary = self.add_weight(name=f"{name}_auxiliary", shape=shape, **state)
            slot.dual = self.add_weight(name=f"{name}_dual", shape=shape, **state)
            slot.mask = self.add_weight(
                name=f"{name}_mask", shape=shape, initializer="ones", trainable=False, **exact
            )
            slot.rho = self.add_weight(
                name=f"{name}_rho",
                shape=(),
                initializer=keras.initializers.Constant(target.rho),
                trainable=False,
                **exact,
            )
            slot.dual_residual = self.add_weight(name=f"{name}_dual_residual", shape=(), **state)
            if target.quantizes:
                levels_shape = (
                    (slot.channels, target.num_levels)
                    if target.per_channel
                    else (target.num_levels,)
                )
                slot.levels = self.add_weight(
                    name=f"{name}_levels",
                    shape=levels_shape,
                    initializer="zeros",
                    trainable=target.level_update != CentroidUpdate.NONE.value,
                    constraint=target.grid_constraint(),
                    **exact,
                )
                slot.assignment = self.add_weight(
                    name=f"{name}_assignment",
                    shape=shape,
                    initializer="zeros",
                    trainable=False,
                    dtype=tf.int32,
                )
                slot.locked = self.add_weight(name=f"{name}_locked", shape=shape, **state)
                slot.level_counts = self.add_weight(
                    name=f"{name}_level_counts", shape=levels_shape, **state
                )
            self._slots.append(slot)

    def call(self, inputs, *args, training=None, **kwargs):
        if getattr(self.layer, "_expects_training_arg", False):
            kwargs["training"] = training
        if "mask" in kwargs and not getattr(self.layer, "_expects_mask_arg", False):
            kwargs.pop("mask")  # Keras offers the wrapper the mask; the layer may not take one.
        if not self._slots:
            self.layer.call(inputs, *args, **kwargs)  # Builds the layers inside, once.
            self._create_slots()
        # Hand the layer (or the layer inside it that owns the weight) the effective weights
        # through their attributes. object.__setattr__ bypasses Keras' attribute tracking,
        # which would otherwise reorder the layer's weights.
        try:
            for slot in self._slots:
                effective = tf.cast(slot.effective(), self.layer.compute_dtype)
                object.__setattr__(slot.owner, slot.attribute, effective)
                if slot.bias is not None:
                    bias = tf.cast(slot.effective_bias(), self.layer.compute_dtype)
                    object.__setattr__(self.layer, "bias", bias)
            return self.layer.call(inputs, *args, **kwargs)
        finally:
            for slot in self._slots:
                object.__setattr__(slot.owner, slot.attribute, slot.variable)
                if slot.bias is not None:
                    object.__setattr__(self.layer, "bias", slot.bias)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["targets"] = [t.get_config() for t in self.targets]
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.layers.deserialize(config.pop("layer"), custom_objects=custom_objects)
        return cls(layer, **config)

    def _select(self, kind: str) -> list[_Slot]:
        return [s for s in self._slots if getattr(s.target, kind)]

    # ADMM state transitions; all run between steps (eagerly, in cross-replica context).

    def initialize(self, fraction: float = 1.0) -> None:
        """Z <- projection of W, U <- 0: the start of ADMM from W.

        The mask starts all ones, except for a weight that is only quantized: there the zeros
        already in W (say, from a model pruned with tfmot) count as pruned and stay zero.

        Args:
          fraction: the first pruning stage's fraction of the final compression ratio.
        """
        for slot in self._slots:
            keep = slot.keep_at(fraction) if slot.target.prunes else slot.keep
            slot.auxiliary.assign(slot.project_keep(slot.variable, keep))
            slot.dual.assign(tf.zeros_like(slot.dual))
            if slot.target.quantizes and not slot.target.prunes:
                slot.mask.assign(tf.cast(tf.not_equal(slot.variable, 0.0), slot.mask.dtype))
            else:
                slot.mask.assign(tf.ones_like(slot.mask))
            slot.rho.assign(slot.target.rho)
            slot.dual_residual.assign(0.0)

    def _step(
        self,
        slot: _Slot,
        auxiliary: tf.Tensor,
        weight: tf.Tensor,
        rho: Callable[[float], float] | None,
    ):
        """U <- (U + W - Z) * rho_old / rho_new and the bookkeeping around a Z-step.

        Rescaling the scaled dual U = lambda / rho keeps the multiplier lambda unchanged when
        rho changes (Boyd et al. 2011, section 3.4.1).
        """
        dual = slot.dual + weight - auxiliary
        slot.dual_residual.assign(slot.rho * tf.norm(auxiliary - slot.auxiliary))
        slot.auxiliary.assign(auxiliary)
        old = float(slot.rho.numpy())
        new = old if rho is None else float(rho(slot.target.rho))
        slot.dual.assign(dual * (old / new))
        slot.rho.assign(new)

    def admm_update(
        self, fraction: float = 1.0, rho: Callable[[float], float] | None = None
    ) -> None:
        """One pruning Z/U update: Z <- P(W + U); U <- U + W - Z; rho to its next value.

        ``P`` keeps the ``k`` largest weights (or, for a structured target, the ``k`` groups of
        largest norm, or the ``n`` of every ``m``): the exact Euclidean projection onto the
        target's set. ``k`` is the count kept by the pruning stage at ``fraction`` of the final
        ratio; the weights pruned by earlier stages are zero in W and Z, and U is zero there.

        Args:
          fraction: the pruning stage's fraction of the final compression ratio.
          rho: maps a weight's initial rho (its target's) to its rho for the next round, e.g.
            ``lambda initial: schedule(round_ + 1, initial=initial)``; None keeps rho.
        """
        for slot in self._select("prunes"):
            # W with earlier stages' zeros: where the mask is 0, W - Z and so U stay 0.
            weight = slot.masked()
            shifted = (weight + slot.dual) * slot.mask
            auxiliary = slot.project_keep(shifted, slot.keep_at(fraction), _shifted)
            self._step(slot, auxiliary, weight, rho)

    def hard_project(self, fraction: float = 1.0) -> None:
        """Keeps the stage's largest weights (or groups) for good: mask, W and Z agree; U <- 0."""
        for slot in self._select("prunes"):
            mask = slot.keep_mask(slot.variable * slot.mask, slot.keep_at(fraction), _masked)
            slot.mask.assign(mask)
            slot.variable.assign(slot.variable * mask)
            for follower in slot.followers:
                follower.assign(follower * tf.cast(slot.filter_mask(), follower.dtype))
            slot.auxiliary.assign(slot.variable)
            slot.dual.assign(tf.zeros_like(slot.dual))

    def begin_stage(self, fraction: float) -> None:
        """Restarts pruning ADMM from the last stage's result: Z <- top-k(W), U <- 0, rho reset.

        W starts with the last stage's zeros, but the mask reopens: a weight pruned earlier can
        grow back if the loss wants it (measured on LeNet-5 at 71x: 99.18% with reopening,
        98.97% with earlier stages' masks kept).
        """
        for slot in self._select("prunes"):
            slot.variable.assign(slot.masked())
            slot.mask.assign(tf.ones_like(slot.mask))
            keep = slot.keep_at(fraction)
            slot.auxiliary.assign(slot.project_keep(slot.variable, keep, _masked))
            slot.dual.assign(tf.zeros_like(slot.dual))
            slot.rho.assign(slot.target.rho)
            slot.dual_residual.assign(0.0)

    def quant_begin(self, rho: Callable[[float], float] | None = None) -> None:
        """Start of quantization ADMM: Z <- P_levels(W), U <- 0, rho back to its start.

        Args:
          rho: the first round's rho from a layer's initial one (``phases.quant_rho(spec, 0)``);
            None keeps the initial rho.
        """
        for slot in self._select("quantizes"):
            weight = slot.masked()
            levels = slot.fit_levels(weight)
            slot.levels.assign(levels)
            slot.auxiliary.assign(slot.project(weight, levels))
            slot.dual.assign(tf.zeros_like(slot.dual))
            slot.rho.assign(slot.target.rho if rho is None else rho(slot.target.rho))
            slot.dual_residual.assign(0.0)

    def quant_update(self, rho: Callable[[float], float] | None = None) -> None:
        """One quantization Z/U update: levels refitted to W + U, Z <- P_levels(W + U).

        Args:
          rho: as in :meth:`admm_update`.
        """
        for slot in self._select("quantizes"):
            weight = slot.masked()
            shifted = weight + slot.dual * slot.mask
            levels = slot.fit_levels(shifted)
            slot.levels.assign(levels)
            self._step(slot, slot.project(shifted, levels), weight, rho)

    def quant_lock(self, fraction: float, first: bool) -> None:
        """Locks ``fraction`` of the kept weights (cumulative) onto their nearest levels.

        On the first call the levels are fitted to W and fixed; the weights nearest to a level
        are locked first. Locked weights never leave their level afterwards, unless the
        target trains them ``straight_through``.
        """
        for slot in self._select("quantizes"):
            weight = slot.masked()
            if first:
                slot.levels.assign(slot.fit_levels(weight))
                slot.locked.assign(tf.zeros_like(slot.locked))
            levels = tf.convert_to_tensor(slot.levels)
            assignment = slot.nearest(weight, levels)
            locked = slot.locked.numpy().astype(bool)
            kept = slot.mask.numpy().astype(bool)
            # Locked weights keep their assignment; the rest follow W to its nearest level.
            slot.assignment.assign(np.where(locked, slot.assignment.numpy(), assignment.numpy()))
            distance = np.abs((weight - slot.project(weight, levels)).numpy())
            wanted = int(round(fraction * int(kept.sum())))
            candidates = np.flatnonzero((kept & ~locked).ravel())
            extra = max(0, wanted - int(locked.sum()))
            order = candidates[np.argsort(distance.ravel()[candidates], kind="stable")]
            new_locked = locked.ravel().copy()
            new_locked[order[:extra]] = True
            slot.locked.assign(new_locked.reshape(locked.shape).astype(np.float32))
            counts = np.zeros(slot.levels.shape, np.float32).reshape(-1)
            index = slot.assignment.numpy()
            if slot.target.per_channel:
                index = index + np.arange(slot.channels) * slot.target.num_levels
            np.add.at(counts, index.ravel()[new_locked & kept.ravel()], 1.0)
            slot.level_counts.assign(counts.reshape(slot.levels.shape))

    # Quantities read inside the training step.

    def penalty(self, kind: str) -> tf.Tensor:
        """Sum of rho / 2 * ||W - Z + U||^2 over the slots that prune or quantize (``kind``)."""
        slots = self._select(kind)
        if not slots:
            return tf.constant(0.0)
        terms = [
            slot.rho / 2.0 * tf.reduce_sum(tf.square(slot.masked() - slot.auxiliary + slot.dual))
            for slot in slots
        ]
        return tf.add_n(terms)

    def residual_parts(self) -> tuple[tf.Tensor, tf.Tensor]:
        """(sum ||W - Z||^2, sum ||W||^2) over compressed weights, W with pruned zeros."""
        gap = tf.add_n(
            [tf.reduce_sum(tf.square(slot.masked() - slot.auxiliary)) for slot in self._slots]
        )
        size = tf.add_n([tf.reduce_sum(tf.square(slot.masked())) for slot in self._slots])
        return gap, size

    def sparsity(self) -> tf.Tensor:
        """Fraction of zeros among the effective compressed weights."""
        zeros = tf.add_n(
            [tf.reduce_sum(tf.cast(slot.effective() == 0, tf.float32)) for slot in self._slots]
        )
        total = sum(slot.variable.shape.num_elements() for slot in self._slots)
        return zeros / float(total)

    def quantization_state(self) -> dict[str, float]:
        """Per quantized weight: fraction of kept weights locked and relative error to levels."""
        logs = {}
        for slot in self._select("quantizes"):
            suffix = (
                "" if slot.target.weight in ("kernel", "embeddings") else f".{slot.target.weight}"
            )
            kept = float(tf.reduce_sum(slot.mask))
            logs[f"{self.layer.name}{suffix}_locked"] = float(
                tf.reduce_sum(slot.locked * slot.mask)
            ) / max(kept, 1.0)
            effective = slot.effective()
            projected = slot.project(effective, tf.convert_to_tensor(slot.levels))
            logs[f"{self.layer.name}{suffix}_quant_error"] = float(
                projections.relative_error(effective, projected, mask=slot.mask)
            )
        return logs

    def stripped_weights(self) -> list:
        """The wrapped layer's weights as numpy arrays, with compressed weights made effective."""
        effective = {id(slot.variable): slot.effective() for slot in self._slots}
        effective.update(
            {id(s.bias): s.effective_bias() for s in self._slots if s.bias is not None}
        )
        return [(effective[id(w)] if id(w) in effective else w).numpy() for w in self.layer.weights]
