"""The Keras 3 wrapper that holds the ADMM state of one layer, on every backend.

For every compressed weight ``W`` the wrapper owns, as Keras 3 variables of the wrapper (so
they are saved with the model and, on JAX, carried through ``fit`` with the rest of the
non-trainable state): the auxiliary variable ``Z``, the scaled dual ``U``, the 0/1 ``mask``,
the penalty parameter ``rho`` and the last dual residual ``rho * ||Z - Z_prev||``.

While the layer runs, the wrapper hands it ``mask * W`` in place of the variable, through the
attribute that holds it (:func:`tf_admm.keras3.registry.resolve`), computed with ``keras.ops``:
pruned weights contribute nothing and get no gradient on any backend. The Z/U updates and the
hard projection run between training steps on host copies (NumPy) of the synced variables,
through the same projections as the tf_keras adapter (:func:`~tf_admm.projections.
top_k_mask_numpy` keeps the same entries as :func:`~tf_admm.projections.top_k_mask`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from tf_admm import projections
from tf_admm.keras3 import registry
from tf_admm.planning import Target

__all__ = ["AdmmWrapper"]


def _host(variable) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable)


def _target(layer_name: str, value: Any) -> Target:
    """A Target from itself or its config dict (as found in a saved model's config)."""
    if isinstance(value, Target):
        return value
    fields = {f.name for f in dataclasses.fields(Target)}
    if (
        not isinstance(value, dict)
        or not {"weight", "sparsity", "rho"} <= set(value)
        or (set(value) - fields)
    ):
        raise ValueError(
            f"Layer '{layer_name}': Expected each target to be a Target or a dict with keys "
            f"among {sorted(fields)} (weight, sparsity and rho required); received: {value!r}"
        )
    return Target(**value)


class _Slot:
    """ADMM variables of one compressed weight (plain holder; the wrapper tracks them)."""

    def __init__(self, target: Target, variable: keras.Variable, attribute: str):
        self.target = target
        self.variable = variable
        self.attribute = attribute
        self.size = int(np.prod(variable.shape))
        self.keep = projections.keep_count(self.size, target.sparsity)
        self.auxiliary: keras.Variable = None
        self.dual: keras.Variable = None
        self.mask: keras.Variable = None
        self.rho: keras.Variable = None
        self.dual_residual: keras.Variable = None

    def keep_at(self, fraction: float) -> int:
        """Weights kept in a pruning stage at ``fraction`` of the final compression ratio."""
        return projections.stage_keep_count(self.size, self.keep, fraction)

    def masked(self):
        """``mask * W`` as a backend tensor (inside a step: the weight the layer computes with)."""
        return ops.multiply(ops.cast(self.variable, self.mask.dtype), self.mask)

    def host_masked(self) -> np.ndarray:
        return _host(self.variable) * _host(self.mask)


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
        self.targets = tuple(_target(layer.name, t) for t in targets)
        if not self.targets:
            raise ValueError(f"Layer '{layer.name}': Expected at least one target weight")
        if any(t.quantizes for t in self.targets):
            raise ValueError(
                f"Layer '{layer.name}': Expected pruning targets only; quantization (bits, "
                "clusters) is not available on Keras 3 yet (docs/keras3.md)"
            )
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
            self._slots.append(slot)
        self.built = True

    def call(self, inputs, *args, training=None, **kwargs):
        """Runs the wrapped layer with ``mask * W`` in place of each compressed weight."""
        if getattr(self.layer, "_call_has_training_arg", False):
            kwargs["training"] = training
        # object.__setattr__ bypasses Keras' attribute tracking, which would otherwise track
        # the tensor as state of the layer.
        try:
            for slot in self._slots:
                effective = ops.cast(slot.masked(), self.layer.compute_dtype)
                object.__setattr__(self.layer, slot.attribute, effective)
            return self.layer.call(inputs, *args, **kwargs)
        finally:
            for slot in self._slots:
                object.__setattr__(self.layer, slot.attribute, slot.variable)

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

    def _pruned(self) -> list[_Slot]:
        return [s for s in self._slots if s.target.prunes]

    # ADMM state transitions: between steps, on host copies of synced variables.

    def initialize(self, fraction: float = 1.0) -> None:
        """Z <- top-k(W) for the first stage, U <- 0, mask open, rho at its start."""
        for slot in self._slots:
            weight = _host(slot.variable)
            keep = slot.keep_at(fraction) if slot.target.prunes else slot.keep
            slot.auxiliary.assign(projections.project_top_k_numpy(weight, keep))
            slot.dual.assign(np.zeros_like(weight))
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
        """One pruning Z/U update: Z <- top-k(W + U); U <- U + W - Z; rho to its next value.

        Args:
          fraction: the pruning stage's fraction of the final compression ratio.
          rho: maps a weight's initial rho to its rho for the next round; None keeps rho.
        """
        for slot in self._pruned():
            mask = _host(slot.mask)
            weight = _host(slot.variable) * mask
            shifted = (weight + _host(slot.dual)) * mask
            auxiliary = projections.project_top_k_numpy(shifted, slot.keep_at(fraction))
            self._step(slot, auxiliary, weight, rho)

    def hard_project(self, fraction: float = 1.0) -> None:
        """Keeps the stage's largest weights for good: mask, W and Z agree; U <- 0."""
        for slot in self._pruned():
            weight = slot.host_masked()
            mask = projections.top_k_mask_numpy(weight, slot.keep_at(fraction))
            slot.mask.assign(mask)
            slot.variable.assign(weight * mask)
            slot.auxiliary.assign(weight * mask)
            slot.dual.assign(np.zeros_like(weight))

    def begin_stage(self, fraction: float) -> None:
        """Restarts pruning ADMM from the last stage's result: Z <- top-k(W), U <- 0, rho
        reset; the mask reopens (as in the tf_keras adapter's ``begin_stage``)."""
        for slot in self._pruned():
            weight = slot.host_masked()
            slot.variable.assign(weight)
            slot.mask.assign(np.ones_like(weight))
            slot.auxiliary.assign(projections.project_top_k_numpy(weight, slot.keep_at(fraction)))
            slot.dual.assign(np.zeros_like(weight))
            slot.rho.assign(slot.target.rho)
            slot.dual_residual.assign(0.0)

    # Quantities read inside the training step (keras.ops, differentiable).

    def penalty(self):
        """Sum of rho / 2 * ||mask * W - Z + U||^2 over the pruned weights."""
        terms = [
            slot.rho / 2.0 * ops.sum(ops.square(slot.masked() - slot.auxiliary + slot.dual))
            for slot in self._pruned()
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
        zeros = sum(int(np.sum(slot.host_masked() == 0)) for slot in self._slots)
        return zeros / sum(slot.size for slot in self._slots)

    def stripped_weights(self) -> list[np.ndarray]:
        """The wrapped layer's weights on the host, with compressed weights masked."""
        effective = {id(slot.variable): slot.host_masked() for slot in self._slots}
        return [effective[id(w)] if id(w) in effective else _host(w) for w in self.layer.weights]
