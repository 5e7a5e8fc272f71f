"""Projection onto fixed quantization levels, and the scale search for uniform levels.

Quantization in the unified ADMM framework of Ye et al. (2018) constrains every *kept* weight
to a finite set of nonzero levels; pruned weights (``mask == 0``) stay exactly zero and are never
moved onto a level. Zero is therefore not a level: it exists only at pruned positions.

Two level families are built from a positive scale ``q`` and a bit width ``b`` (``n = 2**(b-1)``):

* ``uniform``: ``{±q, ±2q, ..., ±n·q}``, 2**b levels;
* ``power_of_two``: ``{±q·2**j : j = 0 .. n-1}``, 2**b levels.

A scale is either one number for the whole tensor or one number per channel (along an ``axis``,
the last one for Dense and Conv kernels); per-channel levels are a ``[channels, 2**b]`` tensor.

Every function here is made of TensorFlow ops and runs eagerly or inside ``tf.function``. Their
``*_numpy`` twins, which do the same on host (NumPy) values for Keras 3 on JAX, are in
``tf_admm.projections.levels_numpy``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from tf_admm.compat import tf

__all__ = [
    "LevelScheme",
    "ScaleFit",
    "fit_scale",
    "fraction_on_levels",
    "make_levels",
    "nearest_level_index",
    "nearest_level_in",
    "onto_grid",
    "paper_grid_multipliers",
    "power_of_two_levels",
    "project_to_levels",
    "relative_error",
    "tie_goes_up",
    "uniform_levels",
]

MIN_BITS = 1
MAX_BITS = 8

# The smallest normal float32: scales are kept at or above it so that no level underflows to 0.
SMALLEST_SCALE = float(np.finfo(np.float32).tiny)
# The largest float32: no level may exceed it.
FLOAT32_MAX = float(np.finfo(np.float32).max)


class LevelScheme(str, enum.Enum):
    """How the levels are spaced.

    ``UNIFORM``: ``{±q·i : i = 1 .. 2**(b-1)}``.
    ``POWER_OF_TWO``: ``{±q·2**j : j = 0 .. 2**(b-1)-1}``.
    """

    UNIFORM = "uniform"
    POWER_OF_TWO = "power_of_two"


class ScaleFit(NamedTuple):
    """Result of ``fit_scale``.

    Attributes:
      scale: the chosen scale; a scalar, or a ``[channels]`` vector for per-channel levels.
      levels: the level set, ``[2**bits]`` or ``[channels, 2**bits]``, sorted ascending.
      projected: the input projected onto ``levels``, zero at pruned positions.
    """

    scale: tf.Tensor
    levels: tf.Tensor
    projected: tf.Tensor


def check_bits(bits: int) -> int:
    """``bits`` as an int; refused unless an int in ``MIN_BITS .. MAX_BITS``."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"Expected bits to be an int; received: bits={bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"Expected bits in [{MIN_BITS}, {MAX_BITS}]; received: bits={bits}")
    return int(bits)


def check_scheme(scheme: str | LevelScheme) -> LevelScheme:
    """``scheme`` as a ``LevelScheme``; a ValueError if it names none."""
    try:
        return LevelScheme(scheme)
    except ValueError:
        names = tuple(s.value for s in LevelScheme)
        raise ValueError(f"Expected scheme in {names}; received: scheme={scheme!r}") from None


def unit_levels(bits: int, scheme: LevelScheme) -> np.ndarray:
    """The levels for scale 1, sorted ascending, as float64."""
    per_side = 2 ** (bits - 1)
    if scheme is LevelScheme.UNIFORM:
        positive = np.arange(1, per_side + 1, dtype=np.float64)
    else:
        positive = np.exp2(np.arange(per_side, dtype=np.float64))
    return np.concatenate([-positive[::-1], positive])


