"""What each ingredient adds at one ratio: a table from ``bench.ablation`` and recipe runs.

Issue 13 (item 6) asks for one row per ingredient at 167x (allocation, step-level updates,
stages, distillation, fresh optimizer), each with its command. An ingredient is measured as two
groups of runs that differ in it alone: ``without`` and ``with``. A run is either

* a ``bench.ablation`` output (one JSON file per run: its settings, ``test``, ``validation``,
  ``dense_test``, ``dense_validation``, ``ratio``), whose command is rebuilt from its settings,
* or a recipe's ``results.json`` (``dense_accuracy``, ``pruned_accuracy``, ``validation``,
  ``pruning_ratio`` and ``run``: command, commit, seed),
* or a ``bench.frontier`` point (``bench.sweep``'s record: ``protocol``, ``arm``, ``dense``,
  ``test``, ``validation``, ``provenance``), whose command is rebuilt from its protocol.

The ingredients are data, a JSON file (``--ingredients``, e.g. ``bench/ablation_167x.json``)::

  {"ratio": 167, "ingredients": [
    {"name": "LAMP allocation instead of the hand split",
     "without": ["runs/ablation/api_hand_s*.json"],
     "with": ["runs/ablation/api_lamp_s*.json"]}]}

Every gap is a run's accuracy minus its own dense model's, in points; a row gives the mean (±
sd over seeds) of each group and what the ingredient adds: the difference of the means. Pure
Python (no TensorFlow): ``bench.results --ablation=...`` renders the same table.

Usage:
  python -m bench.ablation_table --ingredients=bench/ablation_167x.json
"""

from __future__ import annotations

import dataclasses
import glob
import json
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from absl import app, flags

__all__ = [
    "HEADER",
    "Ingredient",
    "Row",
    "Run",
    "format_markdown",
    "load_ingredients",
    "load_run",
    "measure",
    "table_rows",
]

# bench.ablation.Settings' defaults: a command names only the flags that differ from them.
_ABLATION_DEFAULTS = {
    "kept": [131, 1_311, 874, 262],
    "target_ratio": None,
    "admm_epochs": 24,
    "retrain_epochs": 16,
    "rho0": 3e-4,
    "rho_mult": 1.042,
    "every": 100,
    "cache_dir": "runs/ablation",
}


# bench.sweep.Protocol's defaults (without its dataset): a frontier command names only the
# protocol fields that differ from them. bench/ablation_table_test.py checks they are the same.
_FRONTIER_DEFAULTS = {
    "epochs": 40,
    "prune_epochs": 24,
    "pretrain_epochs": 12,
    "batch_size": 128,
    "learning_rate": 1e-3,
    "final_learning_rate": 1e-5,
    "update_every": 100,
    "rho": 3e-4,
    "rho_multiplier": 1.042,
    "validation_examples": 5_000,
    "train_examples": None,
    "distill_weight": 0.0,
    "distill_temperature": 4.0,
}


@dataclasses.dataclass(frozen=True)
class Run:
    """One run, as the table uses it (gaps in accuracy points).

    Attributes:
      path: the file it was read from.
      command: the command that produced it.
      commit: the commit, when recorded (recipes record it, ``bench.ablation`` does not).
      seed: its seed.
      ratio: the pruning ratio reached.
      test_gap: test accuracy minus the dense model's.
      validation_gap: the same on validation (None when the run had no validation split).
    """

    path: str
    command: str
    commit: str | None
    seed: int | None
    ratio: float
    test_gap: float
    validation_gap: float | None


def _ablation_command(result: Mapping[str, Any]) -> str:
    args = [f"--variant={result['variant']}", f"--allocation={result['allocation']}"]
    args.append(f"--seed={result['seed']}")
    for name, default in _ABLATION_DEFAULTS.items():
        value = result.get(name, default)
        if isinstance(value, (list, tuple)):
            value = list(value)
        if value is None or value == default:
            continue
        text = ",".join(str(v) for v in value) if isinstance(value, list) else _flag_text(value)
        args.append(f"--{name}={text}")
    return " ".join(["python -m bench.ablation", *args])


