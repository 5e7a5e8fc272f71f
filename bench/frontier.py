"""Accuracy against compression ratio, tf-admm against tfmot on LeNet-5: the frontier benchmark.

Usage:
  python -m bench.frontier --seeds=0,1,2                          # MNIST, ratios 25 to 400
  python -m bench.frontier --dataset=fashion_mnist --seeds=0,1,2
  python -m bench.frontier --smoke                                # under a minute
  python -m bench.frontier --work_dir=runs/sweep --seeds=0 --norun_missing  # cached points only

Every point (dataset, seed, arm = ``library:allocation``, target ratio) is run, or read back
from its cache, by :func:`bench.sweep.run_point`, which defines the protocol: one dense LeNet-5
per seed, a validation split, Z/U (tfmot: mask) updates every 100 steps, 24 pruning and 16
retraining epochs with a cosine learning rate. Points are cached one JSON file each under
``<work_dir>/points``, so a stopped run resumes and a rerun only reads them.

Writes one document, ``<work_dir>/frontier_<dataset>.json`` (``--out``): every point record
(each with its own command, commit, date, machine and load), the command, machine, start and
end snapshot of this run, and the protocol. Prints one line per point, then the comparisons of
:mod:`bench.comparisons` (same allocation; best practice chosen on validation) with the highest
ratio within the dataset's tolerance of dense per library. Draws accuracy against achieved
ratio (``--plot``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from absl import app, flags, logging

from bench import common, comparisons, plots, sweep

__all__ = ["DEFAULT_ARMS", "DEFAULT_RATIOS", "Settings", "run"]

# Decisive ratios first: a run stopped early still has the points that matter.
DEFAULT_RATIOS = (100.0, 200.0, 50.0, 400.0, 25.0)
DEFAULT_ARMS = ("tf_admm:lamp", "tfmot:lamp", "tfmot:uniform")
_PROTOCOL = sweep.Protocol()


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything ``run`` needs, so tests can call it without flags.

    The protocol fields (``dataset`` to ``distill_temperature``) are those of
    :class:`bench.sweep.Protocol`, with its defaults.

    Attributes:
      seeds: one dense model per seed; every arm and ratio runs from it.
      ratios: target ratios (all kernel weights / kept weights), run in this order.
      arms: ``library:allocation`` (:class:`bench.sweep.Arm`).
      work_dir: dense checkpoints, ``points/`` and the default outputs.
      data_dir: TFDS data directory.
      run_missing: run the points that are not cached (False: list and skip them).
      tolerance_points: "no loss" in accuracy points (None: the dataset's,
        :data:`bench.comparisons.TOLERANCE_POINTS`).
      out: JSON path (None: ``<work_dir>/frontier_<dataset>.json``; "" for none).
      plot: PNG path (None: ``<work_dir>/frontier_<dataset>.png``; "" for none).
      verbose: Keras fit verbosity.
      command: the command line to report.
    """

    dataset: str = _PROTOCOL.dataset
    epochs: int = _PROTOCOL.epochs
    prune_epochs: int = _PROTOCOL.prune_epochs
    pretrain_epochs: int = _PROTOCOL.pretrain_epochs
    batch_size: int = _PROTOCOL.batch_size
    learning_rate: float = _PROTOCOL.learning_rate
    final_learning_rate: float = _PROTOCOL.final_learning_rate
    update_every: int = _PROTOCOL.update_every
    rho: float = _PROTOCOL.rho
    rho_multiplier: float = _PROTOCOL.rho_multiplier
    validation_examples: int = _PROTOCOL.validation_examples
    train_examples: int | None = _PROTOCOL.train_examples
    distill_weight: float = _PROTOCOL.distill_weight
    distill_temperature: float = _PROTOCOL.distill_temperature
    seeds: tuple[int, ...] = (0, 1, 2)
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    arms: tuple[str, ...] = DEFAULT_ARMS
    work_dir: str = "runs/bench/frontier"
    data_dir: str | None = None
    run_missing: bool = True
    tolerance_points: float | None = None
    out: str | None = None
    plot: str | None = None
    verbose: int = 0
    command: str = "bench.frontier.run()"

    def __post_init__(self):
        _ = self.protocol  # Validates the protocol fields.
        for arm in self.arms:
            sweep.Arm.parse(arm)
        if not self.arms or not self.seeds or not self.ratios:
            raise ValueError(
                "Expected at least one arm, seed and ratio; received: "
                f"arms={list(self.arms)}, seeds={list(self.seeds)}, ratios={list(self.ratios)}"
            )
        if any(not r > 1 for r in self.ratios):
            raise ValueError(f"Expected ratios > 1; received: ratios={list(self.ratios)}")
        if self.tolerance_points is not None and not self.tolerance_points >= 0:
            raise ValueError(
                f"Expected tolerance_points >= 0; received: tolerance_points="
                f"{self.tolerance_points}"
            )

    @classmethod
    def smoke(cls, **overrides) -> Settings:
        """Two seeds, one ratio, every arm, 256 training images, 2 epochs: under a minute,
        in ``runs/bench/frontier_smoke`` unless ``work_dir`` is given."""
        values: dict[str, Any] = dict(
            seeds=(0, 1),
            ratios=(100.0,),
            epochs=2,
            prune_epochs=1,
            pretrain_epochs=1,
            batch_size=64,
            update_every=2,
            validation_examples=1_000,
            train_examples=256,
            work_dir="runs/bench/frontier_smoke",  # Never over a real run's document.
        )
        values.update(overrides)
        return cls(**values)

    @property
    def protocol(self) -> sweep.Protocol:
        fields = {f.name for f in dataclasses.fields(sweep.Protocol)}
        return sweep.Protocol(**{name: getattr(self, name) for name in fields})

    @property
    def tolerance(self) -> float:
        if self.tolerance_points is not None:
            return self.tolerance_points
        return comparisons.tolerance_for(self.dataset)

    def output_path(self, value: str | None, suffix: str) -> str | None:
        if value is None:
            return os.path.join(self.work_dir, f"frontier_{self.dataset}.{suffix}")
        return value or None


