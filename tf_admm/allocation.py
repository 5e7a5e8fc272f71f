"""One pruning budget shared by several layers: how many weights each layer keeps.

Given the weights of the layers that share a budget and the total number of weights to keep,
each function here returns a keep count per layer that adds up to exactly that total, with at
least ``floor`` kept in every layer (a layer that keeps nothing cuts the network). Plain NumPy:
no Keras in here; ``tf_admm.training`` resolves a spec's ``target_ratio`` with them.

Methods (:class:`Allocation`):

* ``lamp``: layer-adaptive magnitude scores (Lee et al., ICLR 2021). Within a layer whose
  squared weights are sorted ascending ``s_1 <= ... <= s_n``, weight ``i`` scores
  ``s_i / (s_i + ... + s_n)``: its share of the energy of the weights at least as large. The
  largest weight of every layer scores 1, so the scores are comparable across layers of any
  scale, and one global ranking of them decides every layer's count.
* ``global_magnitude``: one global ranking of ``|w|`` (small-scale layers starve).
* ``uniform``: the same ratio in every layer (largest remainders settle the rounding).
* ``sensitivity``: from measured validation losses of each layer pruned alone
  (:func:`allocate_by_sensitivity`).

Example:
  >>> rng = np.random.default_rng(0)
  >>> weights = {"a": rng.normal(size=100), "b": 0.01 * rng.normal(size=1000)}
  >>> counts = allocate(weights, keep=110, method="lamp")
  >>> sum(counts.values())
  110
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "Allocation",
    "allocate",
    "allocate_by_sensitivity",
    "keep_for_ratio",
    "lamp_scores",
    "loss_increase",
    "saturated",
]


class Allocation(str, enum.Enum):
    """How a shared pruning budget is split among its layers."""

    LAMP = "lamp"
    GLOBAL_MAGNITUDE = "global_magnitude"
    UNIFORM = "uniform"
    SENSITIVITY = "sensitivity"


def keep_for_ratio(total: int, ratio: float, layers: int = 1, floor: int = 1) -> int:
    """Weights kept among ``total`` at compression ratio ``ratio`` (rounded half up).

    Never fewer than ``floor`` per layer, never more than ``total``.
    """
    if total < 1:
        raise ValueError(f"Expected total >= 1; received: total={total}")
    if not (math.isfinite(ratio) and ratio >= 1):
        raise ValueError(f"Expected ratio >= 1; received: ratio={ratio}")
    return min(total, max(layers * floor, math.floor(total / ratio + 0.5)))


def lamp_scores(weights: np.ndarray) -> np.ndarray:
    """LAMP score of every entry of ``weights``, in its shape.

    ``score_i = w_i**2 / sum_{j : w_j**2 >= w_i**2} w_j**2`` with ties broken by position
    (row-major), so the scores of one layer are distinct in rank. The largest entry scores 1; a
    layer of zeros scores 0 everywhere.
    """
    squared = np.square(np.asarray(weights, np.float64)).ravel()
    order = np.argsort(squared, kind="stable")
    ascending = squared[order]
    # Suffix sums: the energy of each weight and of every weight ranked above it.
    above = np.cumsum(ascending[::-1])[::-1]
    ranked = np.divide(ascending, above, out=np.zeros_like(ascending), where=above > 0)
    scores = np.empty_like(squared)
    scores[order] = ranked
    return scores.reshape(np.shape(weights))


def _check(sizes: Mapping[str, int], keep: int, floor: int) -> None:
    if not sizes:
        raise ValueError("Expected at least one layer to allocate among; received none")
    if floor < 1:
        raise ValueError(f"Expected floor >= 1; received: floor={floor}")
    for name, size in sizes.items():
        if size < floor:
            raise ValueError(
                f"Layer '{name}': Expected at least floor={floor} weights; received: size={size}"
            )
    total = sum(sizes.values())
    if not floor * len(sizes) <= keep <= total:
        raise ValueError(
            f"Expected keep in [{floor * len(sizes)}, {total}] (floor {floor} for each of "
            f"{len(sizes)} layers, at most every weight); received: keep={keep}"
        )


def _by_scores(scores: Mapping[str, np.ndarray], keep: int, floor: int) -> dict[str, int]:
    """Each layer's ``floor`` best entries, then the best ``keep`` - floors overall."""
    names = list(scores)
    flat = [np.asarray(scores[n], np.float64).ravel() for n in names]
    counts = {n: floor for n in names}
    rest_scores, rest_owner = [], []
    for index, values in enumerate(flat):
        ranked = np.sort(values)[::-1]
        rest_scores.append(ranked[floor:])
        rest_owner.append(np.full(len(ranked) - floor, index))
    pool, owner = np.concatenate(rest_scores), np.concatenate(rest_owner)
    extra = keep - floor * len(names)
    if extra:
        # Stable on the negated scores: among equal scores the earlier layer wins.
        chosen = np.argsort(-pool, kind="stable")[:extra]
        for index, count in zip(*np.unique(owner[chosen], return_counts=True)):
            counts[names[index]] += int(count)
    return counts