def _levels_from_scale(scale, bits: int, scheme: LevelScheme) -> tf.Tensor:
    scale = tf.convert_to_tensor(scale)
    if not scale.dtype.is_floating:
        scale = tf.cast(scale, tf.float32)
    if scale.shape.rank is not None and scale.shape.rank > 1:
        raise ValueError(
            f"Expected a scalar or 1-D scale; received: scale.shape={scale.shape.as_list()}"
        )
    if tf.executing_eagerly() and not bool(tf.reduce_all(scale > 0)):
        raise ValueError(f"Expected scale > 0; received: scale={scale.numpy()}")
    unit = tf.constant(unit_levels(bits, scheme), dtype=scale.dtype)
    return scale[..., None] * unit


def uniform_levels(scale, bits: int) -> tf.Tensor:
    """The uniform level set ``{±q·i : i = 1 .. 2**(bits-1)}``, sorted ascending.

    Example:
      >>> uniform_levels(0.5, 2).numpy()
      array([-1. , -0.5,  0.5,  1. ], dtype=float32)

    Args:
      scale: ``q`` > 0; a scalar, or a ``[channels]`` vector for one level set per channel.
      bits: bits per kept weight, 1..8; the set has ``2**bits`` nonzero levels.

    Returns:
      ``[2**bits]`` levels, or ``[channels, 2**bits]`` for a vector of scales.

    Raises:
      ValueError: if ``bits`` is outside 1..8 or (eagerly) a scale is not positive.
    """
    return _levels_from_scale(scale, check_bits(bits), LevelScheme.UNIFORM)


def power_of_two_levels(scale, bits: int) -> tf.Tensor:
    """The power-of-two level set ``{±q·2**j : j = 0 .. 2**(bits-1)-1}``, sorted ascending.

    With 8 bits the set spans 2**127 and ``q·2**127`` overflows float32 for ``q >= 2``; choose
    ``q`` accordingly (``fit_scale`` does).

    Example:
      >>> power_of_two_levels(0.25, 2).numpy()
      array([-0.5 , -0.25,  0.25,  0.5 ], dtype=float32)

    Args:
      scale: ``q`` > 0; a scalar, or a ``[channels]`` vector for one level set per channel.
      bits: bits per kept weight, 1..8; the set has ``2**bits`` nonzero levels.

    Returns:
      ``[2**bits]`` levels, or ``[channels, 2**bits]`` for a vector of scales.

    Raises:
      ValueError: if ``bits`` is outside 1..8 or (eagerly) a scale is not positive.
    """
    return _levels_from_scale(scale, check_bits(bits), LevelScheme.POWER_OF_TWO)


def make_levels(scale, bits: int, scheme: str | LevelScheme = LevelScheme.UNIFORM) -> tf.Tensor:
    """``uniform_levels`` or ``power_of_two_levels``, chosen by ``scheme``.

    Args:
      scale: ``q`` > 0; a scalar or a ``[channels]`` vector.
      bits: bits per kept weight, 1..8.
      scheme: ``"uniform"`` or ``"power_of_two"`` (or a ``LevelScheme``).

    Returns:
      The sorted level set, ``[2**bits]`` or ``[channels, 2**bits]``.

    Raises:
      ValueError: for an unknown scheme, bits outside 1..8 or a non-positive scale.
    """
    return _levels_from_scale(scale, check_bits(bits), check_scheme(scheme))


def onto_grid(levels, bits: int, scheme: str | LevelScheme, xp=None):
    """The level set of the grid's shape nearest to ``levels`` (least squares, per row).

    Trained levels leave the grid; this puts them back: ``q * unit`` with
    ``q = <levels, unit> / <unit, unit>`` (at least the smallest normal float32), where
    ``unit`` is the grid for scale 1. The levels must be sorted the way the grid is (ascending),
    as :func:`make_levels` and :func:`fit_scale` give them.

    Example:
      >>> onto_grid(np.array([-2.2, -0.9, 1.1, 2.0], np.float32), 2, "uniform", np)
      array([-2.08, -1.04,  1.04,  2.08], dtype=float32)

    Args:
      levels: ``[2**bits]`` or ``[channels, 2**bits]`` levels.
      bits: bits per kept weight, 1..8.
      scheme: ``"uniform"`` or ``"power_of_two"``.
      xp: the array namespace of ``levels`` with ``sum`` and ``maximum`` (``numpy``,
        ``keras.ops``); default ``tf.experimental.numpy``.

    Returns:
      The projected levels, same shape and dtype (float32).
    """
    xp = tf.experimental.numpy if xp is None else xp
    unit = unit_levels(check_bits(bits), check_scheme(scheme)).astype(np.float32)
    scale = xp.sum(levels * unit, axis=-1, keepdims=True) / np.float32(np.sum(unit**2))
    return xp.maximum(scale, np.float32(SMALLEST_SCALE)) * unit


