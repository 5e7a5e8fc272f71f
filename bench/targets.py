"""What an issue asks the recipes to show, against what their runs measured over seeds.

A target names the runs that answer it (recipe ``results.json`` files, by glob) and the bar
they must clear: at most ``max_drop`` points of mean test accuracy below each run's own dense
model, and optionally a pruning ratio, a weight-data ratio and a ratio with indices of at
least so much (the smallest over the runs counts). The verdict is computed: met, missed by how
much, or not decided while fewer runs than ``seeds`` exist. Targets are data, a JSON file
(``bench/targets_issue13.json``)::

  {"note": "...", "targets": [
    {"name": "LeNet-5, pruning only, 167x", "runs": ["docs/data/recipe_167x/results_s*.json"],
     "max_drop": 0.1, "min_ratio": 167, "published": ["pruning_167"],
     "record": "docs/experiments.md#..."}]}

``published`` names rows of :data:`bench.results_sections.PUBLISHED` that the result fills
(:func:`claims`); ``record`` links what was tried; ``config``, the repository's copy of a
``--config`` file the runs read from elsewhere, is what their commands show. Pure Python:
``bench.results`` renders the same table.

Usage:
  python -m bench.targets --targets=bench/targets_issue13.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from absl import app, flags

from bench import seeds

__all__ = ["HEADER", "Result", "Target", "claims", "format_markdown", "load", "measure"]

# What a result can fill in the published table, and the figure it fills it with.
_CLAIM_FIGURES = {
    "pruning_167": ("ratio", "pruned"),
    "weight_data_ratio": ("weight_data_ratio", "less weight data"),
    "ratio_with_indices": ("ratio_with_indices", "with indices"),
}


@dataclasses.dataclass(frozen=True)
class Target:
    """One bar and the runs that answer it (see the module docstring)."""

    name: str
    runs: tuple[str, ...]
    max_drop: float
    seeds: int = 3
    min_ratio: float | None = None
    min_weight_data_ratio: float | None = None
    min_ratio_with_indices: float | None = None
    published: tuple[str, ...] = ()
    record: str | None = None
    config: str | None = None

    def __post_init__(self):
        if not self.name or not self.runs:
            raise ValueError(
                "Expected a target with a name and globs of runs; received: "
                f"name={self.name!r}, runs={list(self.runs)}"
            )
        if not self.max_drop >= 0:
            raise ValueError(
                f"Target '{self.name}': Expected max_drop >= 0 (points); "
                f"received: max_drop={self.max_drop}"
            )
        unknown = sorted(set(self.published) - set(_CLAIM_FIGURES))
        if unknown:
            raise ValueError(
                f"Target '{self.name}': Expected published keys among "
                f"{sorted(_CLAIM_FIGURES)}; received: {unknown}"
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Target:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise ValueError(
                f"Target '{config.get('name', '?')}': Expected keys among {sorted(fields)}; "
                f"received: {unknown}"
            )
        values = dict(config)
        for key in ("runs", "published"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)


def load(path: str) -> list[Target]:
    """The targets of a JSON file (see the module docstring)."""
    with open(path, encoding="utf-8") as f:
        return [Target.from_config(c) for c in json.load(f)["targets"]]


@dataclasses.dataclass(frozen=True)
class Result:
    """A target and its runs (accuracy gaps in points)."""

    target: Target
    runs: tuple[seeds.Run, ...]

    @property
    def test_gaps(self) -> list[float]:
        return [r.test_gap for r in self.runs]

    @property
    def mean_test_gap(self) -> float | None:
        return statistics.fmean(self.test_gaps) if self.runs else None

    def smallest(self, field: str) -> float | None:
        """The smallest ``field`` (``ratio``, ``weight_data_ratio``, ``ratio_with_indices``)
        over the runs; None if a run lacks it."""
        values = [getattr(r, field) for r in self.runs]
        return None if not values or None in values else min(values)

    def shortfalls(self) -> list[str]:
        """What the runs miss, each with by how much; empty when the target is met."""
        target, missed = self.target, []
        gap = self.mean_test_gap
        if gap is not None and gap < -target.max_drop:
            missed.append(
                f"accuracy by {-target.max_drop - gap:.2f} points "
                f"({gap:+.2f} against -{target.max_drop:.2f})"
            )
        for field, label in (
            ("ratio", "pruning ratio"),
            ("weight_data_ratio", "weight data ratio"),
            ("ratio_with_indices", "ratio with indices"),
        ):
            bar = getattr(target, f"min_{field}")
            value = self.smallest(field)
            # As shown, to one decimal: the 167x config keeps round(430,500 / 167) weights.
            if bar is not None and (value is None or round(value, 1) < bar):
                have = "not measured" if value is None else f"{value:,.1f}x"
                missed.append(f"{label} ({have} against {bar:,g}x)")
        return missed

    def verdict(self) -> str:
        count = len(self.runs)
        if count < self.target.seeds:
            return f"not decided: {count} of {self.target.seeds} seeds"
        missed = self.shortfalls()
        return "**met**" if not missed else "**missed**: " + "; ".join(missed)


def measure(targets: Sequence[Target]) -> list[Result]:
    """Reads every target's runs (globs matching nothing give a result without runs)."""
    results = []
    for target in targets:
        try:
            runs = seeds.load(target.runs)
        except ValueError:  # No file matches yet.
            runs = []
        results.append(Result(target, tuple(runs)))
    return results


