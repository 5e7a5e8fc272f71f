"""Accuracy against compression ratio: tf-admm ADMM pruning against tfmot, on LeNet-5.

Usage:
  python -m bench.frontier                                   # MNIST, ratios 20..250
  python -m bench.frontier --dataset=fashion_mnist --ratios=50,100 --epochs=18
  python -m bench.frontier --smoke                           # well under a minute
  python -m bench.frontier --epochs=36 --prune_epochs=20 --prune_stages=0.3333,1 \
      --stage_retrain_epochs=4                               # tf-admm in two stages

Both libraries start from ONE dense LeNet-5 (pretrained once and cached in ``--work_dir``), get
the same per-layer allocation and the same epoch budget and learning-rate schedule:

* Per-layer allocation: the kept fractions of Ye et al.'s 71x LeNet-5 profile
  (``recipes/configs/lenet5_admm_71x_oneshot.json``) scaled by one factor so that the whole network
  keeps ``weights / ratio`` weights (a layer never keeps more than all of its weights). The
  kept counts are integers, and both libraries are handed the sparsities ``1 - kept / size``.
* Epoch budget ``--epochs``: the first ``--prune_epochs`` are tf-admm's ADMM rounds (one round
  per epoch, the 71x config's rho schedule, then the hard projection) and tfmot's
  ``PolynomialDecay`` ramp from 0 to the final sparsity (mask updates at even intervals, the
  last on the last step of the ramp); the rest is masked retraining / fine-tuning for both.
  With ``--prune_stages`` tf-admm prunes progressively (``Spec.prune_stages``), with
  ``--stage_retrain_epochs`` of masked retraining between stages, and tfmot's ramp spans all of
  those epochs; the learning rate between stages decays as in the recipes
  (:func:`recipes.schedules.learning_rate_schedule`).
  Adam at ``--learning_rate`` while pruning, then a step decay (x0.3 at half, x0.1 for the last
  quarter) from ``--retrain_learning_rate``.

For each target ratio and library the benchmark records the test accuracy, the ratio achieved
(all weights / nonzero weights of the compressible kernels, counted after stripping, the same
way for both libraries), the nonzeros per layer and the wall time of the compression run, and
for tf-admm the per-epoch logs (residuals, rho, per-layer sparsity, phase). It prints a table,
writes JSON (``--out``) and draws accuracy against achieved ratio (``--plot``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

from absl import app, flags, logging

import tf_admm
from bench import common, plots
from bench.common import tfmot
from recipes import data, models, schedules
from tf_admm.compat import keras
from tf_admm.projections import keep_count

__all__ = [
    "DATASETS",
    "LIBRARIES",
    "PROFILE_CONFIG",
    "Settings",
    "allocate",
    "load_profile",
    "run",
]

PROFILE_CONFIG = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "recipes",
    "configs",
    "lenet5_admm_71x_oneshot.json",
)
DATASETS = {"mnist": data.load_mnist, "fashion_mnist": data.load_fashion_mnist}
LIBRARIES = ("tf_admm", "tfmot")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything ``run`` needs, so tests can call it without flags.

    Attributes:
      work_dir: dense checkpoint cache and default output directory.
      dataset: ``"mnist"`` or ``"fashion_mnist"``.
      data_dir: TFDS data directory (None: the default one).
      ratios: target compression ratios (all weights / kept weights), each >= 1.
      libraries: among :data:`LIBRARIES`.
      epochs: compression epochs per library and ratio (pruning plus retraining).
      prune_epochs: epochs of ADMM, all stages together (tf-admm), <= epochs.
      prune_stages: tf-admm's progressive pruning stages (``Spec.prune_stages``); each stage
        gets ``prune_epochs / len(prune_stages)`` ADMM epochs.
      stage_retrain_epochs: tf-admm's masked retraining between two stages
        (``Spec.retrain_rounds``). tfmot's sparsity ramp spans the ADMM and in-between
        retraining epochs together (:attr:`pruning_epochs`).
      pretrain_epochs: dense pretraining epochs (skipped when the checkpoint is cached).
      batch_size: training batch size.
      learning_rate: Adam learning rate for pretraining and pruning.
      retrain_learning_rate: Adam learning rate at the start of retraining.
      seed: weights, data order.
      train_batches: use only this many training batches per epoch (smoke runs).
      test_batches: evaluate on only this many test batches (smoke runs).
      out: JSON path (None: ``<work_dir>/frontier_<dataset>.json``; "" for none).
      plot: PNG path (None: ``<work_dir>/frontier_<dataset>.png``; "" for none).
      profile_config: spec whose per-layer sparsities and rho schedule are scaled.
      verbose: Keras fit verbosity.
      command: the command line to report.
    """

    work_dir: str = "runs/bench/frontier"
    dataset: str = "mnist"
    data_dir: str | None = None
    ratios: tuple[float, ...] = (20, 50, 100, 167, 250)
    libraries: tuple[str, ...] = LIBRARIES
    epochs: int = 18
    prune_epochs: int = 10
    prune_stages: tuple[float, ...] = (1.0,)
    stage_retrain_epochs: int = 0
    pretrain_epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 1e-3
    retrain_learning_rate: float = 1e-3
    seed: int = 0
    train_batches: int | None = None
    test_batches: int | None = None
    out: str | None = None
    plot: str | None = None
    profile_config: str = PROFILE_CONFIG
    verbose: int = 0
    command: str = "bench.frontier.run()"

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(
                f"Expected dataset in {sorted(DATASETS)}; received: dataset={self.dataset!r}"
            )
        if not self.ratios or any(not r >= 1 for r in self.ratios):
            raise ValueError(f"Expected ratios >= 1; received: ratios={list(self.ratios)}")
        if not self.libraries or set(self.libraries) - set(LIBRARIES):
            raise ValueError(
                f"Expected libraries among {list(LIBRARIES)}; "
                f"received: libraries={list(self.libraries)}"
            )
        stages = len(self.prune_stages)
        if self.prune_epochs < 1 or self.prune_epochs % stages:
            raise ValueError(
                f"Expected prune_epochs >= 1 and a multiple of the {stages} prune_stages; "
                f"received: prune_epochs={self.prune_epochs}"
            )
        if self.stage_retrain_epochs < 0:
            raise ValueError(
                "Expected stage_retrain_epochs >= 0; received: "
                f"stage_retrain_epochs={self.stage_retrain_epochs}"
            )
        if self.pruning_epochs > self.epochs:
            raise ValueError(
                "Expected prune_epochs + (stages - 1) * stage_retrain_epochs <= epochs; "
                f"received: prune_epochs={self.prune_epochs}, prune_stages="
                f"{list(self.prune_stages)}, stage_retrain_epochs={self.stage_retrain_epochs}, "
                f"epochs={self.epochs}"
            )
        self.tf_admm_spec({"layer": 0.5})  # The Spec validates prune_stages.
        if self.pretrain_epochs < 0:
            raise ValueError(
                f"Expected pretrain_epochs >= 0; received: pretrain_epochs={self.pretrain_epochs}"
            )

    @classmethod
    def smoke(cls, **overrides) -> Settings:
        """One epoch per phase on four batches, two ratios: well under a minute."""
        values: dict[str, Any] = dict(
            ratios=(20, 167),
            epochs=2,
            prune_epochs=1,
            pretrain_epochs=1,
            train_batches=4,
            test_batches=4,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def pruning_epochs(self) -> int:
        """Epochs until the final retraining: ADMM plus retraining between stages."""
        return self.prune_epochs + (len(self.prune_stages) - 1) * self.stage_retrain_epochs

    @property
    def retrain_epochs(self) -> int:
        return self.epochs - self.pruning_epochs

    def tf_admm_spec(
        self, sparsities: Mapping[str, float], rho: tf_admm.RhoSchedule | None = None
    ) -> tf_admm.Spec:
        """tf-admm's spec for ``{layer: sparsity}``, one ADMM round per epoch."""
        return tf_admm.Spec(
            rules=[tf_admm.Rule(name=n, sparsity=s) for n, s in sparsities.items()],
            rho=rho or tf_admm.RhoSchedule(),
            update_every=1,
            update_unit="epoch",
            admm_rounds=self.prune_epochs // len(self.prune_stages),
            retrain_rounds=self.stage_retrain_epochs,
            prune_stages=self.prune_stages,
        )

    def output_path(self, value: str | None, suffix: str) -> str | None:
        if value is None:
            return os.path.join(self.work_dir, f"frontier_{self.dataset}.{suffix}")
        return value or None


# ----------------------------------------------------------------------------------------------
# Allocation
# ----------------------------------------------------------------------------------------------


def load_profile(path: str = PROFILE_CONFIG) -> tuple[dict[str, float], tf_admm.Spec]:
    """Per-layer sparsities ({layer name: sparsity}) of a spec file, and the spec."""
    spec = tf_admm.Spec.from_file(path)
    return {rule.name: rule.target_sparsity for rule in spec.rules}, spec


def allocate(
    ratio: float, sizes: Mapping[str, int], profile: Mapping[str, float]
) -> dict[str, int]:
    """Kept weights per layer for an overall ``ratio``, shaped like ``profile``.

    Every layer keeps ``min(size, scale * (1 - profile sparsity) * size)`` weights (rounded,
    at least 1), with the one ``scale`` that makes the total ``sum(sizes) / ratio``: layers
    that would keep more than all their weights keep all, and the others share the rest in the
    profile's proportions.

    Args:
      ratio: overall compression ratio, >= 1.
      sizes: {layer: number of weights}.
      profile: {layer: sparsity} with the same keys, each in [0, 1).

    Returns:
      {layer: kept weights}.

    Raises:
      ValueError: if the keys differ or ``ratio`` < 1.
    """
    if set(sizes) != set(profile):
        raise ValueError(
            f"Expected a profile for every layer {sorted(sizes)}; received: {sorted(profile)}"
        )
    if not ratio >= 1:
        raise ValueError(f"Expected ratio >= 1; received: ratio={ratio}")
    kept_fraction = {name: 1.0 - float(profile[name]) for name in sizes}
    wanted = sum(sizes.values()) / ratio
    full: set[str] = set()
    while True:
        free = [n for n in sizes if n not in full]
        budget = wanted - sum(sizes[n] for n in full)
        scale = budget / sum(kept_fraction[n] * sizes[n] for n in free)
        capped = {n for n in free if kept_fraction[n] * scale >= 1.0}
        if not capped:
            break
        full |= capped
    return {
        name: sizes[name]
        if name in full
        else min(sizes[name], max(1, round(kept_fraction[name] * scale * sizes[name])))
        for name in sizes
    }


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


def _datasets(settings: Settings):
    # Loaded afresh for every run, so that every run sees the same sequence of shuffles.
    train_ds, test_ds = DATASETS[settings.dataset](
        settings.data_dir, batch_size=settings.batch_size, shuffle_seed=settings.seed
    )
    if settings.train_batches:
        train_ds = train_ds.take(settings.train_batches)
    if settings.test_batches:
        test_ds = test_ds.take(settings.test_batches)
    return train_ds, test_ds


def _compile(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    model.compile(keras.optimizers.Adam(learning_rate), common.classification_loss(), ["accuracy"])
    return model


def _evaluate(model: keras.Model, test_ds) -> float:
    _compile(model)
    return float(model.evaluate(test_ds, verbose=0)[1])


def _checkpoint_path(settings: Settings) -> str:
    name = (
        f"dense_lenet5_{settings.dataset}_e{settings.pretrain_epochs}_bs{settings.batch_size}"
        f"_lr{settings.learning_rate:g}_s{settings.seed}"
    )
    if settings.train_batches:
        name += f"_b{settings.train_batches}"
    return os.path.join(settings.work_dir, f"{name}.weights.h5")


def _dense(settings: Settings) -> keras.Model:
    """A fresh copy of the shared dense model (from the checkpoint)."""
    keras.utils.set_random_seed(settings.seed)
    model = models.lenet5()
    model.load_weights(_checkpoint_path(settings))
    return model


def _pretrain(settings: Settings) -> dict[str, Any]:
    """Trains the shared dense model unless its checkpoint exists; returns its facts."""
    path = _checkpoint_path(settings)
    seconds = None
    if not os.path.exists(path):
        train_ds, _ = _datasets(settings)
        keras.utils.set_random_seed(settings.seed)
        model = _compile(models.lenet5(), settings.learning_rate)
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
        os.makedirs(settings.work_dir, exist_ok=True)
        model.save_weights(path)
    _, test_ds = _datasets(settings)
    return {
        "checkpoint": path,
        "cached": seconds is None,
        "pretrain_seconds": seconds,
        "accuracy": _evaluate(_dense(settings), test_ds),
    }


def _learning_rate_callback(settings: Settings) -> keras.callbacks.Callback:
    return keras.callbacks.LearningRateScheduler(
        schedules.constant_then_decay(
            settings.learning_rate,
            settings.retrain_learning_rate,
            settings.pruning_epochs,
            settings.retrain_epochs,
        )
    )


def _ramp_frequency(steps: int, at_most: int = 100) -> int:
    """Largest divisor of ``steps`` up to ``at_most``, so that the last mask update is on time."""
    return max(d for d in range(1, min(steps, at_most) + 1) if steps % d == 0)


def _compress_tf_admm(settings: Settings, sparsities, spec: tf_admm.Spec, train_ds):
    config = settings.tf_admm_spec(sparsities, spec.rho)
    model = _compile(tf_admm.admm_wrap(_dense(settings), config), settings.learning_rate)
    history = common.EpochLog()
    schedule = schedules.learning_rate_schedule(
        config, settings.learning_rate, settings.retrain_learning_rate, settings.retrain_epochs
    )
    model.fit(
        train_ds,
        epochs=settings.epochs,
        verbose=settings.verbose,
        callbacks=tf_admm.callbacks() + [keras.callbacks.LearningRateScheduler(schedule), history],
    )
    if model.phase is not tf_admm.Phase.RETRAIN:
        raise RuntimeError(f"Expected tf-admm to reach retraining; received: phase={model.phase}")
    return tf_admm.strip(model), history.epochs


def _compress_tfmot(settings: Settings, sparsities, steps_per_epoch: int, train_ds):
    ramp_steps = settings.pruning_epochs * steps_per_epoch
    frequency = _ramp_frequency(ramp_steps)

    def schedule(final_sparsity: float):
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=final_sparsity,
            begin_step=0,
            end_step=ramp_steps,
            frequency=frequency,
        )

    model = common.tfmot_prune(_dense(settings), sparsities, schedule)
    _compile(model, settings.learning_rate)
    model.fit(
        train_ds,
        epochs=settings.epochs,
        verbose=settings.verbose,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), _learning_rate_callback(settings)],
    )
    return common.tfmot_strip(model)


