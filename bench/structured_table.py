"""The table of :mod:`bench.structured_lenet5` from its JSON document: one row per ``.tflite``
file with accuracy, size, MACs and LiteRT latency. Pure Python (no TensorFlow), so that
:mod:`bench.results` can put it in ``docs/RESULTS.md``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["BENCHMARK", "VARIANTS", "header", "notes", "rows"]

BENCHMARK = "structured_lenet5"

# What each file is, in the table's words.
VARIANTS = {
    "dense": "dense",
    "unstructured": "unstructured, same kept counts",
    "structured_masked": "filter + column, masked",
    "structured_shrunk": "filter + column, shrunk",
    "structured_shrunk_int8": "filter + column, shrunk, full int8",
    "tfmot_2of4": "tfmot 2:4, same epochs",
}


def threads(doc: Mapping[str, Any]) -> list[int]:
    return sorted({row["threads"] for row in doc["files"][0]["latency"]})


def header(doc: Mapping[str, Any]) -> list[str]:
    cells = [
        "variant",
        "validation %",
        "test % Keras",
        "test % LiteRT",
        "KiB",
        "x smaller",
        "MACs",
        "x fewer MACs",
    ]
    for count in threads(doc):
        cells += [f"{count} thr µs", f"{count} thr x faster"]
    return cells


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def rows(doc: Mapping[str, Any]) -> list[list[str]]:
    """One row of strings per file, in the document's order (the reference first)."""
    table = []
    for entry in doc["files"]:
        row = [
            VARIANTS.get(entry["name"], entry["name"]),
            _percent(entry.get("keras_validation_accuracy")),
            _percent(entry.get("keras_test_accuracy")),
            _percent(entry.get("litert_test_accuracy")),
            f"{entry['file_bytes'] / 1024:,.1f}",
            _x(entry.get("x_smaller")),
            f"{entry['macs']:,}",
            _x(entry.get("x_fewer_macs")),
        ]
        by_threads = {r["threads"]: r for r in entry["latency"]}
        for count in threads(doc):
            latency = by_threads[count]
            row += [f"{latency['median_us']:,.1f}", _x(latency.get("x_faster"))]
        table.append(row)
    return table


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


# A median this many times a file's own 1-thread median, at more threads, is not the file's.
SUSPECT_FACTOR = 3.0


def _suspect_latencies(doc: Mapping[str, Any]) -> list[str]:
    """Rows whose multi-thread median is far above the same file's 1-thread median: on a
    shared machine a descheduled worker thread makes every invoke wait, so re-measure them."""
    found = []
    for entry in doc["files"]:
        by_threads = {r["threads"]: r["median_us"] for r in entry["latency"]}
        single = by_threads.get(1)
        for count, median in sorted(by_threads.items()):
            if single and count > 1 and median > SUSPECT_FACTOR * single:
                found.append(
                    f"{VARIANTS.get(entry['name'], entry['name'])}: the {count}-thread median "
                    f"({median:,.1f} µs) is {median / single:.1f}x its 1-thread median; likely a "
                    "descheduled thread on a loaded machine: re-measure before quoting it."
                )
    return found


def notes(doc: Mapping[str, Any]) -> list[str]:
    """The lines under the table: what was pruned, what shrink removed, what it could not."""
    s = doc["settings"]
    kept = doc["kept"]
    lines = [
        "Median of {n} batch-1 invokes per file and thread count, XNNPACK on, interleaved; "
        "x faster / x smaller / x fewer: dense's value over the file's.".format(
            n=s["rounds"] * s["invokes_per_round"]
        ),
        "Pruned: {}; kept weights {}.".format(
            ", ".join(f"{name} {rule}" for name, rule in doc["rules"].items()),
            ", ".join(f"{name} {count:,}" for name, count in kept.items()),
        ),
        "Shrunk kernels: {}.".format(
            ", ".join(f"{name} {_shape(shape)}" for name, shape in doc["shrunk_kernels"].items())
        ),
    ]
    lines += doc.get("findings", [])
    lines += _suspect_latencies(doc)
    lines.append(
        f"Shrunk outputs equal the masked model's within {doc['shrink_max_abs_error']:.1e} "
        "(max abs logit difference on test images)."
    )
    return lines