def tie_goes_up(lower, upper, xp):
    """Where a value midway between levels takes ``upper`` (every nearest-level search's tie
    rule): the smaller magnitude wins, keeping Π odd on symmetric sets; ``+l`` beats ``-l``."""
    return (xp.abs(upper) < xp.abs(lower)) | ((xp.abs(upper) == xp.abs(lower)) & (upper > lower))


def nearest_level_in(w, levels, xp):
    """Index of the level nearest to each weight, in any array namespace (inside a step).

    ``levels`` are sorted ascending: ``[m]``, or ``[channels, m]`` (a row per entry of ``w``'s
    last axis). The index counts the midpoints between levels that the weight passes (one it
    sits on when :func:`tie_goes_up`): as :func:`nearest_level_index` but among equal levels;
    memory ``w.size * (m - 1)``.

    Example:
      >>> nearest_level_in(np.array([0.2, -0.8, 3.0]), uniform_levels(0.5, 2), np)
      array([2, 0, 3])

    Args:
      w: weights.
      levels: the sorted levels, as above.
      xp: ``w``'s array namespace with ``abs``, ``expand_dims``, ``where`` and ``sum``.

    Returns:
      Integer indices along the last axis of ``levels``, ``w``'s shape.
    """
    lower, upper = levels[..., :-1], levels[..., 1:]
    wide, midpoints = xp.expand_dims(w, -1), (upper + lower) / 2
    passed = (wide > midpoints) | ((wide == midpoints) & tie_goes_up(lower, upper, xp))
    return xp.sum(xp.where(passed, 1, 0), axis=-1)


def _to_rows(x: tf.Tensor, axis: int | None) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
    """Reshapes ``x`` to ``[rows, n]`` (one row per channel, or a single row) and back."""
    if axis is None:
        shape = tf.shape(x)
        return tf.reshape(x, [1, -1]), lambda rows: tf.reshape(rows, shape)
    rank = x.shape.rank
    if rank is None:
        raise ValueError(
            "Expected a tensor of known rank for per-channel levels; received: rank=None"
        )
    if not -rank <= axis < rank:
        raise ValueError(f"Expected axis in [{-rank}, {rank}); received: axis={axis}")
    axis %= rank
    perm = [axis] + [i for i in range(rank) if i != axis]
    inverse = [int(i) for i in np.argsort(perm)]
    moved = tf.transpose(x, perm)
    moved_shape = tf.shape(moved)
    rows = tf.reshape(moved, [moved_shape[0], -1])
    return rows, lambda r: tf.transpose(tf.reshape(r, moved_shape), inverse)


def _nearest_rows(values: tf.Tensor, levels: tf.Tensor) -> tf.Tensor:
    """Index of the nearest level for every entry; ``values`` is ``[r, n]``, levels ``[r, m]``."""
    count = levels.shape[-1]
    if count is not None and count == 1:
        return tf.zeros(tf.shape(values), dtype=tf.int32)
    count = tf.shape(levels)[-1]
    # The nearest level of a sorted set is one of the two that bracket the value.
    upper_index = tf.clip_by_value(tf.searchsorted(levels, values, side="left"), 1, count - 1)
    lower_index = upper_index - 1
    upper = tf.gather(levels, upper_index, batch_dims=1)
    lower = tf.gather(levels, lower_index, batch_dims=1)
    to_upper, to_lower = tf.abs(upper - values), tf.abs(values - lower)
    tie_up = tie_goes_up(lower, upper, tf.math)
    take_upper = (to_upper < to_lower) | ((to_upper == to_lower) & tie_up)
    return tf.where(take_upper, upper_index, lower_index)


