"""Projection onto quantization levels and the scale search, on host (NumPy) values.

The ``*_numpy`` twins of the functions of :mod:`tf_admm.projections.levels`, for Keras adapters
whose backend is not TensorFlow (Keras 3 on JAX): they run the Z-step on host copies of the
weights between training steps. Same argmins, same tie rules; levels_numpy_test.py checks that
each agrees with its TensorFlow version. The level sets themselves (``make_levels``, ...) and
``ScaleFit`` are those of :mod:`tf_admm.projections.levels`.
"""

from __future__ import annotations

import numpy as np

from tf_admm.projections.levels import (
    FLOAT32_MAX,
    SMALLEST_SCALE,
    LevelScheme,
    ScaleFit,
    check_bits,
    check_scheme,
    paper_grid_multipliers,
    tie_goes_up,
    unit_levels,
)

__all__ = [
    "fit_scale_numpy",
    "nearest_level_index_numpy",
    "project_to_levels_numpy",
    "relative_error_numpy",
]


def _to_rows_numpy(x: np.ndarray, axis: int | None):
    """``x`` as ``[rows, n]`` (one row per channel along ``axis``, or a single row for None)
    and the function that restores the shape; the host twin of the TensorFlow row layout."""
    if axis is None:
        return x.reshape(1, -1), lambda rows: rows.reshape(x.shape)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"Expected axis in [{-x.ndim}, {x.ndim}); received: axis={axis}")
    moved = np.moveaxis(x, axis, 0)
    return moved.reshape(moved.shape[0], -1), lambda r: np.moveaxis(r.reshape(moved.shape), 0, axis)


