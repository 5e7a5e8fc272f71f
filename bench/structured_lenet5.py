"""LeNet-5 on MNIST with ADMM filter pruning (conv1, conv2) and column pruning (fc1, fc2),
shrunk, exported and timed in LiteRT against dense, unstructured pruning and tfmot's 2:4.

Usage:
  python -m bench.structured_lenet5                        # 50% of filters and columns
  python -m bench.structured_lenet5 --sparsity=0.5 --fc_sparsity=0.75
  python -m bench.structured_lenet5 --smoke                # seconds: random images

Steps, every arm from one dense model (12 epochs, cached in ``--work_dir``; the frontier's
``bench.sweep.dense_model``, trained on the first 55,000 training images):

  structured     ADMM with ``Rule(structure="filter")`` on conv1 and conv2 and
                 ``Rule(structure="column")`` on fc1 and fc2 (a column of a Dense kernel is one
                 input: column pruning of fc2, the output layer, removes fc1 units and keeps
                 the 10 classes), ``--admm_epochs`` then ``--retrain_epochs`` of masked
                 retraining; stripped (``masked``), then ``tf_admm.shrink`` (``shrunk``,
                 checked against the masked outputs), also as a full-int8 file (``--int8``).
  unstructured   the same schedule with unstructured rules keeping exactly the structured
                 model's nonzero weights per layer (``--unstructured``).
  tfmot_2of4     tfmot's ``prune_low_magnitude(..., sparsity_m_by_n=(2, 4))`` on the four
                 layers (conv1 has one input channel, so tfmot leaves it dense), trained for as
                 many epochs as ADMM and retraining together (``--tfmot_2of4``).

Every file is written by ``tflite_export.export`` (verified against Keras), tfmot's with
``EXPERIMENTAL_SPARSITY`` as in its guide; each file's test accuracy is measured in LiteRT and
all files are timed in one interleaved run (``bench.latency_measure``, XNNPACK on, batch 1).
Choices are made on validation (the last 5,000 training images); test reports.

Prints one table (``bench.structured_table``) and writes JSON (``--out``) for ``bench.results``
(``--structured``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np
from absl import app, flags, logging

import tf_admm
from bench import common, structured_table, sweep
from bench.structured_table import BENCHMARK
from recipes import mobilenet_files, run_files, training
from tf_admm.compat import keras, tf
from tflite_export import verify

__all__ = ["CONV_LAYERS", "FC_LAYERS", "Settings", "format_results", "rules", "run"]

CONV_LAYERS = ("conv1", "conv2")
FC_LAYERS = ("fc1", "fc2")
# Training images that calibrate the full-integer file's activation ranges.
CALIBRATION_EXAMPLES = 500


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything :func:`run` needs, so tests can call it without flags.

    Attributes:
      work_dir: dense checkpoint, training logs and ``.tflite`` files.
      data_dir: TFDS data directory (None: the default).
      sparsity: fraction of conv1's and conv2's filters removed.
      fc_sparsity: fraction of fc1's and fc2's columns (inputs) removed.
      pretrain_epochs: dense epochs (cosine learning rate; cached).
      admm_epochs: ADMM epochs before the hard projection.
      retrain_epochs: masked retraining epochs.
      update_every: steps between Z/U updates (at most an epoch's).
      rho: initial rho.
      rho_growth: rho's total growth over the ADMM epochs.
      batch_size: training batch size.
      learning_rate: Adam's learning rate (every arm; step decay in retraining).
      unstructured: add the unstructured arm.
      tfmot_2of4: add tfmot's 2:4 arm.
      int8: also export the shrunk model as a full-integer file.
      validation_examples: the last this many training images, never trained on.
      train_examples: train on only the first this many (None: all the others).
      synthetic_examples: random images instead of MNIST (tests): this many for training,
        a quarter each for validation and test.
      threads: LiteRT thread counts timed.
      rounds: interleaved timing rounds.
      invokes_per_round: timed invokes per file, thread count and round.
      warmup: untimed invokes per interpreter first.
      seed: weights, data order, timing inputs.
      verbose: Keras fit verbosity.
      out: JSON path, or None.
      command: the command line to report.
    """

    work_dir: str = "runs/bench/structured_lenet5"
    data_dir: str | None = None
    sparsity: float = 0.5
    fc_sparsity: float = 0.5
    pretrain_epochs: int = 12
    admm_epochs: int = 4
    retrain_epochs: int = 4
    update_every: int = 100
    rho: float = 1e-3
    rho_growth: float = 50.0
    batch_size: int = 128
    learning_rate: float = 1e-3
    unstructured: bool = True
    tfmot_2of4: bool = True
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
    out: str | None = "runs/bench/structured_lenet5.json"
    command: str = "bench.structured_lenet5.run()"

    def __post_init__(self):
        def expect(condition: bool, wanted: str, field: str) -> None:
            if not condition:
                raise ValueError(f"Expected {wanted}; received: {field}={getattr(self, field)!r}")

        for field in ("sparsity", "fc_sparsity"):
            expect(0 < getattr(self, field) < 1, f"0 < {field} < 1", field)
        for field in ("pretrain_epochs", "admm_epochs", "retrain_epochs", "update_every"):
            expect(getattr(self, field) >= 1, f"{field} >= 1", field)
        for field in ("batch_size", "rounds", "invokes_per_round", "validation_examples"):
            expect(getattr(self, field) >= 1, f"{field} >= 1", field)
        expect(self.rho > 0, "rho > 0", "rho")
        expect(self.rho_growth >= 1, "rho_growth >= 1", "rho_growth")
        expect(self.learning_rate > 0, "learning_rate > 0", "learning_rate")
        expect(self.warmup >= 0, "warmup >= 0", "warmup")
        expect(self.synthetic_examples >= 0, "synthetic_examples >= 0", "synthetic_examples")
        expect(
            self.train_examples is None or self.train_examples >= 1,
            "train_examples >= 1",
            "train_examples",
        )
        expect(bool(self.threads) and min(self.threads) >= 1, "threads >= 1", "threads")

    @property
    def compress_epochs(self) -> int:
        return self.admm_epochs + self.retrain_epochs

    @classmethod
    def smoke(cls, **overrides) -> Settings:
        """Seconds: 256 random images, one epoch per phase, a few timed invokes."""
        values: dict[str, Any] = dict(
            work_dir=tempfile.mkdtemp("structured_lenet5_smoke"),
            synthetic_examples=256,
            pretrain_epochs=1,
            admm_epochs=1,
            retrain_epochs=1,
            update_every=1,
            threads=(1,),
            rounds=2,
            invokes_per_round=5,
            warmup=2,
            verbose=0,
            out=None,
        )
        values.update(overrides)
        return cls(**values)


