"""How a recipe trains: dense pretraining (or its cached checkpoint), then every phase of a spec.

:func:`pretrain` trains the dense model with Adam once per setting and caches its weights;
:func:`compress` wraps it with :func:`tf_admm.admm_wrap` and runs the spec's phases (pruning
ADMM, hard projection, masked retraining, quantization ADMM, locking, final training) with the
learning rates of :mod:`recipes.schedules`. Both back up their whole state after every epoch, so
a killed run started again resumes (:class:`ResumeLog` says so), and :class:`PhaseTimer` counts
the seconds of each phase.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from absl import logging

import tf_admm
from recipes import run_files, schedules, stacks
from tf_admm.compat import keras, keras3, tf

__all__ = [
    "EpochCounter",
    "Keras3PhaseTimer",
    "Keras3ResumeLog",
    "PhaseTimer",
    "ResumeLog",
    "accuracy_metrics",
    "compress",
    "loss",
    "pretrain",
]


def loss(api: ModuleType = keras) -> keras.losses.Loss:
    """Cross-entropy on logits with integer labels, as every recipe's model outputs logits.

    Args:
      api: the Keras of the model it is for (tf_keras, or Keras 3 ``keras``).
    """
    return api.losses.SparseCategoricalCrossentropy(from_logits=True)


def accuracy_metrics() -> list[Any]:
    """Top-1 accuracy only (a new list per call: Keras metrics belong to one model)."""
    return ["accuracy"]


class _Resumed:
    """What :class:`ResumeLog` does, for a callback class of either Keras."""

    def __init__(self, phase: str, steps_per_epoch: int, resumed: dict[str, int]):
        super().__init__()
        self._phase, self._steps, self._resumed = phase, steps_per_epoch, resumed

    def on_train_begin(self, logs=None):
        epochs = int(self.model.optimizer.iterations.numpy()) // self._steps
        if epochs:
            logging.info("Resuming %s from its backup after %d epoch(s)", self._phase, epochs)
            self._resumed[self._phase] = epochs


class ResumeLog(_Resumed, keras.callbacks.Callback):
    """Says whether ``fit`` resumed from a backup; goes after BackupAndRestore.

    Args:
      phase: name logged and used as key in ``resumed``.
      steps_per_epoch: optimizer steps of one epoch.
      resumed: gets ``{phase: epochs done}`` when training resumed.
    """


class Keras3ResumeLog(_Resumed, keras3.callbacks.Callback):
    """:class:`ResumeLog` for Keras 3 models (any backend)."""


class _TimedPhases:
    """What :class:`PhaseTimer` does, for a callback class of either Keras."""

    def __init__(self, model: tf_admm.AdmmModel, times: dict[str, float]):
        super().__init__()
        self._admm_model, self._times = model, times

    def on_epoch_begin(self, epoch, logs=None):
        # On Keras 3 + JAX the variables hold the trainer's state between epochs.
        self._phase = self._admm_model.phase.name.lower()
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._start
        self._times[self._phase] = self._times.get(self._phase, 0.0) + elapsed


class _HeldOut:
    """What :class:`HeldOutAccuracy` does, for a callback class of either Keras."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, chunk: int = 1000):
        super().__init__()
        self._images, self._labels, self._chunk = images, labels, chunk
        self.curve: list[dict[str, Any]] = []

    def on_epoch_end(self, epoch, logs=None):
        correct = 0
        for start in range(0, len(self._labels), self._chunk):
            end = start + self._chunk
            scores = np.asarray(self.model(self._images[start:end], training=False))
            correct += int(np.sum(np.argmax(scores, axis=-1) == self._labels[start:end]))
        accuracy = correct / len(self._labels)
        if logs is not None:
            logs["val_accuracy"] = accuracy
        phase = self.model.phase.name.lower()
        self.curve.append({"epoch": epoch + 1, "phase": phase, "accuracy": accuracy})


class HeldOutAccuracy(_HeldOut, keras.callbacks.Callback):
    """Top-1 accuracy of the ADMM model on held-out images after every epoch: ``val_accuracy``
    in the epoch's logs (progress bar, TensorBoard) and, with the phase the model is in at the
    epoch's end, in :attr:`curve` (the epochs of this process: a resumed run lacks the ones
    before its backup).

    Args:
      images: the held-out images, as the model takes them (host arrays).
      labels: their integer labels.
      chunk: images per forward pass.
    """


class Keras3HeldOutAccuracy(_HeldOut, keras3.callbacks.Callback):
    """:class:`HeldOutAccuracy` for Keras 3 ADMM models (any backend)."""


def held_out_accuracy(api: ModuleType, images, labels) -> _HeldOut:
    """The :class:`HeldOutAccuracy` callback of ``api``'s Keras."""
    return (Keras3HeldOutAccuracy if api is keras3 else HeldOutAccuracy)(images, labels)


class PhaseTimer(_TimedPhases, keras.callbacks.Callback):
    """Adds each epoch's seconds to ``times[phase]``, the phase an ADMM model is in."""


