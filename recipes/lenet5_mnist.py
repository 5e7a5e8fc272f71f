"""Compress LeNet-5 on MNIST with ADMM pruning: pretrain, ADMM, hard prune, masked retrain.

Usage:
  python -m recipes.lenet5_mnist                       # Ye et al. 2018 71x ratios, five stages
  python -m recipes.lenet5_mnist --config=recipes/configs/lenet5_admm_71x_oneshot.json
  python -m recipes.lenet5_mnist --config=recipes/configs/lenet5_admm_167x_oneshot.json
  python -m recipes.lenet5_mnist --distill_weight=0      # labels only, no distillation
  python -m recipes.lenet5_mnist_quant                   # pruning and quantization together
  python -m recipes.lenet5_mnist --keras=3 --backend=jax # Keras 3 (import keras) on JAX

Prints a per-layer table (weights, nonzeros, sparsity, compression), the storage report,
test accuracy of the dense and the pruned model and how long each phase took; writes the
stripped model and ``results.json`` to ``--model_dir``.

Killed or crashed, the same command resumes where it stopped: pretraining and ADMM back up
their whole state (weights, Z, U, rho, masks, phase, counters, optimizer) in
``--model_dir/backup/`` at every epoch end, and the next run restores it. The training data are
shuffled by a seed drawn from ``--seed`` and the epoch number, so a resumed run sees the same
batches as an uninterrupted one; with ``--deterministic`` it ends with the same weights to the
last bit. A run with other settings does not resume from another's backup.

``--keras=3`` builds the same LeNet-5 with Keras 3 (``import keras``) and runs the same data,
spec, distillation, strip and export; ``--backend=jax`` trains it on JAX (the command restarts
itself with ``KERAS_BACKEND=jax``, see :mod:`recipes.stacks`), and the stripped ``.keras`` file
is then exported and verified on TensorFlow in a subprocess (:mod:`recipes.keras3_export`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags, logging

import tf_admm
from recipes import (
    data,
    distillation,
    keras3_export,
    models,
    quiet_logs,
    reporting,
    run_files,
    schedules,
    stacks,
    training,
)
from tf_admm.compat import keras, tf

# Training images that calibrate the activation ranges of the full-integer export.
CALIBRATION_EXAMPLES = 500
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
_RETRAIN_DECAY = flags.DEFINE_enum(
    "retrain_decay",
    "step",
    list(schedules.DECAYS),
    "How the learning rate falls over the final phase: 'step' (x0.3 at half, x0.1 at three "
    "quarters) or 'cosine' (to --final_learning_rate).",
)
_FINAL_LEARNING_RATE = flags.DEFINE_float(
    "final_learning_rate",
    1e-5,
    "Learning rate at the end of a cosine --retrain_decay.",
    lower_bound=0.0,
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed for weights and data order.")
_TRAIN_BATCHES = flags.DEFINE_integer(
    "train_batches",
    None,
    "Train on only this many batches of examples (the first ones; reshuffled every epoch), "
    "for smoke tests.",
    lower_bound=1,
)
_VALIDATION_EXAMPLES = flags.DEFINE_integer(
    "validation_examples",
    0,
    "Hold out the last this many MNIST training images as a validation split: training never "
    "sees them, and the recipe reports the dense and compressed models' accuracy on them. "
    "Make choices (config, rho, epochs) on this split; the test set only reports.",
    lower_bound=0,
    upper_bound=59_000,
)
_EXPORT = flags.DEFINE_bool(
    "export", True, "Export the compressed model to a verified .tflite file and test it there."
)
_TFLITE_INT8 = flags.DEFINE_bool(
    "tflite_int8",
    False,
    "Also export a full-integer .tflite (int8 activations, float inputs and outputs), calibrated "
    f"on the first {CALIBRATION_EXAMPLES} training images, and test it in LiteRT.",
)
_DISTILL_WEIGHT = flags.DEFINE_float(
    "distill_weight",
    0.5,
    "Share of the dense model's soft targets in the loss while compressing (knowledge "
    "distillation; 0: labels only).",
    lower_bound=0.0,
    upper_bound=1.0,
)
_DISTILL_TEMPERATURE = flags.DEFINE_float(
    "distill_temperature", 4.0, "Temperature of the distillation soft targets.", lower_bound=0.01
)
_VERBOSE = flags.DEFINE_enum("verbose", "1", ["0", "1", "2"], "Keras fit verbosity.")
_KERAS = flags.DEFINE_enum(
    "keras", "2", list(stacks.KERAS_VERSIONS), "2: tf_keras; 3: Keras 3 (import keras)."
)
_BACKEND = flags.DEFINE_enum(
    "backend",
    None,
    list(stacks.BACKENDS),
    "Keras 3 backend (with --keras=3 only; default tensorflow). With jax the command restarts "
    "itself with KERAS_BACKEND=jax; the export then runs on TensorFlow in a subprocess.",
)
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
    retrain_decay: str = "step"
    final_learning_rate: float = 1e-5
    export: bool = True
    tflite_int8: bool = False
    seed: int = 0
    train_batches: int | None = None
    verbose: int = 1
    deterministic: bool = False
    distill_weight: float = 0.5
    distill_temperature: float = 4.0
    validation_examples: int = 0
    stack: stacks.Stack = stacks.Stack.TF_KERAS

    def __post_init__(self):
        distillation.check_settings(self.distill_weight, self.distill_temperature)
        if self.retrain_decay not in schedules.DECAYS:
            raise ValueError(
                f"Recipe: Expected retrain_decay in {list(schedules.DECAYS)}; "
                f"received: retrain_decay={self.retrain_decay!r}"
            )
        if _measures_sensitivity(self.spec) and not self.validation_examples:
            raise ValueError(
                "Spec: allocation 'sensitivity' measures each layer on the validation split: "
                "Expected validation_examples > 0 (--validation_examples); received 0"
            )


def _measures_sensitivity(spec: tf_admm.Spec) -> bool:
    """Whether the recipe must measure ``spec``'s split (sensitivity, not yet allocated)."""
    return (
        spec is not None  # The settings that key a backup leave the spec out.
        and spec.allocation is tf_admm.Allocation.SENSITIVITY
        and spec.allocated is None
    )


