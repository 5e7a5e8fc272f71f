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
* more JSON files of the same benchmarks (``--compare``): each is set against the first file of
  the same benchmark and dataset, point by point, as a measure of run-to-run noise,
* a recipe's ``--model_dir`` (``--recipe_dir``): its ``results.json`` and the TensorBoard logs
  under ``logs/train`` (ADMM residuals, rho, per-layer sparsity, phase per epoch),
* the ablation's ingredients file (``--ablation``, default ``bench/ablation_167x.json``): one
  row per ingredient at 167x from ``bench.ablation`` outputs and recipe runs.

Writes the Markdown report (``--out``) and PNG plots beside it (``--plots_dir``): every table
with the command, date, machine and load that produced it, the papers' published numbers beside
ours, and a section computed from the data on where tf-admm does not win. Needs no TensorFlow
unless ``--recipe_dir`` has TensorBoard logs to read.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import math
import os
import shlex
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from absl import app, flags

from bench import ablation_table, comparisons, plots, tables

__all__ = [
    "DEFAULT_COMBINED",
    "DEFAULT_FRONTIER",
    "DEFAULT_OVERHEAD",
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
DEFAULT_ABLATION = "bench/ablation_167x.json"

_PRODUCERS = {
    "frontier": "python -m bench.frontier",
    "combined": "python -m bench.combined",
    "overhead": "python -m bench.overhead",
}


def _producer(kind: str, path: str) -> str | None:
    """The command that writes a missing output (datasets guessed from the file name)."""
    command = _PRODUCERS.get(kind)
    if command and "fashion_mnist" in os.path.basename(path):
        command += " --dataset=fashion_mnist"
    return command


# The published figures this report sets ours beside. "key" names what we compare with.
PUBLISHED = (
    {
        "source": "Zhang et al. 2018, ADMM weight pruning (ECCV)",
        "claim": "LeNet-5 on MNIST, pruning without accuracy loss",
        "value": "71.2x",
        "key": "pruning",
    },
    {
        "source": "Ye et al. 2018, unified ADMM pruning + clustering/quantization",
        "claim": "LeNet-5 on MNIST, pruning at ~99.0% accuracy",
        "value": "167x",
        "key": "pruning_167",
    },
    {
        "source": "Ye et al. 2018",
        "claim": "LeNet-5, pruning + quantization, weight data only",
        "value": "1,910x",
        "key": "weight_data_ratio",
    },
    {
        "source": "Ye et al. 2018",
        "claim": "LeNet-5, pruning + quantization, including indices",
        "value": "623x",
        "key": "ratio_with_indices",
    },
    {
        "source": "Han et al. 2016, Deep Compression (ICLR)",
        "claim": "LeNet-5, pruning (12x) + quantization + Huffman coding",
        "value": "~39x",
        "key": "ratio_with_indices",
    },
    {
        "source": "tfmot guides (pruning, collaborative optimization)",
        "claim": "pruning + quantization, gzipped .tflite against the dense gzipped file",
        "value": "~10x",
        "key": "gzip",
    },
)

_VARIANT_LABELS = plots.VARIANT_LABELS
# Settings whose change between two runs leaves only run-to-run noise.
_NOISE_SETTINGS = {"seed"}
_LIBRARY_LABELS = {"tf_admm": "tf-admm", "tfmot": "tfmot"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Inputs and outputs of the report.

    Attributes:
      frontier: ``bench.frontier`` JSON files.
      combined: ``bench.combined`` JSON files.
      overhead: ``bench.overhead`` JSON files.
      compare: more JSON files of any of the three: run-to-run noise against the first file
        of the same benchmark and dataset.
      recipe_dir: a recipe's model_dir (``results.json``, ``logs/train``), or None.
      ablation: ingredients file of the ablation table (:mod:`bench.ablation_table`), or
        None for no ablation section.
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
    compare: tuple[str, ...] = ()
    recipe_dir: str | None = None
    ablation: str | None = DEFAULT_ABLATION
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
# Small helpers
# ----------------------------------------------------------------------------------------------


def _numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[0] in "+-~" or cell == "-")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: columns of numbers right-aligned, the others left-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    align = [
        "---:" if cells and all(_numeric(row[i]) for row in cells) else ":---"
        for i in range(len(header))
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _ratio(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}x"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _dataset(doc: Mapping[str, Any]) -> str | None:
    return (doc.get("settings") or {}).get("dataset")


def _budget(doc: Mapping[str, Any]) -> str | None:
    """What sets a frontier run apart from another of the same dataset: its epochs per point
    (None for the other benchmarks). Runs with the same budget are repeats."""
    if doc.get("benchmark") != "frontier":
        return None
    return f"{(doc.get('protocol') or {}).get('epochs')} epochs"


def _key(doc: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    return doc.get("benchmark", "?"), _dataset(doc), _budget(doc)


def _title(key: tuple[str, str | None, str | None]) -> str:
    benchmark, *details = key
    details = [d for d in details if d is not None]
    return f"{benchmark} ({', '.join(details)})" if details else benchmark


class ObsoleteOutputError(ValueError):
    """A benchmark output in a format this report no longer reads."""


def _load(path: str) -> dict[str, Any] | None:
    """The JSON document at ``path`` (None if there is none).

    Raises:
      ObsoleteOutputError: for a frontier output of the old protocol (one seed, a runs list).
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    if doc.get("benchmark") == "frontier" and "records" not in doc:
        dataset = (doc.get("settings") or {}).get("dataset", "mnist")
        raise ObsoleteOutputError(
            f"Expected a bench.frontier document with point records; received: {path}, an "
            "output of the old frontier protocol (one seed, the 71x profile scaled, one ADMM "
            "round per epoch), which is obsolete. Rerun it with `python -m bench.frontier "
            f"--dataset={dataset}` (bench/README.md), or leave it out of --frontier/--compare."
        )
    doc["_path"] = path
    return doc


def _provenance(doc: Mapping[str, Any]) -> str:
    """Command, date, machine and load of a benchmark run, as Markdown lines."""
    machine = doc.get("machine") or {}
    start = doc.get("start") or {}
    end = doc.get("end") or {}
    lines = [
        f"Produced by (`{doc['_path']}`):",
        "",
        "```",
        doc.get("command", "?"),
        "```",
        "",
        f"- date: {start.get('time_utc', '?')} to {end.get('time_utc', '?')} (UTC)",
        f"- machine: {machine.get('nproc', '?')} cores ({machine.get('cpu_model', '?')}), "
        f"{machine.get('platform', '?')}; Python {machine.get('python', '?')}, "
        f"TensorFlow {machine.get('tensorflow', '?')}, tfmot {machine.get('tfmot', '?')}, "
        f"tf-admm {machine.get('tf_admm', '?')}",
        f"- load average (1/5/15 min) at start {start.get('load_average', '?')}, "
        f"at end {end.get('load_average', '?')}",
    ]
    lines += _records_provenance(doc)
    short = _short_run(doc)
    if short:
        lines.append(f"- **{short}: the numbers below do not measure anything.**")
    return "\n".join(lines)


def _records_provenance(doc: Mapping[str, Any]) -> list[str]:
    """Where a frontier document's points come from: each record carries the command and
    commit that trained it, its date, machine and load."""
    records = doc.get("records") or []
    if not records:
        return []
    sources = [p.get("source") for p in doc.get("points") or []]
    provenance = [r.get("provenance") or {} for r in records]
    commands = dict.fromkeys(p.get("command", "?") for p in provenance)
    commits = dict.fromkeys((p.get("commit") or "unknown")[:12] for p in provenance)
    dates = sorted(r["date"] for r in records if r.get("date"))
    machines = dict.fromkeys(
        f"{m.get('nproc', '?')} cores ({m.get('cpu_model', '?')}), TensorFlow "
        f"{m.get('tensorflow', '?')}, tfmot {m.get('tfmot', '?')}, tf-admm {m.get('tf_admm', '?')}"
        for m in (r.get("machine") or {} for r in records)
    )
    loads = [
        (r.get("load_average") or {}).get(when) or [] for r in records for when in ("start", "end")
    ]
    one_minute = [load[0] for load in loads if load]
    lines = [
        f"- points: {len(records)} record{'s' if len(records) > 1 else ''} "
        f"({sources.count('run')} trained by this command, "
        f"{sources.count('cached')} read from the cache"
        + (f", {sources.count('missing')} missing" if sources.count("missing") else "")
        + "), trained by:",
        "",
        "```",
        *commands,
        "```",
        "",
        f"- commits of the points: {', '.join(commits)}",
    ]
    if dates:
        lines.append(f"- points trained from {dates[0]} to {dates[-1]}")
    lines.append(f"- machines of the points: {'; '.join(machines)}")
    if one_minute:
        lines.append(
            "- 1-minute load average at the start and end of the points: "
            f"{min(one_minute):g} to {max(one_minute):g}"
        )
    return lines


def _short_run(doc: Mapping[str, Any]) -> str | None:
    """Why a run is too short to mean anything (smoke runs), or None."""
    settings = doc.get("settings") or {}
    examples = (doc.get("protocol") or {}).get("train_examples")
    if doc.get("benchmark") == "frontier" and examples:
        return f"short run ({examples} training images)"
    if settings.get("train_batches"):
        return f"short run ({settings['train_batches']} training batches per epoch)"
    if (
        doc.get("benchmark") == "overhead"
        and settings.get("steps", 99) * settings.get("repeats", 1) < 30
    ):
        return f"short run ({settings['repeats']} x {settings['steps']} timed steps)"
    return None


def _image(settings: Settings, path: str, alt: str) -> str:
    directory = os.path.dirname(settings.out) or "."
    return f"![{alt}]({os.path.relpath(path, directory)})"


# ----------------------------------------------------------------------------------------------
# Computations on the data
# ----------------------------------------------------------------------------------------------


def _nested(run: Mapping[str, Any], key: str) -> float | None:
    value: Any = run
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _smallest_file(run: Mapping[str, Any]) -> tuple[str, int] | None:
    files = [
        (name, entry["gzip_bytes"])
        for name, entry in (run.get("files") or {}).items()
        if entry and entry.get("gzip_bytes")
    ]
    return min(files, key=lambda item: item[1]) if files else None


def shortfalls(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every measured comparison in which tfmot is at least as good as tf-admm, in words.

    Frontier, in both comparisons: the highest ratio within the document's tolerance of dense
    (tfmot reaching as far, or tf-admm not twice as far), each target ratio where tfmot's mean
    test gap is at least tf-admm's, and wall time. Combined: per point and
    tfmot row, accuracy, storage ratios, file sizes and wall time. Overhead: step time and
    added state.
    """
    found: list[str] = []
    for doc in docs:
        benchmark = _key(doc)[0]
        where = _title(_key(doc))
        if benchmark == "frontier":
            found += _frontier_shortfalls(doc, where)
        elif benchmark == "combined":
            found += _combined_shortfalls(doc, where)
        elif benchmark == "overhead":
            found += _overhead_shortfalls(doc, where)
    return found


def _frontier_shortfalls(doc, where: str) -> list[str]:
    found = []
    tolerance = doc["tolerance_points"]
    for comparison in comparisons.comparisons(doc["records"], tolerance):
        what = f"{where}, {comparison.name.replace('_', ' ')}"
        highest = comparison.highest
        ours, theirs = highest["tf_admm"], highest["tfmot"]
        if theirs is not None and (ours is None or theirs >= ours):
            found.append(
                f"{what}: within {tolerance:g} point of dense, tfmot reaches {theirs:g}x and "
                f"tf-admm "
                + ("none of the measured ratios" if ours is None else f"{ours:g}x")
                + "."
            )
        elif comparison.at_least_twice is False and comparison.ratios:
            found.append(
                f"{what}: tf-admm's highest ratio within {tolerance:g} point of dense is not 2x "
                f"tfmot's ({ours:g}x against {theirs:g}x)."
            )
        for ratio in comparison.ratios:
            mine, other = comparison.ours[ratio], comparison.theirs[ratio]
            if other.test_mean >= mine.test_mean:
                found.append(
                    f"{what}, {ratio:g}x: {other.arm} "
                    f"{comparisons.format_cell(other.test_mean, other.test_sd)} points from dense "
                    f"against tf-admm {comparisons.format_cell(mine.test_mean, mine.test_sd)} "
                    f"(test, mean over {other.n} seed{'s' if other.n > 1 else ''})."
                )
    seconds: dict[str, list[float]] = {}
    for record in doc["records"]:
        seconds.setdefault(record["library"], []).append(record["seconds"])
    if len(seconds) == 2 and statistics.median(seconds["tfmot"]) <= statistics.median(
        seconds["tf_admm"]
    ):
        ours, theirs = statistics.median(seconds["tf_admm"]), statistics.median(seconds["tfmot"])
        found.append(
            f"{where}: wall time per point, median: tfmot {theirs:.0f} s, tf-admm "
            f"{ours:.0f} s ({ours / theirs:.2f}x)."
        )
    return found


_COMBINED_AXES = (
    # (label, getter, higher is better)
    ("test accuracy", lambda r: r["accuracy"], True),
    ("weight-data ratio", lambda r: _nested(r, "storage.totals.weight_data_ratio"), True),
    ("ratio with indices", lambda r: _nested(r, "storage.totals.ratio_with_indices"), True),
    (
        "converter (Optimize.DEFAULT) file, gzipped bytes",
        lambda r: _nested(r, "files.converter_default.gzip_bytes"),
        False,
    ),
    (
        "tflite_export file bytes",
        lambda r: _nested(r, "files.tflite_export.file_bytes"),
        False,
    ),
    (
        "smallest gzipped file",
        lambda r: (_smallest_file(r) or (None, None))[1],
        False,
    ),
    ("wall time (s)", lambda r: r["seconds"], False),
)


def _format_value(label: str, value: float) -> str:
    if "accuracy" in label:
        return f"{100 * value:.2f}%"
    if "ratio" in label:
        return _ratio(value)
    if "time" in label:
        return f"{value:.0f}"
    return f"{int(value):,}"


def _combined_shortfalls(doc, where: str) -> list[str]:
    found = []
    by_point: dict[str, dict[str, Mapping[str, Any]]] = {}
    for run in doc["runs"]:
        by_point.setdefault(run["point"], {})[run["variant"]] = run
    for point, variants in by_point.items():
        admm = variants.get("tf_admm")
        if admm is None:
            continue
        for variant, run in variants.items():
            if variant == "tf_admm":
                continue
            for label, get, higher in _COMBINED_AXES:
                ours, theirs = get(admm), get(run)
                if ours is None or theirs is None:
                    continue
                if (theirs >= ours) if higher else (theirs <= ours):
                    found.append(
                        f"{where}, point {point}: {_VARIANT_LABELS.get(variant, variant)} "
                        f"{label} {_format_value(label, theirs)} against tf-admm's "
                        f"{_format_value(label, ours)}."
                    )
    return found


def _overhead_shortfalls(doc, where: str) -> list[str]:
    found = []
    for model, entry in doc["models"].items():
        variants = entry["variants"]
        tfmot = variants.get("tfmot")
        if tfmot is None:
            continue
        for name in ("admm", "retrain"):
            ours = variants.get(name)
            if ours is not None and tfmot["ratio"] <= ours["ratio"]:
                found.append(
                    f"{where}, {model}: step time, tfmot {tfmot['ratio']:.2f}x plain against "
                    f"tf-admm ({name}) {ours['ratio']:.2f}x."
                )
        ours = variants.get("admm")
        if ours is not None and tfmot["extra_state_bytes"] <= ours["extra_state_bytes"]:
            found.append(
                f"{where}, {model}: added training state, tfmot "
                f"{tfmot['extra_state_bytes'] / 1024:,.0f} KiB against tf-admm "
                f"{ours['extra_state_bytes'] / 1024:,.0f} KiB."
            )
    return found


def _point_values(doc: Mapping[str, Any]) -> dict[tuple, dict[str, float]]:
    """{point key: {measure: value}} of one benchmark output, for noise comparisons."""
    benchmark = doc.get("benchmark")
    values: dict[tuple, dict[str, float]] = {}
    if benchmark == "frontier":
        for record in doc["records"]:
            key = (f"{record['target_ratio']:g}x", record["arm"], f"seed {record['seed']}")
            values[key] = {"accuracy": record["test"], "ratio": record["achieved_ratio"]}
    elif benchmark == "combined":
        for run in doc["runs"]:
            values[(run["point"], run["variant"])] = {
                "accuracy": run["accuracy"],
                "ratio": _nested(run, "storage.totals.ratio_with_indices"),
            }
    elif benchmark == "overhead":
        for model, entry in doc["models"].items():
            for variant, data in entry["variants"].items():
                values[(model, variant)] = {"ratio": data["ratio"]}
    return values


def noise(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Per-point differences between two outputs of one benchmark (second minus first).

    Returns:
      ``points``: [(point key, {measure: (first, second, difference)})] over the points both
      have; ``settings``: {setting: (first, second)} for settings that differ;
      ``max_accuracy_points``: the largest absolute accuracy difference, in points (or None).
    """
    a, b = _point_values(first), _point_values(second)
    points = []
    for key in a:
        if key not in b:
            continue
        measures = {}
        for measure, value in a[key].items():
            other = b[key].get(measure)
            if value is not None and other is not None:
                measures[measure] = (value, other, other - value)
        points.append((key, measures))
    # Where files go, and which points run: points are matched by key, so a run of a subset of
    # the ratios (or libraries) is still a noise measure on the points both have.
    ignored = {
        "out",
        "plot",
        "work_dir",
        "dense_dir",
        "data_dir",
        "command",
        "verbose",
        "ratios",
        "libraries",
        "seeds",
        "arms",
        "run_missing",
        "tolerance_points",
    }
    settings_a, settings_b = first.get("settings") or {}, second.get("settings") or {}
    differing = {
        name: (settings_a.get(name), settings_b.get(name))
        for name in sorted(set(settings_a) | set(settings_b))
        if name not in ignored
        # A setting that one run did not record (an older output) is not known to differ.
        and settings_a.get(name) is not None
        and settings_b.get(name) is not None
        and settings_a.get(name) != settings_b.get(name)
    }
    accuracy = [abs(m["accuracy"][2]) for _, m in points if "accuracy" in m]
    return {
        "points": points,
        "settings": differing,
        "max_accuracy_points": 100 * max(accuracy) if accuracy else None,
    }


# ----------------------------------------------------------------------------------------------
# Recipe runs
# ----------------------------------------------------------------------------------------------


def read_tensorboard(log_dir: str) -> list[dict[str, float]]:
    """Per-epoch scalars of Keras' TensorBoard logs (``epoch_<name>`` tags), one dict per epoch.

    Later event files win for a step written twice (a resumed run). Keys lose the ``epoch_``
    prefix; ``epoch`` is the step. Needs TensorFlow (imported here only).
    """
    from tf_admm.compat import tf

    by_step: dict[int, dict[str, float]] = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if not value.tag.startswith("epoch_"):
                    continue
                if value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                else:
                    number = float(value.simple_value)
                by_step.setdefault(int(event.step), {})[value.tag[len("epoch_") :]] = number
    return [{"epoch": step, **by_step[step]} for step in sorted(by_step)]


def _with_phase_during(epochs: list[dict[str, float]], first_phase: int) -> list[dict[str, float]]:
    """Adds ``phase`` (during the epoch) from ``admm_phase`` (logged after the epoch's update)."""
    result = []
    previous = first_phase
    for entry in epochs:
        result.append({**entry, "phase": previous})
        if entry.get("admm_phase") is not None:
            previous = int(entry["admm_phase"])
    return result


def _recipe_section(
    settings: Settings, results: Mapping[str, Any] | None, outputs: list[str]
) -> list[str]:
    """The recipe run's section, from its ``results`` (None: no results.json was found)."""
    directory = settings.recipe_dir
    path = os.path.join(directory, "results.json")
    lines = ["## Recipe run", ""]
    if results is None:
        return lines + [f"No `{path}`: run the recipe with `--model_dir={directory}` first.", ""]
    totals = (results.get("storage") or {}).get("totals") or {}
    lite = results.get("tflite") or {}
    lines += [
        f"From `{path}` (the recipe records no command or machine; its spec is in the file).",
        "",
        _table(
            ("dense %", "compressed %", "drop (points)", "pruning", "weight data", "with indices")
            + (("LiteRT file B (gzip)", "LiteRT accuracy %") if lite else ()),
            [
                (
                    _percent(results.get("dense_accuracy")),
                    _percent(results.get("pruned_accuracy")),
                    f"{results.get('accuracy_drop_points', float('nan')):+.2f}",
                    _ratio(results.get("pruning_ratio")),
                    _ratio(totals.get("weight_data_ratio"), 0),
                    _ratio(totals.get("ratio_with_indices"), 0),
                )
                + (
                    (
                        f"{lite['file_bytes']:,} ({lite['gzip_bytes']:,})",
                        _percent(lite.get("accuracy")),
                    )
                    if lite
                    else ()
                )
            ],
        ),
        "",
    ]
    storage_layers = {
        layer["name"]: layer for layer in (results.get("storage") or {}).get("layers", [])
    }
    entries = [
        {
            "label": "recipe",
            "layers": [
                {
                    "name": name,
                    "kept_fraction": row["nonzeros"] / row["weights"],
                    "bits": storage_layers.get(name, {}).get("bits_per_value"),
                }
                for row in results.get("layers", [])
                # Named as tf_admm.report names storage rows.
                for name in [
                    row["layer"]
                    if row.get("weight", "kernel") in ("kernel", "embeddings")
                    else f"{row['layer']}.{row['weight']}"
                ]
            ],
        }
    ]
    if entries[0]["layers"]:
        png = plots.layer_bars(
            entries,
            os.path.join(settings.plot_directory, "recipe_layers.png"),
            "Recipe run: per-layer kept weights and bits",
        )
        outputs.append(png)
        lines += [_image(settings, png, "recipe per-layer kept weights and bits"), ""]
    log_dir = os.path.join(directory, "logs", "train")
    if glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        epochs = read_tensorboard(log_dir)
        rules = (results.get("spec") or {}).get("rules", [])
        prunes = any("sparsity" in r or "ratio" in r for r in rules) or not rules
        epochs = _with_phase_during(epochs, 0 if prunes else 2)
        if epochs:
            png = plots.admm_history(
                epochs,
                os.path.join(settings.plot_directory, "recipe_admm.png"),
                "Recipe run: ADMM residuals, rho and sparsity per epoch",
            )
            outputs.append(png)
            lines += [_image(settings, png, "recipe ADMM history"), ""]
    else:
        lines += [f"No TensorBoard logs under `{log_dir}`.", ""]
    return lines


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


def _recipe_results(directory: str) -> dict[str, Any] | None:
    """The ``results.json`` of a recipe run, or None when there is none."""
    try:
        with open(os.path.join(directory, "results.json"), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _recipe_claims(recipe: Mapping[str, Any]) -> dict[str, str]:
    """{published key: what a recipe run measured} (pruning alone, or the storage ratios)."""
    rules = (recipe.get("spec") or {}).get("rules") or []
    accuracy = (
        f"{_percent(recipe['pruned_accuracy'])}%, its dense model "
        f"{_percent(recipe['dense_accuracy'])}%"
    )
    if not any(rule.get("bits") or rule.get("clusters") for rule in rules):
        return {"pruning": f"tf-admm recipe {_ratio(recipe['pruning_ratio'])} ({accuracy})"}
    totals = (recipe.get("storage") or {}).get("totals") or {}
    return {
        key: f"tf-admm recipe {_ratio(totals[key], 0)} ({accuracy})"
        for key in ("weight_data_ratio", "ratio_with_indices")
        if key in totals
    }


def _published_section(
    frontiers: Sequence[Mapping[str, Any]],
    combined: Sequence[Mapping[str, Any]],
    recipe: Mapping[str, Any] | None = None,
) -> list[str]:
    mnist = next((d for d in frontiers if _dataset(d) == "mnist"), None)
    quant = next((d for d in combined if _dataset(d) == "mnist"), None)
    ours: dict[str, str] = {}
    if mnist is not None:
        tolerance = mnist["tolerance_points"]
        seeds = len({r["seed"] for r in mnist["records"]})
        dense = statistics.fmean({r["seed"]: r["dense"]["test"] for r in mnist["records"]}.values())
        parts = []
        for comparison in comparisons.comparisons(mnist["records"], tolerance):
            highest = comparison.highest
            parts.append(
                f"{comparison.name.replace('_', ' ')}: "
                + ", ".join(
                    f"{_LIBRARY_LABELS[library]} "
                    + ("none within it" if ratio is None else f"{ratio:g}x")
                    for library, ratio in highest.items()
                )
            )
        ours["pruning"] = (
            "; ".join(parts)
            + f" (highest ratio whose mean test accuracy over {seeds} seed"
            + ("s" if seeds > 1 else "")
            + f" is within {tolerance:g} point of dense, {_percent(dense)}% on average)"
        )
        near = {
            (arm, ratio): cell
            for (arm, ratio), cell in comparisons.cells(mnist["records"]).items()
            if abs(ratio - 167) < 1
        }
        if near:
            ours["pruning_167"] = "; ".join(
                f"{arm} {ratio:g}x at {comparisons.format_cell(cell.test_mean, cell.test_sd)} "
                "points from dense"
                for (arm, ratio), cell in near.items()
            )
        else:
            ours["pruning_167"] = ours["pruning"]
    if quant is not None:
        config = [r for r in quant["runs"] if r["point"] == "config"]
        for key in ("weight_data_ratio", "ratio_with_indices"):
            ours[key] = "; ".join(
                f"{_VARIANT_LABELS.get(r['variant'], r['variant'])} "
                f"{_ratio(_nested(r, f'storage.totals.{key}'), 0)} ({_percent(r['accuracy'])}%)"
                for r in config
            )
        dense_gzip = quant["dense"].get("float_gzip_bytes")
        if dense_gzip:
            parts = []
            for r in config:
                smallest = _smallest_file(r)
                if smallest:
                    parts.append(
                        f"{_VARIANT_LABELS.get(r['variant'], r['variant'])} "
                        f"{_ratio(dense_gzip / smallest[1])} ({smallest[0]})"
                    )
            ours["gzip"] = "; ".join(parts)
    for key, text in (_recipe_claims(recipe) if recipe else {}).items():
        ours[key] = f"{ours[key]}; {text}" if key in ours else text
    rows = [
        (p["source"], p["claim"], p["value"], ours.get(p["key"], "no data yet")) for p in PUBLISHED
    ]
    return [
        "## Published numbers beside ours",
        "",
        "The papers' figures are for their own training runs and storage formats; ours are "
        "from the runs below (LeNet-5 on MNIST; accuracy in parentheses). The storage ratios "
        "are counted by `tf_admm.storage` (32-bit dense weights over stored values, relative "
        "indices with fillers, codebooks), without Huffman coding; the gzip ratio is the dense "
        "float `.tflite` file gzipped over the smallest compressed file gzipped.",
        "",
        _table(("source", "what", "published", "ours"), rows),
        "",
    ]


def _frontier_section(settings: Settings, doc: Mapping[str, Any], outputs: list[str]):
    dataset = _dataset(doc)
    protocol = doc["protocol"]
    tolerance = doc["tolerance_points"]
    records = doc["records"]
    png = plots.frontier(doc, os.path.join(settings.plot_directory, f"frontier_{dataset}.png"))
    outputs.append(png)
    dense = {r["seed"]: r["dense"] for r in records}
    lines = [
        f"## Accuracy against pruning ratio: LeNet-5 on {dataset}",
        "",
        _provenance(doc),
        "",
        f"Protocol (`bench.sweep`): one dense LeNet-5 per seed ({protocol['pretrain_epochs']} "
        f"epochs), every arm and ratio of a seed starts from it. {protocol['epochs']} epochs "
        f"per point: {protocol['prune_epochs']} of pruning (tf-admm: ADMM with Z/U every "
        f"{protocol['update_every']} steps, rho from {protocol['rho']:g} x"
        f"{protocol['rho_multiplier']:g} per update, then the hard projection; tfmot: "
        "PolynomialDecay from 0 to the final sparsity, a mask update at most every "
        f"{protocol['update_every']} steps), then "
        f"{protocol['epochs'] - protocol['prune_epochs']} of masked retraining with a cosine "
        f"learning rate from {protocol['learning_rate']:g} to "
        f"{protocol['final_learning_rate']:g}; Adam, batch {protocol['batch_size']}. The last "
        f"{protocol['validation_examples']:,} training images are the validation split: "
        "choices are made on it, the test set only reports. Arms: `tf_admm:lamp` (tf-admm, "
        "LAMP allocation), `tfmot:lamp` (tfmot with the very same kept counts), "
        "`tfmot:uniform` (one sparsity for every layer).",
        "",
        "Dense models (test / validation accuracy): "
        + ", ".join(
            f"seed {seed} {_percent(d['test'])}% / {_percent(d['validation'])}%"
            for seed, d in sorted(dense.items())
        )
        + ".",
        "",
        "Per arm and target ratio, mean ± sample sd over the seeds of the gap to each seed's "
        "dense model, in accuracy points:",
        "",
        _table(comparisons.ARM_HEADER, comparisons.arm_rows(comparisons.cells(records))),
        "",
    ]
    for comparison in comparisons.comparisons(records, tolerance):
        lines += [
            f"### {comparison.title}",
            "",
            _table(comparisons.COMPARISON_HEADER, comparisons.comparison_rows(comparison)),
            "",
            f"**{comparison.verdict()}**",
            "",
        ]
    missing = [p for p in doc.get("points") or [] if p.get("source") == "missing"]
    if missing:
        lines += [
            f"{len(missing)} requested points were not cached and not run: "
            + ", ".join(f"seed {p['seed']} {p['arm']} {p['ratio']:g}x" for p in missing)
            + ".",
            "",
        ]
    lines += [_image(settings, png, f"accuracy against ratio, {dataset}"), ""]
    return lines


def _combined_section(settings: Settings, doc: Mapping[str, Any], outputs: list[str]):
    dataset = _dataset(doc)
    directory = settings.plot_directory

    def file_cell(entry):
        if not entry:
            return "-"
        if "error" in entry:
            return "not accepted"
        return f"{entry['file_bytes']:,} ({entry['gzip_bytes']:,}) {_percent(entry['accuracy'])}%"

    rows = []
    for r in doc["runs"]:
        totals = r["storage"]["totals"]
        files = r.get("files") or {}
        rows.append(
            (
                r["point"],
                _VARIANT_LABELS.get(r["variant"], r["variant"]),
                r["epochs"],
                _percent(r["accuracy"]),
                _ratio(r["pruning_ratio"]),
                _ratio(totals["weight_data_ratio"], 0),
                _ratio(totals["ratio_with_indices"], 0),
                file_cell(files.get("tflite_export")),
                file_cell(files.get("converter_default")),
                f"{r['seconds']:.0f}",
            )
        )
    header = (
        "point",
        "run",
        "epochs",
        "accuracy %",
        "pruning",
        "weight data",
        "with indices",
        "tflite_export: B (gzip) accuracy",
        "converter DEFAULT: B (gzip) accuracy",
        "seconds",
    )
    layer_rows = []
    config = [r for r in doc["runs"] if r["point"] == doc["points"][0]["name"]]
    sizes = doc["sizes"]
    for r in config:
        by_layer = {layer["name"]: layer for layer in r["storage"]["layers"]}
        for name in doc["layers"]:
            layer = by_layer.get(name, {})
            layer_rows.append(
                (
                    name,
                    _VARIANT_LABELS.get(r["variant"], r["variant"]),
                    f"{r['nonzeros'][name]:,} / {sizes[name]:,}",
                    layer.get("bits_per_value", "-"),
                    (r.get("distinct_values") or {}).get(name, "-"),
                    (r.get("clusters") or {}).get(name, "-"),
                    ((r.get("centroid_init") or {}).get(name) or {}).get("used", "-"),
                )
            )
    dense = doc["dense"]
    budget = doc["budget"]
    png = plots.combined(doc, os.path.join(directory, f"combined_{dataset}.png"))
    outputs.append(png)
    entries = [
        {
            "label": _VARIANT_LABELS.get(r["variant"], r["variant"]),
            "layers": [
                {
                    "name": layer["name"],
                    "kept_fraction": layer["num_nonzeros"] / layer["num_weights"],
                    "bits": layer["bits_per_value"],
                }
                for layer in r["storage"]["layers"]
            ],
        }
        for r in config
    ]
    layers_png = plots.layer_bars(
        entries,
        os.path.join(directory, f"combined_{dataset}_layers.png"),
        f"Per-layer kept weights and bits per value ({doc['points'][0]['name']})",
    )
    outputs.append(layers_png)
    lines = [
        f"## Pruning + quantization: LeNet-5 on {dataset}",
        "",
        _provenance(doc),
        "",
        f"Config `{doc['config']['path']}`; budget {budget['epochs']} epochs for each library: "
        f"tf-admm {budget['scheduled']} scheduled rounds + {budget['final']} epochs on the "
        f"levels; tfmot {budget['prune_ramp']} ramp + {budget['prune_finetune']} fine-tuning, "
        f"{budget['cluster']} clustering, {budget['pcqat']} PCQAT. Dense LeNet-5: "
        f"{_percent(dense['accuracy'])}%, float `.tflite` {dense['float_file_bytes']:,} B "
        f"(gzip {dense['float_gzip_bytes']:,} B).",
        "",
        _table(header, rows),
        "",
        "Storage ratios as `tf_admm.report.storage_report` counts them (PCQAT: from the int8 "
        "codes of the converter's file, per-channel scales counted as codebook). Files: "
        "`tflite_export.export` (LiteRT) and the plain TFLite converter with "
        "`Optimize.DEFAULT`, bytes, gzip bytes and test accuracy in LiteRT.",
        "",
        _table(
            ("layer", "run", "kept", "bits", "distinct values", "tfmot clusters", "centroid init"),
            layer_rows,
        ),
        "",
        _image(settings, png, f"pruning + quantization, {dataset}"),
        "",
        _image(settings, layers_png, f"per-layer kept weights and bits, {dataset}"),
        "",
    ]
    admm = next((r for r in config if r["variant"] == "tf_admm" and r.get("history")), None)
    if admm is not None:
        history_png = plots.admm_history(
            admm["history"],
            os.path.join(directory, f"combined_{dataset}_admm.png"),
            f"tf-admm on {dataset}: ADMM residuals, rho and sparsity per epoch",
        )
        outputs.append(history_png)
        lines += [_image(settings, history_png, f"ADMM history, {dataset}"), ""]
    return lines


def _overhead_section(doc: Mapping[str, Any]) -> list[str]:
    s = doc["settings"]
    return [
        "## Training-step overhead",
        "",
        _provenance(doc),
        "",
        f"Batch {s['batch_size']}, {s['repeats']} interleaved repeats of {s['steps']} timed "
        f"steps per variant, sparsity {s['sparsity']}.",
        "",
        _table(tables.OVERHEAD_HEADER, tables.overhead_rows(doc)),
        "",
    ]


def _noise_section(groups: Mapping[tuple, list[Mapping[str, Any]]]) -> list[str]:
    lines = ["## Run-to-run noise", ""]
    pairs = [(key, docs[0], other) for key, docs in groups.items() for other in docs[1:]]
    if not pairs:
        return lines + [
            "Only one output of each benchmark was given. Pass a second run of the same "
            "benchmark (e.g. another seed) with `--compare` to measure the noise.",
            "",
        ]
    for key, first, second in pairs:
        result = noise(first, second)
        lines += [
            f"### {_title(key)}: `{second['_path']}` minus `{first['_path']}`",
            "",
        ]
        if result["settings"]:
            lines += [
                "Settings that differ: "
                + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in result["settings"].items()),
                "",
            ]
        rows = []
        for point, measures in result["points"]:
            cells = [" / ".join(str(p) for p in point)]
            for measure in ("accuracy", "ratio"):
                if measure in measures:
                    a, b, d = measures[measure]
                    if measure == "accuracy":
                        cells.append(f"{100 * a:.2f} -> {100 * b:.2f} ({100 * d:+.2f})")
                    else:
                        cells.append(f"{a:,.2f} -> {b:,.2f} ({d:+.2f})")
                else:
                    cells.append("-")
            rows.append(cells)
        lines += [_table(("point", "accuracy % (points)", "ratio"), rows), ""]
        if result["max_accuracy_points"] is not None:
            largest = f"Largest accuracy difference: {result['max_accuracy_points']:.2f} points."
            if set(result["settings"]) <= _NOISE_SETTINGS:
                largest += " Differences between libraries smaller than this are within the noise."
            else:
                largest += (
                    " The runs differ in more than the seed, so this is not only noise: compare "
                    "runs that differ in the seed alone."
                )
            lines += [largest, ""]
    return lines


def _ablation_section(path: str) -> list[str]:
    ratio, ingredients = ablation_table.load_ingredients(path)
    rows = ablation_table.measure(ingredients)
    lines = [f"## Ablation: what each ingredient adds at {ratio:g}x", ""]
    lines += [
        f"Ingredients and their runs from `{path}` (`python -m bench.ablation` and recipe runs; "
        "each row's runs differ in the ingredient alone).",
        "",
        ablation_table.format_markdown(ratio, rows),
        "",
    ]
    empty = [row.ingredient.name for row in rows if not row.with_ or not row.without]
    if empty:
        lines += [f"Not measured yet (no runs on one side): {'; '.join(empty)}.", ""]
    return lines


def _shortfall_section(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    found = shortfalls(docs)
    lines = [
        "## Where tf-admm does not win",
        "",
        "Computed from the runs above: every comparison in which tfmot's result is at least as "
        "good as tf-admm's (the frontier's mean test gap at the same target in both "
        "comparisons, the highest ratio within the dataset's tolerance of dense, and where "
        "tf-admm's is not twice tfmot's; storage ratios, file sizes, wall time, step time and "
        "training state).",
        "",
    ]
    if not docs:
        return lines + ["No benchmark output to compare.", ""]
    if not found:
        return lines + ["None in these runs.", ""]
    return lines + [f"- {item}" for item in found] + [""]


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def run(settings: Settings) -> dict[str, Any]:
    """Reads the outputs, draws the plots, writes the Markdown; returns what it did.

    Returns:
      ``{"out": path, "plots": [paths], "missing": [paths], "markdown": text}``.
    """
    loaded: dict[str, list[dict[str, Any]]] = {"frontier": [], "combined": [], "overhead": []}
    missing = []
    for kind in loaded:
        for path in getattr(settings, kind):
            doc = _load(path)
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
            groups.setdefault(_key(doc), []).append(doc)
    # Only the first output of each benchmark and dataset gets a section; more are noise.
    primary = {key: docs[0] for key, docs in groups.items()}
    for path in settings.compare:
        doc = _load(path)
        if doc is None:
            missing.append(("compare", path))
        else:
            groups.setdefault(_key(doc), []).append(doc)
    os.makedirs(settings.plot_directory, exist_ok=True)
    outputs: list[str] = []
    firsts = list(primary.values())
    frontiers = [d for d in firsts if d.get("benchmark") == "frontier"]
    combined = [d for d in firsts if d.get("benchmark") == "combined"]
    overheads = [d for d in firsts if d.get("benchmark") == "overhead"]
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
    recipe = _recipe_results(settings.recipe_dir) if settings.recipe_dir else None
    lines += _published_section(frontiers, combined, recipe)
    for doc in frontiers:
        lines += _frontier_section(settings, doc, outputs)
    for doc in combined:
        lines += _combined_section(settings, doc, outputs)
    for doc in overheads:
        lines += _overhead_section(doc)
    if settings.recipe_dir:
        lines += _recipe_section(settings, recipe, outputs)
    if settings.ablation:
        if os.path.exists(settings.ablation):
            lines += _ablation_section(settings.ablation)
        else:
            missing.append(("ablation", settings.ablation))
    lines += _shortfall_section(firsts)
    lines += _noise_section(groups)
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
    for name in ("frontier", "combined", "overhead", "compare"):
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
