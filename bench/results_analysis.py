"""What :mod:`bench.results` computes from the benchmarks' outputs: where tfmot is at least as
good as tf-admm (:func:`shortfalls`) and how two runs of one benchmark differ (:func:`noise`).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench import comparisons, plots
from bench import results_format as fmt

__all__ = ["noise", "shortfalls"]


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
        benchmark = fmt.key(doc)[0]
        where = fmt.title(fmt.key(doc))
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
    ("weight-data ratio", lambda r: fmt.nested(r, "storage.totals.weight_data_ratio"), True),
    ("ratio with indices", lambda r: fmt.nested(r, "storage.totals.ratio_with_indices"), True),
    (
        "converter (Optimize.DEFAULT) file, gzipped bytes",
        lambda r: fmt.nested(r, "files.converter_default.gzip_bytes"),
        False,
    ),
    (
        "tflite_export file bytes",
        lambda r: fmt.nested(r, "files.tflite_export.file_bytes"),
        False,
    ),
    (
        "smallest gzipped file",
        lambda r: (fmt.smallest_file(r) or (None, None))[1],
        False,
    ),
    ("wall time (s)", lambda r: r["seconds"], False),
)


def _format_value(label: str, value: float) -> str:
    if "accuracy" in label:
        return f"{100 * value:.2f}%"
    if "ratio" in label:
        return fmt.ratio(value)
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
                        f"{where}, point {point}: {plots.VARIANT_LABELS.get(variant, variant)} "
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
                "ratio": fmt.nested(run, "storage.totals.ratio_with_indices"),
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