def _progress(index: int, total: int, point: dict[str, Any], record, seconds: float) -> str:
    head = f"[{index}/{total}] seed {point['seed']} {point['arm']} {point['ratio']:g}x"
    if record is None:
        return f"{head}: not cached, skipped (--norun_missing)"
    return (
        f"{head}: {point['source']}, validation {100 * record['validation']:.2f}% (dense "
        f"{100 * record['dense']['validation']:.2f}), test {100 * record['test']:.2f}% (dense "
        f"{100 * record['dense']['test']:.2f}), kept "
        + "/".join(str(k) for k in record["nonzeros"].values())
        + f", {seconds:.0f} s"
    )


def run(settings: Settings) -> dict[str, Any]:
    """Runs or reads back every point, writes the frontier document, prints the comparisons."""
    machine = common.machine_info()
    start = common.snapshot()
    print(common.format_header("accuracy vs compression", settings.command, machine, start))
    protocol = settings.protocol
    arrays = None  # Loaded at the first point that is not cached.
    points: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    grid = [
        (seed, sweep.Arm.parse(arm), ratio)
        for seed in settings.seeds
        for ratio in settings.ratios
        for arm in settings.arms
    ]
    for index, (seed, arm, ratio) in enumerate(grid, 1):
        began = time.perf_counter()
        record = sweep.read_point(protocol, seed, arm, ratio, settings.work_dir)
        source = "cached" if record is not None else "run"
        if record is None and settings.run_missing:
            if arrays is None:
                arrays = sweep.load_arrays(protocol, settings.data_dir)
            record = sweep.run_point(
                protocol,
                seed,
                arm,
                ratio,
                work_dir=settings.work_dir,
                arrays=arrays,
                verbose=settings.verbose,
            )
        elif record is None:
            source = "missing"
        point = {
            "seed": seed,
            "arm": str(arm),
            "ratio": float(ratio),
            "source": source,
            "path": sweep.point_path(settings.work_dir, protocol, seed, arm, ratio),
        }
        points.append(point)
        print(_progress(index, len(grid), point, record, time.perf_counter() - began), flush=True)
        if record is not None:
            records.append(record)
    document: dict[str, Any] = {
        "benchmark": "frontier",
        "format": 2,
        "command": settings.command,
        "settings": dataclasses.asdict(settings),
        "protocol": protocol.identity(),
        "tolerance_points": settings.tolerance,
        "machine": machine,
        "start": start,
        "points": points,
        "records": records,
    }
    document["end"] = common.snapshot()
    missing = [p for p in points if p["source"] == "missing"]
    text = comparisons.format_summary(records, settings.tolerance) if records else "no points"
    if missing:
        text += f"\n{len(missing)} of {len(points)} points not cached and not run."
    return common.finish(
        document,
        text,
        out=settings.output_path(settings.out, "json"),
        plot_path=settings.output_path(settings.plot, "png") if records else None,
        draw=plots.frontier,
    )


