"""Rows of the benchmark tables shared by a benchmark's printout and docs/RESULTS.md.

Pure Python on the benchmarks' JSON, so that ``bench.results`` renders the report without
importing TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["OVERHEAD_HEADER", "overhead_rows", "text_table"]

OVERHEAD_HEADER = (
    "model",
    "variant",
    "median ms/step",
    "mean ms/step",
    "vs plain",
    "per repeat",
    "extra state KiB",
)


def overhead_rows(results: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """One row per model and variant of a ``bench.overhead`` result, as :data:`OVERHEAD_HEADER`.

    ``vs plain`` is the variant's median step time over plain Keras'; ``per repeat`` the range
    of that ratio over the interleaved repeats.
    """
    rows = []
    for model_name, model in results["models"].items():
        for name, variant in model["variants"].items():
            paired = variant["ratio_per_repeat"]
            rows.append(
                (
                    model_name,
                    name,
                    f"{variant['median_ms']:.2f}",
                    f"{variant['mean_ms']:.2f}",
                    f"{variant['ratio']:.3f}x",
                    f"{min(paired):.2f}-{max(paired):.2f}",
                    f"{variant['extra_state_bytes'] / 1024:,.1f}",
                )
            )
    return rows


def text_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    lines = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths))
        )
        for line in lines
    ]
    rendered.insert(1, "-" * len(rendered[0]))
    return "\n".join(rendered)
