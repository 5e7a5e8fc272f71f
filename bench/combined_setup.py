"""Settings of :mod:`bench.combined`, its data and the dense LeNet-5 both libraries start from
(pretrained once, cached as a checkpoint)."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import tf_admm
from bench import common
from recipes import data, models, schedules
from tf_admm.compat import keras

__all__ = [
    "CENTROID_INITS",
    "CONFIG",
    "CONFIGS",
    "DATASETS",
    "LIBRARIES",
    "VARIANTS",
    "Settings",
    "checkpoint_path",
    "compile_model",
    "datasets",
    "dense_model",
    "evaluate",
    "pretrain",
    "steps_per_epoch",
]

# The combined recipe's default before 2026-11-29's reallocation, which the recorded runs used.
CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "configs"
)
CONFIG = os.path.join(CONFIGS, "lenet5_admm_quant_105x.json")
DATASETS = {"mnist": data.load_mnist, "fashion_mnist": data.load_fashion_mnist}
LIBRARIES = ("tf_admm", "tfmot")
VARIANTS = ("tf_admm", "tfmot_cluster", "tfmot_pcqat")
CENTROID_INITS = ("kmeans_plus_plus", "linear", "density_based")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything ``run`` needs, so tests can call it without flags.

    Attributes:
      work_dir: JSON, PNG and ``.tflite`` files go here.
      dense_dir: cache of the dense checkpoint (None: ``work_dir``). Its file name records the
        dataset, pretraining epochs, batch size, learning rate, seed and smoke cut.
      dataset: ``"mnist"`` or ``"fashion_mnist"``.
      data_dir: TFDS data directory (None: the default one).
      config: the tf-admm spec (pruning and quantization per layer, rounds, rho schedule).
      ratios: extra points: the config's kept fractions scaled (:func:`allocate`) to
        these pruning ratios, bits unchanged. The config itself is always the first point.
      libraries: among :data:`LIBRARIES`.
      final_epochs: epochs after the config's scheduled rounds (tf-admm's shared-value
        training); the budget of both libraries is scheduled rounds + final_epochs.
      pcqat_epochs: tfmot's last epochs, in PCQAT (0: no PCQAT row).
      pretrain_epochs: dense pretraining epochs (skipped when the checkpoint is cached).
      batch_size: training batch size.
      learning_rate: Adam learning rate for pretraining and during the scheduled rounds.
      retrain_learning_rate: Adam learning rate at the start of the final epochs (then x0.3
        at half, x0.1 for the last quarter).
      seed: weights, data order.
      train_batches: use only this many training batches per epoch (smoke runs).
      test_batches: evaluate on only this many test batches (smoke runs).
      admm_rounds, retrain_rounds, prune_stages, quant_admm_rounds, quant_fractions: override
        the config's (smoke runs shorten them).
      centroid_init: tfmot's centroid initialisation to try first, among
        :data:`CENTROID_INITS`.
      zero_cluster_extra: give tfmot ``2**bits + 1`` clusters (zero plus ``2**bits`` values)
        instead of ``2**bits``.
      export: write and measure the ``.tflite`` files.
      out: JSON path (None: ``<work_dir>/combined_<dataset>.json``; "" for none).
      plot: PNG path (None: ``<work_dir>/combined_<dataset>.png``; "" for none).
      verbose: Keras fit verbosity.
      command: the command line to report.
    """

    work_dir: str = "runs/bench/combined"
    dense_dir: str | None = None
    dataset: str = "mnist"
    data_dir: str | None = None
    config: str = CONFIG
    ratios: tuple[float, ...] = ()
    libraries: tuple[str, ...] = LIBRARIES
    final_epochs: int = 12
    pcqat_epochs: int = 4
    pretrain_epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 1e-3
    retrain_learning_rate: float = 1e-3
    seed: int = 0
    train_batches: int | None = None
    test_batches: int | None = None
    admm_rounds: int | None = None
    retrain_rounds: int | None = None
    prune_stages: tuple[float, ...] | None = None
    quant_admm_rounds: int | None = None
    quant_fractions: tuple[float, ...] | None = None
    centroid_init: str = "kmeans_plus_plus"
    zero_cluster_extra: bool = True
    export: bool = True
    out: str | None = None
    plot: str | None = None
    verbose: int = 0
    command: str = "bench.combined.run()"

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(
                f"Expected dataset in {sorted(DATASETS)}; received: dataset={self.dataset!r}"
            )
        if any(not r >= 1 for r in self.ratios):
            raise ValueError(f"Expected ratios >= 1; received: ratios={list(self.ratios)}")
        if not self.libraries or set(self.libraries) - set(LIBRARIES):
            raise ValueError(
                f"Expected libraries among {list(LIBRARIES)}; "
                f"received: libraries={list(self.libraries)}"
            )
        if self.centroid_init not in CENTROID_INITS:
            raise ValueError(
                f"Expected centroid_init in {list(CENTROID_INITS)}; "
                f"received: centroid_init={self.centroid_init!r}"
            )
        for field in ("final_epochs", "pcqat_epochs", "pretrain_epochs"):
            if getattr(self, field) < 0:
                raise ValueError(f"Expected {field} >= 0; received: {field}={getattr(self, field)}")

    @classmethod
    def smoke(cls, **overrides) -> Settings:
        """One epoch per phase on four batches: about a minute, numbers meaningless."""
        values: dict[str, Any] = dict(
            final_epochs=1,
            pcqat_epochs=1,
            pretrain_epochs=1,
            train_batches=4,
            test_batches=4,
            admm_rounds=1,
            retrain_rounds=0,
            prune_stages=(1.0,),
            quant_admm_rounds=1,
            quant_fractions=(1.0,),
        )
        values.update(overrides)
        return cls(**values)

    def spec(self) -> tf_admm.Spec:
        """The config with this run's overrides, checked to prune and quantize per epoch."""
        spec = tf_admm.Spec.from_file(self.config)
        overrides = {
            field: getattr(self, field)
            for field in (
                "admm_rounds",
                "retrain_rounds",
                "prune_stages",
                "quant_admm_rounds",
                "quant_fractions",
            )
            if getattr(self, field) is not None
        }
        spec = dataclasses.replace(spec, **overrides)
        if not (spec.prunes and spec.quantizes) or spec.update_unit is not tf_admm.Unit.EPOCH:
            raise ValueError(
                "Expected a config that prunes and quantizes, in rounds of epochs; received: "
                f"config={self.config!r} (prunes={spec.prunes}, quantizes={spec.quantizes}, "
                f"update_unit={spec.update_unit.value!r})"
            )
        return spec

    @property
    def dense_directory(self) -> str:
        return self.dense_dir or self.work_dir

    def output_path(self, value: str | None, suffix: str) -> str | None:
        if value is None:
            return os.path.join(self.work_dir, f"combined_{self.dataset}.{suffix}")
        return value or None