# Flags are defined only when this module is the program, so that tests can import several
# benchmarks and recipes (which share flag names) in one process.
def _define_flags() -> dict[str, flags.FlagHolder]:
    d = Settings()
    return {
        "smoke": flags.DEFINE_bool("smoke", False, "Tiny run (under a minute) to check it works."),
        "dataset": flags.DEFINE_enum("dataset", d.dataset, sorted(sweep.DATASETS), "Dataset."),
        "data_dir": flags.DEFINE_string("data_dir", None, "TFDS data directory."),
        "work_dir": flags.DEFINE_string(
            "work_dir", d.work_dir, "Dense checkpoints, points/ and the default outputs."
        ),
        "seeds": flags.DEFINE_list("seeds", [str(s) for s in d.seeds], "Seeds."),
        "ratios": flags.DEFINE_list(
            "ratios", [f"{r:g}" for r in d.ratios], "Target ratios, in run order."
        ),
        "arms": flags.DEFINE_list("arms", list(d.arms), "library:allocation, e.g. tfmot:uniform."),
        "epochs": flags.DEFINE_integer("epochs", d.epochs, "Epochs per point after dense."),
        "prune_epochs": flags.DEFINE_integer(
            "prune_epochs", d.prune_epochs, "Pruning epochs within --epochs."
        ),
        "pretrain_epochs": flags.DEFINE_integer(
            "pretrain_epochs", d.pretrain_epochs, "Dense epochs."
        ),
        "batch_size": flags.DEFINE_integer("batch_size", d.batch_size, "Batch size."),
        "learning_rate": flags.DEFINE_float(
            "learning_rate", d.learning_rate, "Adam learning rate while pruning."
        ),
        "final_learning_rate": flags.DEFINE_float(
            "final_learning_rate", d.final_learning_rate, "End of the retraining cosine."
        ),
        "update_every": flags.DEFINE_integer(
            "update_every", d.update_every, "Steps between Z/U (mask) updates."
        ),
        "rho": flags.DEFINE_float("rho", d.rho, "tf-admm's initial rho."),
        "rho_multiplier": flags.DEFINE_float(
            "rho_multiplier", d.rho_multiplier, "rho factor per Z/U update."
        ),
        "validation_examples": flags.DEFINE_integer(
            "validation_examples", d.validation_examples, "Training images held out."
        ),
        "train_examples": flags.DEFINE_integer(
            "train_examples", None, "Only the first N training images (smoke)."
        ),
        "distill_weight": flags.DEFINE_float(
            "distill_weight",
            d.distill_weight,
            "Share of the dense model's soft targets in the loss while pruning and retraining "
            "(0: labels only).",
        ),
        "distill_temperature": flags.DEFINE_float(
            "distill_temperature", d.distill_temperature, "Temperature of the soft targets."
        ),
        "run_missing": flags.DEFINE_bool(
            "run_missing", True, "Run points that are not cached (--norun_missing: skip them)."
        ),
        "tolerance_points": flags.DEFINE_float(
            "tolerance_points", None, "No-loss tolerance (default: 0.1 MNIST, 0.5 Fashion-MNIST)."
        ),
        "out": flags.DEFINE_string("out", None, "JSON path ('' for none)."),
        "plot": flags.DEFINE_string("plot", None, "PNG path ('' for none)."),
        "verbose": flags.DEFINE_enum("verbose", "0", ["0", "1", "2"], "Keras fit verbosity."),
    }


_FLAGS: dict[str, flags.FlagHolder] = {}


def settings_from_flags() -> Settings:
    convert = {
        "seeds": lambda values: tuple(int(v) for v in values),
        "ratios": lambda values: tuple(float(v) for v in values),
        "arms": tuple,
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
    app.run(main)
