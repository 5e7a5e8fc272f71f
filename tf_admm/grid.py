"""Uniform value grids: whether weights lie on levels ``{c * q}``, and on which.

One answer for the whole project: :func:`tf_admm.report.value_coding` (the paper-style storage
report) and :mod:`tflite_export.encodings` (what the exporter writes) both ask
:func:`fit_step`, so the report never charges a codebook for values that the file stores as
integer codes with one step, nor the other way round. Plain NumPy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_STEP_DIVISOR", "fit_step", "on_grid"]

MAX_STEP_DIVISOR = 16
"""Largest divisor of the smallest magnitude (and gap) tried as the step: the smallest level in
use may be 2q or 3q when a layer never uses ±q."""


def fit_step(values: np.ndarray) -> tuple[np.ndarray, np.float32, float] | None:
    """The uniform grid ``{c * q}`` that a 1-D float array's values lie on, if any.

    The step ``q`` is searched among the smallest magnitude and the smallest gap between
    magnitudes, each divided by 1 to :data:`MAX_STEP_DIVISOR` (so levels that never use
    ``±q`` itself, such as ``{2q, -3q, 5q}``, are found); every value must be within 1e-3 of a
    step of an integer code below ``2**15``. Among the candidate float32 steps (least squares,
    the search step, each large value over its code) the one decoding closest wins.

    Returns:
      ``(codes, step, error)``: int32 codes (0 where the value is 0), the float32 step and
      the largest ``|codes * step - values|``; or None when no such grid exists (or a value is
      not finite). An all-zero array is ``(zeros, 1.0, 0.0)``.
    """
    nonzero = values[values != 0]
    if nonzero.size == 0:
        return np.zeros(values.shape, np.int32), np.float32(1.0), 0.0
    if not np.all(np.isfinite(nonzero)):
        return None
    magnitudes = np.unique(np.abs(nonzero).astype(np.float64))
    gaps = np.diff(magnitudes)
    gaps = gaps[gaps > 1e-6 * magnitudes[-1]]
    # The step divides the smallest magnitude and every gap between magnitudes: try both
    # bases and their small divisors, the most likely first.
    bases = [magnitudes[0]] + ([float(gaps.min())] if gaps.size else [])
    steps = [base / divisor for divisor in range(1, MAX_STEP_DIVISOR + 1) for base in bases]
    wide = nonzero.astype(np.float64)
    for step in steps:
        ratio = wide / step
        codes = np.rint(ratio)
        if np.max(np.abs(codes)) > 2**15 or np.max(np.abs(ratio - codes)) > 1e-3:
            continue
        # Candidate steps in float32: the least-squares step and each value over its code
        # (one of them is usually the q that the levels were built from).
        least_squares = float(np.dot(codes, wide) / np.dot(codes, codes))
        order = np.argsort(-np.abs(codes), kind="stable")
        candidates = [least_squares, step] + [float(wide[i] / codes[i]) for i in order[:8]]
        best = None
        for candidate in candidates:
            scale = np.float32(candidate)
            if not np.isfinite(scale) or scale <= 0:
                continue
            decoded = (codes * np.float64(scale)).astype(np.float32)
            error = float(np.max(np.abs(decoded.astype(np.float64) - wide)))
            if best is None or error < best[1]:
                best = (scale, error)
            if error == 0.0:
                break
        full = np.zeros(values.shape, np.int32)
        full[values != 0] = codes.astype(np.int32)
        return full, best[0], best[1]
    return None


def on_grid(values: np.ndarray, rtol: float = 1e-6) -> bool:
    """Whether ``values`` (any shape) decode from one :func:`fit_step` grid to within ``rtol``
    of their largest magnitude: the acceptance the exporter applies to a tensor."""
    flat = np.asarray(values, np.float32).reshape(-1)
    fit = fit_step(flat)
    if fit is None:
        return False
    return fit[2] <= rtol * float(np.max(np.abs(flat), initial=0.0))
