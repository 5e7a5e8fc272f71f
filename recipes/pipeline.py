"""What the recipes share: pretraining, ADMM compression, reports, export, image data.

A recipe pretrains a dense model (or loads a cached or given one), wraps it with
:func:`tf_admm.admm_wrap` and trains it through the spec's phases (pruning ADMM, hard projection,
masked retraining, quantization ADMM, locking, final training) with Adam, strips it, reports
nonzeros and storage, exports a verified ``.tflite`` file, and writes ``results.json``.

The pieces (:func:`pretrain`, :func:`compress`, :func:`summarize`, :func:`export_tflite`,
:func:`print_report`, ...) serve ``recipes.lenet5_mnist``; :func:`run_image_recipe` composes them
for the ImageNet and CIFAR-10 recipes, which differ only in an :class:`ImageTask` (dataset,
model, preprocessing) and their flag defaults (:func:`define_image_flags`).

Every image recipe also runs on synthetic data (``--synthetic_data``): seeded random images of
the model's input shape whose mean colour depends on the class, generated in the process, so
the whole pipeline runs in seconds on tiny models with no dataset at hand.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import app, flags, logging

import tf_admm
from recipes import data, quiet_logs
from tf_admm import report
from tf_admm.compat import keras, tf

__all__ = [
    "DatasetUnavailableError",
    "ImageFlags",
    "ImageSettings",
    "ImageTask",
    "PhaseTimer",
    "ResumeLog",
    "StepLearningRate",
    "accuracy_metrics",
    "backup_dir",
    "compress",
    "configured_bits",
    "constant_then_decay",
    "default_image_settings",
    "define_image_flags",
    "export_tflite",
    "image_settings_from_flags",
    "learning_rate_schedule",
    "loss",
    "main_for",
    "prepare_tfds",
    "provenance",
    "pretrain",
    "print_report",
    "run_image_recipe",
    "save_weights_atomically",
    "step_decay",
    "summarize",
    "synthetic_images",
    "write_json_atomically",
]

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


class DatasetUnavailableError(RuntimeError):
    """The dataset a recipe needs is not prepared and cannot be prepared here."""


# ----------------------------------------------------------------------------------------------
# Training pieces
# ----------------------------------------------------------------------------------------------


def loss() -> keras.losses.Loss:
    """Cross-entropy on logits with integer labels, as every recipe's model outputs logits."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def accuracy_metrics() -> list[Any]:
    """Top-1 accuracy only (a new list per call: Keras metrics belong to one model)."""
    return ["accuracy"]


