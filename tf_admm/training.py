"""The ADMM model: penalty in the training step, Z/U updates and the phase machine.

``admm_wrap(model, spec)`` returns an :class:`AdmmModel`: a functional copy of ``model`` whose
targeted layers sit in :class:`~tf_admm.wrapper.AdmmWrapper` and whose ``train_step`` adds
``sum_i rho_i / 2 * ||W_i - Z_i + U_i||^2`` to the loss inside the gradient tape. The
:class:`AdmmUpdate` callback (from :func:`callbacks`) drives the phases between steps:

1. ``Phase.ADMM``: every ``spec.update_every`` steps or epochs, ``Z <- P(W + U)``,
   ``U <- U + W - Z`` and rho moves along its schedule; after ``spec.admm_rounds`` updates,
2. the hard projection keeps the largest weights for good, and
3. ``Phase.RETRAIN``: masked retraining without penalty for the rest of training.

All of this state (step, epoch, round, phase and every wrapper's Z, U, mask, rho) is stored in
Keras variables, so it is saved, loaded and checkpointed with the model: with
``callbacks(backup_dir=...)`` an interrupted ``fit`` resumes where it stopped.

:class:`AdmmUpdate` also stops training with a :class:`NonFiniteError` (naming the layer and the
variable) as soon as the loss or a weight is NaN or infinite, before any checkpointing callback
that follows it can save the bad state.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from absl import logging
from tf_keras.src.engine import functional as _functional

from tf_admm import cloning, compat, finite, phases, planning, registry, resolution, subclassed
from tf_admm.access import ACCESS
from tf_admm.compat import keras, tf
from tf_admm.finite import NonFiniteError
from tf_admm.grouping import annotate_plan, attach_ties
from tf_admm.phases import Phase
from tf_admm.spec import Spec, Unit
from tf_admm.wrapper import AdmmWrapper

__all__ = [
    "AdmmModel",
    "AdmmUpdate",
    "Phase",
    "admm_wrap",
    "callbacks",
    "plan",
    "shared_weights",
    "wrappers",
]


def wrappers(model: keras.Model) -> list[AdmmWrapper]:
    """Every ADMM wrapper in ``model``, nested models included, in layer order."""
    return [layer for layer in cloning.leaf_layers(model) if isinstance(layer, AdmmWrapper)]


def _resolve(model: keras.Model, spec: Spec):
    """:func:`tf_admm.resolution.resolve` for a tf_keras model, its plan listing the filters
    that residual joins tie together (:mod:`tf_admm.grouping`)."""
    targets, spec, readable = resolution.resolve(model, spec, ACCESS)
    return targets, spec, annotate_plan(model, targets, readable)


def plan(model: keras.Model, spec: Spec | dict[str, Any]) -> planning.Plan:
    """What ``admm_wrap(model, spec)`` would compress, per layer with weights, and why not.

    Nothing is wrapped or trained; a ``target_ratio`` budget is allocated as ``admm_wrap``
    would allocate it.

    Example:
      >>> print(tf_admm.plan(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.8))))

    Args:
      model: as for :func:`admm_wrap`.
      spec: a :class:`~tf_admm.Spec` or its dict form.

    Returns:
      A :class:`~tf_admm.planning.Plan`; ``str(plan)`` is a table with one row per weight.

    Raises:
      ValueError: as :func:`admm_wrap` does, when the spec does not fit the model.
    """
    adapter = compat.keras3_adapter(model)
    if adapter is not None:
        return adapter.plan(model, spec)
    if not isinstance(spec, Spec):
        spec = Spec.from_dict(spec)
    cloning.check_built(model)
    return _resolve(model, spec)[2]


def shared_weights(model: keras.Model, spec: Spec) -> dict[str, tf.Variable]:
    """The weights of ``model`` that share ``spec.target_ratio``, as ``{"layer/weight": var}``.

    The variables are the model's own (assigning to one changes the model): ``tf.Variable`` for
    a tf_keras model, ``keras.Variable`` for a Keras 3 one (any backend).

    Raises:
      ValueError: as :func:`admm_wrap` does, when the spec does not fit the model.
    """
    adapter = compat.keras3_adapter(model)
    if adapter is not None:
        return adapter.shared_weights(model, spec)
    if not isinstance(spec, Spec):
        spec = Spec.from_dict(spec)
    cloning.check_built(model)
    chosen = resolution.choose(model, spec, ACCESS)[0].values()
    return {
        key: registry.variable(layer, name)
        for key, (layer, name) in resolution.shared_weights(spec, chosen, ACCESS).items()
    }


def admm_wrap(model: keras.Model, spec: Spec | dict[str, Any]) -> AdmmModel:
    """Returns an ADMM-trainable copy of ``model``; ``model`` itself is left untouched.

    Example:
      >>> spec = tf_admm.Spec(rules=[tf_admm.Rule(layer_type="Dense", sparsity=0.9)])
      >>> admm = tf_admm.admm_wrap(model, spec)
      >>> admm.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
      >>> admm.fit(x, y, epochs=15, callbacks=tf_admm.callbacks())
      >>> plain = tf_admm.strip(admm)

    Args:
      model: a built Sequential or Functional ``tf_keras`` model (nested models allowed), or
        a built (called) subclassed ``keras.Model``: its layers are found through Keras' layer
        tracking and wrapped in a copy (see ``docs/guide.md``, "Subclassed models"). Or a
        Sequential or Functional Keras 3 model (``import keras``, any backend): the Keras 3
        adapter wraps it (pruning only for now; see ``docs/keras3.md``).
      spec: a :class:`~tf_admm.Spec` or its dict form.

    Returns:
      An :class:`AdmmModel` with the same weights, ready to compile and fit (for a Keras 3
      model, a :class:`tf_admm.keras3.AdmmModel`).

    Raises:
      ValueError: naming the rule, layer and field, when the spec does not fit the model; for
        a subclassed model also when its call() creates layers or bypasses a wrapped layer.
    """
    adapter = compat.keras3_adapter(model)
    if adapter is not None:
        return adapter.admm_wrap(model, spec)
    if not isinstance(spec, Spec):
        spec = Spec.from_dict(spec)
    cloning.check_built(model)
    # A subclassed model is copied and its call() checked first: a layer it creates inside
    # call() is then reported as such rather than as a rule matching nothing.
    prepared = None
    if cloning.is_subclassed(model):
        prepared = subclassed.prepare(model, _rule_named(spec))
    targets, spec, readable = _resolve(model, spec)
    resolution.log(readable)

    def wrap(layer):
        copy = cloning.copy_layer(layer)
        return AdmmWrapper(copy, targets[id(layer)]) if id(layer) in targets else copy

    def fill(old, new):
        if isinstance(new, AdmmWrapper):
            new.layer.set_weights(old.get_weights())
            new.initialize(spec.prune_stages[0])
        else:
            new.set_weights(old.get_weights())

    def rebuild_graph(graph):
        return cloning.rebuild(graph, wrap, fill)

    if prepared is not None:
        admm = _wrap_subclassed(model, spec, prepared, targets, rebuild_graph)
    else:
        clone = cloning.rebuild(model, wrap, fill)
        admm = AdmmModel(
            inputs=clone.inputs,
            outputs=clone.outputs,
            name=model.name,
            spec=spec,
            from_sequential=isinstance(model, keras.Sequential),
        )
    if not spec.prunes:
        admm.begin_quantization()
    return admm


def _rule_named(spec: Spec):
    """Maps a layer name to where the rule of ``spec`` that would take it is (or None)."""

    def rule_for(layer_name: str) -> str | None:
        index, rule = spec.rule_for(layer_name, "")
        if rule is None:
            return None
        return f"rules[{index}] ({rule.describe()})" if index is not None else "default rule"

    return rule_for


def _wrap_subclassed(model: keras.Model, spec: Spec, prepared, targets, graph_fn) -> AdmmModel:
    """An AdmmModel running a wrapped copy of subclassed ``model`` (see tf_admm.subclassed)."""
    inner = subclassed.wrap(
        model, prepared, targets, spec.prune_stages[0], graph_fn, _rule_named(spec)
    )
    inputs = subclassed.symbolic_inputs(prepared[1])
    return AdmmModel(
        inputs=inputs, outputs=inner(inputs), name=model.name, spec=spec, subclassed=True
    )


@keras.utils.register_keras_serializable(package="tf_admm")
class AdmmModel(keras.Model):
    """A functional model trained with ADMM. Build it with :func:`admm_wrap`.

    For a subclassed model, the functional model has one layer besides its inputs: a copy of
    the user's model whose compressed layers sit in wrappers (:attr:`wrapped_model`).
    """

    def __init__(
        self,
        *args,
        spec: Spec | dict[str, Any] | None = None,
        from_sequential: bool = False,
        subclassed: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        # train_step returns only metric results, already aggregated over all replicas. Keras'
        # default ("auto", i.e. "sum") sums them again over the workers of a
        # MultiWorkerMirroredStrategy: 2 workers would log twice the loss and penalty.
        self.distribute_reduction_method = "first"
        # Remembered so that strip() gives back a Sequential model for a Sequential one.
        self.from_sequential = bool(from_sequential)
        # Remembered so that strip() gives back the user's class for a subclassed model.
        self.subclassed = bool(subclassed)
        if self.subclassed and self.wrapped_model is None:
            raise ValueError(
                "AdmmModel: Expected a subclassed model among the layers for subclassed=True; "
                f"received layers {[layer.name for layer in self.layers]} (use admm_wrap)"
            )
        if spec is None:
            raise ValueError("AdmmModel: Expected spec; received: spec=None (use admm_wrap)")
        self.spec = spec if isinstance(spec, Spec) else Spec.from_dict(spec)
        if self.subclassed:
            # Untracked: Keras would list the wrappers as this model's own layers too (in a
            # functional model they are its layers anyway).
            object.__setattr__(self, "_wrappers", wrappers(self))
        else:
            self._wrappers = wrappers(self)
        state = dict(shape=(), dtype=tf.int64, initializer="zeros", trainable=False)
        self.admm_step = self.add_weight(
            name="admm_step", aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, **state
        )
        self.admm_epoch = self.add_weight(name="admm_epoch", **state)
        self.admm_round = self.add_weight(name="admm_round", **state)
        self.admm_phase = self.add_weight(name="admm_phase", **state)
        # Untracked, so that metric state stays out of model.weights and saved files.
        trackers = [keras.metrics.Mean(name=name) for name in ("loss_with_penalty", "admm_penalty")]
        object.__setattr__(self, "_admm_trackers", trackers)
        for attribute, tracker in zip(("_loss_tracker", "_penalty_tracker"), trackers):
            object.__setattr__(self, attribute, tracker)
        # Residual partners keep the same filters; BatchNorms after pruned filters are masked.
        object.__setattr__(self, "_admm_ties", attach_ties(self))

    @property
    def wrapped_model(self) -> keras.Model | None:
        """The wrapped copy of the user's subclassed model that this model runs, or None for a
        model made from a Sequential or Functional one."""
        inner = [layer for layer in self.layers if cloning.is_subclassed(layer)]
        return inner[0] if len(inner) == 1 else None

    @property
    def admm_wrappers(self) -> list[AdmmWrapper]:
        """The model's ADMM wrappers, in layer order (a new list each time)."""
        return list(self._wrappers)

    @property
    def phase(self) -> Phase:
        """The :class:`Phase` the model is in, read from its ``admm_phase`` variable."""
        return Phase(int(self.admm_phase.numpy()))

    @property
    def metrics(self):
        """Keras' metrics plus the ADMM trackers (loss with penalty, penalty).

        Listed here so that Keras resets them every epoch.
        """
        return super().metrics + self._admm_trackers

    def admm_penalty(self) -> tf.Tensor:
        """sum_i rho_i / 2 ||W_i - Z_i + U_i||^2 over the weights in an ADMM phase, else 0."""
        penalty = tf.constant(0.0)
        for phase, kind in ((Phase.ADMM, "prunes"), (Phase.QUANT_ADMM, "quantizes")):
            active = tf.cast(tf.equal(self.admm_phase, int(phase)), tf.float32)
            penalty += active * tf.add_n([w.penalty(kind) for w in self._wrappers])
        return penalty

    def primal_residual(self) -> tf.Tensor:
        """||W - Z|| / ||W|| over all compressed weights."""
        parts = [w.residual_parts() for w in self._wrappers]
        gap = tf.add_n([p[0] for p in parts])
        size = tf.add_n([p[1] for p in parts])
        return tf.sqrt(gap / tf.maximum(size, 1e-30))

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            # Under mixed precision a float16 output gives a float16 loss; the penalty is float32.
            task_loss = tf.cast(self.compute_loss(x, y, y_pred, sample_weight), tf.float32)
            penalty = self.admm_penalty()
            # compute_loss already divides by the number of replicas (gradients are summed).
            loss = task_loss + penalty / replicas
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        self.admm_step.assign_add(1)
        self._loss_tracker.update_state(task_loss * replicas + penalty)
        self._penalty_tracker.update_state(penalty)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        logs = {m.name: m.result() for m in super().metrics}
        # The reported training loss includes the penalty that is being minimised.
        logs["loss"] = self._loss_tracker.result()
        logs["admm_penalty"] = self._penalty_tracker.result()
        return logs

    def admm_logs(self) -> dict[str, float]:
        """Residuals, rho, round, phase and per-layer sparsity, as of now (run between steps).

        Computed once per epoch by :class:`AdmmUpdate` rather than in every training step:
        they change slowly and would cost several passes over all weights per step.
        """
        slots = [s for w in self._wrappers for s in w.slots]
        logs = {
            "primal_residual": float(self.primal_residual()),
            "dual_residual": float(sum(float(s.dual_residual.numpy()) for s in slots)),
            "rho": max(float(s.rho.numpy()) for s in slots),
            "admm_round": int(self.admm_round.numpy()),
            "admm_phase": int(self.admm_phase.numpy()),
        }
        for wrapper in self._wrappers:
            logs[f"{wrapper.layer.name}_sparsity"] = float(wrapper.sparsity())
            if self.phase >= Phase.QUANT_ADMM:
                logs.update(wrapper.quantization_state())
        return logs

    def test_step(self, data):
        logs = super().test_step(data)
        hidden = {m.name for m in self._admm_trackers}
        return {k: v for k, v in logs.items() if k not in hidden}

    def fit(self, *args, **kwargs):
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        given = bound.arguments.get("callbacks") or []
        if isinstance(given, keras.callbacks.Callback):
            given = [given]  # Keras takes a lone callback too.
        given = list(given)
        bound.arguments["callbacks"] = given
        updates = [i for i, c in enumerate(given) if isinstance(c, AdmmUpdate)]
        if not updates:
            raise ValueError(
                f"Model '{self.name}': Expected the ADMM update callback among the callbacks; "
                "received none. Add it: model.fit(..., callbacks=tf_admm.callbacks()) or "
                "callbacks=[..., tf_admm.AdmmUpdate()]"
            )
        # Keras runs callbacks in list order. A checkpoint written before AdmmUpdate's epoch end
        # would hold the state before that epoch's Z/U update but count the epoch as done (a
        # resumed run would skip the update), and could hold NaNs AdmmUpdate has not yet seen.
        for index, callback in enumerate(given[: updates[0]]):
            if isinstance(callback, _CHECKPOINTING):
                raise ValueError(
                    f"Model '{self.name}': Expected checkpointing callbacks after the ADMM update "
                    f"callback; received: callbacks[{index}]={type(callback).__name__} before "
                    f"callbacks[{updates[0]}]=AdmmUpdate. Put it after, or let "
                    "tf_admm.callbacks(backup_dir=...) order them"
                )
        # Checkpoints written between epoch ends need a finite check after every step.
        every_step = any(
            isinstance(c, _CHECKPOINTING) and isinstance(getattr(c, "save_freq", None), int)
            for c in given
        )
        for index in updates:
            given[index]._check_every_step = every_step
        return super().fit(*bound.args[1:], **bound.kwargs)

    # Phase machine, driven between steps by AdmmUpdate (in cross-replica context).

    @property
    def final_phase(self) -> Phase:
        """The open-ended last phase of this model's spec."""
        return Phase.QUANT_RETRAIN if self.spec.quantizes else Phase.RETRAIN

    def begin_quantization(self) -> None:
        """Enters quantization ADMM (after pruning, or at once for a spec that only quantizes)."""
        rho = phases.quant_rho(self.spec, 0)
        for wrapper in self._wrappers:
            wrapper.quant_begin(rho)
        self.admm_phase.assign(int(Phase.QUANT_ADMM))

    def advance(self, unit: Unit) -> dict[str, Any]:
        """Runs the Z/U update or phase change that is due after one more ``unit``.

        Returns a dict describing what happened (empty if nothing was due); see
        :func:`tf_admm.phases.advance`.
        """
        return phases.advance(self, unit)

    def get_config(self) -> dict[str, Any]:
        # The wrapped subclassed model serializes as the user's class; where its wrappers are
        # is kept beside, for from_config to wrap the revived model again.
        wrapping = subclassed.wrapping_config(self.wrapped_model) if self.subclassed else None
        config = _functional.get_network_config(
            self, config={"name": self.name, "trainable": self.trainable}
        )
        config["spec"] = self.spec.to_dict()
        config["from_sequential"] = self.from_sequential
        if wrapping is not None:
            config["subclassed"] = wrapping
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        spec = config.pop("spec")
        from_sequential = config.pop("from_sequential", False)
        wrapping = config.pop("subclassed", None)
        # Keras' own revival of a functional config, as keras.Model.from_config does it, but
        # handing the spec to the constructor.
        inputs, outputs, layers = _functional.reconstruct_from_config(config, custom_objects)
        if wrapping is not None:
            (inner,) = [layer for layer in layers.values() if cloning.is_subclassed(layer)]
            subclassed.rewrap(inner, wrapping)
        model = cls(
            inputs=inputs,
            outputs=outputs,
            name=config.get("name"),
            spec=spec,
            from_sequential=from_sequential,
            subclassed=wrapping is not None,
        )
        _functional.connect_ancillary_layers(model, layers)
        return model


