"""The phase machine of a compression run, written once for every Keras adapter.

An ADMM model (the tf_keras :class:`tf_admm.AdmmModel` or the Keras 3
:class:`tf_admm.keras3.AdmmModel`) keeps its progress in four integer variables: ``admm_step``,
``admm_epoch``, ``admm_round`` and ``admm_phase``. :func:`advance` reads them, decides which
Z/U update or phase change is due after one more step or epoch, asks the model's wrappers to
run it and writes the counters back. It knows nothing about Keras: the variables are read with
``numpy()`` and written with ``assign``, which both Keras generations offer, and the
wrappers are asked through their transition methods (``admm_update``, ``hard_project``,
``begin_stage``, ``quant_update``, ``quant_lock``). :func:`schedule` sizes an automatic
schedule's rounds when training begins.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from absl import logging

from tf_admm.spec import Unit

__all__ = ["Phase", "advance", "quant_rho", "schedule", "warn_if_unpruned"]


class Phase(enum.IntEnum):
    """Where a model is in its compression run."""

    ADMM = 0  # Pruning ADMM.
    RETRAIN = 1  # Masked retraining after the hard projection.
    QUANT_ADMM = 2  # ADMM onto the quantization levels.
    QUANT_LOCK = 3  # Iterative quantization: part of the weights locked, the rest retrains.
    QUANT_RETRAIN = 4  # Everything locked; k-means centroids may train.


def read(variable) -> int:
    """The value of an integer counter variable (tf.Variable, a tf.distribute variable or a
    Keras 3 Variable: all of them have ``numpy()``)."""
    return int(variable.numpy())


def quant_rho(spec, index: int) -> Callable[[float], float]:
    """A layer's rho in quantization ADMM round ``index`` (0 at its start), from the layer's
    initial rho: ``Spec.quant_rho`` (the same for every layer) or else ``Spec.rho`` again."""
    if spec.quant_rho is None:
        return lambda initial: spec.rho(index, initial=initial)
    return lambda initial: spec.quant_rho(index)


def advance(model, unit: Unit) -> dict[str, Any]:
    """Runs the Z/U update or phase change of ``model`` that is due after one more ``unit``.

    Args:
      model: an ADMM model: ``spec``, ``admm_wrappers``, ``final_phase``,
        ``begin_quantization()`` and the counters ``admm_step``, ``admm_epoch``,
        ``admm_round`` and ``admm_phase``.
      unit: the unit that just ended (a step or an epoch).

    Returns:
      A dict describing what happened (empty if nothing was due).
    """
    spec = model.spec
    phase = Phase(read(model.admm_phase))
    if unit is not spec.update_unit:
        return {}
    done = read(model.admm_round)
    last_stage = spec.stage_at(done) == len(spec.prune_stages) - 1
    if phase is model.final_phase and (spec.quantizes or last_stage):
        return {}
    elapsed = read(model.admm_step if unit is Unit.STEP else model.admm_epoch)
    if elapsed < (done + 1) * spec.update_every:
        return {}
    wrappers = model.admm_wrappers
    round_ = done + 1
    model.admm_round.assign(round_)
    bounds = spec.phase_boundaries()
    schedule = spec.rho
    event: dict[str, Any] = {"round": round_, "phase": phase.name}
    stages, starts = spec.prune_stages, spec.stage_starts()
    stage = spec.stage_at(done)
    if phase is Phase.ADMM:
        index = done - starts[stage]
        # Each weight follows the schedule from its own initial rho, capped at its maximum.
        for wrapper in wrappers:
            wrapper.admm_update(
                stages[stage], rho=lambda initial: schedule(index + 1, initial=initial)
            )
        if round_ >= starts[stage] + spec.admm_rounds:
            for wrapper in wrappers:
                wrapper.hard_project(stages[stage])
            model.admm_phase.assign(int(Phase.RETRAIN))
            event["next"] = "hard projection, masked retraining"
            if len(stages) > 1:
                event["stage"] = f"{stage + 1}/{len(stages)}"
            phase = Phase.RETRAIN
    if phase is Phase.RETRAIN and stage + 1 < len(stages) and round_ >= starts[stage + 1]:
        for wrapper in wrappers:
            wrapper.begin_stage(stages[stage + 1])
        model.admm_phase.assign(int(Phase.ADMM))
        event["next"] = f"pruning stage {stage + 2}/{len(stages)}: ADMM"
    elif phase is Phase.RETRAIN and spec.quantizes and round_ >= bounds["quant_start"]:
        model.begin_quantization()
        event["next"] = "quantization ADMM"
    elif phase is Phase.QUANT_ADMM:
        rho = quant_rho(spec, round_ - bounds["quant_start"])
        for wrapper in wrappers:
            wrapper.quant_update(rho=rho)
        if round_ >= bounds["quant_admm"]:
            phase = Phase.QUANT_LOCK
            model.admm_phase.assign(int(phase))
    if phase is Phase.QUANT_LOCK:
        step, between = divmod(round_ - bounds["quant_admm"], spec.quant_lock_rounds)
        if between:  # The free weights are still retraining after the last lock.
            return event
        fraction = spec.quant_fractions[step]
        for wrapper in wrappers:
            wrapper.quant_lock(fraction, first=step == 0)
        event["locked"] = fraction
        if step + 1 >= len(spec.quant_fractions):
            model.admm_phase.assign(int(Phase.QUANT_RETRAIN))
            event["next"] = "all weights on levels; training shared values"
    return event


def schedule(model, params: dict[str, Any] | None) -> None:
    """Fixes ``model.spec``'s automatic schedule for the ``fit`` that ``params`` describes
    (Keras' callback params: ``epochs``, ``steps``); nothing once the spec has its rounds."""
    if not model.spec.automatic:
        return
    params = params or {}
    epochs, steps = params.get("epochs") or 1, params.get("steps")
    spec = model.spec = model.spec.scheduled_for(epochs, steps)
    rounds, unit = spec.scheduled_rounds(), spec.update_unit.value
    logging.info(
        "Automatic ADMM schedule: %d rounds of %d %s(s) (the first %.0f%% of this fit), then "
        "retraining",
        rounds,
        spec.update_every,
        unit,
        100 * spec.admm_fraction,
    )
    total = spec.units_in_fit(epochs, steps)
    if rounds * spec.update_every > total:
        logging.warning(
            "This fit has %d %ss, fewer than the %d rounds of the automatic ADMM schedule: the "
            "hard projection comes in a later fit. Give fit the whole training budget at once, "
            "or set Spec(update_every=...)",
            total,
            unit,
            rounds,
        )


def warn_if_unpruned(model) -> None:
    """Warns when ``model`` (an ADMM model) has not reached its final hard projection: its
    weights are not pruned yet, and stripping it now keeps them all."""
    spec = getattr(model, "spec", None)
    if spec is None or not hasattr(model, "admm_phase") or not spec.prunes:
        return
    done = read(model.admm_round)
    last_stage = spec.stage_at(done) == len(spec.prune_stages) - 1
    if Phase(read(model.admm_phase)) is Phase.ADMM or not last_stage:
        final = spec.phase_boundaries()["prune_admm"]
        logging.warning(
            "Model '%s' is in pruning round %d of %d, before its final hard projection: its "
            "weights are not pruned yet, and the stripped model keeps them. Train on until "
            "round %d (spec.phase_boundaries()['prune_admm'])",
            model.name,
            done,
            final,
            final,
        )
