"""The Keras 3 wrapper that holds the ADMM state of one layer, on every backend.

For every compressed weight ``W`` the wrapper owns, as Keras 3 variables of the wrapper (so
they are saved with the model and, on JAX, carried through ``fit`` with the rest of the
non-trainable state): the auxiliary variable ``Z``, the scaled dual ``U``, the 0/1 ``mask``,
the penalty parameter ``rho`` and the last dual residual ``rho * ||Z - Z_prev||``. A quantized
weight also has its ``levels`` (uniform or power-of-two grid, or k-means centroids; per channel
along the last axis if asked), the level ``assignment`` of every weight, the 0/1 ``locked`` map
of weights fixed on their level and the ``level_counts`` of locked weights per level, as in the
tf_keras adapter.

While the layer runs, the wrapper hands it the effective weight in place of the variable,

    effective = mask * (locked * levels[assignment] + (1 - locked) * W)

through the attribute that holds it (:func:`tf_admm.keras3.registry.resolve`), computed with
``keras.ops``: pruned weights contribute nothing and get no gradient on any backend, and locked
weights sit exactly on their levels, their gradient going to the shared level (trainable k-means
centroids), never to ``W``. The Z/U updates, the hard projection and the quantization steps
(level fits, locking) run between training steps on host copies (NumPy) of the synced
variables, through the NumPy twins of the tf_keras adapter's projections
(:func:`~tf_admm.projections.top_k_mask_numpy`, :func:`~tf_admm.projections.fit_scale_numpy`,
:func:`~tf_admm.projections.kmeans_numpy`, :func:`~tf_admm.projections.project_to_levels_numpy`),
each tested to agree with its TensorFlow version. A structured target (``structure`` filter,
channel, column, block or n_of_m) is projected by the tf_keras adapter's own
:func:`~tf_admm.projections.structured_mask` on the same host values, and with
``structure="filter"`` the layer's bias is masked with the filters in the forward pass and in
:meth:`AdmmWrapper.stripped_weights`: a removed filter outputs exactly 0 before its activation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from tf_admm import projections
from tf_admm.keras3 import registry
from tf_admm.planning import Target
from tf_admm.spec import CentroidUpdate, Scheme

__all__ = ["AdmmWrapper"]


def _host(variable) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable)


class _Slot:
    """ADMM variables of one compressed weight (plain holder; the wrapper tracks them).

    ``keep`` counts what the pruning projection keeps: entries, or groups for a structured
    target (every run of ``m`` keeps ``n`` for ``n_of_m``, whatever ``keep`` says).
    """

    def __init__(self, target: Target, variable: keras.Variable, attribute: str):
        self.target = target
        self.variable = variable
        self.attribute = attribute
        shape = tuple(int(d) for d in variable.shape)
        self.size = int(np.prod(shape))
        self.groups = target.groups(shape)
        self.keep = target.kept_groups(shape)
        self.kept_entries = target.kept(shape)
        # The layer's bias and the attribute holding it, masked with the filters for
        # structure="filter": a removed filter takes its bias with it, as on tf_keras.
        self.bias: keras.Variable | None = None
        self.bias_attribute: str = ""
        self.auxiliary: keras.Variable = None
        self.dual: keras.Variable = None
        self.mask: keras.Variable = None
        self.rho: keras.Variable = None
        self.dual_residual: keras.Variable = None
        self.levels: keras.Variable | None = None
        self.assignment: keras.Variable | None = None
        self.locked: keras.Variable | None = None
        self.level_counts: keras.Variable | None = None

    @property
    def channels(self) -> int:
        return int(self.variable.shape[-1]) if self.target.per_channel else 1

    def keep_at(self, fraction: float) -> int:
        """Weights (or groups) kept in a pruning stage at ``fraction`` of the final ratio."""
        return projections.stage_keep_count(self.groups, self.keep, fraction)

    def keep_mask(self, values: np.ndarray, keep: int) -> np.ndarray:
        """0/1 mask, on the host, of the projection of ``values`` onto the set keeping ``keep``
        weights or groups: top-k magnitudes, or the target's structure."""
        target = self.target
        if target.structure is None:
            return projections.top_k_mask_numpy(values, keep)
        # The tf_keras adapter's projection itself, on host values (TensorFlow is imported by
        # tf_admm whatever Keras 3's backend), so both adapters keep the same groups.
        mask = target.structure_mask(values, keep)
        return np.asarray(mask, dtype=values.dtype)

    def project_keep(self, values: np.ndarray, keep: int) -> np.ndarray:
        """The Euclidean projection of ``values`` whose mask :meth:`keep_mask` gives."""
        return values * self.keep_mask(values, keep)

    def filter_mask(self):
        """1 for each kept filter (output channel of the GEMM view), 0 for a removed one."""
        return ops.max(ops.reshape(self.mask, [-1, self.groups]), axis=0)

    def effective_bias(self):
        """The bias the layer computes with, as a backend tensor: zero for removed filters."""
        return ops.cast(self.bias, self.mask.dtype) * self.filter_mask()

    def host_effective_bias(self) -> np.ndarray:
        """:meth:`effective_bias` on host copies (between steps)."""
        filters = _host(self.mask).reshape(-1, self.groups).max(axis=0)
        return _host(self.bias) * filters

    def masked(self):
        """``mask * W`` as a backend tensor (inside a step: the weight the layer computes with)."""
        return ops.multiply(ops.cast(self.variable, self.mask.dtype), self.mask)

    def host_masked(self) -> np.ndarray:
        return _host(self.variable) * _host(self.mask)

    def _flat_index(self, assignment):
        """Index into the flattened levels: per-channel rows are ``num_levels`` apart."""
        if not self.target.per_channel:
            return assignment
        offsets = np.arange(self.channels, dtype="int32") * self.target.num_levels
        return assignment + offsets

    def effective(self):
        """``mask * (locked * levels[assignment] + (1 - locked) * W)`` as a backend tensor.

        With ``straight_through`` a locked weight computes with the level nearest to ``W``
        instead, and its gradient passes straight through to ``W``.
        """
        weight = ops.cast(self.variable, self.mask.dtype)
        if self.locked is not None:
            straight = self.target.straight_through
            assignment = self._nearest_in_step(weight) if straight else self.assignment
            index = self._flat_index(ops.convert_to_tensor(assignment))
            flat_levels = ops.reshape(self.levels, [-1])
            values = ops.take(flat_levels, index)
            if self.target.level_update == CentroidUpdate.MEAN.value:
                # Same value; the gradient reaching a level is the mean of its members'.
                if straight:  # Members are the locked weights nearest to it.
                    members = ops.reshape(self.locked * self.mask, [-1])
                    counts = ops.segment_sum(
                        members, ops.reshape(index, [-1]), num_segments=int(flat_levels.shape[0])
                    )
                else:
                    counts = ops.reshape(self.level_counts, [-1])
                counts = ops.take(counts, index)
                fixed = ops.stop_gradient(values)
                values = fixed + (values - fixed) / ops.maximum(counts, 1.0)
            if straight:
                values = values + (weight - ops.stop_gradient(weight))
            weight = self.locked * values + (1.0 - self.locked) * weight
        return weight * self.mask

    def _nearest_in_step(self, weight):
        """Index into ``levels`` (as stored) of the level nearest to each entry of ``weight``,
        as a backend tensor."""
        levels = ops.convert_to_tensor(self.levels)
        if len(levels.shape) == 2:  # Per-channel grids stay sorted.
            return ops.cast(projections.nearest_level_in(weight, levels, ops), "int32")
        order = ops.argsort(levels)
        index = projections.nearest_level_in(weight, ops.take(levels, order), ops)
        return ops.cast(ops.take(order, index), "int32")

    def host_effective(self) -> np.ndarray:
        """:meth:`effective` on host copies (between steps)."""
        if self.target.straight_through and self.locked is not None:
            return ops.convert_to_numpy(self.effective())  # The step's own nearest levels.
        weight = self.host_masked()
        if self.locked is None:
            return weight
        index = self._flat_index(_host(self.assignment))
        values = _host(self.levels).reshape(-1)[index]
        locked = _host(self.locked)
        return (locked * values + (1.0 - locked) * weight) * _host(self.mask)

    # Quantization helpers: host values, between steps.

    def fit_levels(self, values: np.ndarray) -> np.ndarray:
        """Levels fitted to the kept entries of ``values`` (scale search or k-means)."""
        target, mask = self.target, _host(self.mask)
        if target.scheme == Scheme.KMEANS.value:
            return projections.kmeans_numpy(values, target.num_levels, mask=mask, seed=0).centroids
        axis = -1 if target.per_channel else None
        return projections.fit_scale_numpy(values, target.bits, target.scheme, mask, axis).levels

    # Trained k-means centroids can pass each other, so ``levels`` (the variable's order, which
    # assignments index) need not be sorted; the projections want them sorted.

    def project(self, values: np.ndarray, levels: np.ndarray) -> np.ndarray:
        return projections.project_to_levels_numpy(
            values, np.sort(levels, axis=-1), mask=_host(self.mask), axis=-1
        )

    def nearest(self, values: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """Index into ``levels`` (as stored, sorted or not) of each weight's nearest level."""
        # Per-channel grids (rank 2) are fitted, never trained: they stay sorted.
        order = np.argsort(levels, kind="stable") if levels.ndim == 1 else None
        ascending = levels if order is None else levels[order]
        index = projections.nearest_level_index_numpy(
            values, ascending, mask=_host(self.mask), axis=-1
        )
        index = np.maximum(index, 0)  # Pruned positions (-1) point at level 0, masked anyway.
        return (index if order is None else order[index]).astype(np.int32)


@keras.saving.register_keras_serializable(package="tf_admm")
class AdmmWrapper(keras.layers.Wrapper):
    """Wraps a Keras 3 layer whose weights ADMM compresses.

    Args:
      layer: the layer to wrap (built or not).
      targets: one :class:`~tf_admm.Target` (or its config dict) per compressed weight.
      **kwargs: passed to ``keras.layers.Wrapper``.
    """

    def __init__(self, layer: keras.layers.Layer, targets, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"Expected a Keras 3 layer to wrap; received: layer={layer!r} "
                f"of type {type(layer).__name__}"
            )
        kwargs.setdefault("name", f"admm_{layer.name}")
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

    def build(self, input_shape=None):
        """Builds the wrapped layer, then the ADMM variables of each target weight."""
        if not self.layer.built:
            self.layer.build(input_shape)
        for target in self.targets:
            variable, attribute = registry.resolve(self.layer, target.weight)
            slot = _Slot(target, variable, attribute)
            if target.structure == "filter":
                bias = registry.filter_bias(self.layer, target.weight)
                if bias is not None:
                    slot.bias, slot.bias_attribute = registry.resolve(self.layer, bias)
                    if tuple(slot.bias.shape) != (slot.groups,):
                        slot.bias = None
            name, shape, dtype = target.weight, variable.shape, variable.dtype
            state = dict(shape=shape, dtype=dtype, trainable=False, autocast=False)
            slot.auxiliary = self.add_weight(name=f"{name}_auxiliary", initializer="zeros", **state)
            slot.dual = self.add_weight(name=f"{name}_dual", initializer="zeros", **state)
            slot.mask = self.add_weight(name=f"{name}_mask", initializer="ones", **state)
            scalar = dict(shape=(), dtype=dtype, trainable=False, autocast=False)
            slot.rho = self.add_weight(
                name=f"{name}_rho", initializer=keras.initializers.Constant(target.rho), **scalar
            )
            slot.dual_residual = self.add_weight(
                name=f"{name}_dual_residual", initializer="zeros", **scalar
            )
            if target.quantizes:
                self._add_quantization_state(slot)
            self._slots.append(slot)
        self.built = True

    def _add_quantization_state(self, slot: _Slot) -> None:
        target, name, shape = slot.target, slot.target.weight, slot.variable.shape
        kept = slot.kept_entries
        if target.num_levels > kept:
            raise ValueError(
                f"Layer '{self.layer.name}', weight '{name}': Expected at most as many levels "
                f"as kept weights ({kept}); received: "
                f"{'clusters' if target.clusters else 'levels'}={target.num_levels}"
            )
        levels_shape = (
            (slot.channels, target.num_levels) if target.per_channel else (target.num_levels,)
        )
        dtype = slot.variable.dtype
        state = dict(initializer="zeros", trainable=False, dtype=dtype, autocast=False)
        slot.levels = self.add_weight(
            name=f"{name}_levels",
            shape=levels_shape,
            initializer="zeros",
            trainable=target.level_update != CentroidUpdate.NONE.value,
            constraint=target.grid_constraint(ops),
            dtype=dtype,
            autocast=False,
        )
        slot.assignment = self.add_weight(
            name=f"{name}_assignment",
            shape=shape,
            initializer="zeros",
            trainable=False,
            dtype="int32",
        )
        slot.locked = self.add_weight(name=f"{name}_locked", shape=shape, **state)
        slot.level_counts = self.add_weight(
            name=f"{name}_level_counts", shape=levels_shape, **state
        )

    def call(self, inputs, *args, training=None, **kwargs):
        """Runs the wrapped layer with the effective weight in place of each compressed one."""
        if getattr(self.layer, "_call_has_training_arg", False):
            kwargs["training"] = training
        # object.__setattr__ bypasses Keras' attribute tracking, which would otherwise track
        # the tensor as state of the layer.
        try:
            for slot in self._slots:
                effective = ops.cast(slot.effective(), self.layer.compute_dtype)
                object.__setattr__(self.layer, slot.attribute, effective)
                if slot.bias is not None:
                    bias = ops.cast(slot.effective_bias(), self.layer.compute_dtype)
                    object.__setattr__(self.layer, slot.bias_attribute, bias)
            return self.layer.call(inputs, *args, **kwargs)
        finally:
            for slot in self._slots:
                object.__setattr__(self.layer, slot.attribute, slot.variable)
                if slot.bias is not None:
                    object.__setattr__(self.layer, slot.bias_attribute, slot.bias)

    def compute_output_shape(self, input_shape):
        """The wrapped layer's output shape."""
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["targets"] = [t.get_config() for t in self.targets]
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(
            config.pop("layer"), custom_objects=custom_objects
        )
        return cls(layer, **config)

    def _select(self, kind: str) -> list[_Slot]:
        """The slots that prune or quantize (``kind``: ``"prunes"`` or ``"quantizes"``)."""
        return [s for s in self._slots if getattr(s.target, kind)]

    def _pruned(self) -> list[_Slot]:
        return self._select("prunes")

    # ADMM state transitions: between steps, on host copies of synced variables.

    def initialize(self, fraction: float = 1.0) -> None:
        """Z <- P(W) for the first stage (top-k, or the target's structure), U <- 0, mask open,
        rho at its start.

        For a weight that is only quantized the zeros already in W count as pruned and stay
        zero (the mask starts at W != 0), as in the tf_keras adapter.
        """
        for slot in self._slots:
            weight = _host(slot.variable)
            keep = slot.keep_at(fraction) if slot.target.prunes else slot.keep
            slot.auxiliary.assign(slot.project_keep(weight, keep))
            slot.dual.assign(np.zeros_like(weight))
            if slot.target.quantizes and not slot.target.prunes:
                slot.mask.assign((weight != 0).astype(weight.dtype))
            else:
                slot.mask.assign(np.ones_like(weight))
            slot.rho.assign(slot.target.rho)
            slot.dual_residual.assign(0.0)

    def _step(self, slot: _Slot, auxiliary, weight, rho: Callable[[float], float] | None):
        """U <- (U + W - Z) * rho_old / rho_new and the bookkeeping around a Z-step.

        Rescaling the scaled dual U = lambda / rho keeps the multiplier lambda unchanged when
        rho changes (Boyd et al. 2011, section 3.4.1).
        """
        old = float(_host(slot.rho))
        dual = _host(slot.dual) + weight - auxiliary
        slot.dual_residual.assign(old * float(np.linalg.norm(auxiliary - _host(slot.auxiliary))))
        slot.auxiliary.assign(auxiliary)
        new = old if rho is None else float(rho(slot.target.rho))
        slot.dual.assign(dual * (old / new))
        slot.rho.assign(new)

    def admm_update(
        self, fraction: float = 1.0, rho: Callable[[float], float] | None = None
    ) -> None:
        """One pruning Z/U update: Z <- P(W + U); U <- U + W - Z; rho to its next value.

        ``P`` keeps the ``k`` largest weights (or, for a structured target, the ``k`` groups of
        largest norm, or the ``n`` of every ``m``): the exact Euclidean projection onto the
        target's set, as in the tf_keras adapter.

        Args:
          fraction: the pruning stage's fraction of the final compression ratio.
          rho: maps a weight's initial rho to its rho for the next round; None keeps rho.
        """
        for slot in self._pruned():
            mask = _host(slot.mask)
            weight = _host(slot.variable) * mask
            shifted = (weight + _host(slot.dual)) * mask
            auxiliary = slot.project_keep(shifted, slot.keep_at(fraction))
            self._step(slot, auxiliary, weight, rho)

    def hard_project(self, fraction: float = 1.0) -> None:
        """Keeps the stage's largest weights (or groups) for good: mask, W and Z agree; U <- 0."""
        for slot in self._pruned():
            weight = slot.host_masked()
            mask = slot.keep_mask(weight, slot.keep_at(fraction))
            slot.mask.assign(mask)
            slot.variable.assign(weight * mask)
            slot.auxiliary.assign(weight * mask)
            slot.dual.assign(np.zeros_like(weight))

    def begin_stage(self, fraction: float) -> None:
        """Restarts pruning ADMM from the last stage's result: Z <- P(W), U <- 0, rho reset;
        the mask reopens (as in the tf_keras adapter's ``begin_stage``)."""
        for slot in self._pruned():
            weight = slot.host_masked()
            slot.variable.assign(weight)
            slot.mask.assign(np.ones_like(weight))
            slot.auxiliary.assign(slot.project_keep(weight, slot.keep_at(fraction)))
            slot.dual.assign(np.zeros_like(weight))
            slot.rho.assign(slot.target.rho)
            slot.dual_residual.assign(0.0)

    def quant_begin(self, rho: Callable[[float], float] | None = None) -> None:
        """Start of quantization ADMM: Z <- P_levels(W), U <- 0, rho back to its start.

        Args:
          rho: the first round's rho from a layer's initial one (``phases.quant_rho(spec, 0)``);
            None keeps the initial rho.
        """
        for slot in self._select("quantizes"):
            weight = slot.host_masked()
            levels = slot.fit_levels(weight)
            slot.levels.assign(levels)
            slot.auxiliary.assign(slot.project(weight, levels))
            slot.dual.assign(np.zeros_like(weight))
            slot.rho.assign(slot.target.rho if rho is None else rho(slot.target.rho))
            slot.dual_residual.assign(0.0)

    def quant_update(self, rho: Callable[[float], float] | None = None) -> None:
        """One quantization Z/U update: levels refitted to W + U, Z <- P_levels(W + U).

        Args:
          rho: as in :meth:`admm_update`.
        """
        for slot in self._select("quantizes"):
            weight = slot.host_masked()
            shifted = weight + _host(slot.dual) * _host(slot.mask)
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
            weight = slot.host_masked()
            if first:
                slot.levels.assign(slot.fit_levels(weight))
                slot.locked.assign(np.zeros_like(weight))
            levels = _host(slot.levels)
            locked = _host(slot.locked).astype(bool)
            kept = _host(slot.mask).astype(bool)
            # Locked weights keep their assignment; the rest follow W to its nearest level.
            assignment = np.where(locked, _host(slot.assignment), slot.nearest(weight, levels))
            slot.assignment.assign(assignment.astype(np.int32))
            distance = np.abs(weight - slot.project(weight, levels))
            wanted = int(round(fraction * int(kept.sum())))
            candidates = np.flatnonzero((kept & ~locked).ravel())
            extra = max(0, wanted - int(locked.sum()))
            order = candidates[np.argsort(distance.ravel()[candidates], kind="stable")]
            new_locked = locked.ravel().copy()
            new_locked[order[:extra]] = True
            slot.locked.assign(new_locked.reshape(locked.shape).astype(weight.dtype))
            counts = np.zeros(levels.size, weight.dtype)
            index = slot._flat_index(assignment.astype(np.int32))
            np.add.at(counts, index.ravel()[new_locked & kept.ravel()], 1.0)
            slot.level_counts.assign(counts.reshape(levels.shape))

    # Quantities read inside the training step (keras.ops, differentiable).

    def penalty(self, kind: str = "prunes"):
        """Sum of rho / 2 * ||mask * W - Z + U||^2 over the slots that prune or quantize
        (``kind``)."""
        terms = [
            slot.rho / 2.0 * ops.sum(ops.square(slot.masked() - slot.auxiliary + slot.dual))
            for slot in self._select(kind)
        ]
        return ops.sum(ops.stack(terms)) if terms else ops.zeros(())

    # Quantities read between steps (host).

    def residual_parts(self) -> tuple[float, float]:
        """(sum ||W - Z||^2, sum ||W||^2) over compressed weights, W with pruned zeros."""
        gap = size = 0.0
        for slot in self._slots:
            weight = slot.host_masked()
            gap += float(np.sum(np.square(weight - _host(slot.auxiliary))))
            size += float(np.sum(np.square(weight)))
        return gap, size

    def sparsity(self) -> float:
        """Fraction of zeros among the effective compressed weights."""
        zeros = sum(int(np.sum(slot.host_effective() == 0)) for slot in self._slots)
        return zeros / sum(slot.size for slot in self._slots)

    def quantization_state(self) -> dict[str, float]:
        """Per quantized weight: fraction of kept weights locked and relative error to levels."""
        logs = {}
        for slot in self._select("quantizes"):
            suffix = "" if slot.target.weight == "kernel" else f".{slot.target.weight}"
            mask = _host(slot.mask)
            locked = float(np.sum(_host(slot.locked) * mask))
            logs[f"{self.layer.name}{suffix}_locked"] = locked / max(float(mask.sum()), 1.0)
            effective = slot.host_effective()
            projected = slot.project(effective, _host(slot.levels))
            logs[f"{self.layer.name}{suffix}_quant_error"] = projections.relative_error_numpy(
                effective, projected, mask=mask
            )
        return logs

    def stripped_weights(self) -> list[np.ndarray]:
        """The wrapped layer's weights on the host, with compressed weights made effective
        (masked, and locked weights on their levels) and, for ``structure="filter"``, the bias
        of removed filters zero."""
        effective = {id(slot.variable): slot.host_effective() for slot in self._slots}
        effective.update(
            {id(s.bias): s.host_effective_bias() for s in self._slots if s.bias is not None}
        )
        return [effective[id(w)] if id(w) in effective else _host(w) for w in self.layer.weights]
