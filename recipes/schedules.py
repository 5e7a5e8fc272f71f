"""The recipes' learning rates: step decay, the schedule of a compression run, per-step setting.

A schedule is a function ``(epoch, lr) -> lr`` as ``keras.callbacks.LearningRateScheduler``
takes it. For a spec counted in steps the same functions take an optimizer step in place of the
epoch, applied before every batch by :class:`StepLearningRate`.

Example:

    schedule = schedules.learning_rate_schedule(spec, 1e-3, 1e-3, retrain_epochs=12)
    model.fit(..., callbacks=[keras.callbacks.LearningRateScheduler(schedule)])

The final phase decays by :func:`step_decay` (``decay="step"``) or along a cosine to a final
rate (``decay="cosine"``, :func:`cosine_decay`, the frontier protocol's retraining).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tf_admm
from tf_admm.compat import keras, keras3

__all__ = [
    "DECAYS",
    "Keras3StepLearningRate",
    "StepLearningRate",
    "constant_then_decay",
    "cosine_decay",
    "decay_schedule",
    "learning_rate_schedule",
    "step_decay",
]

# How the final phase's learning rate falls: the names the recipes' --retrain_decay takes.
DECAYS = ("step", "cosine")


def step_decay(base: float, epochs: int, start: int = 0) -> Callable[[int, float], float]:
    """Constant ``base`` for the first half of ``epochs``, then x0.3, then x0.1 (last quarter)."""

    def schedule(epoch, _):
        relative = epoch - start
        if relative < epochs // 2:
            return base
        return base * (0.3 if relative < (3 * epochs) // 4 else 0.1)

    return schedule


def cosine_decay(
    base: float, epochs: int, start: int = 0, final: float = 1e-5
) -> Callable[[int, float], float]:
    """``base`` at ``start``, then along half a cosine to ``final`` after ``epochs`` epochs
    (and ``final`` from then on)."""

    def schedule(epoch, _):
        done = min(max(epoch - start, 0) / max(epochs, 1), 1.0)
        return final + (base - final) * 0.5 * (1.0 + math.cos(math.pi * done))

    return schedule


def decay_schedule(
    decay: str, base: float, epochs: int, start: int = 0, final: float = 1e-5
) -> Callable[[int, float], float]:
    """The final phase's schedule named ``decay`` (one of :data:`DECAYS`); ``final`` is the
    cosine's last rate (step decay ends at a tenth of ``base`` whatever it is)."""
    if decay == "step":
        return step_decay(base, epochs, start=start)
    if decay == "cosine":
        return cosine_decay(base, epochs, start=start, final=final)
    raise ValueError(f"Expected decay in {list(DECAYS)}; received: decay={decay!r}")


def constant_then_decay(
    learning_rate: float,
    retrain_learning_rate: float,
    start: int,
    epochs: int,
    decay: str = "step",
    final_learning_rate: float = 1e-5,
) -> Callable[[int, float], float]:
    """``learning_rate`` before epoch ``start``, then ``epochs`` epochs from
    ``retrain_learning_rate`` down by :func:`decay_schedule` ``decay``."""
    final = decay_schedule(decay, retrain_learning_rate, epochs, start, final_learning_rate)

    def schedule(epoch, lr):
        return learning_rate if epoch < start else final(epoch, lr)

    return schedule


def learning_rate_schedule(
    spec: tf_admm.Spec,
    learning_rate: float,
    retrain_learning_rate: float,
    retrain_epochs: int,
    decay: str = "step",
    final_learning_rate: float = 1e-5,
) -> Callable[[int, float], float]:
    """The learning rate schedule of :func:`recipes.training.compress`, counted in the spec's
    ``update_unit``.

    ``learning_rate`` through the scheduled rounds, except that the retraining between
    progressive pruning stages decays from it like the final retraining does; then
    ``retrain_epochs`` epochs (steps, for a spec counted in steps) from
    ``retrain_learning_rate`` down by ``decay`` (:func:`step_decay`, or :func:`cosine_decay`
    to ``final_learning_rate``). The schedule takes an epoch, or an optimizer step for a spec
    counted in steps.
    """
    every = spec.update_every
    scheduled_epochs = spec.scheduled_rounds() * every
    outer = constant_then_decay(
        learning_rate,
        retrain_learning_rate,
        scheduled_epochs,
        retrain_epochs,
        decay,
        final_learning_rate,
    )
    stage_retraining = [
        ((start - spec.retrain_rounds) * every, start * every) for start in spec.stage_starts()[1:]
    ]

    def schedule(epoch, lr):
        for begin, end in stage_retraining:
            if begin <= epoch < end:
                return step_decay(learning_rate, end - begin, start=begin)(epoch, lr)
        return outer(epoch, lr)

    return schedule


class _StepRate:
    """What :class:`StepLearningRate` does, for a Keras callback class of either Keras."""

    def __init__(self, schedule: Callable[[int, float], float]):
        super().__init__()
        self._schedule = schedule

    def on_train_batch_begin(self, batch, logs=None):
        # On Keras 3 + JAX, reading self.model syncs the trainer's state into the variables,
        # and the next step reads them back: the assignment below reaches that step.
        optimizer = self.model.optimizer
        step = int(optimizer.iterations.numpy())
        optimizer.learning_rate.assign(self._schedule(step, float(optimizer.learning_rate)))


class StepLearningRate(_StepRate, keras.callbacks.Callback):
    """Sets the learning rate before every batch to ``schedule(step, lr)``.

    ``step`` is the optimizer's step count, so a run resumed from a backup continues where it
    stopped; the schedules of this module take it in place of an epoch.
    """


class Keras3StepLearningRate(_StepRate, keras3.callbacks.Callback):
    """:class:`StepLearningRate` for Keras 3 models (any backend)."""
