"""Filter-prune a small MobileNet-v2 on Fashion-MNIST with ADMM, shrink it, export it and time
it in LiteRT against its dense model and tfmot's 2:4 pruning.

Usage:
  python -m recipes.mobilenet_fashion_mnist                   # defaults: 60% of the filters
  python -m recipes.mobilenet_fashion_mnist --sparsity=0.6 --bits=8
  python -m recipes.mobilenet_fashion_mnist --pretrain_epochs=1 --admm_epochs=1 \
      --retrain_epochs=1 --train_examples=2048            # minutes, for a first look

Steps: dense training (cached in ``--model_dir``); ADMM filter pruning of every plain
convolution (``Rule(layer_type="Conv2D", structure="filter")``; residual partners keep the same
filters, :func:`tf_admm.channel_groups`), Z/U every ``--update_every`` steps, then masked
retraining; :func:`tf_admm.strip` and :func:`tf_admm.shrink` (the physically smaller network,
checked to give the masked one's outputs); ``.tflite`` files of the dense model, the shrunk one
(float, and full-int8 with ``--int8``), written by :func:`tflite_export.export` without the
internal tensors' names (``tensor_names="io"``: inputs and outputs keep theirs), and of tfmot's
``prune_low_magnitude(..., sparsity_m_by_n=(2, 4))`` trained for as many epochs as ADMM and
retraining together (the converter's file, names kept); their LiteRT accuracy and
interleaved latency medians in one run (1 and 2 threads). Choices are made on the validation
split (the last 5,000 training images); the test set reports.

Prints the table and writes ``results.json`` to ``--model_dir``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags, logging

import tf_admm
from bench import common
from recipes import data, mobilenet_files, models, quiet_logs, run_files, schedules, training
from tf_admm.compat import keras, tf
from tflite_export import verify

FASHION_MNIST_TRAIN_EXAMPLES = 60_000
# Training images that calibrate the activation ranges of the full-integer file.
CALIBRATION_EXAMPLES = 500
# Outputs of the shrunk model may differ from the masked model's by float rounding only.
SHRINK_TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything :func:`run` needs, so tests can call it without flags.

    Attributes:
      model_dir: where the dense checkpoint, files and ``results.json`` go.
      data_dir: TFDS data directory (None: the default).
      width: channel multiplier of :func:`recipes.models.mobilenet_fashion`.
      sparsity: fraction of every plain convolution's filters removed.
      bits: quantize the kept weights to this many bits of uniform levels (0: no levels).
      pretrain_epochs: dense training epochs.
      admm_epochs: epochs of ADMM before the hard projection.
      retrain_epochs: epochs of masked retraining.
      tfmot_epochs: epochs of tfmot's 2:4 arm (None: ``admm_epochs + retrain_epochs``; 0: not
        run).
      update_every: steps between Z/U updates (at most one epoch's steps).
      rho: initial rho.
      rho_growth: rho's total growth over the ADMM epochs.
      batch_size: training batch size.
      learning_rate: Adam's learning rate (dense, ADMM, tfmot; step decay in the last phase).
      int8: also export and time the shrunk model as a full-integer file.
      validation_examples: the last this many training images, never trained on.
      train_examples: train on only the first this many training images (None: all others).
      synthetic_examples: random images instead of Fashion-MNIST (tests): this many training
        images; validation and test get a quarter each.
      threads: LiteRT thread counts timed.
      rounds: interleaved timing rounds.
      invokes_per_round: timed invokes per file, thread count and round.
      warmup: untimed invokes per interpreter first.
      seed: weights, data order and timing inputs.
      verbose: Keras fit verbosity.
    """

    model_dir: str
    data_dir: str | None = None
    width: float = 1.0
    sparsity: float = 0.6
    bits: int = 0
    pretrain_epochs: int = 10
    admm_epochs: int = 5
    retrain_epochs: int = 5
    tfmot_epochs: int | None = None
    update_every: int = 100
    rho: float = 1e-3
    rho_growth: float = 50.0
    batch_size: int = 128
    learning_rate: float = 1e-3
    int8: bool = True
    validation_examples: int = 5_000
    train_examples: int | None = None
    synthetic_examples: int = 0
    threads: tuple[int, ...] = (1, 2)
    rounds: int = 20
    invokes_per_round: int = 25
    warmup: int = 20
    seed: int = 0
    verbose: int = 2

    def __post_init__(self):
        def expect(condition: bool, wanted: str, field: str) -> None:
            if not condition:
                raise ValueError(f"Expected {wanted}; received: {field}={getattr(self, field)!r}")

        expect(0 < self.width <= 16, "0 < width <= 16", "width")
        expect(0 < self.sparsity < 1, "0 < sparsity < 1", "sparsity")
        expect(self.bits in (0, 2, 3, 4, 5, 6, 7, 8), "bits 0 (none) or 2..8", "bits")
        for field in ("pretrain_epochs", "retrain_epochs", "rounds", "invokes_per_round"):
            expect(getattr(self, field) >= 1, f"{field} >= 1", field)
        expect(self.admm_epochs >= 1, "admm_epochs >= 1", "admm_epochs")
        expect(
            self.tfmot_epochs is None or self.tfmot_epochs >= 0, "tfmot_epochs >= 0", "tfmot_epochs"
        )
        for field in ("update_every", "batch_size"):
            expect(getattr(self, field) >= 1, f"{field} >= 1", field)
        expect(self.rho > 0, "rho > 0", "rho")
        expect(self.rho_growth >= 1, "rho_growth >= 1", "rho_growth")
        expect(self.learning_rate > 0, "learning_rate > 0", "learning_rate")
        expect(
            0 < self.validation_examples < FASHION_MNIST_TRAIN_EXAMPLES,
            f"0 < validation_examples < {FASHION_MNIST_TRAIN_EXAMPLES}",
            "validation_examples",
        )
        expect(
            self.train_examples is None or self.train_examples >= 1,
            "train_examples >= 1",
            "train_examples",
        )
        expect(self.synthetic_examples >= 0, "synthetic_examples >= 0", "synthetic_examples")
        expect(bool(self.threads) and min(self.threads) >= 1, "threads >= 1", "threads")
        expect(self.warmup >= 0, "warmup >= 0", "warmup")

    @property
    def compress_epochs(self) -> int:
        return self.admm_epochs + self.retrain_epochs

    @property
    def tfmot_training_epochs(self) -> int:
        return self.compress_epochs if self.tfmot_epochs is None else self.tfmot_epochs