def _prepare(w, levels, mask, axis: int):
    """Converts inputs and brings ``w``, ``mask`` and ``levels`` to matching row layouts."""
    w = tf.convert_to_tensor(w)
    levels = tf.convert_to_tensor(levels, dtype=w.dtype)
    level_rank = levels.shape.rank
    if level_rank == 1:
        rows, restore = _to_rows(w, None)
        level_rows = levels[None, :]
        row_axis = None
    elif level_rank == 2:
        rows, restore = _to_rows(w, axis)
        level_rows = levels
        row_axis = axis
        channels = w.shape[axis]
        if channels is not None and levels.shape[0] is not None and channels != levels.shape[0]:
            raise ValueError(
                f"Expected one level row per channel ({channels} along axis {axis}); "
                f"received: levels.shape={levels.shape.as_list()}"
            )
    else:
        raise ValueError(
            "Expected 1-D levels or 2-D per-channel levels; "
            f"received: levels.shape={levels.shape.as_list() if level_rank is not None else None}"
        )
    if levels.shape[-1] == 0:
        raise ValueError("Expected at least one level; received: levels.shape[-1]=0")
    if tf.executing_eagerly():
        gaps = level_rows[:, 1:] - level_rows[:, :-1]
        if not bool(tf.reduce_all(gaps >= 0)):
            raise ValueError(
                f"Expected levels sorted ascending; received: levels={levels.numpy().tolist()}"
            )
    if mask is None:
        kept = tf.ones(tf.shape(rows), dtype=tf.bool)
    else:
        mask = tf.convert_to_tensor(mask)
        mask.shape.assert_is_compatible_with(w.shape)
        kept, _ = _to_rows(tf.not_equal(mask, tf.zeros([], mask.dtype)), row_axis)
    return w, rows, level_rows, kept, restore


def nearest_level_index(w, levels, mask=None, axis: int = -1) -> tf.Tensor:
    """Index into ``levels`` of the level nearest to each weight; -1 at pruned positions.

    Solves ``argmin_i |w - levels[i]|`` entrywise. Ties go to the level of smaller magnitude, and a
    tie between ``-l`` and ``+l`` (a kept exact zero) to ``+l``; among equal (duplicate) levels the
    lower index wins.

    Example:
      >>> nearest_level_index(tf.constant([0.2, -0.8, 3.0]), uniform_levels(0.5, 2)).numpy()
      array([2, 0, 3], dtype=int32)

    Args:
      w: weights, any shape.
      levels: ``[m]`` levels sorted ascending, or ``[channels, m]`` with one sorted row per entry
        of ``w`` along ``axis``.
      mask: optional 0/1 tensor of ``w``'s shape; 0 marks a pruned weight. None keeps all.
      axis: the channel axis of ``w``, used only with 2-D ``levels``.

    Returns:
      An int32 tensor of ``w``'s shape: indices along the last axis of ``levels``, -1 where pruned.
    """
    _, rows, level_rows, kept, restore = _prepare(w, levels, mask, axis)
    index = _nearest_rows(rows, level_rows)
    return restore(tf.where(kept, index, -tf.ones_like(index)))