def _steps_per_epoch(train_ds) -> int:
    count = int(train_ds.cardinality())
    if count < 0:  # Unknown or infinite: count once.
        count = sum(1 for _ in train_ds)
    return count


def _run_one(settings, library, ratio, kept, sizes, spec, dense_weights) -> dict[str, Any]:
    sparsities = {name: 1.0 - kept[name] / sizes[name] for name in sizes}
    train_ds, test_ds = _datasets(settings)
    keras.utils.set_random_seed(settings.seed)
    start = time.perf_counter()
    history = None
    if library == "tf_admm":
        plain, history = _compress_tf_admm(settings, sparsities, spec, train_ds)
    else:
        plain = _compress_tfmot(settings, sparsities, _steps_per_epoch(train_ds), train_ds)
    seconds = time.perf_counter() - start
    counts = common.nonzero_counts(plain)
    nonzeros = sum(c["nonzeros"] for c in counts.values())
    return {
        "library": library,
        "target_ratio": float(ratio),
        "sparsities": sparsities,
        "requested_nonzeros": {n: keep_count(sizes[n], s) for n, s in sparsities.items()},
        "nonzeros": {n: c["nonzeros"] for n, c in counts.items()},
        "weights": dense_weights,
        "total_nonzeros": nonzeros,
        "achieved_ratio": dense_weights / nonzeros if nonzeros else float("inf"),
        "accuracy": _evaluate(plain, test_ds),
        "seconds": seconds,
        **({"history": history} if history is not None else {}),
    }