_CHECKPOINTING = (keras.callbacks.BackupAndRestore, keras.callbacks.ModelCheckpoint)


class AdmmUpdate(keras.callbacks.Callback):
    """Runs the Z/U updates and phase changes of an :class:`AdmmModel` during ``fit``.

    It also checks that training stays finite: the loss and every weight and ADMM variable at
    each epoch end (before the Z/U update), the ADMM variables after each update, and the loss
    after every step when the rounds count steps. When ``fit`` also gets a callback that
    checkpoints every N steps, every step is checked in full. Checkpointing callbacks must
    come after this one in ``fit(callbacks=...)`` (``fit`` says so otherwise), so a
    :class:`NonFiniteError` stops training before they can save the bad state.

    Args:
      check_finite: whether to check for NaN and Inf at all.
    """

    def __init__(self, check_finite: bool = True):
        super().__init__()
        self._supports_tf_logs = True  # Logs stay tensors; only the loss is read from them.
        self.check_finite = bool(check_finite)
        self._check_every_step = False  # Set by AdmmModel.fit.
        self._epoch = 0
        self._named: list[tuple[str, str, tf.Variable]] | None = None

    def on_train_begin(self, logs=None):
        if not isinstance(self.model, AdmmModel):
            raise ValueError(
                "AdmmUpdate: Expected to train a model made by tf_admm.admm_wrap; received: "
                f"model of type {type(self.model).__name__}"
            )
        self._named = finite.named_float_variables(self.model) if self.check_finite else []
        phases.schedule(self.model, self.params)

    def _check(self, logs, variables: bool) -> None:
        """Raises NonFiniteError if the loss in ``logs`` or (if asked) a variable is not finite."""
        if not self.check_finite:
            return
        loss = None
        if logs is not None and "loss" in logs:
            loss = float(logs["loss"])
        bad_loss = loss is not None and not math.isfinite(loss)
        if not (bad_loss or variables):
            return
        culprits = finite.culprits(self._named)
        if not bad_loss and not culprits:
            return
        step = int(self.model.admm_step.numpy())
        raise NonFiniteError(self._epoch, step, loss, culprits)

    def _advance(self, unit: Unit) -> bool:
        """Runs the update due after one more ``unit``; returns whether one ran."""
        event = self.model.advance(unit)
        if event:
            rho = [float(s.rho.numpy()) for w in self.model.admm_wrappers for s in w.slots]
            logging.info(
                "Round %d/%d (%s) done, rho %.3g..%.3g%s%s",
                event["round"],
                self.model.spec.scheduled_rounds(),
                event["phase"],
                min(rho),
                max(rho),
                f"; {event['locked']:.0%} of kept weights locked" if "locked" in event else "",
                f"; next: {event['next']}" if "next" in event else "",
            )
        return bool(event)

    def _implements_train_batch_hooks(self):
        # Per-batch hooks make Keras synchronise after every step; only step-counted rounds and
        # step-wise checkpoints need them.
        unit = getattr(getattr(self.model, "spec", None), "update_unit", Unit.STEP)
        return unit is Unit.STEP or (self.check_finite and self._check_every_step)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, variables=self._check_every_step)
        if self._advance(Unit.STEP):
            self._check(None, variables=True)

    def on_epoch_end(self, epoch, logs=None):
        # Checked before the Z/U update, which must not project NaNs.
        self._check(logs, variables=True)
        self.model.admm_epoch.assign_add(1)
        if self._advance(Unit.EPOCH):
            self._check(None, variables=True)
        if logs is not None:
            logs.update(self.model.admm_logs())