def project_to_levels(w, levels, mask=None, axis: int = -1) -> tf.Tensor:
    """Euclidean projection of the kept weights onto a level set; pruned weights become 0.

    Solves ``argmin_z ||z - w||_2^2`` subject to ``z_i ∈ levels`` where ``mask_i != 0`` and
    ``z_i = 0`` where ``mask_i == 0``. The problem separates: every kept weight goes to its nearest
    level, with ties broken as in ``nearest_level_index`` (toward the smaller magnitude; a kept 0.0
    goes to the smallest positive level).

    Example:
      >>> levels = uniform_levels(0.5, 2)  # [-1, -0.5, 0.5, 1]
      >>> project_to_levels(tf.constant([0.2, -0.8, 3.0, 0.7]), levels,
      ...                   mask=tf.constant([1.0, 1.0, 1.0, 0.0])).numpy()
      array([ 0.5, -1. ,  1. ,  0. ], dtype=float32)

    Args:
      w: weights, any shape.
      levels: ``[m]`` levels sorted ascending, or ``[channels, m]`` with one sorted row per entry
        of ``w`` along ``axis``.
      mask: optional 0/1 tensor of ``w``'s shape; 0 marks a pruned weight. None keeps all.
      axis: the channel axis of ``w``, used only with 2-D ``levels``.

    Returns:
      A tensor of ``w``'s shape and dtype whose kept entries are levels and pruned entries 0.

    Raises:
      ValueError: for levels of the wrong rank or channel count, or (eagerly) unsorted levels.
    """
    w, rows, level_rows, kept, restore = _prepare(w, levels, mask, axis)
    projected = tf.gather(level_rows, _nearest_rows(rows, level_rows), batch_dims=1)
    return restore(tf.where(kept, projected, tf.zeros_like(projected)))


def fraction_on_levels(w, levels, mask=None, axis: int = -1) -> tf.Tensor:
    """Fraction of the kept weights that equal a level exactly (1.0 when nothing is kept).

    Args:
      w: weights, any shape.
      levels: ``[m]`` or ``[channels, m]`` sorted levels, as in ``project_to_levels``.
      mask: optional 0/1 tensor of ``w``'s shape; None keeps all.
      axis: the channel axis of ``w``, used only with 2-D ``levels``.

    Returns:
      A float32 scalar in [0, 1].
    """
    w, rows, level_rows, kept, _ = _prepare(w, levels, mask, axis)
    projected = tf.gather(level_rows, _nearest_rows(rows, level_rows), batch_dims=1)
    on_level = tf.reduce_sum(tf.cast(kept & tf.equal(rows, projected), tf.float32))
    kept_count = tf.reduce_sum(tf.cast(kept, tf.float32))
    return tf.where(kept_count > 0, on_level / tf.maximum(kept_count, 1.0), 1.0)


def relative_error(w, projected, mask=None) -> tf.Tensor:
    """Relative quantization error ``||w - projected|| / ||w||`` over the kept positions.

    With a ``mask``, only kept positions count (pruned ones are the pruning error, not the
    quantization error). Returns 0 when ``w`` is zero on the kept positions.

    Args:
      w: weights, any shape.
      projected: the quantized weights, same shape.
      mask: optional 0/1 tensor; None counts every position.

    Returns:
      A float32 scalar >= 0.
    """
    w = tf.cast(tf.convert_to_tensor(w), tf.float64)
    projected = tf.cast(tf.convert_to_tensor(projected), tf.float64)
    if mask is not None:
        kept = tf.not_equal(tf.cast(tf.convert_to_tensor(mask), tf.float64), 0.0)
        w = tf.where(kept, w, tf.zeros_like(w))
        projected = tf.where(kept, projected, tf.zeros_like(projected))
    ratio = tf.math.divide_no_nan(tf.norm(w - projected), tf.norm(w))
    return tf.cast(ratio, tf.float32)


def paper_grid_multipliers(points: int = 21) -> np.ndarray:
    """Multipliers of ``max|w| / top`` that the paper-style scale search tries.

    Ye et al. (2018) search the interval around ``max|w|/n`` (``n`` levels per side); we read
    this as ``t · max|w|/top`` for ``t`` evenly spaced in [0.5, 1.5], where ``top`` is the
    largest unit level (``n`` for uniform, ``2**(n-1)`` for power-of-two). ``fit_scale`` always
    tries these, so it is never worse than that search.
    """
    return np.linspace(0.5, 1.5, points)


