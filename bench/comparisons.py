"""The frontier's comparisons, computed from point records (pure Python, no TensorFlow).

A point record is what :func:`bench.sweep.run_point` writes: one seed, one arm
(``library:allocation``), one target ratio, with the compressed model's ``test`` and
``validation`` accuracy and its dense model's (``dense``). Everything here is a gap to each
seed's own dense model, in accuracy points, averaged over the seeds.

Two comparisons (issue 13, item 5):

* **same allocation**: ``tf_admm:lamp`` against ``tfmot:lamp``, the very same kept counts:
  the optimizer alone differs;
* **best practice**: ``tf_admm:lamp`` (tf-admm's automatic allocation) against, at every
  ratio, the tfmot arm among ``tfmot:uniform`` and ``tfmot:lamp`` with the better mean
  *validation* gap. The choice is made on validation; the test gap is what is reported.

For each, the highest target ratio whose mean test gap is within the dataset's tolerance of
dense (:data:`TOLERANCE_POINTS`) per library, and whether tf-admm's is at least twice tfmot's.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bench import tables

__all__ = [
    "ARM_HEADER",
    "BEST_PRACTICE_CANDIDATES",
    "COMPARISON_HEADER",
    "OURS",
    "TOLERANCE_POINTS",
    "Cell",
    "Comparison",
    "arm_rows",
    "best_practice",
    "cells",
    "comparison_rows",
    "comparisons",
    "format_cell",
    "format_summary",
    "highest_within",
    "same_allocation",
    "tolerance_for",
]

OURS = "tf_admm:lamp"
SAME_ALLOCATION = "tfmot:lamp"
# In this order: on a tie in validation, the first wins (tfmot's guides prune uniformly).
BEST_PRACTICE_CANDIDATES = ("tfmot:uniform", "tfmot:lamp")
# "No loss" in issue 13: within 0.1 point of dense on MNIST, 0.5 point on Fashion-MNIST.
TOLERANCE_POINTS = {"mnist": 0.1, "fashion_mnist": 0.5}
ARM_HEADER = (
    "target",
    "arm",
    "seeds",
    "achieved",
    "test accuracy %",
    "test - dense (points)",
    "validation - dense (points)",
    "seconds",
)
COMPARISON_HEADER = (
    "target",
    "tf-admm test - dense",
    "tfmot arm",
    "tfmot validation - dense",
    "tfmot test - dense",
    "tf-admm - tfmot (test)",
)
# Means of gaps are sums of float differences: -0.1 may come out as -0.10000000000000009.
_EPSILON = 1e-9


def tolerance_for(dataset: str) -> float:
    """The dataset's tolerance in accuracy points (:data:`TOLERANCE_POINTS`).

    Raises:
      ValueError: for a dataset without one.
    """
    if dataset not in TOLERANCE_POINTS:
        raise ValueError(
            f"Expected dataset in {sorted(TOLERANCE_POINTS)}; received: dataset={dataset!r}"
        )
    return TOLERANCE_POINTS[dataset]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One arm at one target ratio, over its seeds.

    Attributes:
      arm: ``library:allocation``.
      ratio: the target ratio.
      seeds: the seeds, in record order.
      test: test accuracy minus the seed's dense test accuracy, in points, one per seed.
      validation: the same on the validation split.
      accuracy: test accuracy (0..1), one per seed.
      achieved: achieved ratios, one per seed.
      seconds: wall time of each compression run.
    """

    arm: str
    ratio: float
    seeds: tuple[int, ...]
    test: tuple[float, ...]
    validation: tuple[float, ...]
    accuracy: tuple[float, ...]
    achieved: tuple[float, ...]
    seconds: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.seeds)

    @staticmethod
    def _sd(values: Sequence[float]) -> float | None:
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def test_mean(self) -> float:
        return statistics.fmean(self.test)

    @property
    def test_sd(self) -> float | None:
        """Sample standard deviation over the seeds (None for one seed)."""
        return self._sd(self.test)

    @property
    def validation_mean(self) -> float:
        return statistics.fmean(self.validation)

    @property
    def validation_sd(self) -> float | None:
        return self._sd(self.validation)

    @property
    def accuracy_mean(self) -> float:
        return statistics.fmean(self.accuracy)

    @property
    def accuracy_sd(self) -> float | None:
        return self._sd(self.accuracy)

    @property
    def achieved_mean(self) -> float:
        return statistics.fmean(self.achieved)


