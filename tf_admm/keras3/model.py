"""The Keras 3 ADMM model: penalty in ``compute_loss``, counters as model variables.

``admm_wrap`` clones the user's Sequential or Functional Keras 3 model with
``keras.models.clone_model``, putting each targeted layer in an
:class:`~tf_admm.keras3.wrapper.AdmmWrapper`, and returns an :class:`AdmmModel` over the
clone's graph. The penalty ``sum_i rho_i / 2 * ||mask_i * W_i - Z_i + U_i||^2`` (over the
pruned weights in pruning ADMM, the quantized ones in quantization ADMM) enters the loss
in :meth:`AdmmModel.compute_loss`, which every Keras 3 trainer (TensorFlow, JAX, PyTorch) calls
inside its differentiated function with the current variable values (on JAX through the
stateless scope of ``stateless_compute_loss``): one override instead of a ``train_step`` per
backend. The phase machine is :func:`tf_admm.phases.advance`, shared with the tf_keras adapter,
run between steps by :class:`~tf_admm.keras3.callback.AdmmUpdate`.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras
from keras import ops

from tf_admm import phases, planning, resolution
from tf_admm.compat import tf
from tf_admm.keras3 import registry
from tf_admm.keras3.access import ACCESS
from tf_admm.keras3.wrapper import AdmmWrapper
from tf_admm.phases import Phase
from tf_admm.spec import Spec, Unit

__all__ = ["AdmmModel", "admm_wrap", "copy", "owns", "plan", "shared_weights", "wrappers"]


def owns(model) -> bool:
    """Whether ``model`` is a Keras 3 model (``import keras``), not a tf_keras one."""
    return isinstance(model, keras.Model)


def wrappers(model: keras.Model) -> list[AdmmWrapper]:
    """Every ADMM wrapper in ``model``, nested models included, in layer order."""
    return [la for la in registry.leaf_layers(model) if isinstance(la, AdmmWrapper)]


def _check_model(model) -> None:
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected a Keras 3 Model; received: model of type "
            f"{type(model).__module__}.{type(model).__name__}"
        )
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise ValueError(
                f"Model '{model.name}': Expected a model with a known input shape; received a "
                "Sequential model that is not built. Start it with keras.Input(shape=...)"
            )
        return
    if not hasattr(model, "_run_through_graph"):
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}): Expected a Sequential or Functional "
            "Keras 3 model; subclassed Keras 3 models are not supported yet (docs/keras3.md)"
        )


def plan(model: keras.Model, spec: Spec | dict[str, Any]) -> planning.Plan:
    """What :func:`admm_wrap` would compress in a Keras 3 model (see :func:`tf_admm.plan`)."""
    if not isinstance(spec, Spec):
        spec = Spec.from_dict(spec)
    _check_model(model)
    return resolution.resolve(model, spec, ACCESS)[2]


def shared_weights(model: keras.Model, spec: Spec | dict[str, Any]) -> dict[str, keras.Variable]:
    """The variables of a Keras 3 model that share ``spec.target_ratio``, as ``{"layer/weight":
    variable}`` (see :func:`tf_admm.shared_weights`): the model's own, not copies."""
    if not isinstance(spec, Spec):
        spec = Spec.from_dict(spec)
    _check_model(model)
    chosen = resolution.choose(model, spec, ACCESS)[0].values()
    return {
        key: registry.resolve(layer, name)[0]
        for key, (layer, name) in resolution.shared_weights(spec, chosen, ACCESS).items()
    }


def _copy(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer.__class__.from_config(layer.get_config())


def copy(model: keras.Model) -> keras.Model:
    """A copy of a Sequential or Functional Keras 3 model (nested models too) holding the same
    weights in variables of its own, so that changing them leaves ``model`` as it was."""
    _check_model(model)
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def copy_layer(layer):
        new = _copy(layer)
        pairs.append((layer, new))
        return new

    clone = keras.models.clone_model(model, clone_function=copy_layer, recursive=True)
    for old, new in pairs:
        new.set_weights(old.get_weights())
    return clone


def admm_wrap(model: keras.Model, spec: Spec | dict[str, Any]) -> AdmmModel:
    """An ADMM-trainable copy of a Keras 3 model; ``model`` itself is left untouched.

    Called by :func:`tf_admm.admm_wrap` for Keras 3 models; see there.
    """
    if not isinstance(spec, Spec):
        spec = Spec.from_dict(spec)
    _check_model(model)
    targets, spec, readable = resolution.resolve(model, spec, ACCESS)
    resolution.log(readable)
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def wrap(layer):
        copy = _copy(layer)
        new = AdmmWrapper(copy, targets[id(layer)]) if id(layer) in targets else copy
        pairs.append((layer, new))
        return new

    clone = keras.models.clone_model(model, clone_function=wrap, recursive=True)
    for old, new in pairs:
        if isinstance(new, AdmmWrapper):
            new.layer.set_weights(old.get_weights())
            new.initialize(spec.prune_stages[0])
        else:
            new.set_weights(old.get_weights())
    admm = AdmmModel(
        # One input as one tensor, as the user built it: a one-element list makes Keras warn
        # that the structure of the inputs does not match when the model gets one array.
        inputs=clone.inputs[0] if len(clone.inputs) == 1 else clone.inputs,
        outputs=clone.outputs,
        name=model.name,
        spec=spec,
        from_sequential=isinstance(model, keras.Sequential),
    )
    if not spec.prunes:
        admm.begin_quantization()
    return admm


def _replicas_in_sync() -> int:
    """The replicas a tf.distribute strategy runs a step on (TensorFlow backend), else 1: on JAX
    a ``keras.distribution`` shards the batch inside one program whose loss is the mean."""
    if keras.backend.backend() != "tensorflow":
        return 1
    return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="tf_admm")