def _closed_form_index(ratio: tf.Tensor, bits: int, scheme: LevelScheme) -> tf.Tensor:
    """Index into the unit levels of the level nearest to ``ratio = w / q``, without a search.

    Several times faster than ``searchsorted`` inside the scale search. Exact ties may go
    either way here; they do not change the error, and the final projection uses
    ``_nearest_rows``.
    """
    per_side = 2 ** (bits - 1)
    magnitude = tf.abs(ratio)
    if scheme is LevelScheme.UNIFORM:
        offset = tf.cast(
            tf.clip_by_value(tf.round(magnitude), 1.0, float(per_side)) - 1.0, tf.int32
        )
    else:
        # Between 2**j and 2**(j+1) the nearest is 2**(j+1) above 1.5 * 2**j: read j and the
        # mantissa from the float32 bits. Clipping first keeps the top level's range finite.
        top_range = 1.5 * 2.0 ** (per_side - 1)
        magnitude = tf.cast(tf.clip_by_value(magnitude, 1.0, top_range), tf.float32)
        pattern = tf.bitcast(magnitude, tf.int32)
        exponent = tf.bitwise.right_shift(pattern, 23) - 127
        mantissa = tf.bitwise.bitwise_and(pattern, 0x7FFFFF)
        exponent += tf.cast(mantissa > 0x400000, tf.int32)
        offset = tf.clip_by_value(exponent, 0, per_side - 1)
    return tf.where(ratio >= 0, per_side + offset, per_side - 1 - offset)


def _row_sq_error(rows64: tf.Tensor, kept: tf.Tensor, projected: tf.Tensor) -> tf.Tensor:
    diff = tf.where(kept, rows64 - tf.cast(projected, tf.float64), tf.zeros_like(rows64))
    return tf.reduce_sum(tf.square(diff), axis=1)