def cells(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, float], Cell]:
    """{(arm, target ratio): :class:`Cell`} over the records, arms and ratios in record order.

    Raises:
      ValueError: if two records share a seed, arm and ratio.
    """
    grouped: dict[tuple[str, float], list[Mapping[str, Any]]] = {}
    for record in records:
        key = (record["arm"], float(record["target_ratio"]))
        seeds = [r["seed"] for r in grouped.get(key, [])]
        if record["seed"] in seeds:
            raise ValueError(
                f"Expected one record per seed, arm and ratio; received two for seed="
                f"{record['seed']}, arm={key[0]}, ratio={key[1]:g}"
            )
        grouped.setdefault(key, []).append(record)
    return {
        key: Cell(
            arm=key[0],
            ratio=key[1],
            seeds=tuple(r["seed"] for r in group),
            test=tuple(100 * (r["test"] - r["dense"]["test"]) for r in group),
            validation=tuple(100 * (r["validation"] - r["dense"]["validation"]) for r in group),
            accuracy=tuple(r["test"] for r in group),
            achieved=tuple(r.get("achieved_ratio", key[1]) for r in group),
            seconds=tuple(r.get("seconds", math.nan) for r in group),
        )
        for key, group in grouped.items()
    }


def highest_within(by_ratio: Mapping[float, Cell | None], tolerance_points: float) -> float | None:
    """The highest ratio whose cell's mean test gap is at least ``-tolerance_points`` (None
    if no cell is)."""
    ok = [
        ratio
        for ratio, cell in by_ratio.items()
        if cell is not None and cell.test_mean >= -tolerance_points - _EPSILON
    ]
    return max(ok) if ok else None


@dataclasses.dataclass(frozen=True)
class Comparison:
    """tf-admm against tfmot at every ratio where both were measured.

    Attributes:
      name: ``"same_allocation"`` or ``"best_practice"``.
      title: what is compared, in words.
      tolerance_points: "within this many points of dense".
      ours: {ratio: tf-admm's cell}.
      theirs: {ratio: tfmot's cell (the arm chosen at that ratio)}.
      highest: {"tf_admm": ratio or None, "tfmot": ratio or None}.
      top_ratio: the highest ratio measured for both: a highest ratio equal to it is a lower
        bound (a higher ratio was not tried).
    """

    name: str
    title: str
    tolerance_points: float
    ours: dict[float, Cell]
    theirs: dict[float, Cell]

    @property
    def ratios(self) -> list[float]:
        return sorted(set(self.ours) & set(self.theirs))

    @property
    def highest(self) -> dict[str, float | None]:
        return {
            "tf_admm": highest_within(
                {r: self.ours[r] for r in self.ratios}, self.tolerance_points
            ),
            "tfmot": highest_within(
                {r: self.theirs[r] for r in self.ratios}, self.tolerance_points
            ),
        }

    @property
    def top_ratio(self) -> float | None:
        return max(self.ratios) if self.ratios else None

    @property
    def factor(self) -> float | None:
        """tf-admm's highest ratio over tfmot's (inf when only tf-admm has one, None when
        tf-admm has none)."""
        ours, theirs = self.highest["tf_admm"], self.highest["tfmot"]
        if ours is None:
            return None
        return math.inf if theirs is None else ours / theirs

    @property
    def at_least_twice(self) -> bool | None:
        """Whether tf-admm's highest ratio is at least twice tfmot's, on the measured grid; None
        while the measured ratios cannot tell.

        When tfmot reaches none of the measured ratios, its highest lies below the lowest one,
        so the answer is yes only if tf-admm's is at least twice that lowest ratio. When
        tf-admm's highest is the highest ratio measured it is a lower bound, so a factor under 2
        is no answer either.
        """
        ours, theirs = self.highest["tf_admm"], self.highest["tfmot"]
        if ours is None:
            return None if theirs is None else False
        if theirs is None:
            return True if ours >= 2 * min(self.ratios) - _EPSILON else None
        if ours / theirs >= 2 - _EPSILON:
            return True
        return None if ours == self.top_ratio else False

    def verdict(self) -> str:
        """One line: both highest ratios and whether tf-admm's is at least twice tfmot's."""
        if not self.ratios:
            return f"{self.title}: no ratio measured for both libraries yet."
        highest = self.highest
        lowest = min(self.ratios)

        def text(ratio: float | None) -> str:
            if ratio is None:
                return f"none of the measured ratios (below {lowest:g}x)"
            bound = " (the highest ratio measured)" if ratio == self.top_ratio else ""
            return f"{ratio:g}x{bound}"

        answer = self.at_least_twice
        if answer is None and highest["tf_admm"] is None:
            ending = "not decided yet: neither reaches a measured ratio; measure lower ones."
        elif answer is None:
            ending = "not decided yet: measure lower ratios for tfmot or higher ones for tf-admm."
        else:
            ending = "at least 2x." if answer else "NOT at least 2x."
        factor = self.factor
        if factor is None:
            ratio_text = "tf-admm reaches none"
        elif math.isinf(factor):
            ratio_text = "tfmot reaches none"
        else:
            ratio_text = f"tf-admm's is {factor:.2f}x tfmot's"
        return (
            f"{self.title}: highest ratio within {self.tolerance_points:g} point of dense "
            f"(mean test gap over seeds): tf-admm {text(highest['tf_admm'])}, tfmot "
            f"{text(highest['tfmot'])}; {ratio_text}: {ending}"
        )


