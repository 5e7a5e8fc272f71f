"""One table from many recipe runs: each config's accuracy against its own dense model, per seed.

A recipe run (``python -m recipes.lenet5_mnist --model_dir=D ...``) writes ``D/results.json``
with its dense and compressed test accuracy, the validation split's (with
``--validation_examples``), the spec it ran and how it was started (``run``: command, commit,
seed, time). This module groups such files by config, prints one row per run and, per config,
the mean and the sample standard deviation of the gaps to dense over the seeds.

Usage:
  python -m bench.seeds --runs='runs/lenet5_*/results.json'
"""

from __future__ import annotations

import glob
import json
import os
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from absl import app, flags

__all__ = ["Run", "format_table", "load", "main", "points", "spread"]


class Run:
    """The figures of one ``results.json`` that the table shows (accuracies in percent)."""

    def __init__(self, path: str, results: Mapping[str, Any]):
        self.path = path
        run = results.get("run") or {}
        self.command = run.get("command", "")
        self.config = _config(self.command, path)
        self.seed = run.get("seed")
        self.commit = run.get("commit")
        self.date = run.get("finished_utc", "")[:10]
        self.ratio = float(results["pruning_ratio"])
        totals = (results.get("storage") or {}).get("totals") or {}
        self.weight_data_ratio = totals.get("weight_data_ratio")
        self.ratio_with_indices = totals.get("ratio_with_indices")
        self.test = (100 * results["dense_accuracy"], 100 * results["pruned_accuracy"])
        tflite = results.get("tflite") or {}
        # The exported file's test accuracy in the interpreter, when the run exported one.
        self.tflite_test = None if tflite.get("accuracy") is None else 100 * tflite["accuracy"]
        validation = results.get("validation")
        self.validation = (
            (100 * validation["dense_accuracy"], 100 * validation["pruned_accuracy"])
            if validation
            else None
        )

    @property
    def test_gap(self) -> float:
        return self.test[1] - self.test[0]

    @property
    def validation_gap(self) -> float | None:
        return None if self.validation is None else self.validation[1] - self.validation[0]


def _config(command: str, path: str) -> str:
    """The names of the ``--flagfile`` and ``--config`` files in ``command``, joined by ``+``
    (the recipe's default without either)."""
    names = [
        os.path.basename(match.group(1).strip("'\""))
        for flag in ("flagfile", "config")
        for match in [re.search(rf"--{flag}[= ](\S+)", command)]
        if match
    ]
    if names:
        return " + ".join(names)
    return "default config" if command else f"unknown ({os.path.dirname(path)})"


def load(patterns: Iterable[str]) -> list[Run]:
    """The runs whose ``results.json`` match any of ``patterns`` (globs), sorted by config
    and seed.

    Raises:
      ValueError: if no file matches.
    """
    patterns = list(patterns)
    paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    if not paths:
        raise ValueError(f"--runs: Expected results.json files; none match {patterns}")
    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            runs.append(Run(path, json.load(f)))
    return sorted(runs, key=lambda r: (r.config, -1 if r.seed is None else r.seed))


def points(value: float | None) -> str:
    """A gap in points: ``+0.12``; ``0.00`` when it rounds to zero (whatever the float's sign);
    empty for None."""
    if value is None:
        return ""
    return "0.00" if round(value, 2) == 0 else f"{value:+.2f}"


def spread(values: Sequence[float]) -> str:
    """Mean, and ± the sample standard deviation for two or more values."""
    mean = points(statistics.fmean(values))
    if len(values) < 2:
        return mean
    return f"{mean} ± {statistics.stdev(values):.2f}"


def format_table(runs: Sequence[Run]) -> str:
    """Markdown: a row per run, then per config the mean gap (± sd over its seeds)."""
    lines = [
        "| config | seed | ratio | validation dense → compressed | gap | "
        "test dense → compressed | gap | commit | date |",
        "|:---|---:|---:|---:|---:|---:|---:|:---|:---|",
    ]
    for run in runs:
        validation = "" if run.validation is None else "{:.2f} → {:.2f}".format(*run.validation)
        lines.append(
            f"| {run.config} | {'' if run.seed is None else run.seed} | {run.ratio:.1f}x | "
            f"{validation} | {points(run.validation_gap)} | "
            "{:.2f} → {:.2f}".format(*run.test)
            + f" | {points(run.test_gap)} | {(run.commit or '')[:8]} | {run.date} |"
        )
    lines += [
        "",
        "| config | runs | mean validation gap | mean test gap |",
        "|:---|---:|---:|---:|",
    ]
    configs = dict.fromkeys(run.config for run in runs)
    for config in configs:
        group = [run for run in runs if run.config == config]
        validation = [r.validation_gap for r in group if r.validation_gap is not None]
        lines.append(
            f"| {config} | {len(group)} | {spread(validation) if validation else ''} | "
            f"{spread([r.test_gap for r in group])} |"
        )
    return "\n".join(lines)


# Not required=True: other modules' tests parse the same global flags in one process.
_RUNS = flags.DEFINE_list("runs", None, "Globs of recipe results.json files (required).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        runs = load(_RUNS.value or [])
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    print(format_table(runs))


if __name__ == "__main__":
    app.run(main)