def _nearest_rows_numpy(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest level for every entry, ties as in ``nearest_level_index``:
    ``values`` ``[r, n]``, sorted ``levels`` ``[r, m]``."""
    count = levels.shape[-1]
    if count == 1:
        return np.zeros(values.shape, np.int32)
    upper_index = np.stack(
        [np.searchsorted(row_levels, row, side="left") for row_levels, row in zip(levels, values)]
    ).reshape(values.shape)
    upper_index = np.clip(upper_index, 1, count - 1)
    lower_index = upper_index - 1
    upper = np.take_along_axis(levels, upper_index, axis=1)
    lower = np.take_along_axis(levels, lower_index, axis=1)
    to_upper, to_lower = np.abs(upper - values), np.abs(values - lower)
    tie_up = tie_goes_up(lower, upper, np)
    take_upper = (to_upper < to_lower) | ((to_upper == to_lower) & tie_up)
    return np.where(take_upper, upper_index, lower_index).astype(np.int32)


def _prepare_numpy(w, levels, mask, axis: int):
    w = np.asarray(w)
    levels = np.asarray(levels, dtype=w.dtype)
    if levels.ndim == 1:
        rows, restore = _to_rows_numpy(w, None)
        level_rows, row_axis = levels[None, :], None
    elif levels.ndim == 2:
        rows, restore = _to_rows_numpy(w, axis)
        level_rows, row_axis = levels, axis
        if w.shape[axis] != levels.shape[0]:
            raise ValueError(
                f"Expected one level row per channel ({w.shape[axis]} along axis {axis}); "
                f"received: levels.shape={list(levels.shape)}"
            )
    else:
        raise ValueError(
            f"Expected 1-D levels or 2-D per-channel levels; received: levels.shape="
            f"{list(levels.shape)}"
        )
    if levels.shape[-1] == 0:
        raise ValueError("Expected at least one level; received: levels.shape[-1]=0")
    if not np.all(np.diff(level_rows, axis=-1) >= 0):
        raise ValueError(f"Expected levels sorted ascending; received: levels={levels.tolist()}")
    if mask is None:
        kept = np.ones(rows.shape, bool)
    else:
        kept, _ = _to_rows_numpy(np.asarray(mask).reshape(w.shape) != 0, row_axis)
    return w, rows, level_rows, kept, restore


def nearest_level_index_numpy(w, levels, mask=None, axis: int = -1) -> np.ndarray:
    """:func:`nearest_level_index` on host values: NumPy in, NumPy out, the same indices.

    Example:
      >>> nearest_level_index_numpy(np.array([0.2, -0.8, 3.0]), [-1.0, -0.5, 0.5, 1.0])
      array([2, 0, 3], dtype=int32)
    """
    _, rows, level_rows, kept, restore = _prepare_numpy(w, levels, mask, axis)
    return restore(np.where(kept, _nearest_rows_numpy(rows, level_rows), -1).astype(np.int32))


def project_to_levels_numpy(w, levels, mask=None, axis: int = -1) -> np.ndarray:
    """:func:`project_to_levels` on host values: ``argmin_z ||z - w||_2^2`` with every kept
    ``z_i`` a level and every pruned one 0 (same ties).

    Example:
      >>> project_to_levels_numpy(np.array([0.2, -0.8, 3.0, 0.7]), [-1.0, -0.5, 0.5, 1.0],
      ...                         mask=np.array([1, 1, 1, 0]))
      array([ 0.5, -1. ,  1. ,  0. ])
    """
    w, rows, level_rows, kept, restore = _prepare_numpy(w, levels, mask, axis)
    index = _nearest_rows_numpy(rows, level_rows)
    projected = np.take_along_axis(level_rows, index, axis=1)
    return restore(np.where(kept, projected, np.zeros_like(projected)))


def relative_error_numpy(w, projected, mask=None) -> float:
    """:func:`relative_error` on host values: ``||w - projected|| / ||w||`` over kept entries."""
    w = np.asarray(w, np.float64)
    projected = np.asarray(projected, np.float64)
    if mask is not None:
        kept = np.asarray(mask).reshape(w.shape) != 0
        w, projected = np.where(kept, w, 0.0), np.where(kept, projected, 0.0)
    norm = float(np.linalg.norm(w))
    return float(np.linalg.norm(w - projected)) / norm if norm > 0 else 0.0


def fit_scale_numpy(
    w,
    bits: int,
    scheme: str | LevelScheme = LevelScheme.UNIFORM,
    mask=None,
    axis: int | None = None,
    grid_size: int = 24,
    refine_steps: int = 8,
) -> ScaleFit:
    """:func:`fit_scale` on host values: the same candidate scales, refinement and choice
    (``argmin_q min_{z ∈ L(q)} ||mask ⊙ (w - z)||^2`` approximately); NumPy arrays in the
    returned ``ScaleFit``.

    The nearest level inside the search is found by a search rather than ``fit_scale``'s
    bit-level closed form; the two differ only on exact ties, which leave the error unchanged.

    Example:
      >>> fit = fit_scale_numpy(np.array([0.9, -1.1, 2.1, -0.1], np.float32), bits=2)
      >>> fit.projected
      array([ 0.9, -0.9,  1.8, -0.9], dtype=float32)
    """
    bits = check_bits(bits)
    scheme = check_scheme(scheme)
    if grid_size < 0 or refine_steps < 0:
        raise ValueError(
            "Expected grid_size >= 0 and refine_steps >= 0; "
            f"received: grid_size={grid_size}, refine_steps={refine_steps}"
        )
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating):
        raise ValueError(f"Expected a floating-point w; received: w.dtype={w.dtype.name}")
    kept_full = np.ones(w.shape, bool) if mask is None else np.asarray(mask).reshape(w.shape) != 0
    rows, restore = _to_rows_numpy(w, axis)
    kept, _ = _to_rows_numpy(kept_full, axis)
    rows64 = rows.astype(np.float64)
    unit64 = unit_levels(bits, scheme)
    unit = unit64.astype(w.dtype)
    top = float(unit64[-1])
    max_scale = FLOAT32_MAX / top / 2.0

    def clip(scale64: np.ndarray) -> np.ndarray:
        return np.clip(scale64, SMALLEST_SCALE, max_scale).astype(w.dtype)

    def evaluate(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = _nearest_rows_numpy(
            rows64 / scale.astype(np.float64)[:, None],
            np.broadcast_to(unit64, (len(scale), unit64.size)),
        )
        projected = (scale[:, None] * unit)[np.arange(len(scale))[:, None], index]
        diff = np.where(kept, rows64 - projected.astype(np.float64), 0.0)
        return np.sum(np.square(diff), axis=1), index

    max_abs = np.max(np.where(kept, np.abs(rows64), 0.0), axis=1)
    base = max_abs / top
    multipliers = np.concatenate(
        [paper_grid_multipliers(), np.exp2(np.linspace(-6.0, 0.0, grid_size))]
    )
    candidates = clip(multipliers[:, None] * base[None, :])
    if axis is not None:
        overall = fit_scale_numpy(w, bits, scheme, mask, None, grid_size, refine_steps).scale
        candidates = np.concatenate(
            [candidates, np.full((1, base.size), overall, candidates.dtype)]
        )
    best_scale = candidates[0]
    best_error, _ = evaluate(best_scale)
    for scale in candidates[1:]:
        error, _ = evaluate(scale)
        better = error < best_error
        best_scale, best_error = (
            np.where(better, scale, best_scale),
            np.where(better, error, best_error),
        )
    kept64 = kept.astype(np.float64)
    scale = best_scale
    _, index = evaluate(scale)
    for _ in range(refine_steps):
        assignment = unit64[index] * kept64
        numerator = np.sum(rows64 * assignment, axis=1)
        denominator = np.sum(np.square(assignment), axis=1)
        least_squares = numerator / np.where(denominator > 0, denominator, 1.0)
        scale = np.where(denominator > 0, clip(least_squares), scale)
        error, index = evaluate(scale)
        better = error < best_error
        best_scale, best_error = (
            np.where(better, scale, best_scale),
            np.where(better, error, best_error),
        )
    level_rows = best_scale[:, None] * unit
    projected = np.take_along_axis(level_rows, _nearest_rows_numpy(rows, level_rows), axis=1)
    projected = restore(np.where(kept, projected, np.zeros_like(projected)))
    if axis is None:
        return ScaleFit(best_scale[0], level_rows[0], projected)
    return ScaleFit(best_scale, level_rows, projected)