def _uniform(sizes: Mapping[str, int], keep: int, floor: int) -> dict[str, int]:
    total = sum(sizes.values())
    names = list(sizes)
    exact = np.array([sizes[n] * keep / total for n in names])
    counts = np.maximum(np.floor(exact).astype(np.int64), floor)
    counts = np.minimum(counts, [sizes[n] for n in names])
    # Largest remainders first, then earlier layers, until the total is exact.
    order = np.lexsort((np.arange(len(names)), -(exact - np.floor(exact))))
    step = 0
    while counts.sum() != keep:
        index = order[step % len(names)]
        if counts.sum() < keep and counts[index] < sizes[names[index]]:
            counts[index] += 1
        elif counts.sum() > keep and counts[index] > floor:
            counts[index] -= 1
        step += 1
    return {n: int(c) for n, c in zip(names, counts)}


def allocate(
    weights: Mapping[str, np.ndarray], keep: int, method: str = "lamp", floor: int = 1
) -> dict[str, int]:
    """Splits ``keep`` kept weights among the layers of ``weights`` by ``method``.

    Args:
      weights: layer name -> its weights (any shape), in the order results are listed.
      keep: total number of weights to keep, between ``floor`` per layer and all of them.
      method: ``"lamp"``, ``"global_magnitude"`` or ``"uniform"`` (see :class:`Allocation`).
      floor: fewest weights any layer keeps.

    Returns:
      Layer name -> kept count; the counts add up to ``keep``.

    Raises:
      ValueError: for an unknown method or a budget outside what the layers can hold.
    """
    try:
        method = Allocation(method)
    except ValueError:
        allowed = [a.value for a in Allocation if a is not Allocation.SENSITIVITY]
        raise ValueError(f"Expected method in {allowed}; received: method={method!r}") from None
    sizes = {name: int(np.size(w)) for name, w in weights.items()}
    _check(sizes, keep, floor)
    if method is Allocation.LAMP:
        return _by_scores({n: lamp_scores(w) for n, w in weights.items()}, keep, floor)
    if method is Allocation.GLOBAL_MAGNITUDE:
        return _by_scores({n: np.abs(w) for n, w in weights.items()}, keep, floor)
    if method is Allocation.UNIFORM:
        return _uniform(sizes, keep, floor)
    raise ValueError(
        "method='sensitivity' needs measured losses: use allocate_by_sensitivity (or "
        "tf_admm.sensitivity_allocation, which measures them)"
    )


# Resolution of allocate_by_sensitivity's search: the budget is cut into at most this many units.
BUDGET_UNITS = 4096


def loss_increase(curve: Sequence[tuple[int, float]], kept) -> np.ndarray:
    """The loss increase a measured ``curve`` (``(kept, increase)`` pairs) gives ``kept`` counts:
    linear in ``log(kept)`` between measured points, made non-increasing in ``kept`` (keeping
    more never costs more), held at the end points' values beyond them."""
    points = sorted((int(k), float(v)) for k, v in curve)
    xs = np.log([p[0] for p in points])
    ys = np.minimum.accumulate(np.array([p[1] for p in points]))
    return np.interp(np.log(np.asarray(kept, dtype=np.float64)), xs, ys, left=ys[0], right=ys[-1])