# Shared pieces under the names the tests know (tests/resume_test.py replaces _step_decay).
_loss = training.loss
_step_decay = schedules.step_decay
_save_weights_atomically = run_files.save_weights_atomically


MNIST_TRAIN_EXAMPLES = 60_000


def _load_split(settings: Settings, split: str) -> tuple[tf.Tensor, tf.Tensor]:
    examples = tfds.load(
        "mnist",
        split=split,
        data_dir=data.prepare_mnist(settings.data_dir),
        as_supervised=True,
        download=False,
        batch_size=-1,
    )
    images, labels = tfds.as_numpy(examples)
    return tf.convert_to_tensor(images), tf.convert_to_tensor(labels)


def _train_arrays(settings: Settings) -> tuple[tf.Tensor, tf.Tensor]:
    """The MNIST training images (uint8) and labels, in memory (47 MB).

    Without the last ``validation_examples``; with ``train_batches`` only the first
    ``train_batches * batch_size`` examples, so that smoke tests do not decode all 60,000.
    """
    end = MNIST_TRAIN_EXAMPLES - settings.validation_examples
    if settings.train_batches:
        end = min(end, settings.train_batches * settings.batch_size)
    return _load_split(settings, f"train[:{end}]")


def _validation_ds(settings: Settings) -> tf.data.Dataset | None:
    """The held-out last ``validation_examples`` training images, batched; None without."""
    if not settings.validation_examples:
        return None
    start = MNIST_TRAIN_EXAMPLES - settings.validation_examples
    images, labels = _load_split(settings, f"train[{start}:]")
    images = tf.cast(images, tf.float32) / 255.0
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(settings.batch_size)