def format_results(results: Mapping[str, Any]) -> str:
    rows = [
        (
            f"{r['target_ratio']:g}x",
            r["library"],
            f"{100 * r['accuracy']:.2f}",
            f"{r['achieved_ratio']:.1f}x",
            f"{r['total_nonzeros']:,}",
            " / ".join(f"{k:,}" for k in r["nonzeros"].values()),
            f"{r['seconds']:.1f}",
        )
        for r in results["runs"]
    ]
    layers = "/".join(results["layers"])
    header = ("target", "library", "accuracy %", "achieved", "nonzeros", layers, "seconds")
    dense = results["dense"]
    return "\n".join(
        [
            common.format_table(header, rows),
            f"dense LeNet-5: {100 * dense['accuracy']:.2f}% ({dense['checkpoint']}, "
            + ("cached" if dense["cached"] else f"pretrained in {dense['pretrain_seconds']:.0f} s")
            + ")",
        ]
    )


def plot(results: Mapping[str, Any], path: str) -> str:
    """Accuracy against achieved compression ratio, one line per library; writes a PNG."""
    return plots.frontier(results, path)


def run(settings: Settings) -> dict[str, Any]:
    """Pretrains (or loads) the dense model, compresses it at every ratio with every library."""
    machine = common.machine_info()
    start = common.snapshot()
    print(common.format_header("accuracy vs compression", settings.command, machine, start))
    os.makedirs(settings.work_dir, exist_ok=True)
    profile, spec = load_profile(settings.profile_config)
    dense = _pretrain(settings)
    sizes = {n: c["weights"] for n, c in common.nonzero_counts(_dense(settings)).items()}
    dense_weights = sum(sizes.values())
    runs = []
    for ratio in settings.ratios:
        kept = allocate(ratio, sizes, profile)
        for library in settings.libraries:
            result = _run_one(settings, library, ratio, kept, sizes, spec, dense_weights)
            print(
                f"{library} at {ratio:g}x: accuracy {100 * result['accuracy']:.2f}%, "
                f"achieved {result['achieved_ratio']:.1f}x, {result['seconds']:.0f} s",
                flush=True,
            )
            runs.append(result)
            keras.backend.clear_session()
    results: dict[str, Any] = {
        "benchmark": "frontier",
        "command": settings.command,
        "settings": dataclasses.asdict(settings),
        "machine": machine,
        "start": start,
        "layers": list(sizes),
        "profile": {"config": settings.profile_config, "sparsities": profile},
        "dense": dense,
        "runs": runs,
    }
    results["end"] = common.snapshot()
    return common.finish(
        results,
        format_results(results),
        out=settings.output_path(settings.out, "json"),
        plot_path=settings.output_path(settings.plot, "png"),
        draw=plot,
    )