def callbacks(
    log_dir: str | None = None,
    backup_dir: str | None = None,
    *,
    backup_freq: str | int = "epoch",
    delete_backup: bool = True,
    **tensorboard_kwargs,
) -> list[keras.callbacks.Callback]:
    """The callbacks an :class:`AdmmModel` needs in ``fit``, in the order they must run.

    Example:
      >>> history = admm.fit(ds, epochs=30, callbacks=tf_admm.callbacks(backup_dir="run/backup"))
      >>> # Killed? The same call in a new process restores weights, Z, U, rho, masks, phase,
      >>> # step and epoch counters and the optimizer from the last epoch end, and goes on.

    Args:
      log_dir: if given, also a TensorBoard callback writing there (ADMM penalty, residuals and
        per-layer sparsity are among the logged metrics).
      backup_dir: if given, also ``keras.callbacks.BackupAndRestore`` backing up the whole
        training state there, after the Z/U update and the finite check of :class:`AdmmUpdate`.
        A later ``fit`` of the same model, data and settings resumes from it. The directory
        belongs to this one training run.
      backup_freq: ``"epoch"``, or back up every this many steps (every step is then also
        checked for NaN and Inf). With epoch-wise backups a resumed run redoes the interrupted
        epoch from its first batch and, given the same batches per epoch, ends exactly as an
        uninterrupted run (a tf.data shuffle with ``reshuffle_each_iteration`` starts its
        sequence of orders anew in a new process: key the order on the epoch, as
        ``recipes/lenet5_mnist.py`` does). With step-wise backups Keras resumes at the next
        step but feeds the epoch's first batches again, so the result differs a little.
      delete_backup: delete the backup when ``fit`` completes.
      **tensorboard_kwargs: passed to ``keras.callbacks.TensorBoard``.

    Returns:
      A list to pass as (or extend) ``fit(callbacks=...)``; a Keras 3 ``AdmmModel.fit`` runs
      the Keras 3 twins of these callbacks (``tf_admm.keras3.callbacks``).
    """
    result: list[keras.callbacks.Callback] = [AdmmUpdate()]
    # keras3_twin: what a Keras 3 AdmmModel.fit runs instead (tf_admm.keras3.callbacks).
    if log_dir is not None:
        board = keras.callbacks.TensorBoard(log_dir=log_dir, **tensorboard_kwargs)
        board.keras3_twin = ("TensorBoard", dict(log_dir=log_dir, **tensorboard_kwargs))
        result.append(board)
    if backup_dir is not None:
        backup = dict(save_freq=backup_freq, delete_checkpoint=delete_backup)
        result.append(keras.callbacks.BackupAndRestore(backup_dir, **backup))
        result[-1].keras3_twin = ("BackupAndRestore", dict(backup_dir=backup_dir, **backup))
    return result