def fit_scale(
    w,
    bits: int,
    scheme: str | LevelScheme = LevelScheme.UNIFORM,
    mask=None,
    axis: int | None = None,
    grid_size: int = 24,
    refine_steps: int = 8,
) -> ScaleFit:
    """Chooses the scale ``q`` that best quantizes the kept weights, and projects onto it.

    Approximately solves ``argmin_q min_{z ∈ L(q)} ||mask ⊙ (w - z)||_2^2`` where ``L(q)`` is the
    ``scheme`` level set of ``bits`` bits (separately per channel when ``axis`` is given):

    1. grid search over ``q = t · max|w_kept| / top`` for the paper-style ``t`` in [0.5, 1.5]
       (``paper_grid_multipliers``) and ``grid_size`` geometric ``t`` in [2**-6, 1]; with
       ``axis`` the best per-tensor scale is one more candidate for every channel;
    2. from the best candidate, ``refine_steps`` rounds of alternating minimisation: with the
       level assignment ``a`` fixed the least-squares scale is ``q = Σ w·a / Σ a²``; with ``q``
       fixed the best assignment is the nearest level. Neither step increases the error.

    The best scale seen is kept, so the error is never above the paper-style grid search, and
    per-channel scales are never worse than the per-tensor one. A channel whose kept weights
    are all zero gets the smallest normal float32 as scale. Power-of-two scales are clipped so
    that all levels are finite normal float32 numbers.

    Example:
      >>> fit = fit_scale(tf.constant([0.9, -1.1, 2.1, -0.1]), bits=2)
      >>> float(fit.scale)  # least squares for the assignment (1, -1, 2, -1): 6.3 / 7
      0.8999999761581421
      >>> fit.projected.numpy()
      array([ 0.9, -0.9,  1.8, -0.9], dtype=float32)

    Args:
      w: weights, any shape, float.
      bits: bits per kept weight, 1..8.
      scheme: ``"uniform"`` or ``"power_of_two"``.
      mask: optional 0/1 tensor of ``w``'s shape; 0 marks a pruned weight. None keeps all.
      axis: None for one scale per tensor, or the channel axis for one scale per channel.
      grid_size: number of geometric grid points, >= 0.
      refine_steps: rounds of alternating minimisation, >= 0.

    Returns:
      A ``ScaleFit`` of scale(s), levels and the projected tensor.

    Raises:
      ValueError: for bits outside 1..8, an unknown scheme, a bad axis or negative counts.
    """
    bits = check_bits(bits)
    scheme = check_scheme(scheme)
    if grid_size < 0 or refine_steps < 0:
        raise ValueError(
            "Expected grid_size >= 0 and refine_steps >= 0; "
            f"received: grid_size={grid_size}, refine_steps={refine_steps}"
        )
    w = tf.convert_to_tensor(w)
    if not w.dtype.is_floating:
        raise ValueError(f"Expected a floating-point w; received: w.dtype={w.dtype.name}")
    if mask is None:
        kept_full = tf.ones(tf.shape(w), dtype=tf.bool)
    else:
        mask = tf.convert_to_tensor(mask)
        mask.shape.assert_is_compatible_with(w.shape)
        kept_full = tf.not_equal(mask, tf.zeros([], mask.dtype))

    rows, restore = _to_rows(w, axis)
    kept, _ = _to_rows(kept_full, axis)
    rows64 = tf.cast(rows, tf.float64)
    unit64 = unit_levels(bits, scheme)
    unit = tf.constant(unit64, dtype=w.dtype)
    unit64_t = tf.constant(unit64, dtype=tf.float64)
    top = float(unit64[-1])
    # Largest scale whose top level still fits float32 (only binding for 8-bit power-of-two).
    max_scale = FLOAT32_MAX / top / 2.0

    def clip(scale64: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.clip_by_value(scale64, SMALLEST_SCALE, max_scale), w.dtype)

    def evaluate(scale: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        level_rows = scale[:, None] * unit
        index = _closed_form_index(rows64 / tf.cast(scale, tf.float64)[:, None], bits, scheme)
        projected = tf.gather(level_rows, index, batch_dims=1)
        return _row_sq_error(rows64, kept, projected), index

    max_abs = tf.reduce_max(tf.where(kept, tf.abs(rows64), tf.zeros_like(rows64)), axis=1)
    base = max_abs / top
    multipliers = np.concatenate(
        [paper_grid_multipliers(), np.exp2(np.linspace(-6.0, 0.0, grid_size))]
    )
    candidates = clip(tf.constant(multipliers, tf.float64)[:, None] * base[None, :])
    if axis is not None:
        overall = fit_scale(w, bits, scheme, mask, None, grid_size, refine_steps).scale
        candidates = tf.concat([candidates, tf.fill([1, tf.shape(base)[0]], overall)], axis=0)

    def keep_better(scale, error, best_scale, best_error):
        better = error < best_error
        return tf.where(better, scale, best_scale), tf.where(better, error, best_error)

    # tf.while_loop rather than Python loops: inside tf.function the graph stays small (tracing
    # ~50 unrolled searches took seconds); eagerly it runs as a plain loop.
    def grid_step(i, best_scale, best_error):
        scale = candidates[i]
        error, _ = evaluate(scale)
        return (i + 1, *keep_better(scale, error, best_scale, best_error))

    first_error, _ = evaluate(candidates[0])
    _, best_scale, best_error = tf.while_loop(
        lambda i, *_: i < tf.shape(candidates)[0],
        grid_step,
        (tf.constant(1), candidates[0], first_error),
    )

    kept64 = tf.cast(kept, tf.float64)

    def refine_step(step, scale, index, best_scale, best_error):
        assignment = tf.gather(unit64_t, index) * kept64
        numerator = tf.reduce_sum(rows64 * assignment, axis=1)
        denominator = tf.reduce_sum(tf.square(assignment), axis=1)
        least_squares = tf.math.divide_no_nan(numerator, denominator)
        scale = tf.where(denominator > 0, clip(least_squares), scale)
        error, index = evaluate(scale)
        return (step + 1, scale, index, *keep_better(scale, error, best_scale, best_error))

    _, best_index = evaluate(best_scale)
    _, _, _, best_scale, best_error = tf.while_loop(
        lambda step, *_: step < refine_steps,
        refine_step,
        (tf.constant(0), best_scale, best_index, best_scale, best_error),
    )

    level_rows = best_scale[:, None] * unit
    projected = tf.gather(level_rows, _nearest_rows(rows, level_rows), batch_dims=1)
    projected = restore(tf.where(kept, projected, tf.zeros_like(projected)))
    if axis is None:
        return ScaleFit(best_scale[0], level_rows[0], projected)
    return ScaleFit(best_scale, level_rows, projected)