def _validation_loss(model: keras.Model, validation_ds: tf.data.Dataset) -> float:
    """Mean cross-entropy of ``model``'s logits on the validation batches (a tf_keras or a
    Keras 3 model, on TensorFlow or JAX)."""
    api = stacks.api_of(model)
    total, count = 0.0, 0
    for images, labels in validation_ds:
        if api is keras:
            losses = keras.losses.sparse_categorical_crossentropy(
                labels, model(images, training=False), from_logits=True
            )
            total += float(tf.reduce_sum(losses))
        else:  # Host arrays: a JAX model takes no TensorFlow tensors.
            losses = api.losses.sparse_categorical_crossentropy(
                labels.numpy(), model(images.numpy(), training=False), from_logits=True
            )
            total += float(api.ops.convert_to_numpy(api.ops.sum(losses)))
        count += int(labels.shape[0])
    return total / count


def _train_data(settings: Settings, arrays, optimizer, salt: int) -> tf.data.Dataset:
    """Training batches whose order depends on the seed and the epoch ``optimizer`` is in.

    The epoch is ``optimizer.iterations // steps_per_epoch``: the optimizer is backed up and
    restored with the model, so a resumed run continues the same sequence of epochs. ``salt``
    gives pretraining and ADMM different orders.
    """
    steps = -(-int(arrays[0].shape[0]) // settings.batch_size)
    return _keyed_batches(settings, arrays, lambda: optimizer.iterations // steps, salt)


def _keyed_batches(settings: Settings, arrays, epoch, salt: int) -> tf.data.Dataset:
    images, labels = arrays
    train = data.epoch_keyed_batches(
        images, labels, settings.batch_size, seed=settings.seed * 2 + salt, epoch=epoch
    )
    return train.prefetch(tf.data.AUTOTUNE)


def _batches_and_callbacks(settings: Settings, arrays, salt: int):
    """``train_data`` for :mod:`recipes.training` and the callbacks it needs.

    Keras 3 keys the order on the epoch :class:`recipes.training.EpochCounter` holds (on JAX
    ``optimizer.iterations`` is no TensorFlow variable); the order is the same function of
    seed and epoch as on tf_keras.
    """
    if not settings.stack.keras3:
        return (lambda optimizer: _train_data(settings, arrays, optimizer, salt)), []
    counter = training.EpochCounter()
    return (lambda _: _keyed_batches(settings, arrays, lambda: counter.epoch, salt)), [counter]


def _backup_dir(settings: Settings, phase: str, *parts: Any) -> str:
    """A backup directory of its own for ``phase`` run with these settings."""
    return run_files.backup_dir(settings.model_dir, phase, *parts)


def _pretrain(
    settings: Settings, train_arrays, test_ds, resumed: dict[str, int]
) -> tuple[keras.Model, float]:
    """Trains (or loads the cached) dense LeNet-5; returns it and its test accuracy."""
    settings.stack.api.utils.set_random_seed(settings.seed)
    model = models.lenet5(api=settings.stack.api)
    name = f"dense_e{settings.pretrain_epochs}_s{settings.seed}"
    if settings.stack.keras3:  # Another weights format, and another trained model.
        name += f"_{settings.stack.value}"
    if settings.validation_examples:
        name += f"_v{settings.validation_examples}"
    if settings.train_batches:
        name += f"_b{settings.train_batches}"
    train_data, callbacks = _batches_and_callbacks(settings, train_arrays, salt=0)
    metrics = training.pretrain(
        model,
        train_data,
        test_ds,
        checkpoint=os.path.join(settings.model_dir, f"{name}.weights.h5"),
        backup=_backup_dir(
            settings, name, settings.batch_size, settings.learning_rate, settings.deterministic
        ),
        learning_rate=settings.learning_rate,
        epochs=settings.pretrain_epochs,
        # Looked up here, so that a test can replace it.
        schedule=_step_decay(settings.learning_rate, settings.pretrain_epochs),
        resumed=resumed,
        description="LeNet-5",
        verbose=settings.verbose,
        callbacks=callbacks,
    )
    return model, float(metrics["accuracy"])


def run(settings: Settings) -> dict[str, Any]:
    """Runs the whole recipe and returns its results (also written to results.json)."""
    os.makedirs(settings.model_dir, exist_ok=True)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(settings.seed)
    settings.stack.api.utils.set_random_seed(settings.seed)
    api = settings.stack.api
    timings: dict[str, float] = {}
    resumed: dict[str, int] = {}
    start = time.perf_counter()
    _, test_ds = data.load_mnist(settings.data_dir, batch_size=settings.batch_size)
    train_arrays = _train_arrays(settings)
    validation_ds = _validation_ds(settings)
    timings["data"] = time.perf_counter() - start

    start = time.perf_counter()
    dense, dense_accuracy = _pretrain(settings, train_arrays, test_ds, resumed)
    timings["pretrain"] = time.perf_counter() - start
    logging.info("Dense test accuracy: %.4f", dense_accuracy)

    spec = settings.spec
    if _measures_sensitivity(spec):
        start = time.perf_counter()
        spec = tf_admm.sensitivity_allocation(
            dense, spec, lambda model: _validation_loss(model, validation_ds)
        )
        timings["sensitivity"] = time.perf_counter() - start
    # Everything that shapes the training, not where files go or how much is printed.
    shaping = dataclasses.asdict(dataclasses.replace(settings, spec=None))
    for field in ("model_dir", "data_dir", "verbose", "export", "tflite_int8"):
        del shaping[field]
    if not settings.stack.keras3:  # Keys as before the field existed: old backups resume.
        del shaping["stack"]
    if settings.retrain_decay == "step":  # The same, and the final rate is then unused.
        del shaping["retrain_decay"], shaping["final_learning_rate"]
    backup_dir = _backup_dir(settings, "admm", shaping, spec.to_dict())
    compress_arrays, objective, metrics = train_arrays, None, training.accuracy_metrics
    if settings.distill_weight > 0:
        images, labels = train_arrays
        compress_arrays = (images, distillation.targets(dense, images, labels))
        objective, metrics = distillation.loss_and_metrics(
            api, settings.distill_weight, settings.distill_temperature
        )

    train_data, callbacks = _batches_and_callbacks(settings, compress_arrays, salt=1)
    held_out = None
    if validation_ds is not None:  # Validation accuracy after every epoch, by phase.
        images, labels = (np.concatenate(part) for part in zip(*validation_ds.as_numpy_iterator()))
        held_out = training.held_out_accuracy(api, images, labels)
        callbacks = [*callbacks, held_out]
    model, phase_times = training.compress(
        dense,
        spec,
        train_data,
        learning_rate=settings.admm_learning_rate or settings.learning_rate,
        retrain_learning_rate=settings.retrain_learning_rate,
        retrain_epochs=settings.retrain_epochs,
        retrain_decay=settings.retrain_decay,
        final_learning_rate=settings.final_learning_rate,
        log_dir=os.path.join(settings.model_dir, "logs"),
        backup=backup_dir,
        resumed=resumed,
        metrics=metrics,
        objective=objective,
        verbose=settings.verbose,
        callbacks=callbacks,
    )
    timings.update(phase_times)

    pruned = tf_admm.strip(model)
    pruned.compile(loss=_loss(api), metrics=["accuracy"])
    _, pruned_accuracy = pruned.evaluate(test_ds, verbose=0)
    validation = {}
    if validation_ds is not None:
        dense.compile(loss=_loss(api), metrics=["accuracy"])
        validation = {
            "dense_accuracy": float(dense.evaluate(validation_ds, verbose=0)[1]),
            "pruned_accuracy": float(pruned.evaluate(validation_ds, verbose=0)[1]),
            "examples": settings.validation_examples,
            # After each epoch of this process (a resumed run's from its backup on).
            "curve": held_out.curve,
        }
        logging.info(
            "Validation accuracy (last %d training images): dense %.4f, compressed %.4f",
            settings.validation_examples,
            validation["dense_accuracy"],
            validation["pruned_accuracy"],
        )
    path = os.path.join(settings.model_dir, "lenet5_compressed.keras")
    pruned.save(path)

    table, storage, summary = reporting.summarize(pruned, model)
    results = {
        "dense_accuracy": dense_accuracy,
        "pruned_accuracy": float(pruned_accuracy),
        "accuracy_drop_points": 100 * (dense_accuracy - float(pruned_accuracy)),
        **summary,
        "run": run_files.provenance("recipes.lenet5_mnist", settings.seed),
        "seconds": timings,
        "spec": model.spec.to_dict(),  # With the allocation admm_wrap chose.
        "distillation": {
            "weight": settings.distill_weight,
            "temperature": settings.distill_temperature,
        },
        "retraining": {
            "epochs": settings.retrain_epochs,
            "learning_rate": settings.retrain_learning_rate,
            "decay": settings.retrain_decay,
            "final_learning_rate": settings.final_learning_rate,
        },
        "model": path,
        "resumed_after_epochs": resumed,
        "stack": settings.stack.value,
    }
    if validation:
        results["validation"] = validation
    for key, name, int8 in (("tflite", "lenet5", False), ("tflite_int8", "lenet5_int8", True)):
        if not (settings.tflite_int8 if int8 else settings.export):
            continue
        start = time.perf_counter()
        calibration = None
        if int8:
            calibration = tf.cast(train_arrays[0][:CALIBRATION_EXAMPLES], tf.float32) / 255.0
            calibration = calibration.numpy()
        file = os.path.join(settings.model_dir, f"{name}.tflite")
        if settings.stack.backend != "tensorflow":
            # The converter needs TensorFlow: the saved file is exported there.
            results[key] = keras3_export.export_on_tensorflow(
                pruned, path, file, settings.data_dir, settings.batch_size, calibration
            )
        else:
            results[key] = reporting.export_tflite(
                pruned, test_ds, file, representative_data=calibration
            )
        timings["export_int8" if int8 else "export"] = time.perf_counter() - start
    run_files.write_json_atomically(os.path.join(settings.model_dir, "results.json"), results)
    # Only now is nothing left to resume.
    shutil.rmtree(backup_dir, ignore_errors=True)

    reporting.print_report(
        table,
        storage,
        results,
        f"Test accuracy: dense {100 * dense_accuracy:.2f}%, pruned {100 * pruned_accuracy:.2f}% "
        f"({results['accuracy_drop_points']:+.2f} points drop); "
        f"pruning {results['pruning_ratio']:.1f}x",
    )
    return results


def settings_from_flags() -> Settings:
    try:
        spec = tf_admm.Spec.from_file(_CONFIG.value)
    except (OSError, tf_admm.SpecError) as error:
        raise app.UsageError(f"--config: {error}") from None
    try:
        stack = stacks.from_flags(_KERAS.value, _BACKEND.value)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    values = dict(
        spec=spec,
        stack=stack,
        model_dir=_MODEL_DIR.value,
        data_dir=_DATA_DIR.value,
        pretrain_epochs=_PRETRAIN_EPOCHS.value,
        retrain_epochs=_RETRAIN_EPOCHS.value,
        batch_size=_BATCH_SIZE.value,
        learning_rate=_LEARNING_RATE.value,
        retrain_learning_rate=_RETRAIN_LEARNING_RATE.value,
        admm_learning_rate=_ADMM_LEARNING_RATE.value,
        retrain_decay=_RETRAIN_DECAY.value,
        final_learning_rate=_FINAL_LEARNING_RATE.value,
        export=_EXPORT.value,
        tflite_int8=_TFLITE_INT8.value,
        seed=_SEED.value,
        train_batches=_TRAIN_BATCHES.value,
        verbose=int(_VERBOSE.value),
        deterministic=_DETERMINISTIC.value,
        distill_weight=_DISTILL_WEIGHT.value,
        distill_temperature=_DISTILL_TEMPERATURE.value,
        validation_examples=_VALIDATION_EXAMPLES.value,
    )
    try:
        return Settings(**values)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    settings = settings_from_flags()
    # Restarts this command with KERAS_BACKEND set if Keras 3 was loaded on another backend.
    stacks.ensure_backend(settings.stack)
    quiet_logs.install()
    run(settings)


if __name__ == "__main__":
    app.run(main)
