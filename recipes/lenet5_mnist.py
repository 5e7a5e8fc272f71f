"""Compress LeNet-5 on MNIST with ADMM pruning: pretrain, ADMM, hard prune, masked retrain.

Usage:
  python -m recipes.lenet5_mnist                       # the 71x config of Ye et al. 2018
  python -m recipes.lenet5_mnist --config=recipes/configs/lenet5_admm_167x.json

Prints a per-layer table (weights, nonzeros, sparsity, compression), the storage report,
test accuracy of the dense and the pruned model and how long each phase took; writes the
stripped model and ``results.json`` to ``--model_dir``.

Killed or crashed, the same command resumes where it stopped: pretraining and ADMM back up
their whole state (weights, Z, U, rho, masks, phase, counters, optimizer) in
``--model_dir/backup/`` at every epoch end, and the next run restores it. The training data are
shuffled by a seed drawn from ``--seed`` and the epoch number, so a resumed run sees the same
batches as an uninterrupted one; with ``--deterministic`` it ends with the same weights to the
last bit. A run with other settings does not resume from another's backup.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Any

import tensorflow_datasets as tfds
from absl import app, flags, logging

import tf_admm
from recipes import data, models
from tf_admm import report
from tf_admm.compat import keras, tf

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")

_CONFIG = flags.DEFINE_string(
    "config",
    os.path.join(CONFIG_DIR, "lenet5_admm_71x.json"),
    "JSON file with the tf_admm.Spec (per-layer sparsity, rho schedule, ADMM rounds).",
)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)."
)
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", "runs/lenet5_mnist", "Where the dense checkpoint, models and results go."
)
_PRETRAIN_EPOCHS = flags.DEFINE_integer(
    "pretrain_epochs", 12, "Epochs of dense pretraining (skipped if cached).", lower_bound=0
)
_RETRAIN_EPOCHS = flags.DEFINE_integer(
    "retrain_epochs",
    12,
    "Epochs of training in the last phase (masked retraining, or shared-value training).",
    lower_bound=0,
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float(
    "learning_rate", 1e-3, "Adam learning rate for pretraining and ADMM.", lower_bound=0.0
)
_ADMM_LEARNING_RATE = flags.DEFINE_float(
    "admm_learning_rate",
    None,
    "Adam learning rate during ADMM (default: --learning_rate).",
    lower_bound=0.0,
)
_RETRAIN_LEARNING_RATE = flags.DEFINE_float(
    "retrain_learning_rate", 1e-3, "Adam learning rate at the start of retraining.", lower_bound=0.0
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed for weights and data order.")
_TRAIN_BATCHES = flags.DEFINE_integer(
    "train_batches",
    None,
    "Train on only this many batches of examples (the first ones; reshuffled every epoch), "
    "for smoke tests.",
    lower_bound=1,
)
_EXPORT = flags.DEFINE_bool(
    "export", True, "Export the compressed model to a verified .tflite file and test it there."
)
_VERBOSE = flags.DEFINE_enum("verbose", "1", ["0", "1", "2"], "Keras fit verbosity.")
_DETERMINISTIC = flags.DEFINE_bool(
    "deterministic",
    False,
    "Enable TensorFlow op determinism: reruns and resumed runs give bit-identical results.",
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything ``run`` needs, so tests can call it without flags."""

    spec: tf_admm.Spec
    model_dir: str
    data_dir: str | None = None
    pretrain_epochs: int = 12
    retrain_epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 1e-3
    retrain_learning_rate: float = 1e-3
    admm_learning_rate: float | None = None
    export: bool = True
    seed: int = 0
    train_batches: int | None = None
    verbose: int = 1
    deterministic: bool = False


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _step_decay(base: float, epochs: int, start: int = 0):
    """Constant ``base`` for the first half of ``epochs``, then x0.3, then x0.1 (last quarter)."""

    def schedule(epoch, _):
        relative = epoch - start
        if relative < epochs // 2:
            return base
        return base * (0.3 if relative < (3 * epochs) // 4 else 0.1)

    return schedule


def _train_arrays(settings: Settings) -> tuple[tf.Tensor, tf.Tensor]:
    """The MNIST training images (uint8) and labels, in memory (47 MB).

    With ``train_batches`` only the first ``train_batches * batch_size`` examples, so that
    smoke tests do not decode all 60,000 images.
    """
    split = "train"
    if settings.train_batches:
        split = f"train[:{settings.train_batches * settings.batch_size}]"
    train = tfds.load(
        "mnist",
        split=split,
        data_dir=data.prepare_mnist(settings.data_dir),
        as_supervised=True,
        download=False,
        batch_size=-1,
    )
    images, labels = tfds.as_numpy(train)
    return tf.convert_to_tensor(images), tf.convert_to_tensor(labels)


def _train_data(settings: Settings, arrays, optimizer, salt: int) -> tf.data.Dataset:
    """Training batches whose order depends on the seed and the epoch ``optimizer`` is in.

    The epoch is ``optimizer.iterations // steps_per_epoch``: the optimizer is backed up and
    restored with the model, so a resumed run continues the same sequence of epochs. ``salt``
    gives pretraining and ADMM different orders.
    """
    images, labels = arrays
    steps = -(-int(images.shape[0]) // settings.batch_size)
    train = data.epoch_keyed_batches(
        images,
        labels,
        settings.batch_size,
        seed=settings.seed * 2 + salt,
        epoch=lambda: optimizer.iterations // steps,
    )
    return train.prefetch(tf.data.AUTOTUNE)


def _save_weights_atomically(model: keras.Model, path: str) -> None:
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


class _ResumeLog(keras.callbacks.Callback):
    """Says whether ``fit`` resumed from a backup; goes after BackupAndRestore."""

    def __init__(self, phase: str, steps_per_epoch: int, resumed: dict[str, int]):
        super().__init__()
        self._phase, self._steps, self._resumed = phase, steps_per_epoch, resumed

    def on_train_begin(self, logs=None):
        epochs = int(self.model.optimizer.iterations.numpy()) // self._steps
        if epochs:
            logging.info("Resuming %s from its backup after %d epoch(s)", self._phase, epochs)
            self._resumed[self._phase] = epochs


def _backup_dir(settings: Settings, phase: str, *parts: Any) -> str:
    """A backup directory of its own for ``phase`` run with these settings."""
    key = json.dumps([phase, *parts], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return os.path.join(settings.model_dir, "backup", f"{phase}_{digest}")


def _pretrain(
    settings: Settings, train_arrays, test_ds, resumed: dict[str, int]
) -> tuple[keras.Model, float]:
    """Trains (or loads the cached) dense LeNet-5; returns it and its test accuracy."""
    keras.utils.set_random_seed(settings.seed)
    model = models.lenet5()
    name = f"dense_e{settings.pretrain_epochs}_s{settings.seed}"
    if settings.train_batches:
        name += f"_b{settings.train_batches}"
    checkpoint = os.path.join(settings.model_dir, f"{name}.weights.h5")
    backup_dir = _backup_dir(
        settings, name, settings.batch_size, settings.learning_rate, settings.deterministic
    )
    if os.path.exists(checkpoint):
        logging.info("Loading cached dense model from %s", checkpoint)
        model.load_weights(checkpoint)
        model.compile(loss=_loss(), metrics=["accuracy"])
    else:
        model.compile(keras.optimizers.Adam(settings.learning_rate), _loss(), ["accuracy"])
        logging.info("Pretraining dense LeNet-5 for %d epochs", settings.pretrain_epochs)
        train_ds = _train_data(settings, train_arrays, model.optimizer, salt=0)
        model.fit(
            train_ds,
            epochs=settings.pretrain_epochs,
            verbose=settings.verbose,
            callbacks=[
                keras.callbacks.LearningRateScheduler(
                    _step_decay(settings.learning_rate, settings.pretrain_epochs)
                ),
                keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False),
                _ResumeLog("pretraining", len(train_ds), resumed),
            ],
        )
        _save_weights_atomically(model, checkpoint)
    # Kept until the dense checkpoint is safely written.
    shutil.rmtree(backup_dir, ignore_errors=True)
    _, accuracy = model.evaluate(test_ds, verbose=0)
    return model, float(accuracy)


def run(settings: Settings) -> dict[str, Any]:
    """Runs the whole recipe and returns its results (also written to results.json)."""
    os.makedirs(settings.model_dir, exist_ok=True)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(settings.seed)
    timings: dict[str, float] = {}
    resumed: dict[str, int] = {}
    start = time.perf_counter()
    _, test_ds = data.load_mnist(settings.data_dir, batch_size=settings.batch_size)
    train_arrays = _train_arrays(settings)
    timings["data"] = time.perf_counter() - start

    start = time.perf_counter()
    dense, dense_accuracy = _pretrain(settings, train_arrays, test_ds, resumed)
    timings["pretrain"] = time.perf_counter() - start
    logging.info("Dense test accuracy: %.4f", dense_accuracy)

    spec = settings.spec
    if spec.update_unit is not tf_admm.Unit.EPOCH:
        raise app.UsageError("The recipe counts ADMM rounds in epochs: use update_unit 'epoch'")
    scheduled_epochs = spec.scheduled_rounds() * spec.update_every
    model = tf_admm.admm_wrap(dense, spec)
    admm_learning_rate = settings.admm_learning_rate or settings.learning_rate
    model.compile(keras.optimizers.Adam(admm_learning_rate), _loss(), ["accuracy"])
    final_schedule = _step_decay(
        settings.retrain_learning_rate, settings.retrain_epochs, start=scheduled_epochs
    )

    def schedule(epoch, lr):
        return admm_learning_rate if epoch < scheduled_epochs else final_schedule(epoch, lr)

    # Everything that shapes the training, not where files go or how much is printed.
    shaping = dataclasses.asdict(dataclasses.replace(settings, spec=None))
    for field in ("model_dir", "data_dir", "verbose", "export"):
        del shaping[field]
    backup_dir = _backup_dir(settings, "admm", shaping, spec.to_dict())

    phase_times: dict[str, float] = {}

    class PhaseTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._phase = model.phase.name.lower()
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            elapsed = time.perf_counter() - self._start
            phase_times[self._phase] = phase_times.get(self._phase, 0.0) + elapsed

    logging.info(
        "%d scheduled rounds of %d epoch(s) (pruning ADMM %d, retraining %d, quantization "
        "ADMM %d, locking %d), then %d epochs in the final phase",
        spec.scheduled_rounds(),
        spec.update_every,
        spec.admm_rounds if spec.prunes else 0,
        spec.retrain_rounds if spec.quantizes and spec.prunes else 0,
        spec.quant_admm_rounds if spec.quantizes else 0,
        len(spec.quant_fractions) if spec.quantizes else 0,
        settings.retrain_epochs,
    )
    # tf_admm.callbacks puts the backup after the ADMM update and its NaN/Inf check: a backup
    # holds an epoch's Z/U update with the epoch, and never a non-finite state.
    train_ds = _train_data(settings, train_arrays, model.optimizer, salt=1)
    model.fit(
        train_ds,
        epochs=scheduled_epochs + settings.retrain_epochs,
        verbose=settings.verbose,
        callbacks=tf_admm.callbacks(
            log_dir=os.path.join(settings.model_dir, "logs"),
            backup_dir=backup_dir,
            delete_backup=False,
        )
        + [
            _ResumeLog("ADMM", len(train_ds), resumed),
            keras.callbacks.LearningRateScheduler(schedule),
            PhaseTimer(),
        ],
    )
    timings.update(phase_times)

    pruned = tf_admm.strip(model)
    pruned.compile(loss=_loss(), metrics=["accuracy"])
    _, pruned_accuracy = pruned.evaluate(test_ds, verbose=0)
    path = os.path.join(settings.model_dir, "lenet5_compressed.keras")
    pruned.save(path)

    table = report.compression_table(pruned)
    configured_bits = {}
    for wrapper in model.admm_wrappers:
        for slot in wrapper.slots:
            if slot.target.bits is not None:
                configured_bits[wrapper.layer.name] = slot.target.bits
    storage = report.storage_report(pruned, bits=configured_bits)
    total_weights = sum(r.weights for r in table)
    total_nonzeros = sum(r.nonzeros for r in table)
    results = {
        "dense_accuracy": dense_accuracy,
        "pruned_accuracy": float(pruned_accuracy),
        "accuracy_drop_points": 100 * (dense_accuracy - float(pruned_accuracy)),
        "weights": total_weights,
        "nonzeros": total_nonzeros,
        "pruning_ratio": total_weights / total_nonzeros,
        "layers": [r.to_dict() for r in table],
        "storage": storage.to_dict(),
        "seconds": timings,
        "spec": spec.to_dict(),
        "model": path,
        "resumed_after_epochs": resumed,
    }
    if settings.export:
        start = time.perf_counter()
        results["tflite"] = _export(pruned, test_ds, settings.model_dir)
        timings["export"] = time.perf_counter() - start
    results_path = os.path.join(settings.model_dir, "results.json")
    with open(f"{results_path}.tmp", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    os.replace(f"{results_path}.tmp", results_path)
    # Only now is nothing left to resume.
    shutil.rmtree(backup_dir, ignore_errors=True)

    print(report.format_compression_table(table))
    print()
    print("Storage (values coded as trained, sparse layers with relative indices):")
    print(tf_admm.storage.format_report(storage))
    print()
    print(
        f"Test accuracy: dense {100 * dense_accuracy:.2f}%, pruned {100 * pruned_accuracy:.2f}% "
        f"({results['accuracy_drop_points']:+.2f} points drop); "
        f"pruning {results['pruning_ratio']:.1f}x"
    )
    if "tflite" in results:
        lite = results["tflite"]
        print(
            f"TFLite: {lite['path']}: {lite['file_bytes']:,} B ({lite['ratio_vs_float']:.1f}x "
            f"smaller than the dense float file of {lite['float_file_bytes']:,} B; gzip "
            f"{lite['gzip_bytes']:,} B); test accuracy in LiteRT {100 * lite['accuracy']:.2f}%"
        )
    print("Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"Stripped model: {path}")
    return results


def _export(model: keras.Model, test_ds, model_dir: str) -> dict[str, Any]:
    """Writes the verified .tflite file and measures its test accuracy in LiteRT."""
    import numpy as np

    import tflite_export
    from tflite_export import verify

    path = os.path.join(model_dir, "lenet5.tflite")
    export_report = tflite_export.export(model, path)
    print(export_report.format())
    with open(path, "rb") as f:
        data = f.read()
    correct = total = 0
    for images, labels in test_ds:
        (logits,) = verify.run(data, [images.numpy()])
        correct += int(np.sum(np.argmax(logits, axis=-1) == labels.numpy()))
        total += int(labels.shape[0])
    return {
        "path": path,
        "file_bytes": export_report.file_bytes,
        "float_file_bytes": export_report.float_file_bytes,
        "gzip_bytes": export_report.gzip_bytes,
        "float_gzip_bytes": export_report.float_gzip_bytes,
        "ratio_vs_float": export_report.compression_ratio,
        "accuracy": correct / total,
        "report": export_report.to_dict(),
    }


def settings_from_flags() -> Settings:
    try:
        spec = tf_admm.Spec.from_file(_CONFIG.value)
    except (OSError, tf_admm.SpecError) as error:
        raise app.UsageError(f"--config: {error}") from None
    return Settings(
        spec=spec,
        model_dir=_MODEL_DIR.value,
        data_dir=_DATA_DIR.value,
        pretrain_epochs=_PRETRAIN_EPOCHS.value,
        retrain_epochs=_RETRAIN_EPOCHS.value,
        batch_size=_BATCH_SIZE.value,
        learning_rate=_LEARNING_RATE.value,
        retrain_learning_rate=_RETRAIN_LEARNING_RATE.value,
        admm_learning_rate=_ADMM_LEARNING_RATE.value,
        export=_EXPORT.value,
        seed=_SEED.value,
        train_batches=_TRAIN_BATCHES.value,
        verbose=int(_VERBOSE.value),
        deterministic=_DETERMINISTIC.value,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    run(settings_from_flags())


if __name__ == "__main__":
    app.run(main)