class Keras3PhaseTimer(_TimedPhases, keras3.callbacks.Callback):
    """:class:`PhaseTimer` for Keras 3 ADMM models (any backend)."""


class EpochCounter(keras3.callbacks.Callback):
    """Holds the epoch a Keras 3 ``fit`` is in, in a ``tf.Variable`` an input pipeline reads.

    The tf_keras recipes key their data order on ``optimizer.iterations``, which a tf.data
    function reads when an epoch's iteration starts. On JAX that variable is not a TensorFlow
    one (a tf.data function would freeze its value when traced), and during ``fit`` the
    trainer holds the state; this callback sets :attr:`epoch` at every epoch's beginning
    instead, which on every backend comes before the epoch's batches are drawn, and after
    ``BackupAndRestore`` (a resumed run's first epoch is the one it resumes at).
    """

    def __init__(self):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


def _resume_log(api: ModuleType, *args) -> keras.callbacks.Callback:
    return (Keras3ResumeLog if api is keras3 else ResumeLog)(*args)


def pretrain(
    model: keras.Model,
    train_data: Callable[[keras.optimizers.Optimizer], tf.data.Dataset],
    test_ds: tf.data.Dataset,
    *,
    checkpoint: str,
    backup: str,
    learning_rate: float,
    epochs: int,
    schedule: Callable[[int, float], float],
    resumed: dict[str, int],
    description: str,
    metrics: Callable[[], list[Any]] = accuracy_metrics,
    steps_per_epoch: int | None = None,
    verbose: int = 1,
    callbacks: Sequence[Any] = (),
) -> dict[str, float]:
    """Trains ``model`` with Adam, or loads its cached ``checkpoint``; returns its test metrics.

    The finished weights go to ``checkpoint`` (atomically), so a later run with the same
    settings loads them instead of training again. A killed pretraining resumes from its
    BackupAndRestore state in ``backup``, which is removed once the checkpoint exists.

    Args:
      model: the dense model, uncompiled; compiled here.
      train_data: builds the training batches for the model's optimizer (which gives the epoch
        to key a data order on).
      test_ds: test batches.
      checkpoint: ``.weights.h5`` file of the trained weights.
      backup: BackupAndRestore directory of this pretraining.
      learning_rate: Adam's initial learning rate.
      epochs: training epochs.
      schedule: learning rate per epoch, for ``keras.callbacks.LearningRateScheduler``.
      resumed: gets ``{"pretraining": epochs}`` when the run resumed.
      description: the model's name in log messages.
      metrics: returns the metrics to compile with.
      steps_per_epoch: steps of an epoch on a repeated dataset; None: one pass.
      verbose: Keras fit verbosity.
      callbacks: more callbacks for ``fit`` (of the model's Keras, e.g. an
        :class:`EpochCounter`).

    Returns:
      ``model.evaluate(test_ds, return_dict=True)``.
    """
    api = stacks.api_of(model)  # tf_keras, or Keras 3 on any backend.
    if os.path.exists(checkpoint):
        logging.info("Loading cached dense model from %s", checkpoint)
        model.load_weights(checkpoint)
        model.compile(loss=loss(api), metrics=metrics())
    else:
        model.compile(api.optimizers.Adam(learning_rate), loss(api), metrics=metrics())
        logging.info("Pretraining dense %s for %d epochs", description, epochs)
        train_ds = train_data(model.optimizer)
        model.fit(
            train_ds,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            verbose=verbose,
            callbacks=[
                api.callbacks.LearningRateScheduler(schedule),
                api.callbacks.BackupAndRestore(backup, delete_checkpoint=False),
                _resume_log(api, "pretraining", steps_per_epoch or len(train_ds), resumed),
                *callbacks,
            ],
        )
        run_files.save_weights_atomically(model, checkpoint)
    # Kept until the dense checkpoint is safely written.
    shutil.rmtree(backup, ignore_errors=True)
    return model.evaluate(test_ds, verbose=0, return_dict=True)


