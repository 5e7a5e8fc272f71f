"""The Keras wrapper that holds the ADMM state of one layer.

For every compressed weight ``W`` of the wrapped layer the wrapper owns, as non-trainable
variables: the auxiliary variable ``Z`` (the projection of ``W + U`` onto the constraint set),
the scaled dual variable ``U``, the 0/1 ``mask`` of kept weights, the penalty parameter ``rho``
and the last dual residual ``rho * ||Z - Z_prev||``. The update rules live in
:mod:`tf_admm.projections`; this module only holds state and applies them.

While the layer runs, the wrapper hands it the *effective* weight ``W * mask`` in place of the
variable, so pruned weights contribute nothing and receive no gradient, whatever the optimizer
keeps in its slots. ``strip`` writes the effective weights back into a plain layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tf_admm import projections, registry
from tf_admm.compat import keras, tf

__all__ = ["AdmmWrapper", "Target"]


@dataclasses.dataclass(frozen=True)
class Target:
    """One compressed weight: attribute name, pruning target and initial rho."""

    weight: str
    sparsity: float
    rho: float

    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Slot:
    """ADMM variables of one compressed weight (plain holder, tracked through the wrapper)."""

    def __init__(self, target: Target, variable: tf.Variable, keep: int):
        self.target = target
        self.variable = variable
        self.keep = keep
        self.auxiliary: tf.Variable = None
        self.dual: tf.Variable = None
        self.mask: tf.Variable = None
        self.rho: tf.Variable = None
        self.dual_residual: tf.Variable = None

    def effective(self) -> tf.Tensor:
        return self.variable * tf.cast(self.mask, self.variable.dtype)


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
        super().__init__(layer, **kwargs)
        self.targets = tuple(t if isinstance(t, Target) else Target(**t) for t in targets)
        if not self.targets:
            raise ValueError(f"Layer '{layer.name}': Expected at least one target weight")
        self._slots: list[_Slot] = []

    @property
    def slots(self) -> list[_Slot]:
        return self._slots

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        available = set(registry.compressible_weights(self.layer))
        for target in self.targets:
            variable = getattr(self.layer, target.weight, None)
            if not isinstance(variable, tf.Variable):
                raise ValueError(
                    f"Layer '{self.layer.name}' ({type(self.layer).__name__}): Expected weight "
                    f"to be a variable attribute of the layer, one of {sorted(available)}; "
                    f"received: weight={target.weight!r}"
                )
            size = variable.shape.num_elements()
            slot = _Slot(target, variable, projections.keep_count(size, target.sparsity))
            shape, name = variable.shape, target.weight
            slot.auxiliary = self.add_weight(
                name=f"{name}_auxiliary", shape=shape, initializer="zeros", trainable=False
            )
            slot.dual = self.add_weight(
                name=f"{name}_dual", shape=shape, initializer="zeros", trainable=False
            )
            slot.mask = self.add_weight(
                name=f"{name}_mask", shape=shape, initializer="ones", trainable=False
            )
            slot.rho = self.add_weight(
                name=f"{name}_rho",
                shape=(),
                initializer=keras.initializers.Constant(target.rho),
                trainable=False,
            )
            slot.dual_residual = self.add_weight(
                name=f"{name}_dual_residual", shape=(), initializer="zeros", trainable=False
            )
            self._slots.append(slot)
        super().build(input_shape)

    def call(self, inputs, training=None, **kwargs):
        if getattr(self.layer, "_expects_training_arg", False):
            kwargs["training"] = training
        # Hand the layer the effective weights through its own attributes. object.__setattr__
        # bypasses Keras' attribute tracking, which would otherwise reorder the layer's weights.
        originals = {slot.target.weight: slot.variable for slot in self._slots}
        try:
            for slot in self._slots:
                object.__setattr__(self.layer, slot.target.weight, slot.effective())
            return self.layer.call(inputs, **kwargs)
        finally:
            for name, variable in originals.items():
                object.__setattr__(self.layer, name, variable)

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

    # ADMM state transitions; all run outside the training step (in cross-replica context).

    def initialize(self) -> None:
        """Z <- projection of W, U <- 0, mask <- 1: the start of ADMM from the current W."""
        for slot in self._slots:
            slot.auxiliary.assign(projections.project_top_k(slot.variable, slot.keep))
            slot.dual.assign(tf.zeros_like(slot.dual))
            slot.mask.assign(tf.ones_like(slot.mask))
            slot.rho.assign(slot.target.rho)
            slot.dual_residual.assign(0.0)

    def admm_update(self, rho_scale: float) -> None:
        """One Z/U update, then rho <- rho * rho_scale.

        Z <- P(W + U); U <- U + W - Z. When rho changes, the scaled dual U = lambda / rho is
        rescaled by rho_old / rho_new so that the multiplier lambda is unchanged (Boyd et al.
        2011, section 3.4.1).
        """
        for slot in self._slots:
            weight = tf.convert_to_tensor(slot.variable)
            previous = tf.convert_to_tensor(slot.auxiliary)
            auxiliary = projections.project_top_k(weight + slot.dual, slot.keep)
            dual = slot.dual + weight - auxiliary
            slot.dual_residual.assign(slot.rho * tf.norm(auxiliary - previous))
            slot.auxiliary.assign(auxiliary)
            slot.dual.assign(dual / rho_scale)
            slot.rho.assign(slot.rho * rho_scale)

    def hard_project(self) -> None:
        """Keeps the ``keep`` largest weights for good: mask, W and Z agree; U <- 0."""
        for slot in self._slots:
            mask = projections.top_k_mask(slot.variable, slot.keep)
            slot.mask.assign(mask)
            slot.variable.assign(slot.variable * mask)
            slot.auxiliary.assign(slot.variable)
            slot.dual.assign(tf.zeros_like(slot.dual))

    # Quantities read inside the training step.

    def penalty(self) -> tf.Tensor:
        """Sum over compressed weights of rho / 2 * ||W - Z + U||^2."""
        terms = [
            slot.rho / 2.0 * tf.reduce_sum(tf.square(slot.variable - slot.auxiliary + slot.dual))
            for slot in self._slots
        ]
        return tf.add_n(terms)

    def residual_parts(self) -> tuple[tf.Tensor, tf.Tensor]:
        """(sum ||W - Z||^2, sum ||W||^2) over compressed weights."""
        gap = tf.add_n(
            [tf.reduce_sum(tf.square(slot.variable - slot.auxiliary)) for slot in self._slots]
        )
        size = tf.add_n([tf.reduce_sum(tf.square(slot.variable)) for slot in self._slots])
        return gap, size

    def sparsity(self) -> tf.Tensor:
        """Fraction of zeros among the effective compressed weights."""
        zeros = tf.add_n(
            [tf.reduce_sum(tf.cast(slot.effective() == 0, tf.float32)) for slot in self._slots]
        )
        total = sum(slot.variable.shape.num_elements() for slot in self._slots)
        return zeros / float(total)

    def stripped_weights(self) -> list:
        """The wrapped layer's weights as numpy arrays, with compressed weights made effective."""
        effective = {id(slot.variable): slot.effective() for slot in self._slots}
        return [(effective[id(w)] if id(w) in effective else w).numpy() for w in self.layer.weights]
