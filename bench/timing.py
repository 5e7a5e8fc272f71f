"""The timing loop the benchmarks share: warm-up, interleaved rounds of timed work, summaries.

Every subject (an interpreter, a training variant) is warmed up first, then timed round after
round, each round running every subject once: a change of the machine's load during the run hits
every subject alike instead of the one timed at that moment. Pure Python and numpy.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["interleaved", "median", "percentiles", "time_calls", "warm_up"]


def warm_up(call: Callable[[], object], times: int) -> None:
    """Calls ``call`` ``times`` times, untimed (tracing, caches, delegate preparation)."""
    for _ in range(times):
        call()


def time_calls(call: Callable[[], object], count: int) -> list[float]:
    """Seconds taken by each of ``count`` consecutive calls of ``call``."""
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1e9)
    return samples


def interleaved(
    subjects: Sequence[Callable[[], Sequence[float]]], rounds: int, *, rotate: bool
) -> list[list[list[float]]]:
    """Runs every subject once per round for ``rounds`` rounds.

    Args:
      subjects: callables that each run one round of timed work and return its samples.
      rounds: number of rounds.
      rotate: start round ``r`` with subject ``r mod len(subjects)`` (so that no subject always
        runs right after the same other one); False keeps the given order in every round.

    Returns:
      Per subject, in the given order, the samples of each of its rounds.
    """
    found: list[list[list[float]]] = [[] for _ in subjects]
    order = list(range(len(subjects)))
    for round_index in range(rounds):
        shift = round_index % len(order) if rotate and order else 0
        for index in order[shift:] + order[:shift]:
            found[index].append(list(subjects[index]()))
    return found


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (NaN when there are none)."""
    return float(statistics.median(values)) if values else float("nan")


def percentiles(values: Sequence[float], points: Sequence[float]) -> list[float]:
    """numpy's (linearly interpolated) percentiles ``points`` of ``values``."""
    return [float(p) for p in np.percentile(values, points)]