HEADER = (
    "target",
    "seeds",
    "ratio",
    "weight data / with indices",
    "validation gap",
    "test gap",
    "LiteRT - Keras (test)",
    "verdict",
    "command",
    "commit, date",
)


def _command(command: str, config: str | None) -> str:
    """``command`` with the seed as ``S``, the model directory as ``DIR`` and, given
    ``config``, that file as its ``--config``."""
    command = re.sub(r"--seed=\d+", "--seed=S", command)
    command = re.sub(r"--model_dir[= ]\S+", "--model_dir=DIR", command)
    if config:
        command = re.sub(r"--config[= ]\S+", f"--config={config}", command)
    return command


def _ratio_range(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    low, high = min(known), max(known)
    return f"{low:,.1f}x" if round(low, 1) == round(high, 1) else f"{low:,.1f}-{high:,.1f}x"


def _row(result: Result, out: str) -> tuple[str, ...]:
    target, runs = result.target, result.runs
    name = target.name
    if target.record:  # A path from the repository root, linked from where the report is.
        path, _, anchor = target.record.partition("#")
        link = os.path.relpath(path, os.path.dirname(out) or ".") + (f"#{anchor}" if anchor else "")
        name = f"[{name}]({link})"
    if not runs:
        return (name, "0", *["-"] * 5, result.verdict(), "-", "-")
    storage = "-"
    if any(r.weight_data_ratio is not None for r in runs):
        storage = (
            f"{_ratio_range([r.weight_data_ratio for r in runs])} / "
            f"{_ratio_range([r.ratio_with_indices for r in runs])}"
        )
    exported = [r.tflite_test - r.test[1] for r in runs if r.tflite_test is not None]
    worst = max(exported, key=abs) if exported else None
    litert = "-" if worst is None else f"{seeds.points(worst)} ({len(exported)} files)"
    validation = [r.validation_gap for r in runs if r.validation_gap is not None]
    commands = dict.fromkeys(_command(r.command, target.config) for r in runs)
    stamps = dict.fromkeys(f"{(r.commit or '?')[:8]} {r.date}" for r in runs)
    return (
        name,
        ", ".join(str(r.seed) for r in runs),
        _ratio_range([r.ratio for r in runs]),
        storage,
        seeds.spread(validation) if validation else "-",
        seeds.spread(result.test_gaps),
        litert,
        result.verdict(),
        "<br>".join(f"`{c}`" for c in commands),
        "<br>".join(stamps),
    )


def format_markdown(results: Sequence[Result], out: str = "docs/RESULTS.md") -> str:
    """The table, with a line on how to read it; ``out``: where it goes (for its links)."""
    lines = [
        "Each target's runs: the gap is a run's accuracy minus its own dense model's, in points "
        "(mean ± sd over the seeds); the verdict takes the mean test gap and the smallest ratio "
        "over the runs. Choices were made on validation; the test set reports. A command's "
        "`--config` is the repository's copy of the file the runs read.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|:---|:---|---:|---:|---:|---:|---:|:---|:---|:---|",
    ]
    for result in results:
        lines.append("| " + " | ".join(_row(result, out)) + " |")
    return "\n".join(lines)


def claims(results: Sequence[Result]) -> dict[str, str]:
    """Texts for the published table's "ours" column, by key (see ``published``)."""
    found: dict[str, str] = {}
    for result in results:
        if not result.runs:
            continue
        gap = seeds.spread(result.test_gaps)
        count = len(result.runs)
        for key in result.target.published:
            field, what = _CLAIM_FIGURES[key]
            text = (
                f"tf-admm recipe: {_ratio_range([getattr(r, field) for r in result.runs])} "
                f"{what}, {gap} test points from dense ({count} seed{'s' if count > 1 else ''})"
            )
            found[key] = f"{found[key]}; {text}" if key in found else text
    return found


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    print(format_markdown(measure(load(flags.FLAGS.targets))))


if __name__ == "__main__":
    # Defined here only: bench.results, which imports this module, has a --targets of its own.
    flags.DEFINE_string("targets", "bench/targets_issue13.json", "Targets JSON file.")
    app.run(main)
