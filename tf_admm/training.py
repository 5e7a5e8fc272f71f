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

import dataclasses
import inspect
import math
from typing import Any

import numpy as np
from absl import logging
from tf_keras.src.engine import functional as _functional

from tf_admm import allocation, cloning, compat, phases, planning, projections, registry, subclassed
from tf_admm.allocation import Allocation
from tf_admm.compat import keras, tf
from tf_admm.grouping import annotate_plan, attach_ties
from tf_admm.phases import Phase
from tf_admm.planning import Target
from tf_admm.spec import Spec, Unit
from tf_admm.wrapper import AdmmWrapper

__all__ = [
    "AdmmModel",
    "AdmmUpdate",
    "NonFiniteError",
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


def _choose(
    model: keras.Model, spec: Spec
) -> tuple[dict[int, tuple[Any, Any, list[str], str]], dict[int, str]]:
    """({id(layer): (layer, rule, weight names, where the rule is)}, {id(layer): why not} for
    the layers no rule takes); validates every rule."""
    chosen: dict[int, tuple[keras.layers.Layer, Any, list[str], str]] = {}
    left_out: dict[int, str] = {}
    used = [False] * len(spec.rules)
    layers = list(cloning.leaf_layers(model))
    for layer in layers:
        if isinstance(layer, AdmmWrapper):
            raise ValueError(
                f"Layer '{layer.name}': Expected an unwrapped model; received a model that is "
                "already ADMM-wrapped (strip it first with tf_admm.strip)"
            )
        index, rule = spec.rule_for(layer.name, type(layer).__name__)
        if rule is None:
            left_out[id(layer)] = planning.NO_RULE
            continue
        if index is not None:
            used[index] = True
        elif not registry.supports(layer):
            # The default rule applies only to layers that have compressible weights.
            left_out[id(layer)] = planning.unregistered(type(layer).__name__)
            continue
        where = f"rules[{index}] ({rule.describe()})" if index is not None else "default rule"
        try:
            if rule.weights:
                names = [registry.find(layer, name) for name in rule.weights]
            else:
                names = list(registry.compressible_weights(layer))
        except ValueError as error:
            if rule.weights:
                raise ValueError(f"Spec {where}, field 'weights': {error}") from None
            raise ValueError(f"Spec {where} matches layer '{layer.name}': {error}") from None
        if len(set(names)) != len(names):
            raise ValueError(
                f"Spec {where}, layer '{layer.name}': Expected distinct weights; received: "
                f"weights={list(rule.weights)!r}, which name {names!r}"
            )
        chosen[id(layer)] = (layer, rule, list(names), where)
    _check_rules_used(model, spec, layers, used)
    if not chosen:
        raise ValueError(f"Spec matches no compressible layer of model '{model.name}'")
    return chosen, left_out


def _plan(
    model: keras.Model, spec: Spec
) -> tuple[dict[int, tuple[Target, ...]], Spec, planning.Plan]:
    """Resolves the spec against the model: ({id(layer): targets}, the spec with its
    ``target_ratio`` budget split into ``allocated``, the readable plan); validates every
    rule."""
    chosen, left_out = _choose(model, spec)
    spec = _allocate(spec, chosen.values())
    resolved: dict[int, tuple[Target, ...]] = {}
    for key, (layer, rule, names, where) in chosen.items():
        rho = rule.rho if rule.rho is not None else spec.rho.initial
        targets = []
        for name in names:
            shape = tuple(int(d) for d in registry.variable(layer, name).shape)
            structure = _structure(layer, name, rule, where, shape)
            size = int(np.prod(shape))
            groups = Target(name, 0.0, 0.0, **structure).groups(shape)
            if spec.shares_budget(rule):
                sparsity = 1.0 - spec.allocated[f"{layer.name}/{name}"] / size
            else:
                if rule.keep is not None and rule.keep > groups:
                    what = f"{structure['structure']} groups" if structure else "entries"
                    raise ValueError(
                        f"Spec {where}, layer '{layer.name}', weight '{name}': "
                        f"Expected keep <= the weight's {groups} {what}; received: keep={rule.keep}"
                    )
                sparsity = rule.sparsity_for(groups)
            kept = Target(name, sparsity, 0.0, **structure).kept(shape)
            if rule.quantizes and rule.num_levels > kept:
                given = f"clusters={rule.clusters}" if rule.clusters else f"bits={rule.bits}"
                raise ValueError(
                    f"Spec {where}, layer '{layer.name}', weight '{name}': Expected at most as "
                    f"many quantization levels as kept weights ({kept}); received: {given} "
                    f"({rule.num_levels} levels)"
                )
            targets.append(
                Target(
                    name,
                    sparsity,
                    float(rho),
                    bits=rule.bits,
                    scheme=None if rule.scheme is None else rule.scheme.value,
                    clusters=rule.clusters,
                    per_channel=rule.per_channel,
                    centroid_update=spec.centroid_update.value,
                    **structure,
                )
            )
        resolved[key] = tuple(targets)
    readable = annotate_plan(model, resolved, _readable(model, chosen, resolved, left_out))
    return resolved, spec, readable


def _structure(layer, name: str, rule, where: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """The structure fields of the Target for weight ``name`` of ``layer`` under ``rule``
    (empty when the rule prunes single weights); checks that the weight can have them."""
    if rule.structure is None:
        return {}
    culprit = f"Spec {where}, layer '{layer.name}' ({type(layer).__name__}), weight '{name}'"
    layout = registry.structure_layout(layer, name)
    if layout is None:
        raise ValueError(
            f"{culprit}: Expected a weight with filters, input channels and a GEMM view "
            f"({registry.STRUCTURED_LAYERS}); received: structure={rule.structure.value!r}"
        )
    fields = dict(structure=rule.structure.value, layout=layout, block=rule.block)
    fields.update(n=rule.n, m=rule.m)
    try:
        if rule.structure is projections.Structure.N_OF_M:
            projections.structured.check_n_of_m(shape, rule.n, rule.m, layout)
        else:
            projections.group_count(shape, rule.structure, layout, rule.block)
    except ValueError as error:
        raise ValueError(f"{culprit}: {error}") from None
    return fields


def _readable(model: keras.Model, chosen, targets, left_out: dict[int, str]) -> planning.Plan:
    rows = []
    for layer in cloning.leaf_layers(model):
        if not layer.weights:
            continue
        size = sum(int(w.shape.num_elements()) for w in layer.weights)
        kind = type(layer).__name__
        if id(layer) in left_out:
            untouched = tuple(
                f"{path} {'x'.join(str(d) for d in w.shape)}"
                for path, w in registry.variable_paths(layer).items()
                if w.trainable and w.shape.rank >= 2
            )
            row = planning.LayerPlan(layer.name, kind, size, reason=left_out[id(layer)])
            rows.append(dataclasses.replace(row, untouched=untouched))
            continue
        _, _, _, where = chosen[id(layer)]
        weights = []
        for t in targets[id(layer)]:
            shape = tuple(int(d) for d in registry.variable(layer, t.weight).shape)
            weights.append(planning.WeightPlan(target=t, shape=shape, kept=t.kept(shape)))
        weights = tuple(weights)
        reason = None if any(w.compresses for w in weights) else planning.KEEPS_ALL
        rows.append(planning.LayerPlan(layer.name, kind, size, where, weights, reason))
    return planning.Plan(model.name, tuple(rows))


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
    return _plan(model, spec)[2]


def _log(readable: planning.Plan) -> None:
    logging.info("%s", readable)
    for row in readable.left_out:
        if row.warn:
            logging.warning(
                "Layer '%s' (%s) holds trainable weights that tf_admm will not compress (%s): %s%s",
                row.layer,
                row.layer_type,
                ", ".join(row.untouched),
                row.reason,
                f"; {planning.OPT_IN}" if row.reason != planning.NO_RULE else "",
            )


def shared_weights(model: keras.Model, spec: Spec) -> dict[str, tf.Variable]:
    """The weights of ``model`` that share ``spec.target_ratio``, as ``{"layer/weight": var}``.

    Raises:
      ValueError: as :func:`admm_wrap` does, when the spec does not fit the model.
    """
    if not isinstance(spec, Spec):
        spec = Spec.from_dict(spec)
    cloning.check_built(model)
    return _shared(spec, _choose(model, spec)[0].values())


def _shared(spec: Spec, chosen) -> dict[str, tf.Variable]:
    return {
        f"{layer.name}/{name}": registry.variable(layer, name)
        for layer, rule, names, _ in chosen
        if spec.shares_budget(rule)
        for name in names
    }


def _allocate(spec: Spec, chosen) -> Spec:
    """``spec`` with ``allocated`` filled in for the weights that share ``target_ratio``."""
    if spec.target_ratio is None:
        return spec
    shared = _shared(spec, chosen)
    if not shared:
        raise ValueError(
            f"Spec target_ratio={spec.target_ratio!r}: Expected layers to share it (rules "
            "without sparsity, ratio or keep of their own); received none: every rule that "
            "matches gives its own pruning target"
        )
    if spec.allocated is not None:
        given = dict(spec.allocated)
        if set(given) != set(shared):
            raise ValueError(
                f"Spec allocated: Expected counts for exactly the weights sharing target_ratio "
                f"{sorted(shared)}; received counts for {sorted(given)}"
            )
        for key, kept in given.items():
            size = int(shared[key].shape.num_elements())
            if kept > size:
                raise ValueError(
                    f"Spec allocated[{key!r}]: Expected at most the weight's {size} entries; "
                    f"received: {kept}"
                )
        return spec
    if spec.allocation is Allocation.SENSITIVITY:
        raise ValueError(
            "Spec allocation='sensitivity': Expected allocated counts, which need validation "
            "data: use tf_admm.sensitivity_allocation(model, spec, evaluate) and wrap with the "
            "spec it returns"
        )
    total = sum(int(v.shape.num_elements()) for v in shared.values())
    keep = allocation.keep_for_ratio(total, spec.target_ratio, layers=len(shared))
    counts = allocation.allocate(
        {key: v.numpy() for key, v in shared.items()}, keep, spec.allocation.value
    )
    logging.info(
        "Allocation (%s) of %d kept weights of %d (%.1fx): %s",
        spec.allocation.value,
        keep,
        total,
        total / keep,
        ", ".join(f"{k} {c}" for k, c in counts.items()),
    )
    return dataclasses.replace(spec, allocated=counts)


def _check_rules_used(model, spec: Spec, layers, used: list[bool]) -> None:
    for index, rule in enumerate(spec.rules):
        if not used[index]:
            shadowed = [la for la in layers if rule.matches(la.name, type(la).__name__)]
            if shadowed:
                taken = {la.name: spec.rule_for(la.name, type(la).__name__)[0] for la in shadowed}
                raise ValueError(
                    f"Spec rules[{index}] ({rule.describe()}) matches only layers that earlier "
                    "rules already take (the first matching rule wins): "
                    + ", ".join(f"'{name}' by rules[{i}]" for name, i in taken.items())
                    + "; move it before them or narrow the earlier rule"
                )
            candidates = [f"{la.name} ({type(la).__name__})" for la in layers]
            raise ValueError(
                f"Spec rules[{index}] ({rule.describe()}) matches no layer of model "
                f"'{model.name}'; its layers are: {', '.join(candidates)}"
            )


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
    targets, spec, readable = _plan(model, spec)
    _log(readable)

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
        for wrapper in self._wrappers:
            wrapper.quant_begin()
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


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss or variable; raised by :class:`AdmmUpdate`.

    Attributes:
      epoch: the Keras epoch (0-based) in which it was found.
      step: the model's ADMM step count (``admm_step``) when it was found.
      loss: the epoch's mean training loss so far, if known.
      culprits: ``(layer, variable, nan_count, inf_count, size)`` for every non-finite variable,
        where ``variable`` reads like ``"U (kernel_dual)"``: W, Z, U, rho and levels are the
        ADMM symbols of a compressed weight; other weights go by their own names.
    """

    def __init__(
        self,
        epoch: int,
        step: int,
        loss: float | None,
        culprits: list[tuple[str, str, int, int, int]],
    ):
        self.epoch, self.step, self.loss, self.culprits = epoch, step, loss, culprits
        found = "; ".join(
            f"layer '{layer}' {variable}: {nan} NaN and {inf} Inf of {size}"
            for layer, variable, nan, inf, size in culprits
        )
        received = [f"loss={loss}"] if loss is not None and not math.isfinite(loss) else []
        received += [found] if found else []
        super().__init__(
            f"Training stopped at epoch {epoch} (ADMM step {step}): Expected a finite loss and "
            f"finite weights and ADMM variables; received: {'; '.join(received)}. No checkpoint "
            "was written after this was found: the last one (e.g. the BackupAndRestore backup) "
            "holds the last good state. Lower the learning rate or rho, or look for bad inputs"
        )

    def __reduce__(self):
        return type(self), (self.epoch, self.step, self.loss, self.culprits)


_CHECKPOINTING = (keras.callbacks.BackupAndRestore, keras.callbacks.ModelCheckpoint)

# The ADMM symbols of a slot's variables, in the order the error message lists them.
_SYMBOLS = (
    ("W", "variable"),
    ("Z", "auxiliary"),
    ("U", "dual"),
    ("rho", "rho"),
    ("levels", "levels"),
)


def _short_name(variable: tf.Variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _named_float_variables(model: keras.Model) -> list[tuple[str, str, tf.Variable]]:
    """(layer, label, variable) for every floating-point weight of ``model``, ADMM ones first."""
    named: list[tuple[str, str, tf.Variable]] = []
    for layer in cloning.leaf_layers(model):
        name, seen = layer.name, set()
        if isinstance(layer, AdmmWrapper):
            name = layer.layer.name
            for slot in layer.slots:
                for symbol, attribute in _SYMBOLS:
                    variable = getattr(slot, attribute)
                    if variable is not None:
                        named.append((name, f"{symbol} ({_short_name(variable)})", variable))
                        seen.add(id(variable))
        for variable in layer.weights:
            if id(variable) not in seen and variable.dtype.is_floating:
                named.append((name, _short_name(variable), variable))
                seen.add(id(variable))
    return named


@tf.function
def _finite_flags(variables):
    return tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in variables])


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
        self._named = _named_float_variables(self.model) if self.check_finite else []

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
        flags = _finite_flags([v for _, _, v in self._named]).numpy()
        if not bad_loss and flags.all():
            return
        culprits = []
        for (layer, label, variable), finite in zip(self._named, flags):
            if not finite:
                value = variable.numpy()
                culprits.append(
                    (
                        layer,
                        label,
                        int(np.isnan(value).sum()),
                        int(np.isinf(value).sum()),
                        value.size,
                    )
                )
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
