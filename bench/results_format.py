"""Formatting and loading for :mod:`bench.results`: Markdown cells and tables, the benchmark
documents (read from JSON, keyed by benchmark, dataset and budget) and their provenance lines.

Pure Python on the benchmarks' JSON: no TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ObsoleteOutputError",
    "dataset",
    "image",
    "key",
    "load",
    "nested",
    "percent",
    "provenance",
    "ratio",
    "smallest_file",
    "table",
    "title",
]


def _numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[0] in "+-~" or cell == "-")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: columns of numbers right-aligned, the others left-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    align = [
        "---:" if cells and all(_numeric(row[i]) for row in cells) else ":---"
        for i in range(len(header))
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def ratio(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}x"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def dataset(doc: Mapping[str, Any]) -> str | None:
    return (doc.get("settings") or {}).get("dataset")


def _budget(doc: Mapping[str, Any]) -> str | None:
    """What sets a frontier run apart from another of the same dataset: its epochs per point
    (None for the other benchmarks). Runs with the same budget are repeats."""
    if doc.get("benchmark") != "frontier":
        return None
    return f"{(doc.get('protocol') or {}).get('epochs')} epochs"


def key(doc: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    return doc.get("benchmark", "?"), dataset(doc), _budget(doc)


def title(key: tuple[str, str | None, str | None]) -> str:
    benchmark, *details = key
    details = [d for d in details if d is not None]
    return f"{benchmark} ({', '.join(details)})" if details else benchmark


class ObsoleteOutputError(ValueError):
    """A benchmark output in a format this report no longer reads."""


def load(path: str) -> dict[str, Any] | None:
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


def provenance(doc: Mapping[str, Any]) -> str:
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


def image(out: str, path: str, alt: str) -> str:
    """A Markdown image of ``path``, relative to the directory of the report ``out``."""
    directory = os.path.dirname(out) or "."
    return f"![{alt}]({os.path.relpath(path, directory)})"


def nested(run: Mapping[str, Any], key: str) -> float | None:
    value: Any = run
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def smallest_file(run: Mapping[str, Any]) -> tuple[str, int] | None:
    files = [
        (name, entry["gzip_bytes"])
        for name, entry in (run.get("files") or {}).items()
        if entry and entry.get("gzip_bytes")
    ]
    return min(files, key=lambda item: item[1]) if files else None