def datasets(settings: Settings):
    # Loaded afresh for every run, so that every run sees the same sequence of shuffles.
    train_ds, test_ds = DATASETS[settings.dataset](
        settings.data_dir, batch_size=settings.batch_size, shuffle_seed=settings.seed
    )
    if settings.train_batches:
        train_ds = train_ds.take(settings.train_batches)
    if settings.test_batches:
        test_ds = test_ds.take(settings.test_batches)
    return train_ds, test_ds


def compile_model(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    model.compile(keras.optimizers.Adam(learning_rate), common.classification_loss(), ["accuracy"])
    return model


def evaluate(model: keras.Model, test_ds) -> float:
    compile_model(model)
    return float(model.evaluate(test_ds, verbose=0)[1])


def checkpoint_path(settings: Settings) -> str:
    # The name the frontier benchmark of 2026-11 gave the same checkpoint: a --dense_dir of
    # that time's runs is reused as it is.
    name = (
        f"dense_lenet5_{settings.dataset}_e{settings.pretrain_epochs}_bs{settings.batch_size}"
        f"_lr{settings.learning_rate:g}_s{settings.seed}"
    )
    if settings.train_batches:
        name += f"_b{settings.train_batches}"
    return os.path.join(settings.dense_directory, f"{name}.weights.h5")


def dense_model(settings: Settings) -> keras.Model:
    """A fresh copy of the dense model (from the checkpoint)."""
    keras.utils.set_random_seed(settings.seed)
    model = models.lenet5()
    model.load_weights(checkpoint_path(settings))
    return model


def pretrain(settings: Settings) -> dict[str, Any]:
    """Trains the dense model unless its checkpoint exists; returns its facts."""
    path = checkpoint_path(settings)
    seconds = None
    if not os.path.exists(path):
        train_ds, _ = datasets(settings)
        keras.utils.set_random_seed(settings.seed)
        model = compile_model(models.lenet5(), settings.learning_rate)
        start = time.perf_counter()
        model.fit(
            train_ds,
            epochs=settings.pretrain_epochs,
            verbose=settings.verbose,
            callbacks=[
                keras.callbacks.LearningRateScheduler(
                    schedules.step_decay(settings.learning_rate, settings.pretrain_epochs, start=0)
                )
            ],
        )
        seconds = time.perf_counter() - start
        os.makedirs(settings.dense_directory, exist_ok=True)
        model.save_weights(path)
    _, test_ds = datasets(settings)
    return {
        "checkpoint": path,
        "cached": seconds is None,
        "pretrain_seconds": seconds,
        "accuracy": evaluate(dense_model(settings), test_ds),
    }


def steps_per_epoch(train_ds) -> int:
    count = int(train_ds.cardinality())
    if count < 0:  # Unknown or infinite: count once.
        count = sum(1 for _ in train_ds)
    return count