def _synthetic(settings: Settings) -> dict[str, tuple[tf.Tensor, tf.Tensor]]:
    rng = np.random.default_rng(settings.seed)
    splits = {}
    for name, count in (
        ("train", settings.synthetic_examples),
        ("validation", max(1, settings.synthetic_examples // 4)),
        ("test", max(1, settings.synthetic_examples // 4)),
    ):
        images = rng.integers(0, 256, (count, 28, 28, 1), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.int64)
        splits[name] = (tf.constant(images), tf.constant(labels))
    return splits


def load_splits(settings: Settings) -> tuple[dict[str, tuple[tf.Tensor, tf.Tensor]], str]:
    """uint8 images and labels of ``train``, ``validation`` and ``test``; and their source."""
    if settings.synthetic_examples:
        return _synthetic(settings), "synthetic"
    data_dir = data.prepare_fashion_mnist(settings.data_dir)
    first_validation = FASHION_MNIST_TRAIN_EXAMPLES - settings.validation_examples
    end = first_validation
    if settings.train_examples:
        end = min(end, settings.train_examples)
    splits = {}
    for name, split in (
        ("train", f"train[:{end}]"),
        ("validation", f"train[{first_validation}:]"),
        ("test", "test"),
    ):
        examples = tfds.load(
            "fashion_mnist",
            split=split,
            data_dir=data_dir,
            as_supervised=True,
            download=False,
            batch_size=-1,
        )
        images, labels = tfds.as_numpy(examples)
        splits[name] = (tf.constant(images), tf.constant(labels))
    return splits, "fashion_mnist"


def _batches(arrays, batch_size: int) -> tf.data.Dataset:
    images, labels = arrays
    images = tf.cast(images, tf.float32) / 255.0
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


def _train_data(settings: Settings, arrays, salt: int):
    """Builds epoch-keyed training batches for an optimizer (a resumed run sees the same)."""
    steps = -(-int(arrays[0].shape[0]) // settings.batch_size)

    def build(optimizer):
        train = data.epoch_keyed_batches(
            *arrays,
            settings.batch_size,
            seed=settings.seed * 3 + salt,
            epoch=lambda: optimizer.iterations // steps,
        )
        return train.prefetch(tf.data.AUTOTUNE)

    return build


def compression_spec(
    settings: Settings, steps_per_epoch: int, model: keras.Model | None = None
) -> tf_admm.Spec:
    """Filter pruning (and ``bits`` levels) of every plain convolution, Z/U counted in steps.

    A convolution of ``model`` that keeps fewer weights than ``bits`` has levels (the stem and
    project1 at 60% and 8 bits) gets filter pruning alone, through a rule of its own before the
    general one.
    """
    update_every = min(settings.update_every, steps_per_epoch)
    rounds = max(1, settings.admm_epochs * steps_per_epoch // update_every)
    prune = {"structure": "filter", "sparsity": settings.sparsity}
    rules = []
    if settings.bits and model is not None:
        for layer in model.layers:
            if type(layer) is not keras.layers.Conv2D:
                continue
            filters = int(layer.kernel.shape[-1])
            kept_filters = filters - int(round(settings.sparsity * filters))
            if kept_filters * int(np.prod(layer.kernel.shape[:-1])) < 2**settings.bits:
                rules.append(tf_admm.Rule(name=layer.name, **prune))
    bits = {"bits": settings.bits} if settings.bits else {}
    rules.append(tf_admm.Rule(layer_type="Conv2D", **prune, **bits))
    return tf_admm.Spec(
        rules=rules,
        update_every=update_every,
        update_unit="step",
        admm_rounds=rounds,
        rho=tf_admm.RhoSchedule(
            initial=settings.rho, multiplier=settings.rho_growth ** (1 / max(1, rounds - 1))
        ),
        **({"quant_admm_rounds": 1, "quant_fractions": (1.0,)} if settings.bits else {}),
    )


def _accuracy(model: keras.Model, dataset: tf.data.Dataset) -> float:
    model.compile(loss=training.loss(), metrics=training.accuracy_metrics())
    return float(model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"])


def _dense_name(settings: Settings, source: str) -> str:
    shaping = {
        field: getattr(settings, field)
        for field in (
            "width",
            "pretrain_epochs",
            "batch_size",
            "learning_rate",
            "validation_examples",
            "train_examples",
            "synthetic_examples",
            "seed",
        )
    }
    shaping["source"] = source
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]
    return f"dense_{digest}"


def channel_counts(model: keras.Model) -> dict[str, int]:
    """Output channels of every (depthwise) convolution and units of every Dense layer."""
    kinds = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    return {
        layer.name: int(layer.output.shape[-1])
        for layer in model.layers
        if isinstance(layer, kinds)
    }


def run(settings: Settings) -> dict[str, Any]:
    """Runs the whole recipe; returns the results (also written to ``results.json``)."""
    os.makedirs(settings.model_dir, exist_ok=True)
    timings: dict[str, float] = {}
    resumed: dict[str, int] = {}

    start = time.perf_counter()
    splits, source = load_splits(settings)
    validation_ds = _batches(splits["validation"], settings.batch_size)
    test_ds = _batches(splits["test"], settings.batch_size)
    steps_per_epoch = -(-int(splits["train"][0].shape[0]) // settings.batch_size)
    timings["data"] = time.perf_counter() - start

    start = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    dense = models.mobilenet_fashion(width_multiplier=settings.width)
    name = _dense_name(settings, source)
    dense_metrics = training.pretrain(
        dense,
        _train_data(settings, splits["train"], salt=0),
        test_ds,
        checkpoint=os.path.join(settings.model_dir, f"{name}.weights.h5"),
        backup=run_files.backup_dir(settings.model_dir, name),
        learning_rate=settings.learning_rate,
        epochs=settings.pretrain_epochs,
        schedule=schedules.step_decay(settings.learning_rate, settings.pretrain_epochs),
        resumed=resumed,
        description="MobileNet-v2 (Fashion-MNIST)",
        verbose=settings.verbose,
    )
    timings["pretrain"] = time.perf_counter() - start
    logging.info("Dense test accuracy: %.4f", dense_metrics["accuracy"])

    spec = compression_spec(settings, steps_per_epoch, dense)
    shaping = dataclasses.asdict(settings)
    for field in ("model_dir", "data_dir", "verbose", "int8", "threads", "rounds"):
        del shaping[field]
    for field in ("invokes_per_round", "warmup", "tfmot_epochs"):
        del shaping[field]
    admm_backup = run_files.backup_dir(settings.model_dir, "admm", shaping, spec.to_dict())
    keras.utils.set_random_seed(settings.seed)
    admm, phase_times = training.compress(
        dense,
        spec,
        _train_data(settings, splits["train"], salt=1),
        learning_rate=settings.learning_rate,
        retrain_learning_rate=settings.learning_rate,
        retrain_epochs=settings.retrain_epochs,
        log_dir=os.path.join(settings.model_dir, "logs"),
        backup=admm_backup,
        resumed=resumed,
        verbose=settings.verbose,
    )
    timings.update(phase_times)
    pruned = tf_admm.strip(admm)
    small = tf_admm.shrink(pruned)
    sample = tf.cast(splits["test"][0][:64], tf.float32) / 255.0
    shrink_error = float(np.max(np.abs(small(sample).numpy() - pruned(sample).numpy())))
    if shrink_error > SHRINK_TOLERANCE:
        raise AssertionError(
            f"The shrunk model's outputs differ from the masked model's by {shrink_error:g} "
            f"(at most {SHRINK_TOLERANCE:g} expected)"
        )
    small.save(os.path.join(settings.model_dir, "mobilenet_shrunk.keras"))

    accuracy = {
        label: {"validation": _accuracy(model, validation_ds), "test": _accuracy(model, test_ds)}
        for label, model in (("dense", dense), ("pruned", pruned), ("shrunk", small))
    }
    keras_test = {"dense": accuracy["dense"]["test"], "shrunk": accuracy["shrunk"]["test"]}
    tfmot_layers: list[str] = []
    tfmot_model = None
    if settings.tfmot_training_epochs:
        start = time.perf_counter()
        keras.utils.set_random_seed(settings.seed)
        tfmot_model, tfmot_layers = mobilenet_files.tfmot_2of4(
            dense,
            _train_data(settings, splits["train"], salt=1),
            epochs=settings.tfmot_training_epochs,
            learning_rate=settings.learning_rate,
            verbose=settings.verbose,
        )
        timings["tfmot_2of4"] = time.perf_counter() - start
        accuracy["tfmot_2of4"] = {
            "validation": _accuracy(tfmot_model, validation_ds),
            "test": _accuracy(tfmot_model, test_ds),
        }
        keras_test["tfmot_2of4"] = accuracy["tfmot_2of4"]["test"]

    start = time.perf_counter()
    files = [
        mobilenet_files.export_file(
            "dense", dense, os.path.join(settings.model_dir, "dense.tflite"), test_ds
        ),
        mobilenet_files.export_file(
            "shrunk", small, os.path.join(settings.model_dir, "shrunk.tflite"), test_ds
        ),
    ]
    if settings.int8:
        calibration = tf.cast(splits["train"][0][:CALIBRATION_EXAMPLES], tf.float32) / 255.0
        files.append(
            mobilenet_files.export_file(
                "shrunk_int8",
                small,
                os.path.join(settings.model_dir, "shrunk_int8.tflite"),
                test_ds,
                representative_data=calibration.numpy(),
                # An untrained model's class scores are near ties: top-1 agreement says nothing.
                tolerance=(
                    verify.Int8Tolerance(top1_agreement=0.0) if source == "synthetic" else None
                ),
            )
        )
        keras_test["shrunk_int8"] = keras_test["shrunk"]
    if tfmot_model is not None:
        files.append(
            mobilenet_files.export_file(
                "tfmot_2of4",
                tfmot_model,
                os.path.join(settings.model_dir, "tfmot_2of4.tflite"),
                test_ds,
                sparse_converter=True,
            )
        )
        files[-1]["pruned_layers"] = tfmot_layers
    for entry in files:
        entry["keras_test_accuracy"] = keras_test[entry["name"]]
    timings["export"] = time.perf_counter() - start

    start = time.perf_counter()
    mobilenet_files.measure_latency(
        files,
        threads=settings.threads,
        rounds=settings.rounds,
        invokes_per_round=settings.invokes_per_round,
        warmup=settings.warmup,
        seed=settings.seed,
    )
    timings["latency"] = time.perf_counter() - start

    dense_test = accuracy["dense"]["test"]
    acceptance = []
    for entry in files:
        if not entry["name"].startswith("shrunk"):
            continue
        one_thread = next(row for row in entry["latency"] if row["threads"] == 1)
        drop = 100 * (dense_test - entry["litert_test_accuracy"])
        verdict = {
            "file": entry["name"],
            "x_faster_1_thread": one_thread["x_faster"],
            "x_smaller": entry["x_smaller"],
            "test_points_below_dense": drop,
        }
        verdict["met"] = bool(
            verdict["x_faster_1_thread"] >= 2 and verdict["x_smaller"] >= 4 and drop <= 1.0
        )
        acceptance.append(verdict)

    results: dict[str, Any] = {
        "accuracy": accuracy,
        "files": files,
        "acceptance": acceptance,
        "channels": {"dense": channel_counts(dense), "shrunk": channel_counts(small)},
        "channel_groups": [list(group.members) for group in tf_admm.channel_groups(dense)],
        "shrink_max_abs_error": shrink_error,
        "spec": spec.to_dict(),
        "settings": dataclasses.asdict(settings),
        "data": source,
        "seconds": timings,
        "resumed_after_epochs": resumed,
        "run": run_files.provenance("recipes.mobilenet_fashion_mnist", settings.seed),
        "machine": common.machine_info(),
        "load_average": common.load_average(),
    }
    run_files.write_json_atomically(os.path.join(settings.model_dir, "results.json"), results)
    # Only now is nothing left to resume.
    shutil.rmtree(admm_backup, ignore_errors=True)
    print(mobilenet_files.format_results(results))
    if source == "synthetic":
        print("(synthetic data: accuracies say nothing about the task)")
    return results


# ----------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, flags.FlagHolder]:
    """Defines the recipe's flags in ``flag_values`` (defaults: :class:`Settings`'); returns
    their holders by name. Called under ``__main__`` only, so that importing the recipe beside
    another one defines no flag twice."""
    defaults = Settings(model_dir="runs/mobilenet_fashion_mnist")
    holders: dict[str, flags.FlagHolder] = {}

    def define(kind, name, default, help_text, **kwargs):
        holders[name] = kind(name, default, help_text, flag_values=flag_values, **kwargs)

    define(flags.DEFINE_string, "model_dir", defaults.model_dir, "Where files and results go.")
    define(flags.DEFINE_string, "data_dir", None, "TFDS data directory (default: TFDS's).")
    define(flags.DEFINE_float, "width", defaults.width, "Channel multiplier of the model.")
    define(
        flags.DEFINE_float,
        "sparsity",
        defaults.sparsity,
        "Fraction of every plain convolution's filters removed.",
    )
    define(
        flags.DEFINE_integer,
        "bits",
        defaults.bits,
        "Uniform levels of this many bits (2..8) for the kept weights (0: none).",
    )
    define(
        flags.DEFINE_integer,
        "pretrain_epochs",
        defaults.pretrain_epochs,
        "Dense training epochs (the dense model is cached in --model_dir).",
    )
    define(flags.DEFINE_integer, "admm_epochs", defaults.admm_epochs, "Epochs of ADMM.")
    define(
        flags.DEFINE_integer,
        "retrain_epochs",
        defaults.retrain_epochs,
        "Epochs of masked retraining.",
    )
    define(
        flags.DEFINE_integer,
        "tfmot_epochs",
        None,
        "Epochs of tfmot's 2:4 arm (default: --admm_epochs + --retrain_epochs; 0: not run).",
    )
    define(
        flags.DEFINE_integer,
        "update_every",
        defaults.update_every,
        "Steps between ADMM Z/U updates (at most an epoch's).",
    )
    define(flags.DEFINE_float, "rho", defaults.rho, "Initial ADMM rho.")
    define(
        flags.DEFINE_float,
        "rho_growth",
        defaults.rho_growth,
        "Total growth of rho over the ADMM epochs.",
    )
    define(flags.DEFINE_integer, "batch_size", defaults.batch_size, "Training batch size.")
    define(
        flags.DEFINE_float,
        "learning_rate",
        defaults.learning_rate,
        "Adam learning rate of every arm (step decay in the last phase).",
    )
    define(flags.DEFINE_bool, "int8", defaults.int8, "Also export and time a full-int8 file.")
    define(
        flags.DEFINE_integer,
        "train_examples",
        None,
        "Train on only the first this many training images (smoke runs).",
    )
    define(
        flags.DEFINE_integer,
        "synthetic_examples",
        0,
        "Random images instead of Fashion-MNIST: this many for training (smoke runs).",
    )
    define(flags.DEFINE_list, "threads", ["1", "2"], "LiteRT thread counts timed.")
    define(flags.DEFINE_integer, "rounds", defaults.rounds, "Interleaved timing rounds.")
    define(
        flags.DEFINE_integer,
        "invokes_per_round",
        defaults.invokes_per_round,
        "Timed invokes per file, thread count and round.",
    )
    define(flags.DEFINE_integer, "seed", defaults.seed, "Random seed.")
    holders["verbose"] = flags.DEFINE_enum(
        "verbose", "2", ["0", "1", "2"], "Keras fit verbosity.", flag_values=flag_values
    )
    return holders


def settings_from_flags(holders: dict[str, flags.FlagHolder]) -> Settings:
    """The :class:`Settings` the parsed flags give; a bad value is an ``app.UsageError``."""
    values = {name: holder.value for name, holder in holders.items()}
    try:
        values["threads"] = tuple(int(value) for value in values["threads"])
        values["verbose"] = int(values["verbose"])
        return Settings(**values)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def main_for(holders: dict[str, flags.FlagHolder] | None):
    """The ``main(argv)`` of ``app.run`` for flags defined by :func:`define_flags`."""

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
        quiet_logs.install()
        run(settings_from_flags(holders))

    return main


if __name__ == "__main__":
    app.run(main_for(define_flags()))