# Flags are defined only when this module is the program, so that tests can import several
# benchmarks and recipes (which share flag names) in one process.
def _define_flags() -> dict[str, flags.FlagHolder]:
    defaults = Settings()
    return {
        **common.define_run_flags(defaults, LIBRARIES),
        "smoke": flags.DEFINE_bool("smoke", False, "Tiny run (under a minute) to check it works."),
        "dataset": flags.DEFINE_enum("dataset", defaults.dataset, sorted(DATASETS), "Dataset."),
        "work_dir": flags.DEFINE_string(
            "work_dir", defaults.work_dir, "Dense checkpoint cache and default output directory."
        ),
        "ratios": flags.DEFINE_list(
            "ratios", [f"{r:g}" for r in defaults.ratios], "Target compression ratios."
        ),
        "epochs": flags.DEFINE_integer(
            "epochs", defaults.epochs, "Compression epochs per point.", lower_bound=1
        ),
        "prune_epochs": flags.DEFINE_integer(
            "prune_epochs",
            defaults.prune_epochs,
            "Epochs of ADMM (all stages) within --epochs.",
            lower_bound=1,
        ),
        "prune_stages": flags.DEFINE_list(
            "prune_stages",
            [f"{f:g}" for f in defaults.prune_stages],
            "tf-admm's progressive pruning stages (fractions of the final ratios, ending at 1).",
        ),
        "stage_retrain_epochs": flags.DEFINE_integer(
            "stage_retrain_epochs",
            defaults.stage_retrain_epochs,
            "tf-admm's retraining epochs between stages (tfmot's ramp covers them too).",
            lower_bound=0,
        ),
        "learning_rate": flags.DEFINE_float(
            "learning_rate", defaults.learning_rate, "Adam learning rate while pruning."
        ),
        "retrain_learning_rate": flags.DEFINE_float(
            "retrain_learning_rate", defaults.retrain_learning_rate, "Retraining learning rate."
        ),
    }


_FLAGS: dict[str, flags.FlagHolder] = {}


def settings_from_flags() -> Settings:
    convert = {
        "ratios": lambda values: tuple(float(v) for v in values),
        "prune_stages": lambda values: tuple(float(v) for v in values),
        "libraries": tuple,
        "verbose": int,
    }
    try:
        return common.settings_from_flags(_FLAGS, Settings, "bench.frontier", convert)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.ERROR)  # TFDS and per-round ADMM logs.
    run(settings_from_flags())


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too.
    app.run(main)