class AdmmModel(keras.Model):
    """A Keras 3 functional model trained with ADMM. Build it with :func:`tf_admm.admm_wrap`."""

    def __init__(
        self,
        *args,
        spec: Spec | dict[str, Any] | None = None,
        from_sequential: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if spec is None:
            raise ValueError("AdmmModel: Expected spec; received: spec=None (use admm_wrap)")
        self.spec = spec if isinstance(spec, Spec) else Spec.from_dict(spec)
        # Remembered so that strip() gives back a Sequential model for a Sequential one.
        self.from_sequential = bool(from_sequential)
        # int32: JAX has no int64 unless x64 is enabled.
        state = dict(shape=(), dtype="int32", initializer="zeros", trainable=False)
        self.admm_step = self.add_weight(name="admm_step", **state)
        self.admm_epoch = self.add_weight(name="admm_epoch", **state)
        self.admm_round = self.add_weight(name="admm_round", **state)
        self.admm_phase = self.add_weight(name="admm_phase", **state)
        self.penalty_tracker = keras.metrics.Mean(name="admm_penalty")

    @property
    def admm_wrappers(self) -> list[AdmmWrapper]:
        """The model's ADMM wrappers, in layer order (a new list each time)."""
        return wrappers(self)

    @property
    def phase(self) -> Phase:
        """The :class:`~tf_admm.Phase` the model is in (read between steps)."""
        return Phase(phases.read(self.admm_phase))

    @property
    def final_phase(self) -> Phase:
        """The open-ended last phase of this model's spec."""
        return Phase.QUANT_RETRAIN if self.spec.quantizes else Phase.RETRAIN

    def begin_quantization(self) -> None:
        """Enters quantization ADMM (after pruning, or at once for a spec that only quantizes)."""
        rho = phases.quant_rho(self.spec, 0)
        for wrapper in self.admm_wrappers:
            wrapper.quant_begin(rho)
        self.admm_phase.assign(int(Phase.QUANT_ADMM))

    def advance(self, unit: Unit) -> dict[str, Any]:
        """Runs the Z/U update or phase change due after one more ``unit`` (between steps, with
        the backend's state synced); see :func:`tf_admm.phases.advance`."""
        return phases.advance(self, unit)

    def admm_penalty(self):
        """sum_i rho_i / 2 ||mask_i * W_i - Z_i + U_i||^2 over the weights in an ADMM phase
        (pruning or quantization), else 0."""
        penalty = ops.zeros(())
        for phase, kind in ((Phase.ADMM, "prunes"), (Phase.QUANT_ADMM, "quantizes")):
            active = ops.cast(ops.equal(self.admm_phase, int(phase)), "float32")
            terms = [wrapper.penalty(kind) for wrapper in self.admm_wrappers]
            penalty = penalty + active * ops.sum(ops.stack(terms))
        return penalty

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if not training:
            return loss
        penalty = self.admm_penalty()
        self.admm_step.assign_add(1)
        self.penalty_tracker.update_state(penalty)
        # The reported training loss includes the penalty that is being minimised. Under a
        # tf.distribute strategy each of N replicas returns its loss over N, and the gradients
        # are summed: Keras scales its own losses so (add_loss terms too); the penalty, the same
        # on every replica, as well, or its pull would be N times too strong.
        return loss + ops.cast(penalty, loss.dtype) / _replicas_in_sync()

    def admm_logs(self) -> dict[str, float]:
        """Residuals, rho, round, phase and per-layer sparsity, as of now (between steps)."""
        parts = [w.residual_parts() for w in self.admm_wrappers]
        gap, size = sum(p[0] for p in parts), sum(p[1] for p in parts)
        slots = [s for w in self.admm_wrappers for s in w.slots]
        logs = {
            "primal_residual": (gap / max(size, 1e-30)) ** 0.5,
            "dual_residual": sum(float(ops.convert_to_numpy(s.dual_residual)) for s in slots),
            "rho": max(float(ops.convert_to_numpy(s.rho)) for s in slots),
            "admm_round": phases.read(self.admm_round),
            "admm_phase": phases.read(self.admm_phase),
        }
        quantizing = phases.read(self.admm_phase) >= int(Phase.QUANT_ADMM)
        for wrapper in self.admm_wrappers:
            logs[f"{wrapper.layer.name}_sparsity"] = wrapper.sparsity()
            if quantizing:
                logs.update(wrapper.quantization_state())
        return logs

    def fit(self, *args, **kwargs):
        from tf_admm.keras3 import callback as callbacks_module

        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        given = bound.arguments.get("callbacks") or []
        if not isinstance(given, (list, tuple)):
            given = [given]
        given = [callbacks_module.for_keras3(c) for c in given]
        bound.arguments["callbacks"] = given
        updates = [i for i, c in enumerate(given) if isinstance(c, callbacks_module.AdmmUpdate)]
        if not updates:
            raise ValueError(
                f"Model '{self.name}': Expected the ADMM update callback among the callbacks; "
                "received none. Add it: model.fit(..., callbacks=tf_admm.callbacks())"
            )
        for index, callback in enumerate(given[: updates[0]]):
            if isinstance(callback, callbacks_module.CHECKPOINTING):
                raise ValueError(
                    f"Model '{self.name}': Expected checkpointing callbacks after the ADMM update "
                    f"callback; received: callbacks[{index}]={type(callback).__name__} before "
                    f"callbacks[{updates[0]}]=AdmmUpdate. Put it after, or let "
                    "tf_admm.callbacks(backup_dir=...) order them"
                )
        return super().fit(*bound.args[1:], **bound.kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["spec"] = self.spec.to_dict()
        config["from_sequential"] = self.from_sequential
        return config