def same_allocation(table: Mapping[tuple[str, float], Cell], tolerance_points: float) -> Comparison:
    """``tf_admm:lamp`` against ``tfmot:lamp``: the same kept counts, the optimizer alone."""
    return Comparison(
        name="same_allocation",
        title="Same allocation (tf_admm:lamp against tfmot:lamp)",
        tolerance_points=tolerance_points,
        ours={r: c for (arm, r), c in table.items() if arm == OURS},
        theirs={r: c for (arm, r), c in table.items() if arm == SAME_ALLOCATION},
    )


def best_practice(table: Mapping[tuple[str, float], Cell], tolerance_points: float) -> Comparison:
    """``tf_admm:lamp`` against, per ratio, the better tfmot arm on validation."""
    theirs: dict[float, Cell] = {}
    for ratio in sorted({r for _, r in table}):
        candidates = [
            table[(arm, ratio)] for arm in BEST_PRACTICE_CANDIDATES if (arm, ratio) in table
        ]
        if candidates:
            # max keeps the first of equal ones: ties go to the earlier candidate.
            theirs[ratio] = max(candidates, key=lambda cell: cell.validation_mean)
    return Comparison(
        name="best_practice",
        title=(
            "Best practice (tf_admm:lamp against the better of "
            + " and ".join(BEST_PRACTICE_CANDIDATES)
            + " on validation, per ratio)"
        ),
        tolerance_points=tolerance_points,
        ours={r: c for (arm, r), c in table.items() if arm == OURS},
        theirs=theirs,
    )


def comparisons(records: Iterable[Mapping[str, Any]], tolerance_points: float) -> list[Comparison]:
    """Both comparisons, same allocation first."""
    table = cells(records)
    return [same_allocation(table, tolerance_points), best_practice(table, tolerance_points)]


def format_cell(mean: float, sd: float | None, signed: bool = True) -> str:
    """``+0.05 ± 0.07`` (sample sd over seeds), or ``+0.05`` for a single seed."""
    value = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return value if sd is None else f"{value} ± {sd:.2f}"


def arm_rows(table: Mapping[tuple[str, float], Cell]) -> list[tuple[str, ...]]:
    """One row per target ratio and arm (ratios ascending, arms in record order), as
    :data:`ARM_HEADER`."""
    arms = list(dict.fromkeys(arm for arm, _ in table))
    rows = []
    for ratio in sorted({r for _, r in table}):
        for arm in arms:
            cell = table.get((arm, ratio))
            if cell is None:
                continue
            rows.append(
                (
                    f"{ratio:g}x",
                    arm,
                    str(cell.n),
                    f"{cell.achieved_mean:.1f}x",
                    format_cell(100 * cell.accuracy_mean, _scaled(cell.accuracy_sd), signed=False),
                    format_cell(cell.test_mean, cell.test_sd),
                    format_cell(cell.validation_mean, cell.validation_sd),
                    f"{statistics.fmean(cell.seconds):.0f}",
                )
            )
    return rows


def _scaled(sd: float | None) -> float | None:
    return None if sd is None else 100 * sd


def comparison_rows(comparison: Comparison) -> list[tuple[str, ...]]:
    """One row per ratio measured for both libraries, as :data:`COMPARISON_HEADER`."""
    rows = []
    for ratio in comparison.ratios:
        ours, theirs = comparison.ours[ratio], comparison.theirs[ratio]
        rows.append(
            (
                f"{ratio:g}x",
                format_cell(ours.test_mean, ours.test_sd),
                theirs.arm,
                format_cell(theirs.validation_mean, theirs.validation_sd),
                format_cell(theirs.test_mean, theirs.test_sd),
                f"{ours.test_mean - theirs.test_mean:+.2f}",
            )
        )
    return rows


def format_summary(records: Sequence[Mapping[str, Any]], tolerance_points: float) -> str:
    """Plain text: the per-arm table, then each comparison's table and verdict."""
    lines = [
        "gap to each seed's dense model, points, mean ± sd over seeds:",
        tables.text_table(ARM_HEADER, arm_rows(cells(records))),
        "",
    ]
    for comparison in comparisons(records, tolerance_points):
        lines += [
            comparison.title + ":",
            tables.text_table(COMPARISON_HEADER, comparison_rows(comparison)),
            comparison.verdict(),
            "",
        ]
    return "\n".join(lines)