def _flag_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _frontier_command(record: Mapping[str, Any]) -> str:
    protocol = record["protocol"]
    args = [
        f"--dataset={protocol['dataset']}",
        f"--seeds={record['seed']}",
        f"--ratios={record['target_ratio']:g}",
        f"--arms={record['arm']}",
    ]
    for name, default in _FRONTIER_DEFAULTS.items():
        value = protocol.get(name, default)
        if value is not None and value != default:
            args.append(f"--{name}={_flag_text(value)}")
    return " ".join(["python -m bench.frontier", *args])


def load_run(path: str) -> Run:
    """A :class:`Run` from a ``bench.ablation`` output, a recipe's ``results.json`` or a
    ``bench.frontier`` point.

    Raises:
      ValueError: if the file is neither.
    """
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    if "variant" in result and "dense_test" in result:
        return Run(
            path=path,
            command=_ablation_command(result),
            commit=None,
            seed=result.get("seed"),
            ratio=float(result["ratio"]),
            test_gap=100 * (result["test"] - result["dense_test"]),
            validation_gap=100 * (result["validation"] - result["dense_validation"]),
        )
    if "protocol" in result and "arm" in result and "dense" in result:
        return Run(
            path=path,
            command=_frontier_command(result),
            commit=(result.get("provenance") or {}).get("commit"),
            seed=result.get("seed"),
            ratio=float(result["achieved_ratio"]),
            test_gap=100 * (result["test"] - result["dense"]["test"]),
            validation_gap=100 * (result["validation"] - result["dense"]["validation"]),
        )
    if "pruned_accuracy" in result and "dense_accuracy" in result:
        run = result.get("run") or {}
        validation = result.get("validation")
        return Run(
            path=path,
            command=run.get("command", "?"),
            commit=run.get("commit"),
            seed=run.get("seed"),
            ratio=float(result["pruning_ratio"]),
            test_gap=100 * (result["pruned_accuracy"] - result["dense_accuracy"]),
            validation_gap=(
                100 * (validation["pruned_accuracy"] - validation["dense_accuracy"])
                if validation
                else None
            ),
        )
    raise ValueError(
        "Expected a bench.ablation output (variant, test, dense_test), a recipe's "
        "results.json (pruned_accuracy, dense_accuracy) or a bench.frontier point (protocol, "
        f"arm, dense); received: {path}"
    )


@dataclasses.dataclass(frozen=True)
class Ingredient:
    """One ingredient: the runs without it and the runs with it (globs)."""

    name: str
    without: tuple[str, ...]
    with_: tuple[str, ...]

    def __post_init__(self):
        if not self.name or not self.without or not self.with_:
            raise ValueError(
                "Expected an ingredient with a name and globs for 'without' and 'with'; "
                f"received: name={self.name!r}, without={list(self.without)}, "
                f"with={list(self.with_)}"
            )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Ingredient:
        return cls(
            name=config.get("name", ""),
            without=tuple(config.get("without") or ()),
            with_=tuple(config.get("with") or ()),
        )


def load_ingredients(path: str) -> tuple[float, list[Ingredient]]:
    """``(ratio, ingredients)`` from a JSON file (see the module docstring)."""
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    return float(config["ratio"]), [Ingredient.from_config(c) for c in config["ingredients"]]


def _runs(patterns: Iterable[str]) -> list[Run]:
    paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    return [load_run(p) for p in paths]