def step_decay(base: float, epochs: int, start: int = 0) -> Callable[[int, float], float]:
    """Constant ``base`` for the first half of ``epochs``, then x0.3, then x0.1 (last quarter)."""

    def schedule(epoch, _):
        relative = epoch - start
        if relative < epochs // 2:
            return base
        return base * (0.3 if relative < (3 * epochs) // 4 else 0.1)

    return schedule


def save_weights_atomically(model: keras.Model, path: str) -> None:
    """Writes ``model``'s weights to ``path`` (.h5) so that ``path`` is never half written."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.tmp.weights.h5")
    try:
        model.save_weights(temporary)
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def provenance(module: str, seed: int) -> dict[str, Any]:
    """What a results file needs to be quoted: the command, the commit, the seed and when.

    ``commit`` is the checkout's ``git`` HEAD (``+`` when files differ from it), or None
    outside a git checkout.
    """
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+"
    return {
        "command": " ".join(["python", "-m", module, *map(shlex.quote, sys.argv[1:])]),
        "commit": commit,
        "seed": seed,
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json_atomically(path: str, value: Any) -> None:
    """Writes ``value`` as indented JSON to ``path`` through a temporary file."""
    with open(f"{path}.tmp", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    os.replace(f"{path}.tmp", path)


def backup_dir(model_dir: str, phase: str, *parts: Any) -> str:
    """A backup directory of its own for ``phase`` run with the settings ``parts``."""
    key = json.dumps([phase, *parts], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return os.path.join(model_dir, "backup", f"{phase}_{digest}")


class ResumeLog(keras.callbacks.Callback):
    """Says whether ``fit`` resumed from a backup; goes after BackupAndRestore.

    Args:
      phase: name logged and used as key in ``resumed``.
      steps_per_epoch: optimizer steps of one epoch.
      resumed: gets ``{phase: epochs done}`` when training resumed.
    """

    def __init__(self, phase: str, steps_per_epoch: int, resumed: dict[str, int]):
        super().__init__()
        self._phase, self._steps, self._resumed = phase, steps_per_epoch, resumed

    def on_train_begin(self, logs=None):
        epochs = int(self.model.optimizer.iterations.numpy()) // self._steps
        if epochs:
            logging.info("Resuming %s from its backup after %d epoch(s)", self._phase, epochs)
            self._resumed[self._phase] = epochs


class PhaseTimer(keras.callbacks.Callback):
    """Adds each epoch's seconds to ``times[phase]``, the phase an ADMM model is in."""

    def __init__(self, model: tf_admm.AdmmModel, times: dict[str, float]):
        super().__init__()
        self._admm_model, self._times = model, times

    def on_epoch_begin(self, epoch, logs=None):
        self._phase = self._admm_model.phase.name.lower()
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._start
        self._times[self._phase] = self._times.get(self._phase, 0.0) + elapsed


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

    Returns:
      ``model.evaluate(test_ds, return_dict=True)``.
    """
    if os.path.exists(checkpoint):
        logging.info("Loading cached dense model from %s", checkpoint)
        model.load_weights(checkpoint)
        model.compile(loss=loss(), metrics=metrics())
    else:
        model.compile(keras.optimizers.Adam(learning_rate), loss(), metrics())
        logging.info("Pretraining dense %s for %d epochs", description, epochs)
        train_ds = train_data(model.optimizer)
        model.fit(
            train_ds,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            verbose=verbose,
            callbacks=[
                keras.callbacks.LearningRateScheduler(schedule),
                keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False),
                ResumeLog("pretraining", steps_per_epoch or len(train_ds), resumed),
            ],
        )
        save_weights_atomically(model, checkpoint)
    # Kept until the dense checkpoint is safely written.
    shutil.rmtree(backup, ignore_errors=True)
    return model.evaluate(test_ds, verbose=0, return_dict=True)


class StepLearningRate(keras.callbacks.Callback):
    """Sets the learning rate before every batch to ``schedule(step, lr)``.

    ``step`` is the optimizer's step count, so a run resumed from a backup continues where it
    stopped; the schedules of this module take it in place of an epoch.
    """

    def __init__(self, schedule: Callable[[int, float], float]):
        super().__init__()
        self._schedule = schedule

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        step = int(optimizer.iterations.numpy())
        optimizer.learning_rate.assign(self._schedule(step, float(optimizer.learning_rate)))


def constant_then_decay(
    learning_rate: float, retrain_learning_rate: float, start: int, epochs: int
) -> Callable[[int, float], float]:
    """``learning_rate`` before epoch ``start``, then ``epochs`` epochs from
    ``retrain_learning_rate`` down by :func:`step_decay`."""
    final = step_decay(retrain_learning_rate, epochs, start=start)

    def schedule(epoch, lr):
        return learning_rate if epoch < start else final(epoch, lr)

    return schedule


def learning_rate_schedule(
    spec: tf_admm.Spec, learning_rate: float, retrain_learning_rate: float, retrain_epochs: int
) -> Callable[[int, float], float]:
    """The learning rate schedule of :func:`compress`, counted in the spec's ``update_unit``.

    ``learning_rate`` through the scheduled rounds, except that the retraining between
    progressive pruning stages decays from it like the final retraining does; then
    ``retrain_epochs`` epochs (steps, for a spec counted in steps) from
    ``retrain_learning_rate`` down by :func:`step_decay`. The schedule takes an epoch, or an
    optimizer step for a spec counted in steps.
    """
    every = spec.update_every
    scheduled_epochs = spec.scheduled_rounds() * every
    outer = constant_then_decay(
        learning_rate, retrain_learning_rate, scheduled_epochs, retrain_epochs
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
    metrics: Callable[[], list[Any]] = accuracy_metrics,
    objective: Callable[[], keras.losses.Loss] = loss,
    steps_per_epoch: int | None = None,
    verbose: int = 1,
) -> tuple[tf_admm.AdmmModel, dict[str, float]]:
    """Runs every phase of ``spec`` on a copy of ``dense``.

    Adam at ``learning_rate`` through the scheduled rounds (pruning ADMM, retraining,
    quantization ADMM, locking), then ``retrain_epochs`` epochs of the final phase from
    ``retrain_learning_rate`` down by :func:`step_decay`. The ADMM state is backed up in
    ``backup`` after every epoch (the caller removes it when all is done).

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
      metrics: returns the metrics to compile with.
      objective: returns the loss to compile with (e.g. a
        :class:`recipes.distillation.DistillationLoss`, whose targets ``train_data`` yields).
      steps_per_epoch: steps of an epoch on a repeated dataset; None: one pass.
      verbose: Keras fit verbosity.

    Returns:
      The trained :class:`tf_admm.AdmmModel` and the seconds spent per phase (``admm``,
      ``retrain``, ``quant_admm``, ``quant_lock``, ``quant_retrain``, those that ran).
    """
    model = tf_admm.admm_wrap(dense, spec)
    model.compile(keras.optimizers.Adam(learning_rate), objective(), metrics())
    train_ds = train_data(model.optimizer)
    scheduled = spec.scheduled_rounds() * spec.update_every
    if spec.update_unit is tf_admm.Unit.STEP:
        steps = steps_per_epoch or len(train_ds)
        scheduled_epochs = math.ceil(scheduled / steps)
        final_steps = (scheduled_epochs + retrain_epochs) * steps - scheduled
        rates = StepLearningRate(
            learning_rate_schedule(spec, learning_rate, retrain_learning_rate, final_steps)
        )
    else:
        scheduled_epochs = scheduled
        rates = keras.callbacks.LearningRateScheduler(
            learning_rate_schedule(spec, learning_rate, retrain_learning_rate, retrain_epochs)
        )
    phase_times: dict[str, float] = {}
    logging.info(
        "%d scheduled rounds of %d %s(s) (%d pruning stage(s) at %s of the final ratios, "
        "each: ADMM %d, then retraining %d; quantization ADMM %d, locking %d), then %d epochs "
        "in the final phase",
        spec.scheduled_rounds(),
        spec.update_every,
        spec.update_unit.value,
        len(spec.prune_stages) if spec.prunes else 0,
        list(spec.prune_stages),
        spec.admm_rounds if spec.prunes else 0,
        spec.retrain_rounds if spec.prunes else 0,
        spec.quant_admm_rounds if spec.quantizes else 0,
        len(spec.quant_fractions) if spec.quantizes else 0,
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
            ResumeLog("ADMM", steps_per_epoch or len(train_ds), resumed),
            rates,
            PhaseTimer(model, phase_times),
        ],
    )
    return model, phase_times


def configured_bits(model: tf_admm.AdmmModel) -> dict[str, int]:
    """Bits per kept weight that the spec gives each quantized layer, by layer name."""
    bits = {}
    for wrapper in model.admm_wrappers:
        for slot in wrapper.slots:
            if slot.target.bits is not None:
                bits[wrapper.layer.name] = slot.target.bits
    return bits


def summarize(
    pruned: keras.Model, admm_model: tf_admm.AdmmModel
) -> tuple[list[report.LayerCompression], tf_admm.storage.StorageReport, dict[str, Any]]:
    """Per-layer nonzeros and storage of the stripped ``pruned`` model.

    Returns:
      The compression table, the storage report (values coded with the configured bits) and
      the results entries ``weights``, ``nonzeros``, ``pruning_ratio``, ``layers``, ``storage``.
    """
    table = report.compression_table(pruned)
    storage = report.storage_report(pruned, bits=configured_bits(admm_model))
    total_weights = sum(r.weights for r in table)
    total_nonzeros = sum(r.nonzeros for r in table)
    return (
        table,
        storage,
        {
            "weights": total_weights,
            "nonzeros": total_nonzeros,
            "pruning_ratio": total_weights / total_nonzeros,
            "layers": [r.to_dict() for r in table],
            "storage": storage.to_dict(),
        },
    )


def export_tflite(
    model: keras.Model,
    test_ds: tf.data.Dataset,
    path: str,
    *,
    top_k: int | None = None,
    representative_data: Any = None,
) -> dict[str, Any]:
    """Writes the verified .tflite file and measures its test accuracy in LiteRT.

    Args:
      model: the stripped model.
      test_ds: test batches of ``(images, labels)``.
      path: the ``.tflite`` file to write.
      top_k: also measure top-``k`` accuracy (``top{k}_accuracy``).
      representative_data: calibration inputs (training images, not test images): a
        full-integer file (int8 activations, float inputs and outputs) instead of float compute.

    Returns:
      Sizes, ratio, the LiteRT accuracy and the whole export report as a dict.
    """
    import tflite_export
    from tflite_export import verify

    export_report = tflite_export.export(model, path, representative_data=representative_data)
    print(export_report.format())
    with open(path, "rb") as f:
        contents = f.read()
    correct = correct_top_k = total = 0
    for images, labels in test_ds:
        (logits,) = verify.run(contents, [images.numpy()])
        labels = labels.numpy()
        correct += int(np.sum(np.argmax(logits, axis=-1) == labels))
        if top_k:
            best = np.argsort(-logits, axis=-1)[:, :top_k]
            correct_top_k += int(np.sum(np.any(best == labels[:, None], axis=-1)))
        total += int(labels.shape[0])
    results = {
        "path": path,
        "file_bytes": export_report.file_bytes,
        "float_file_bytes": export_report.float_file_bytes,
        "gzip_bytes": export_report.gzip_bytes,
        "float_gzip_bytes": export_report.float_gzip_bytes,
        "ratio_vs_float": export_report.compression_ratio,
        "accuracy": correct / total,
        "activations": "float32" if representative_data is None else "int8",
        "report": export_report.to_dict(),
    }
    if top_k:
        results[f"top{top_k}_accuracy"] = correct_top_k / total
    return results


def print_report(
    table: list[report.LayerCompression],
    storage: tf_admm.storage.StorageReport,
    results: dict[str, Any],
    accuracy_line: str,
) -> None:
    """Prints the per-layer table, the storage report, accuracies, the file and the timings."""
    print(report.format_compression_table(table))
    print()
    print("Storage (values coded as trained, sparse layers with relative indices):")
    print(tf_admm.storage.format_report(storage))
    print()
    print(accuracy_line)
    for key, label in (("tflite", "TFLite"), ("tflite_int8", "TFLite full-int8")):
        if key not in results:
            continue
        lite = results[key]
        print(
            f"{label}: {lite['path']}: {lite['file_bytes']:,} B ({lite['ratio_vs_float']:.1f}x "
            f"smaller than the dense float file of {lite['float_file_bytes']:,} B; gzip "
            f"{lite['gzip_bytes']:,} B); test accuracy in LiteRT {100 * lite['accuracy']:.2f}%"
        )
    print("Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in results["seconds"].items()))
    print(f"Stripped model: {results['model']}")


# ----------------------------------------------------------------------------------------------
# Image data: TFDS or synthetic
# ----------------------------------------------------------------------------------------------


def prepare_tfds(name: str, data_dir: str | None, *, download: bool, help_text: str) -> str:
    """Makes TFDS dataset ``name`` ready in ``data_dir`` (TFDS' default if None) or says why not.

    A prepared dataset is used as it is. Otherwise, with ``download``, TFDS' own
    ``download_and_prepare`` runs: it downloads (needs internet) or, for datasets with a manual
    download such as ``imagenet2012``, builds from the archives in ``<data_dir>/downloads/manual``.

    Returns:
      The data directory, for ``tfds.load``.

    Raises:
      DatasetUnavailableError: when the dataset is not prepared and cannot be; the message
        ends with ``help_text``.
    """
    import tensorflow_datasets as tfds

    data_dir = os.fspath(Path(data_dir).expanduser()) if data_dir else data.default_data_dir()
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return data_dir
    if not download:
        raise DatasetUnavailableError(
            f"Expected TFDS {name} prepared in {data_dir}; received: not prepared, and "
            f"downloading is off. {help_text}"
        )
    logging.info("Preparing TFDS %s in %s (a download needs internet)", name, data_dir)
    try:
        builder.download_and_prepare()
    except Exception as error:  # Network, missing manual files, disk: all end the same way.
        raise DatasetUnavailableError(
            f"Expected TFDS {name} prepared in {data_dir}; received: {type(error).__name__}: "
            f"{error}. {help_text}"
        ) from error
    return data_dir


def synthetic_images(
    count: int, image_size: int, num_classes: int, seed: int, *, salt: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random uint8 images whose mean colour depends on the class, and their labels.

    Every class has a colour drawn from ``seed``; an image is half its class colour, half
    uniform noise drawn from ``(seed, salt)``. Different ``salt`` values give different samples
    of the same classes (a training and a test set).

    Returns:
      ``images`` of shape ``(count, image_size, image_size, 3)`` and int64 ``labels``.
    """
    colours = np.random.default_rng(seed).integers(0, 256, size=(num_classes, 3))
    rng = np.random.default_rng([seed, salt + 1])
    labels = rng.integers(0, num_classes, size=count)
    noise = rng.integers(0, 256, size=(count, image_size, image_size, 3))
    images = (colours[labels][:, None, None, :] + noise) // 2
    return images.astype(np.uint8), labels.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class ImageTask:
    """What one image classification recipe brings: dataset, model and preprocessing.

    Attributes:
      name: the recipe's name (``alexnet_imagenet``); names the files it writes.
      description: the model in log messages.
      tfds_name: the TFDS dataset.
      train_split: its training split.
      test_split: its evaluation split.
      num_classes: classes of the dataset.
      image_size: default square input size.
      mean: per-channel mean of the images in [0, 1], subtracted after scaling.
      std: per-channel standard deviation the images are divided by.
      build_model: ``(num_classes, input_shape, width_multiplier, batch_norm) -> model``.
      preprocess_train: ``(uint8 image, size, seed) -> image of size x size`` with augmentation.
      preprocess_test: ``(uint8 image, size) -> image of size x size``.
      help_text: how to get the dataset, ending errors about it.
      shuffle_buffer: examples in the training shuffle buffer.
      top_k: also report top-``k`` accuracy (ImageNet's top-5).
    """

    name: str
    description: str
    tfds_name: str
    train_split: str
    test_split: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build_model: Callable[..., keras.Model]
    preprocess_train: Callable[[tf.Tensor, int, int], tf.Tensor]
    preprocess_test: Callable[[tf.Tensor, int], tf.Tensor]
    help_text: str
    shuffle_buffer: int = 10_000
    top_k: int | None = None

    def metrics(self) -> list[Any]:
        """Top-1 accuracy, and top-``k`` when the task reports it (new objects every call)."""
        result: list[Any] = ["accuracy"]
        if self.top_k:
            result.append(
                keras.metrics.SparseTopKCategoricalAccuracy(
                    self.top_k, name=f"top{self.top_k}_accuracy"
                )
            )
        return result


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """Everything :func:`run_image_recipe` needs, so tests can call it without flags.

    Attributes:
      spec: the compression spec (update unit ``"epoch"``).
      model_dir: where checkpoints, models, logs and ``results.json`` go.
      data_dir: TFDS data directory (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      download: let TFDS download (or build from manual archives) a dataset not yet prepared.
      synthetic_data: train and test on :func:`synthetic_images` instead of the dataset.
      synthetic_examples: synthetic training examples (the test set gets a quarter, >= 1).
      image_size: square input size; None: the task's.
      width_multiplier: scales the model's filters and units.
      batch_norm: batch normalization in the model; None: the model's default.
      dense_weights: a ``.weights.h5`` (or TF checkpoint) of the dense model to start from
        instead of pretraining.
      pretrain_epochs: epochs of dense pretraining (skipped if cached or ``dense_weights``).
      retrain_epochs: epochs of the final phase after the scheduled rounds.
      batch_size: training and test batch size.
      learning_rate: Adam's learning rate in pretraining (and ADMM unless overridden).
      admm_learning_rate: Adam's learning rate during the scheduled rounds.
      retrain_learning_rate: Adam's learning rate at the start of the final phase.
      steps_per_epoch: an epoch (and so an ADMM round) of this many steps on repeated data
        instead of one pass over the training set.
      train_examples: train on the first this many examples of the training split.
      eval_examples: evaluate on the first this many examples of the test split.
      export: export to a verified ``.tflite`` file and measure its accuracy there.
      seed: seed of weights, data order and synthetic data.
      verbose: Keras fit verbosity.
      deterministic: TensorFlow op determinism.
    """

    spec: tf_admm.Spec
    model_dir: str
    data_dir: str | None = None
    download: bool = True
    synthetic_data: bool = False
    synthetic_examples: int = 256
    image_size: int | None = None
    width_multiplier: float = 1.0
    batch_norm: bool | None = None
    dense_weights: str | None = None
    pretrain_epochs: int = 30
    retrain_epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 1e-3
    admm_learning_rate: float | None = None
    retrain_learning_rate: float = 1e-3
    steps_per_epoch: int | None = None
    train_examples: int | None = None
    eval_examples: int | None = None
    export: bool = True
    seed: int = 0
    verbose: int = 1
    deterministic: bool = False


def _standardizer(task: ImageTask):
    mean = tf.constant(task.mean, tf.float32)
    std = tf.constant(task.std, tf.float32)

    def standardize(images, labels):
        return (tf.cast(images, tf.float32) / 255.0 - mean) / std, labels

    return standardize


def _split(split: str, count: int | None) -> str:
    return f"{split}[:{count}]" if count else split


class _ImageData:
    """Training batches (a function of the optimizer) and test batches for one run."""

    def __init__(self, task: ImageTask, settings: ImageSettings, image_size: int):
        self._task, self._settings, self._size = task, settings, image_size
        self._standardize = _standardizer(task)
        if settings.synthetic_data:
            count = settings.synthetic_examples
            self._arrays = tuple(
                tf.convert_to_tensor(a)
                for a in synthetic_images(count, image_size, task.num_classes, settings.seed)
            )
            test_images, test_labels = synthetic_images(
                max(1, count // 4), image_size, task.num_classes, settings.seed, salt=1
            )
            self.test = (
                tf.data.Dataset.from_tensor_slices((test_images, test_labels))
                .batch(settings.batch_size)
                .map(self._standardize)
                .cache()
            )
            self.source = "synthetic"
        else:
            import tensorflow_datasets as tfds

            self._data_dir = prepare_tfds(
                task.tfds_name,
                settings.data_dir,
                download=settings.download,
                help_text=task.help_text,
            )
            test = tfds.load(
                task.tfds_name,
                split=_split(task.test_split, settings.eval_examples),
                data_dir=self._data_dir,
                as_supervised=True,
                download=False,
            )
            self.test = (
                test.map(
                    lambda image, label: (task.preprocess_test(image, image_size), label),
                    num_parallel_calls=tf.data.AUTOTUNE,
                )
                .batch(settings.batch_size)
                .map(self._standardize)
                .prefetch(tf.data.AUTOTUNE)
            )
            self.source = f"tfds:{task.tfds_name}"

    def train(self, optimizer: keras.optimizers.Optimizer, salt: int) -> tf.data.Dataset:
        """Training batches; ``salt`` gives pretraining and ADMM different orders."""
        settings, task, size = self._settings, self._task, self._size
        seed = settings.seed * 2 + salt
        if settings.synthetic_data:
            images, labels = self._arrays
            steps = -(-int(images.shape[0]) // settings.batch_size)
            # Ordered by (seed, epoch) alone, so a resumed run sees the same batches.
            train = data.epoch_keyed_batches(
                images,
                labels,
                settings.batch_size,
                seed=seed,
                epoch=lambda: optimizer.iterations // (settings.steps_per_epoch or steps),
            )
            mean = tf.constant(task.mean, tf.float32)
            std = tf.constant(task.std, tf.float32)
            train = train.map(lambda x, y: ((x - mean) / std, y))
            if settings.steps_per_epoch:
                train = train.repeat()
        else:
            import tensorflow_datasets as tfds

            train = tfds.load(
                task.tfds_name,
                split=_split(task.train_split, settings.train_examples),
                data_dir=self._data_dir,
                as_supervised=True,
                download=False,
                shuffle_files=True,
                read_config=tfds.ReadConfig(shuffle_seed=seed),
            )
            train = train.shuffle(task.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
            if settings.steps_per_epoch:
                # Before batching, so that batches stay full across passes.
                train = train.repeat()
            train = train.map(
                lambda image, label: (task.preprocess_train(image, size, seed), label),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            train = train.batch(settings.batch_size).map(self._standardize)
        return train.prefetch(tf.data.AUTOTUNE)


def _shaping(settings: ImageSettings, *fields: str) -> dict[str, Any]:
    return {field: getattr(settings, field) for field in fields}


def run_image_recipe(task: ImageTask, settings: ImageSettings) -> dict[str, Any]:
    """Pretrains, compresses, reports and exports ``task``'s model; returns the results.

    The results (also written to ``<model_dir>/results.json``): dense and compressed test
    accuracy (and top-k), per-layer weights and nonzeros, storage report, seconds per phase,
    the spec, the stripped model's path and the ``.tflite`` export with its LiteRT accuracy.

    Raises:
      DatasetUnavailableError: without ``synthetic_data``, when the dataset is not there.
    """
    os.makedirs(settings.model_dir, exist_ok=True)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(settings.seed)
    image_size = settings.image_size or task.image_size
    timings: dict[str, float] = {}
    resumed: dict[str, int] = {}

    start = time.perf_counter()
    images = _ImageData(task, settings, image_size)
    timings["data"] = time.perf_counter() - start

    start = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    model_args: dict[str, Any] = {
        "num_classes": task.num_classes,
        "input_shape": (image_size, image_size, 3),
        "width_multiplier": settings.width_multiplier,
    }
    if settings.batch_norm is not None:
        model_args["batch_norm"] = settings.batch_norm
    dense = task.build_model(**model_args)
    if settings.dense_weights:
        logging.info("Loading the dense %s from %s", task.description, settings.dense_weights)
        dense.load_weights(settings.dense_weights)
        dense.compile(loss=loss(), metrics=task.metrics())
        dense_metrics = dense.evaluate(images.test, verbose=0, return_dict=True)
    else:
        # Everything that shapes the dense model, not where files go or how much is printed.
        shaping = _shaping(
            settings,
            "synthetic_data",
            "synthetic_examples",
            "width_multiplier",
            "batch_norm",
            "pretrain_epochs",
            "batch_size",
            "learning_rate",
            "steps_per_epoch",
            "train_examples",
            "seed",
            "deterministic",
        )
        shaping.update(task=task.name, image_size=image_size, source=images.source)
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]
        name = f"dense_{task.name}_{digest}"
        dense_metrics = pretrain(
            dense,
            lambda optimizer: images.train(optimizer, salt=0),
            images.test,
            checkpoint=os.path.join(settings.model_dir, f"{name}.weights.h5"),
            backup=backup_dir(settings.model_dir, name),
            learning_rate=settings.learning_rate,
            epochs=settings.pretrain_epochs,
            schedule=step_decay(settings.learning_rate, settings.pretrain_epochs),
            resumed=resumed,
            description=task.description,
            metrics=task.metrics,
            steps_per_epoch=settings.steps_per_epoch,
            verbose=settings.verbose,
        )
    timings["pretrain"] = time.perf_counter() - start
    logging.info("Dense test accuracy: %.4f", dense_metrics["accuracy"])

    shaping = dataclasses.asdict(dataclasses.replace(settings, spec=None))
    for field in ("model_dir", "data_dir", "verbose", "export", "eval_examples", "download"):
        del shaping[field]
    shaping.update(task=task.name, image_size=image_size)
    admm_backup = backup_dir(settings.model_dir, "admm", shaping, settings.spec.to_dict())
    model, phase_times = compress(
        dense,
        settings.spec,
        lambda optimizer: images.train(optimizer, salt=1),
        learning_rate=settings.admm_learning_rate or settings.learning_rate,
        retrain_learning_rate=settings.retrain_learning_rate,
        retrain_epochs=settings.retrain_epochs,
        log_dir=os.path.join(settings.model_dir, "logs"),
        backup=admm_backup,
        resumed=resumed,
        metrics=task.metrics,
        steps_per_epoch=settings.steps_per_epoch,
        verbose=settings.verbose,
    )
    timings.update(phase_times)

    pruned = tf_admm.strip(model)
    pruned.compile(loss=loss(), metrics=task.metrics())
    pruned_metrics = pruned.evaluate(images.test, verbose=0, return_dict=True)
    path = os.path.join(settings.model_dir, f"{task.name}_compressed.keras")
    pruned.save(path)
    table, storage, summary = summarize(pruned, model)
    results: dict[str, Any] = {
        "dense_accuracy": dense_metrics["accuracy"],
        "pruned_accuracy": pruned_metrics["accuracy"],
        "accuracy_drop_points": 100 * (dense_metrics["accuracy"] - pruned_metrics["accuracy"]),
    }
    top_k = f"top{task.top_k}_accuracy" if task.top_k else None
    if top_k:
        results[f"dense_{top_k}"] = dense_metrics[top_k]
        results[f"pruned_{top_k}"] = pruned_metrics[top_k]
    results.update(summary)
    results.update(
        {
            "run": provenance(f"recipes.{task.name}", settings.seed),
            "seconds": timings,
            "spec": settings.spec.to_dict(),
            "model": path,
            "resumed_after_epochs": resumed,
            "data": images.source,
            "image_size": image_size,
            "width_multiplier": settings.width_multiplier,
        }
    )
    if settings.export:
        start = time.perf_counter()
        results["tflite"] = export_tflite(
            pruned,
            images.test,
            os.path.join(settings.model_dir, f"{task.name}.tflite"),
            top_k=task.top_k,
        )
        timings["export"] = time.perf_counter() - start
    write_json_atomically(os.path.join(settings.model_dir, "results.json"), results)
    # Only now is nothing left to resume.
    shutil.rmtree(admm_backup, ignore_errors=True)

    line = (
        f"Test accuracy: dense {100 * results['dense_accuracy']:.2f}%, compressed "
        f"{100 * results['pruned_accuracy']:.2f}% ({results['accuracy_drop_points']:+.2f} "
        f"points drop)"
    )
    if top_k:
        line += (
            f"; top-{task.top_k} dense {100 * results[f'dense_{top_k}']:.2f}%, compressed "
            f"{100 * results[f'pruned_{top_k}']:.2f}%"
        )
    line += f"; pruning {results['pruning_ratio']:.1f}x"
    if images.source == "synthetic":
        line += " (synthetic data: accuracies say nothing about the task)"
    print_report(table, storage, results, line)
    return results


# ----------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageFlags:
    """The flag holders of an image recipe, as :func:`define_image_flags` returns them."""

    holders: dict[str, flags.FlagHolder]

    def value(self, name: str) -> Any:
        return self.holders[name].value


def define_image_flags(
    *,
    config: str,
    model_dir: str,
    image_size: int,
    pretrain_epochs: int,
    batch_size: int,
    learning_rate: float,
    batch_norm: bool,
    flag_values: flags.FlagValues = flags.FLAGS,
) -> ImageFlags:
    """Defines an image recipe's flags with its defaults in ``flag_values``.

    The recipes call it under ``__main__`` (several recipes imported in one process, as in a
    test run, would otherwise define the same flags twice); tests pass their own
    ``flags.FlagValues()``.
    """
    fv = {"flag_values": flag_values}
    holders = {
        "config": flags.DEFINE_string(
            "config",
            config,
            "JSON file with the tf_admm.Spec (per-layer sparsity and bits, rho, rounds).",
            **fv,
        ),
        "model_dir": flags.DEFINE_string(
            "model_dir", model_dir, "Where checkpoints, models, logs and results go.", **fv
        ),
        "data_dir": flags.DEFINE_string(
            "data_dir",
            None,
            "TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).",
            **fv,
        ),
        "download": flags.DEFINE_bool(
            "download",
            True,
            "Let TFDS prepare a dataset that is not prepared yet (download, or build from the "
            "manual archives).",
            **fv,
        ),
        "synthetic_data": flags.DEFINE_bool(
            "synthetic_data",
            False,
            "Train and test on seeded random images generated in the process, to try the "
            "pipeline without the dataset.",
            **fv,
        ),
        "synthetic_examples": flags.DEFINE_integer(
            "synthetic_examples",
            256,
            "Synthetic training examples (the test set gets a quarter).",
            lower_bound=1,
            **fv,
        ),
        "image_size": flags.DEFINE_integer(
            "image_size", image_size, "Square input size of the model.", lower_bound=1, **fv
        ),
        "width_multiplier": flags.DEFINE_float(
            "width_multiplier",
            1.0,
            "Scales the filters and units of every layer (e.g. 0.125 for a tiny model).",
            lower_bound=0.0,
            **fv,
        ),
        "batch_norm": flags.DEFINE_bool(
            "batch_norm", batch_norm, "Batch normalization after every convolution.", **fv
        ),
        "dense_weights": flags.DEFINE_string(
            "dense_weights",
            None,
            "Weights (.weights.h5) of a trained dense model to compress instead of pretraining.",
            **fv,
        ),
        "pretrain_epochs": flags.DEFINE_integer(
            "pretrain_epochs",
            pretrain_epochs,
            "Epochs of dense pretraining (skipped if cached).",
            lower_bound=0,
            **fv,
        ),
        "retrain_epochs": flags.DEFINE_integer(
            "retrain_epochs",
            12,
            "Epochs of training in the last phase (masked retraining, or shared-value training).",
            lower_bound=0,
            **fv,
        ),
        "batch_size": flags.DEFINE_integer(
            "batch_size", batch_size, "Batch size.", lower_bound=1, **fv
        ),
        "learning_rate": flags.DEFINE_float(
            "learning_rate",
            learning_rate,
            "Adam learning rate for pretraining and ADMM.",
            lower_bound=0.0,
            **fv,
        ),
        "admm_learning_rate": flags.DEFINE_float(
            "admm_learning_rate",
            None,
            "Adam learning rate during ADMM (default: --learning_rate).",
            lower_bound=0.0,
            **fv,
        ),
        "retrain_learning_rate": flags.DEFINE_float(
            "retrain_learning_rate",
            learning_rate,
            "Adam learning rate at the start of the last phase.",
            lower_bound=0.0,
            **fv,
        ),
        "steps_per_epoch": flags.DEFINE_integer(
            "steps_per_epoch",
            None,
            "Steps of an epoch (and so of an ADMM round of one epoch) on repeated data; default "
            "one pass over the training set.",
            lower_bound=1,
            **fv,
        ),
        "train_examples": flags.DEFINE_integer(
            "train_examples",
            None,
            "Train on the first this many examples of the training split.",
            lower_bound=1,
            **fv,
        ),
        "eval_examples": flags.DEFINE_integer(
            "eval_examples",
            None,
            "Evaluate on the first this many examples of the test split.",
            lower_bound=1,
            **fv,
        ),
        "export": flags.DEFINE_bool(
            "export",
            True,
            "Export the compressed model to a verified .tflite file and test it there.",
            **fv,
        ),
        "seed": flags.DEFINE_integer("seed", 0, "Random seed.", **fv),
        "verbose": flags.DEFINE_enum("verbose", "1", ["0", "1", "2"], "Keras fit verbosity.", **fv),
        "deterministic": flags.DEFINE_bool(
            "deterministic", False, "Enable TensorFlow op determinism.", **fv
        ),
    }
    return ImageFlags(holders)


def image_settings_from_flags(values: ImageFlags) -> ImageSettings:
    """Builds :class:`ImageSettings` from parsed flags; a bad config is a usage error."""
    try:
        spec = tf_admm.Spec.from_file(values.value("config"))
    except (OSError, tf_admm.SpecError) as error:
        raise app.UsageError(f"--config: {error}") from None
    names = [f.name for f in dataclasses.fields(ImageSettings) if f.name != "spec"]
    settings = {name: values.value(name) for name in names}
    settings["verbose"] = int(settings["verbose"])
    return ImageSettings(spec=spec, **settings)


def default_image_settings(defaults: dict[str, Any], **overrides: Any) -> ImageSettings:
    """A recipe's settings as its flags' defaults give them, with ``overrides``.

    Args:
      defaults: the keyword arguments the recipe passes to :func:`define_image_flags`.
      **overrides: :class:`ImageSettings` fields; ``spec`` replaces the config's spec.
    """
    values = {k: v for k, v in defaults.items() if k != "config"}
    values["retrain_learning_rate"] = defaults["learning_rate"]
    values.update(overrides)
    if "spec" not in values:
        values["spec"] = tf_admm.Spec.from_file(defaults["config"])
    return ImageSettings(**values)


def main_for(task: ImageTask, values: ImageFlags) -> Callable[[Sequence[str]], None]:
    """An ``app.run`` main that runs ``task`` with the parsed flags."""

    def main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
        quiet_logs.install()
        settings = image_settings_from_flags(values)
        try:
            run_image_recipe(task, settings)
        except DatasetUnavailableError as error:
            # The message says what to do; a traceback would bury it.
            raise app.UsageError(str(error)) from None

    return main