def compress(
    dense: keras.Model,
    spec: tf_admm.Spec,
    train_data: Callable[[keras.optimizers.Optimizer], tf.data.Dataset],
    *,
    learning_rate: float,
    retrain_learning_rate: float,
    retrain_epochs: int,
    log_dir: str,
    backup: str,
    resumed: dict[str, int],
    retrain_decay: str = "step",
    final_learning_rate: float = 1e-5,
    metrics: Callable[[], list[Any]] = accuracy_metrics,
    objective: Callable[[], keras.losses.Loss] | None = None,
    steps_per_epoch: int | None = None,
    verbose: int = 1,
    callbacks: Sequence[Any] = (),
) -> tuple[tf_admm.AdmmModel, dict[str, float]]:
    """Runs every phase of ``spec`` on a copy of ``dense``.

    Adam at ``learning_rate`` through the scheduled rounds (pruning ADMM, retraining,
    quantization ADMM, locking), then ``retrain_epochs`` epochs of the final phase from
    ``retrain_learning_rate`` down by ``retrain_decay`` (:func:`recipes.schedules.step_decay`,
    or a cosine to ``final_learning_rate``). The ADMM state is
    backed up in ``backup`` after every epoch (the caller removes it when all is done).

    A spec counted in epochs sets the learning rate per epoch. A spec counted in steps (Z/U
    updates every ``update_every`` steps) sets it per step: the scheduled rounds take
    ``ceil(rounds * update_every / steps_per_epoch)`` epochs, and the final phase starts in
    the middle of the last of them, so it gets the rest of that epoch on top of its
    ``retrain_epochs``.

    Args:
      dense: the trained dense model.
      spec: the compression spec.
      train_data: builds the training batches for the ADMM model's optimizer.
      learning_rate: Adam's learning rate during the scheduled rounds.
      retrain_learning_rate: Adam's learning rate at the start of the final phase.
      retrain_epochs: epochs of the final phase.
      log_dir: TensorBoard directory.
      backup: BackupAndRestore directory of this run.
      resumed: gets ``{"ADMM": epochs}`` when the run resumed.
      retrain_decay: how the final phase's learning rate falls, one of
        :data:`recipes.schedules.DECAYS`.
      final_learning_rate: the last learning rate of a cosine ``retrain_decay``.
      metrics: returns the metrics to compile with.
      objective: returns the loss to compile with (e.g. a
        :class:`recipes.distillation.DistillationLoss`, whose targets ``train_data`` yields);
        None: :func:`loss` of the model's Keras.
      steps_per_epoch: steps of an epoch on a repeated dataset; None: one pass.
      verbose: Keras fit verbosity.
      callbacks: more callbacks for ``fit`` (of the model's Keras, e.g. an
        :class:`EpochCounter`).

    Returns:
      The trained :class:`tf_admm.AdmmModel` and the seconds spent per phase (``admm``,
      ``retrain``, ``quant_admm``, ``quant_lock``, ``quant_retrain``, those that ran).
    """
    if spec.automatic:
        raise ValueError(
            "Recipe: Expected a spec with a fixed schedule (the recipes count epochs from it); "
            "received: update_every=None (the automatic schedule). Give update_every (and "
            'update_unit, "step" or "epoch") in the config'
        )
    api = stacks.api_of(dense)  # tf_keras, or Keras 3 on any backend.
    model = tf_admm.admm_wrap(dense, spec)
    compiled_loss = objective() if objective is not None else loss(api)
    model.compile(api.optimizers.Adam(learning_rate), compiled_loss, metrics=metrics())
    train_ds = train_data(model.optimizer)
    scheduled = spec.scheduled_rounds() * spec.update_every
    if spec.update_unit is tf_admm.Unit.STEP:
        steps = steps_per_epoch or len(train_ds)
        scheduled_epochs = math.ceil(scheduled / steps)
        final_steps = (scheduled_epochs + retrain_epochs) * steps - scheduled
        step_rates = (
            schedules.Keras3StepLearningRate if api is keras3 else schedules.StepLearningRate
        )
        rates = step_rates(
            schedules.learning_rate_schedule(
                spec,
                learning_rate,
                retrain_learning_rate,
                final_steps,
                retrain_decay,
                final_learning_rate,
            )
        )
    else:
        scheduled_epochs = scheduled
        rates = api.callbacks.LearningRateScheduler(
            schedules.learning_rate_schedule(
                spec,
                learning_rate,
                retrain_learning_rate,
                retrain_epochs,
                retrain_decay,
                final_learning_rate,
            )
        )
    phase_times: dict[str, float] = {}
    logging.info(
        "%d scheduled rounds of %d %s(s) (%d pruning stage(s) at %s of the final ratios, "
        "each: ADMM %d, then retraining %d; quantization ADMM %d, locking %d x %d), then %d "
        "epochs in the final phase",
        spec.scheduled_rounds(),
        spec.update_every,
        spec.update_unit.value,
        len(spec.prune_stages) if spec.prunes else 0,
        list(spec.prune_stages),
        spec.admm_rounds if spec.prunes else 0,
        spec.retrain_rounds if spec.prunes else 0,
        spec.quant_admm_rounds if spec.quantizes else 0,
        len(spec.quant_fractions) if spec.quantizes else 0,
        spec.quant_lock_rounds,
        retrain_epochs,
    )
    # tf_admm.callbacks puts the backup after the ADMM update and its NaN/Inf check: a backup
    # holds an epoch's Z/U update with the epoch, and never a non-finite state.
    model.fit(
        train_ds,
        epochs=scheduled_epochs + retrain_epochs,
        steps_per_epoch=steps_per_epoch,
        verbose=verbose,
        callbacks=tf_admm.callbacks(log_dir=log_dir, backup_dir=backup, delete_backup=False)
        + [
            _resume_log(api, "ADMM", steps_per_epoch or len(train_ds), resumed),
            rates,
            (Keras3PhaseTimer if api is keras3 else PhaseTimer)(model, phase_times),
            *callbacks,
        ],
    )
    return model, phase_times