def saturated(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    counts: Mapping[str, int],
    fraction: float = 0.9,
) -> dict[str, tuple[float, float]]:
    """Layers whose chosen count costs at least ``fraction`` of the most any count of them costs.

    There the one-layer curves have flattened (the layer alone already ruins the model, about
    ``log(classes)`` for a classifier), so summing them no longer ranks the layers: the split
    can starve such a layer for a small saving elsewhere.

    Returns:
      Layer name -> (increase at its count, largest increase on its curve).
    """
    found = {}
    for name, count in counts.items():
        worst = max(float(v) for _, v in curves[name])
        at = float(loss_increase(curves[name], [count])[0])
        if worst > 0 and at >= fraction * worst:
            found[name] = (at, worst)
    return found


def allocate_by_sensitivity(
    sizes: Mapping[str, int],
    curves: Mapping[str, Sequence[tuple[int, float]]],
    keep: int,
    floor: int = 1,
) -> dict[str, int]:
    """Keep counts minimising the summed loss increase of layers pruned one at a time.

    ``curves[layer]`` lists ``(kept, loss_increase)`` pairs measured by pruning that layer
    alone (the others dense) to ``kept`` weights. Between measured points the increase is
    interpolated linearly in ``log(kept)`` (and made non-increasing in ``kept``); below the
    fewest measured it stays at that point's value. Each layer may keep one of 256 counts
    spaced geometrically from ``floor`` to its size; the choice whose summed increase is
    smallest within the budget is found by dynamic programming over the budget cut into at
    most :data:`BUDGET_UNITS` equal units (exact when ``keep`` is at most that). Measured curves
    are not convex (pruning a layer costs almost nothing down to some count, then a lot), so a
    Lagrangian split can jump past the budget; this search cannot. The few weights the units
    leave over go to the layers with room, largest first, so the counts add up to ``keep``.

    Args:
      sizes: layer name -> number of weights.
      curves: layer name -> measured ``(kept, loss_increase)`` pairs.
      keep: total kept weights.
      floor: fewest weights any layer keeps.

    Returns:
      Layer name -> kept count, adding up to ``keep``.
    """
    _check(sizes, keep, floor)
    missing = sorted(set(sizes) - set(curves))
    if missing:
        raise ValueError(f"Expected a measured curve for every layer; missing: {missing}")
    names = list(sizes)
    others = floor * (len(names) - 1)  # What the other layers keep at least.
    grids = {}
    for name in names:
        points = sorted((int(k), float(v)) for k, v in curves[name] if floor <= k <= sizes[name])
        if not points:
            raise ValueError(
                f"Layer '{name}': Expected measured points with kept in [{floor}, "
                f"{sizes[name]}]; received: {list(curves[name])}"
            )
        top = min(sizes[name], keep - others)
        kept = np.unique(np.geomspace(floor, top, 256).round().astype(np.int64))
        grids[name] = (kept, loss_increase(points, kept))

    units = min(keep, BUDGET_UNITS)
    unit = keep / units
    best = np.full(units + 1, np.inf)  # best[b]: smallest summed increase within b units.
    best[0] = 0.0
    choices = []
    for name in names:
        kept, increase = grids[name]
        costs = np.ceil(kept / unit - 1e-9).astype(np.int64)
        total = np.full(units + 1, np.inf)
        choice = np.zeros(units + 1, dtype=np.int64)
        for index, (cost, loss) in enumerate(zip(costs, increase)):
            if cost > units:
                continue
            candidate = np.full(units + 1, np.inf)
            candidate[cost:] = best[: units + 1 - cost] + loss
            better = candidate < total
            total[better] = candidate[better]
            choice[better] = index
        best = total
        choices.append(choice)
    budget = int(np.argmin(best))  # best is non-increasing in b; any minimiser fits.
    counts = {}
    for name, choice in zip(reversed(names), reversed(choices)):
        index = int(choice[budget])
        counts[name] = int(grids[name][0][index])
        budget -= int(np.ceil(counts[name] / unit - 1e-9))
    counts = {name: counts[name] for name in names}
    difference = keep - sum(counts.values())
    for name in sorted(names, key=lambda n: -sizes[n]):
        moved = min(difference, sizes[name] - counts[name])
        counts[name] += moved
        difference -= moved
    return counts