def rules(settings: Settings) -> dict[str, tf_admm.Rule]:
    """Filter pruning of conv1 and conv2, column pruning of fc1 and fc2, by layer name."""
    found = {
        name: tf_admm.Rule(name=name, structure="filter", sparsity=settings.sparsity)
        for name in CONV_LAYERS
    }
    for name in FC_LAYERS:
        found[name] = tf_admm.Rule(name=name, structure="column", sparsity=settings.fc_sparsity)
    return found


def _spec(settings: Settings, layer_rules, steps_per_epoch: int) -> tf_admm.Spec:
    update_every = min(settings.update_every, steps_per_epoch)
    rounds = max(1, settings.admm_epochs * steps_per_epoch // update_every)
    return tf_admm.Spec(
        rules=list(layer_rules),
        update_every=update_every,
        update_unit="step",
        admm_rounds=rounds,
        rho=tf_admm.RhoSchedule(
            initial=settings.rho, multiplier=settings.rho_growth ** (1 / max(1, rounds - 1))
        ),
    )


def _protocol(settings: Settings) -> sweep.Protocol:
    """The frontier's protocol, for its data split and cached dense model."""
    return sweep.Protocol(
        pretrain_epochs=settings.pretrain_epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        validation_examples=settings.validation_examples,
        train_examples=settings.train_examples,
    )


def _synthetic(settings: Settings):
    rng = np.random.default_rng(settings.seed)

    def split(count):
        images = rng.random((count, 28, 28, 1), dtype=np.float32)
        return images, rng.integers(0, 10, count).astype(np.int64)

    quarter = max(1, settings.synthetic_examples // 4)
    return split(settings.synthetic_examples), split(quarter), split(quarter)


def _batches(arrays, batch_size: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)


def _compress(settings, dense, layer_rules, train, label, resumed, timings):
    steps = -(-len(train[0]) // settings.batch_size)
    spec = _spec(settings, layer_rules, steps)
    shaping = dataclasses.asdict(settings)
    for field in ("work_dir", "data_dir", "verbose", "out", "command", "threads", "rounds"):
        del shaping[field]
    # A backup of its own per arm, settings and spec: a killed run resumes, another never does.
    backup = run_files.backup_dir(settings.work_dir, label, shaping, spec.to_dict())
    keras.utils.set_random_seed(settings.seed)
    start = time.perf_counter()
    admm, _ = training.compress(
        dense,
        spec,
        lambda optimizer: sweep.batches(train, settings.batch_size, settings.seed + 1),
        learning_rate=settings.learning_rate,
        retrain_learning_rate=settings.learning_rate,
        retrain_epochs=settings.retrain_epochs,
        log_dir=os.path.join(settings.work_dir, f"logs_{label}"),
        backup=backup,
        resumed=resumed,
        verbose=settings.verbose,
    )
    timings[label] = time.perf_counter() - start
    shutil.rmtree(backup, ignore_errors=True)
    return tf_admm.strip(admm), spec


def _kernel(model: keras.Model, name: str) -> np.ndarray:
    return model.get_layer(name).kernel.numpy()


def _zero_columns(kernel: np.ndarray) -> np.ndarray:
    return np.flatnonzero(~np.any(kernel != 0, axis=-1))


def _findings(masked: keras.Model, small: keras.Model) -> list[str]:
    """What column pruning of fc1 and fc2 gave shrink, in words (from the kernels)."""
    conv2 = _kernel(masked, "conv2")
    channels = conv2.shape[-1]
    removed_filters = set(np.flatnonzero(~np.any(conv2.reshape(-1, channels) != 0, axis=0)))
    fc1_zero = _zero_columns(_kernel(masked, "fc1"))
    # Flatten reads (h, w, c) row-major: input row r comes from conv2's channel r % channels.
    in_removed = int(sum(1 for row in fc1_zero if row % channels in removed_filters))
    small_fc1 = _kernel(small, "fc1")
    fc2_zero = _zero_columns(_kernel(masked, "fc2"))
    return [
        f"fc1: {len(fc1_zero)} zero columns, {in_removed} of them reading conv2 filters that "
        f"filter pruning removed anyway; shrink keeps fc1 as {small_fc1.shape[0]} inputs x "
        f"{small_fc1.shape[1]} units with {len(_zero_columns(small_fc1))} zero input columns "
        "left (an input column goes only with its whole conv2 channel).",
        f"fc2: {len(fc2_zero)} zero columns; shrink removes the fc1 units they read "
        f"(fc1 {_kernel(masked, 'fc1').shape[1]} -> {small_fc1.shape[1]} units).",
    ]


def run(settings: Settings) -> dict[str, Any]:
    """Trains every arm, exports and times the files, prints the table; returns the document
    (also written to ``settings.out``)."""
    machine = common.machine_info()
    start = common.snapshot()
    print(common.format_header("Structured LeNet-5 (MNIST)", settings.command, machine, start))
    os.makedirs(settings.work_dir, exist_ok=True)
    timings: dict[str, float] = {}
    resumed: dict[str, int] = {}
    protocol = _protocol(settings)
    if settings.synthetic_examples:
        (train, validation, test), source = _synthetic(settings), "synthetic"
        dense_dir = os.path.join(settings.work_dir, "synthetic")
    else:
        (train, validation, test), source = sweep.load_arrays(protocol, settings.data_dir), "mnist"
        dense_dir = settings.work_dir
    begin = time.perf_counter()
    dense = sweep.dense_model(protocol, settings.seed, train, dense_dir, verbose=settings.verbose)
    timings["dense"] = time.perf_counter() - begin

    layer_rules = rules(settings)
    masked, spec = _compress(
        settings, dense, layer_rules.values(), train, "structured", resumed, timings
    )
    kept = {name: int(np.count_nonzero(_kernel(masked, name))) for name in layer_rules}
    small = tf_admm.shrink(masked)
    shrink_error = float(
        np.max(np.abs(small.predict(test[0], verbose=0) - masked.predict(test[0], verbose=0)))
    )
    models = {"dense": dense, "structured_masked": masked, "structured_shrunk": small}
    if settings.unstructured:
        exact = [tf_admm.Rule(name=name, keep=count) for name, count in kept.items()]
        models["unstructured"], _ = _compress(
            settings, dense, exact, train, "unstructured", resumed, timings
        )
    tfmot_layers: list[str] = []
    if settings.tfmot_2of4:
        begin = time.perf_counter()
        keras.utils.set_random_seed(settings.seed)
        models["tfmot_2of4"], tfmot_layers = mobilenet_files.tfmot_2of4(
            dense,
            lambda optimizer: sweep.batches(train, settings.batch_size, settings.seed + 1),
            epochs=settings.compress_epochs,
            learning_rate=settings.learning_rate,
            verbose=settings.verbose,
        )
        timings["tfmot_2of4"] = time.perf_counter() - begin

    begin = time.perf_counter()
    test_ds = _batches(test, 1000)
    order = ["dense", "unstructured", "structured_masked", "structured_shrunk", "tfmot_2of4"]
    files = []
    for name in [n for n in order if n in models]:
        path = os.path.join(settings.work_dir, f"lenet5_{name}.tflite")
        entry = mobilenet_files.export_file(
            name, models[name], path, test_ds, sparse_converter=name == "tfmot_2of4"
        )
        entry["keras_validation_accuracy"] = sweep.accuracy(models[name], validation)
        entry["keras_test_accuracy"] = sweep.accuracy(models[name], test)
        files.append(entry)
        if name == "structured_shrunk" and settings.int8:
            int8 = mobilenet_files.export_file(
                "structured_shrunk_int8",
                small,
                os.path.join(settings.work_dir, "lenet5_structured_shrunk_int8.tflite"),
                test_ds,
                representative_data=train[0][:CALIBRATION_EXAMPLES],
                # Random labels leave near ties between class scores: top-1 says nothing.
                tolerance=verify.Int8Tolerance(top1_agreement=0.0) if source != "mnist" else None,
            )
            for field in ("keras_validation_accuracy", "keras_test_accuracy"):
                int8[field] = entry[field]
            files.append(int8)
    timings["export"] = time.perf_counter() - begin

    begin = time.perf_counter()
    mobilenet_files.measure_latency(
        files,
        threads=settings.threads,
        rounds=settings.rounds,
        invokes_per_round=settings.invokes_per_round,
        warmup=settings.warmup,
        seed=settings.seed,
    )
    timings["latency"] = time.perf_counter() - begin

    results: dict[str, Any] = {
        "benchmark": BENCHMARK,
        "command": settings.command,
        "settings": dataclasses.asdict(settings) | {"dataset": source},
        "machine": machine,
        "start": start,
        "run": run_files.provenance("bench.structured_lenet5", settings.seed),
        "rules": {
            name: f"{rule.structure.value} {rule.sparsity:.0%}"
            for name, rule in layer_rules.items()
        },
        "spec": spec.to_dict(),
        "kept": kept,
        "masked_kernels": {n: list(_kernel(masked, n).shape) for n in layer_rules},
        "shrunk_kernels": {n: list(_kernel(small, n).shape) for n in layer_rules},
        "shrink_max_abs_error": shrink_error,
        "findings": _findings(masked, small),
        "tfmot_2of4_layers": tfmot_layers,
        "files": files,
        "seconds": timings,
        "resumed_after_epochs": resumed,
        "end": common.snapshot(),
    }
    return common.finish(results, format_results(results), out=settings.out)


def format_results(results: dict[str, Any]) -> str:
    """The table and its notes as plain text."""
    table = common.format_table(structured_table.header(results), structured_table.rows(results))
    lines = [table, "", *structured_table.notes(results)]
    if results["settings"]["dataset"] == "synthetic":
        lines.append("(synthetic data: accuracies say nothing about the task)")
    return "\n".join(lines)


# Flags are defined only when this module is the program (see bench.latency).
def _define_flags() -> dict[str, flags.FlagHolder]:
    d = Settings()
    return {
        "smoke": flags.DEFINE_bool("smoke", False, "Random images, seconds: checks it works."),
        "work_dir": flags.DEFINE_string("work_dir", d.work_dir, "Dense model, logs, files."),
        "data_dir": flags.DEFINE_string("data_dir", None, "TFDS data directory."),
        "sparsity": flags.DEFINE_float("sparsity", d.sparsity, "conv1/conv2 filters removed."),
        "fc_sparsity": flags.DEFINE_float("fc_sparsity", d.fc_sparsity, "fc columns removed."),
        "pretrain_epochs": flags.DEFINE_integer(
            "pretrain_epochs", d.pretrain_epochs, "Dense epochs (cached).", lower_bound=1
        ),
        "admm_epochs": flags.DEFINE_integer("admm_epochs", d.admm_epochs, "ADMM epochs."),
        "retrain_epochs": flags.DEFINE_integer(
            "retrain_epochs", d.retrain_epochs, "Masked retraining epochs."
        ),
        "update_every": flags.DEFINE_integer("update_every", d.update_every, "Steps per Z/U."),
        "rho": flags.DEFINE_float("rho", d.rho, "Initial rho."),
        "rho_growth": flags.DEFINE_float("rho_growth", d.rho_growth, "rho's total growth."),
        "batch_size": flags.DEFINE_integer("batch_size", d.batch_size, "Batch size."),
        "learning_rate": flags.DEFINE_float("learning_rate", d.learning_rate, "Adam's rate."),
        "unstructured": flags.DEFINE_bool("unstructured", True, "Add the unstructured arm."),
        "tfmot_2of4": flags.DEFINE_bool("tfmot_2of4", True, "Add tfmot's 2:4 arm."),
        "int8": flags.DEFINE_bool("int8", True, "Also a full-int8 file of the shrunk model."),
        "train_examples": flags.DEFINE_integer(
            "train_examples", None, "Only the first N training images."
        ),
        "threads": flags.DEFINE_list("threads", ["1", "2"], "LiteRT thread counts."),
        "rounds": flags.DEFINE_integer("rounds", d.rounds, "Interleaved timing rounds."),
        "invokes_per_round": flags.DEFINE_integer(
            "invokes_per_round", d.invokes_per_round, "Timed invokes per round."
        ),
        "seed": flags.DEFINE_integer("seed", d.seed, "Seed."),
        "verbose": flags.DEFINE_enum("verbose", "2", ["0", "1", "2"], "Keras fit verbosity."),
        "out": flags.DEFINE_string("out", d.out, "JSON path ('' for none)."),
    }


_FLAGS: dict[str, flags.FlagHolder] = {}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.ERROR)
    convert = {
        "threads": lambda values: tuple(int(v) for v in values),
        "verbose": int,
        "out": lambda value: value or None,
    }
    try:
        settings = common.settings_from_flags(_FLAGS, Settings, "bench.structured_lenet5", convert)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    run(settings)


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    app.run(main)