@dataclasses.dataclass(frozen=True)
class Row:
    """An ingredient and its two groups of runs."""

    ingredient: Ingredient
    without: tuple[Run, ...]
    with_: tuple[Run, ...]

    @staticmethod
    def _mean(runs: Sequence[Run], field: str) -> float | None:
        values = [getattr(r, field) for r in runs if getattr(r, field) is not None]
        return statistics.fmean(values) if values else None

    def paired_seeds(self) -> list[int]:
        """Seeds with runs on both sides: what the ingredient adds is measured on them alone
        when there are any (seed-to-seed noise would otherwise count as its effect)."""
        without = {r.seed for r in self.without if r.seed is not None}
        return sorted(without & {r.seed for r in self.with_ if r.seed is not None})

    def added(self, field: str = "test_gap") -> float | None:
        """Mean gap with the ingredient minus without it, over :meth:`paired_seeds` when there
        are any, else over every run (None when a group is empty)."""
        seeds = set(self.paired_seeds())

        def chosen(runs):
            return [r for r in runs if r.seed in seeds] if seeds else list(runs)

        with_ = self._mean(chosen(self.with_), field)
        without = self._mean(chosen(self.without), field)
        return None if with_ is None or without is None else with_ - without


def measure(ingredients: Sequence[Ingredient]) -> list[Row]:
    """Reads every ingredient's runs (a glob matching nothing gives an empty group)."""
    return [Row(i, tuple(_runs(i.without)), tuple(_runs(i.with_))) for i in ingredients]


HEADER = (
    "ingredient",
    "without: test - dense",
    "with: test - dense",
    "adds (test)",
    "adds (validation)",
    "ratio",
    "seeds (adds)",
    "command (with)",
    "commit",
)


def _group(runs: Sequence[Run]) -> str:
    if not runs:
        return "no runs"
    gaps = [r.test_gap for r in runs]
    if len(gaps) == 1:
        return f"{gaps[0]:+.2f} (n=1)"
    return f"{statistics.fmean(gaps):+.2f} ± {statistics.stdev(gaps):.2f} (n={len(gaps)})"


def _commands(runs: Sequence[Run]) -> str:
    """The distinct commands, the seed written as ``S`` (the seeds have their own column)."""
    commands = dict.fromkeys(re.sub(r"--(seeds?)=\d+", r"--\1=S", r.command) for r in runs)
    return "<br>".join(f"`{c}`" for c in commands) or "-"


def table_rows(rows: Sequence[Row]) -> list[tuple[str, ...]]:
    """One row per ingredient, as :data:`HEADER`."""
    found = []
    for row in rows:
        runs = row.without + row.with_
        added = row.added()
        validation = row.added("validation_gap")
        ratios = sorted({round(r.ratio, 1) for r in runs})
        paired = row.paired_seeds()
        seeds = paired or sorted({r.seed for r in row.with_ if r.seed is not None})
        commits = sorted({r.commit[:8] for r in row.with_ if r.commit})
        found.append(
            (
                row.ingredient.name,
                _group(row.without),
                _group(row.with_),
                "-" if added is None else f"{added:+.2f}",
                "-" if validation is None else f"{validation:+.2f}",
                " / ".join(f"{r:g}x" for r in ratios) or "-",
                ", ".join(str(s) for s in seeds) or "-",
                _commands(row.with_),
                ", ".join(commits) or "-",
            )
        )
    return found


def format_markdown(ratio: float, rows: Sequence[Row]) -> str:
    """The table in Markdown, with a line on how to read it."""
    lines = [
        f"What each ingredient adds at {ratio:g}x: the mean gap to dense (test accuracy minus "
        "each run's own dense model, in points; ± sd over seeds) of the runs with the "
        "ingredient minus that of the runs without it, over the seeds both sides have (the "
        "seeds column) when they share any. Positive: the ingredient helps.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|:---|---:|---:|---:|---:|---:|:---|:---|:---|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    path = flags.FLAGS.ingredients
    if not path:
        raise app.UsageError("--ingredients: Expected a JSON file of ingredients.")
    ratio, ingredients = load_ingredients(path)
    print(format_markdown(ratio, measure(ingredients)))


if __name__ == "__main__":
    # Defined only when this module is the program: bench.results imports it.
    flags.DEFINE_string("ingredients", None, "JSON file of ingredients (required).")
    app.run(main)
