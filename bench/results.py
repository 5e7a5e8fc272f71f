"""Writes ``docs/RESULTS.md`` (and its plots) from the benchmarks' JSON outputs.

Usage:
  python -m bench.results                                   # the benchmarks' default outputs
  python -m bench.results --compare=/tmp/frontier_mnist_seed1.json   # plus run-to-run noise
  python -m bench.results --recipe_dir=runs/lenet5_quant    # plus a recipe run (results.json
                                                            # and TensorBoard logs)

Reads, where they exist (a missing one is named in the report, not an error):

* ``bench.frontier`` documents (``--frontier``, MNIST and Fashion-MNIST by default): their
  point records give the per-arm table, the two comparisons and the plot (an output of the old
  one-seed frontier protocol is refused: it is obsolete),
* ``bench.combined`` outputs (``--combined``),
* ``bench.overhead`` output (``--overhead``),
* ``bench.structured_lenet5`` output (``--structured``): trained LeNet-5 with filter + column
  pruning, shrunk, beside dense, unstructured and tfmot 2:4 in LiteRT,
* more JSON files of the same benchmarks (``--compare``): each is set against the first file of
  the same benchmark and dataset, point by point, as a measure of run-to-run noise,
* a recipe's ``--model_dir`` (``--recipe_dir``): its ``results.json`` and the TensorBoard logs
  under ``logs/train`` (ADMM residuals, rho, per-layer sparsity, phase per epoch),
* the ablation's ingredients file (``--ablation``, default ``bench/ablation_167x.json``): one
  row per ingredient at 167x from ``bench.ablation`` outputs and recipe runs,
* a targets file (``--targets``, default ``bench/targets_issue13.json``): what the shipped
  recipes must show, their runs over seeds and the computed verdicts (:mod:`bench.targets`).

Writes the Markdown report (``--out``) and PNG plots beside it (``--plots_dir``): every table
with the command, date, machine and load that produced it, the papers' published numbers beside
ours, and a section computed from the data on where tf-admm does not win. Needs no TensorFlow
unless ``--recipe_dir`` has TensorBoard logs to read.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shlex
import sys
from typing import Any

from absl import app, flags

from bench import results_format as fmt
from bench import results_recipe, results_sections, structured_table, targets
from bench.results_analysis import noise, shortfalls
from bench.results_format import ObsoleteOutputError
from bench.results_recipe import read_tensorboard
from bench.results_sections import PUBLISHED

__all__ = [
    "DEFAULT_COMBINED",
    "DEFAULT_FRONTIER",
    "DEFAULT_OVERHEAD",
    "DEFAULT_STRUCTURED",
    "PUBLISHED",
    "ObsoleteOutputError",
    "Settings",
    "noise",
    "read_tensorboard",
    "run",
    "shortfalls",
]

DEFAULT_FRONTIER = (
    "runs/bench/frontier/frontier_mnist.json",
    "runs/bench/frontier/frontier_fashion_mnist.json",
)
DEFAULT_COMBINED = ("runs/bench/combined/combined_mnist.json",)
DEFAULT_OVERHEAD = ("runs/bench/overhead.json",)
DEFAULT_STRUCTURED = ("runs/bench/structured_lenet5.json",)
DEFAULT_ABLATION = "bench/ablation_167x.json"
DEFAULT_TARGETS = "bench/targets_issue13.json"

_PRODUCERS = {
    "frontier": "python -m bench.frontier",
    "combined": "python -m bench.combined",
    "overhead": "python -m bench.overhead",
    "structured": "python -m bench.structured_lenet5",
}


def _producer(kind: str, path: str) -> str | None:
    """The command that writes a missing output (datasets guessed from the file name)."""
    command = _PRODUCERS.get(kind)
    if command and "fashion_mnist" in os.path.basename(path):
        command += " --dataset=fashion_mnist"
    return command


@dataclasses.dataclass(frozen=True)
class Settings:
    """Inputs and outputs of the report.

    Attributes:
      frontier: ``bench.frontier`` JSON files.
      combined: ``bench.combined`` JSON files.
      overhead: ``bench.overhead`` JSON files.
      structured: ``bench.structured_lenet5`` JSON files.
      compare: more JSON files of any of the three: run-to-run noise against the first file
        of the same benchmark and dataset.
      recipe_dir: a recipe's model_dir (``results.json``, ``logs/train``), or None.
      ablation: ingredients file of the ablation table (:mod:`bench.ablation_table`), or
        None for no ablation section.
      targets: targets file (:mod:`bench.targets`), or None for no targets section.
      out: the Markdown file.
      plots_dir: where the PNGs go (None: beside ``out``).
      tolerance_points: "within this many accuracy points of dense" for the frontier
        comparisons (None: each frontier document's own, its dataset's: 0.1 point on MNIST,
        0.5 on Fashion-MNIST).
      command: the command line to report.
    """

    frontier: tuple[str, ...] = DEFAULT_FRONTIER
    combined: tuple[str, ...] = DEFAULT_COMBINED
    overhead: tuple[str, ...] = DEFAULT_OVERHEAD
    structured: tuple[str, ...] = DEFAULT_STRUCTURED
    compare: tuple[str, ...] = ()
    recipe_dir: str | None = None
    ablation: str | None = DEFAULT_ABLATION
    targets: str | None = DEFAULT_TARGETS
    out: str = "docs/RESULTS.md"
    plots_dir: str | None = None
    tolerance_points: float | None = None
    command: str = "bench.results.run()"

    def __post_init__(self):
        if self.tolerance_points is not None and not self.tolerance_points >= 0:
            raise ValueError(
                "Expected tolerance_points >= 0; "
                f"received: tolerance_points={self.tolerance_points}"
            )

    @property
    def plot_directory(self) -> str:
        return self.plots_dir or os.path.dirname(self.out) or "."


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def run(settings: Settings) -> dict[str, Any]:
    """Reads the outputs, draws the plots, writes the Markdown; returns what it did.

    Returns:
      ``{"out": path, "plots": [paths], "missing": [paths], "markdown": text}``.
    """
    loaded: dict[str, list[dict[str, Any]]] = {
        "frontier": [],
        "combined": [],
        "overhead": [],
        "structured": [],
    }
    missing = []
    for kind in loaded:
        for path in getattr(settings, kind):
            doc = fmt.load(path)
            if doc is None:
                missing.append((kind, path))
            else:
                loaded[kind].append(doc)
    for doc in loaded["frontier"]:
        if settings.tolerance_points is not None:
            doc["tolerance_points"] = settings.tolerance_points
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for docs in loaded.values():
        for doc in docs:
            groups.setdefault(fmt.key(doc), []).append(doc)
    # Only the first output of each benchmark and dataset gets a section; more are noise.
    primary = {key: docs[0] for key, docs in groups.items()}
    for path in settings.compare:
        doc = fmt.load(path)
        if doc is None:
            missing.append(("compare", path))
        else:
            groups.setdefault(fmt.key(doc), []).append(doc)
    os.makedirs(settings.plot_directory, exist_ok=True)
    outputs: list[str] = []
    firsts = list(primary.values())
    frontiers = [d for d in firsts if d.get("benchmark") == "frontier"]
    combined = [d for d in firsts if d.get("benchmark") == "combined"]
    overheads = [d for d in firsts if d.get("benchmark") == "overhead"]
    structured = [d for d in firsts if d.get("benchmark") == structured_table.BENCHMARK]
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [
        "# Results",
        "",
        f"Generated at {now} by",
        "",
        "```",
        settings.command,
        "```",
        "",
        "from the benchmarks' JSON outputs; rerun the benchmarks and this command to update it "
        "(`bench/README.md` says what each benchmark measures). Every table names the command, "
        "date and machine of its run. The machine may be shared: compare the load average with "
        "the number of cores before trusting times.",
        "",
    ]
    recipe = results_recipe.results_of(settings.recipe_dir) if settings.recipe_dir else None
    measured = None
    if settings.targets:
        if os.path.exists(settings.targets):
            measured = targets.measure(targets.load(settings.targets))
        else:
            missing.append(("targets", settings.targets))
    claims = targets.claims(measured) if measured else None
    lines += results_sections.published(frontiers, combined, recipe, claims)
    lines += results_sections.recipe_targets(measured or [], settings.out)
    shown: set[str | None] = set()
    for doc in frontiers:
        variant = fmt.dataset(doc) in shown  # Another protocol of a dataset already shown.
        shown.add(fmt.dataset(doc))
        lines += results_sections.frontier(
            doc, settings.out, settings.plot_directory, outputs, variant=variant
        )
    for doc in combined:
        lines += results_sections.combined(doc, settings.out, settings.plot_directory, outputs)
    for doc in overheads:
        lines += results_sections.overhead(doc)
    for doc in structured:
        lines += results_sections.structured(doc)
    if settings.recipe_dir:
        lines += results_recipe.section(
            settings.recipe_dir, recipe, settings.out, settings.plot_directory, outputs
        )
    if settings.ablation:
        if os.path.exists(settings.ablation):
            lines += results_sections.ablation(settings.ablation)
        else:
            missing.append(("ablation", settings.ablation))
    # The structured table has no tfmot comparison the shortfall section knows yet.
    lines += results_sections.shortfall(
        [d for d in firsts if d.get("benchmark") != structured_table.BENCHMARK]
    )
    lines += results_sections.noise(groups)
    if missing:
        lines += ["## Missing inputs", ""]
        lines += [
            f"- `{path}` ({kind}): not found"
            + (f"; produce it with `{_producer(kind, path)}`" if _producer(kind, path) else "")
            for kind, path in missing
        ]
        lines.append("")
    markdown = "\n".join(lines).rstrip() + "\n"
    directory = os.path.dirname(settings.out)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(settings.out, "w", encoding="utf-8") as f:
        f.write(markdown)
    print(f"wrote {settings.out} and {len(outputs)} plots")
    for kind, path in missing:
        print(f"missing ({kind}): {path}")
    return {"out": settings.out, "plots": outputs, "missing": missing, "markdown": markdown}


def _define_flags() -> dict[str, flags.FlagHolder]:
    defaults = Settings()
    return {
        "frontier": flags.DEFINE_list(
            "frontier", list(defaults.frontier), "bench.frontier JSON outputs."
        ),
        "combined": flags.DEFINE_list(
            "combined", list(defaults.combined), "bench.combined JSON outputs."
        ),
        "overhead": flags.DEFINE_list(
            "overhead", list(defaults.overhead), "bench.overhead JSON outputs."
        ),
        "structured": flags.DEFINE_list(
            "structured", list(defaults.structured), "bench.structured_lenet5 JSON outputs."
        ),
        "compare": flags.DEFINE_list(
            "compare", [], "More outputs of the same benchmarks, for run-to-run noise."
        ),
        "recipe_dir": flags.DEFINE_string(
            "recipe_dir", None, "A recipe's model_dir (results.json, logs/train)."
        ),
        "ablation": flags.DEFINE_string(
            "ablation",
            defaults.ablation,
            "Ingredients file of the ablation table ('' for none; see bench/ablation_table.py).",
        ),
        "targets": flags.DEFINE_string(
            "targets",
            defaults.targets,
            "Targets file of the recipes' section ('' for none; see bench/targets.py).",
        ),
        "out": flags.DEFINE_string("out", defaults.out, "Markdown report path."),
        "plots_dir": flags.DEFINE_string("plots_dir", None, "PNG directory (default: beside out)."),
        "tolerance_points": flags.DEFINE_float(
            "tolerance_points",
            defaults.tolerance_points,
            "Accuracy drop (points) that still counts as 'no loss' in the frontier comparisons "
            "(default: each document's own, 0.1 MNIST, 0.5 Fashion-MNIST).",
            lower_bound=0.0,
        ),
    }


_FLAGS: dict[str, flags.FlagHolder] = {}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    values = {name: holder.value for name, holder in _FLAGS.items()}
    for name in ("frontier", "combined", "overhead", "structured", "compare"):
        values[name] = tuple(values[name])
    # bench.common.command_line, without importing TensorFlow through bench.common.
    command = " ".join(
        [shlex.quote(sys.executable), "-m", "bench.results", *map(shlex.quote, sys.argv[1:])]
    )
    try:
        run(Settings(**values, command=command))
    except ObsoleteOutputError as error:
        raise app.UsageError(str(error)) from None


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    app.run(main)
