"""Projections onto structured sparsity sets: filters, channels, columns, blocks and N:M.

Every set here is a union of coordinate subspaces, one per allowed support. The projection onto
such a set keeps ``x`` on the support that leaves the least energy outside it and zeroes the
rest, so each function below is the exact Euclidean projection
``argmin_{z in S} ||z - x||_2^2``, not a heuristic.

Groups are read from a kernel in Keras' layout through its **GEMM view**, the matrix ``G`` of
shape ``(outputs, fan_in)`` that Ye et al. (2018) and TFLite's FULLY_CONNECTED weights use: one
row per output channel, one column per input it multiplies. It is the kernel reshaped to
``(fan_in, outputs)`` (a plain row-major reshape) and transposed:

* ``layout="dense"``: Dense ``(in, out)`` and Conv1D/2D/3D ``(*spatial, in, out)`` kernels;
  ``fan_in = prod(spatial) * in`` with the input channel varying fastest, so a column is one
  (kernel position, input channel) pair, and ``outputs = out``.
* ``layout="depthwise"``: DepthwiseConv1D/2D ``(*spatial, channels, multiplier)`` kernels. Each
  output channel ``c * multiplier + m`` (Keras' order) reads only its own input channel, so its
  GEMM row holds its ``prod(spatial)`` taps: ``fan_in = prod(spatial)``,
  ``outputs = channels * multiplier``, and a column is one kernel position across every output.

The groups, for a kernel of shape ``(*spatial, in, out)`` (or ``(*spatial, channels,
multiplier)``):

* **filter**: a row of ``G`` (an output channel, its bias aside): ``outputs`` groups.
* **channel**: every weight reading input channel ``c``, ``kernel[..., c, :]``: ``in`` (or
  ``channels``) groups. For Dense a channel is a column; for a depthwise kernel with
  multiplier 1 it is a filter.
* **column**: a column of ``G`` (Ye et al.'s column pruning; the im2col patch matrix loses
  that column): ``fan_in`` groups.
* **block** ``(r, c)``: ``r`` consecutive rows times ``c`` consecutive columns of ``G``, tiling
  it (``r`` divides ``outputs``, ``c`` divides ``fan_in``): ``1x4`` is one output channel and
  four consecutive inputs, the block TFLite's sparse FULLY_CONNECTED kernels read.
* **N:M** (dense layout only): in every row of ``G``, of every ``m`` consecutive columns keep
  the ``n`` of largest magnitude; ``m`` divides the input channels ``in``, so a run never
  straddles two kernel positions.

The group projections keep the ``k`` groups of largest L2 norm (compared as sums of squares);
among equal norms the group with the lower index (as listed by :func:`group_norms`) is kept, so
results are deterministic. N:M keeps the ``n`` largest magnitudes of each run, the lower index
first among equal ones.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import tensorflow as tf

__all__ = [
    "Layout",
    "Structure",
    "block_mask",
    "channel_mask",
    "check_n_of_m",
    "column_mask",
    "coupled_filter_masks",
    "filter_mask",
    "group_count",
    "group_norms",
    "group_size",
    "gemm_shape",
    "n_of_m_mask",
    "project_blocks",
    "project_channels",
    "project_columns",
    "project_coupled_filters",
    "project_filters",
    "project_n_of_m",
    "project_structured",
    "structured_mask",
]


class Structure(str, enum.Enum):
    """The groups a structured rule removes whole."""

    FILTER = "filter"
    CHANNEL = "channel"
    COLUMN = "column"
    BLOCK = "block"
    N_OF_M = "n_of_m"


class Layout(str, enum.Enum):
    """How a kernel's axes map onto its GEMM view (see the module docstring)."""

    DENSE = "dense"
    DEPTHWISE = "depthwise"


def _shape(shape: Sequence[int] | tf.TensorShape) -> tuple[int, ...]:
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(
            f"Expected a kernel of rank >= 2 (its last two axes input and output channels); "
            f"received: shape={shape}"
        )
    return shape


def gemm_shape(shape: Sequence[int], layout: Layout | str = Layout.DENSE) -> tuple[int, int]:
    """``(outputs, fan_in)`` of a kernel's GEMM view.

    Example:
      >>> gemm_shape((3, 3, 16, 32))  # A Conv2D kernel: 32 filters of 3 * 3 * 16 inputs.
      (32, 144)
      >>> gemm_shape((3, 3, 16, 2), "depthwise")  # 32 outputs of 9 taps each.
      (32, 9)

    Args:
      shape: the kernel's shape in Keras' layout.
      layout: ``"dense"`` or ``"depthwise"``.

    Returns:
      The number of rows (output channels) and columns (inputs per output) of the view.
    """
    shape = _shape(shape)
    if Layout(layout) is Layout.DEPTHWISE:
        return shape[-2] * shape[-1], math.prod(shape[:-2])
    return shape[-1], math.prod(shape[:-1])


def _channels(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(positions, channels, rest)``: the kernel as a 3-D array around its channel axis."""
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def _check_block(shape, layout, block) -> tuple[int, int]:
    if (
        not isinstance(block, Sequence)
        or len(block) != 2
        or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in block)
    ):
        raise ValueError(f"Expected block to be two integers >= 1; received: block={block!r}")
    rows, columns = gemm_shape(shape, layout)
    if rows % block[0] or columns % block[1]:
        raise ValueError(
            f"Expected a block shape dividing the GEMM view {rows}x{columns} (outputs x fan_in) "
            f"of the kernel of shape {shape}; received: block={block[0]}x{block[1]}"
        )
    return int(block[0]), int(block[1])


def _to_groups(x: tf.Tensor, structure: Structure, layout: Layout, block=None) -> tf.Tensor:
    """``x`` rearranged to ``(groups, group size)``, one row per group, groups in index order."""
    shape = _shape(x.shape)
    rows, columns = gemm_shape(shape, layout)
    view = tf.reshape(x, [columns, rows])  # (fan_in, outputs): G transposed.
    if structure is Structure.FILTER:
        return tf.transpose(view)
    if structure is Structure.COLUMN:
        return view
    if structure is Structure.CHANNEL:
        positions, channels, rest = _channels(shape)
        cube = tf.reshape(x, [positions, channels, rest])
        return tf.reshape(tf.transpose(cube, [1, 0, 2]), [channels, positions * rest])
    if structure is Structure.BLOCK:
        r, c = _check_block(shape, layout, block)
        tiles = tf.reshape(tf.transpose(view), [rows // r, r, columns // c, c])
        return tf.reshape(tf.transpose(tiles, [0, 2, 1, 3]), [(rows // r) * (columns // c), r * c])
    raise ValueError(f"Expected a group structure; received: structure={structure.value!r}")


def _from_groups(groups: tf.Tensor, shape, structure: Structure, layout: Layout, block=None):
    """Inverse of :func:`_to_groups`: a ``(groups, group size)`` array back to ``shape``."""
    shape = _shape(shape)
    rows, columns = gemm_shape(shape, layout)
    if structure is Structure.FILTER:
        return tf.reshape(tf.transpose(groups), shape)
    if structure is Structure.COLUMN:
        return tf.reshape(groups, shape)
    if structure is Structure.CHANNEL:
        positions, channels, rest = _channels(shape)
        cube = tf.reshape(groups, [channels, positions, rest])
        return tf.reshape(tf.transpose(cube, [1, 0, 2]), shape)
    r, c = block
    tiles = tf.reshape(groups, [rows // r, columns // c, r, c])
    matrix = tf.reshape(tf.transpose(tiles, [0, 2, 1, 3]), [rows, columns])
    return tf.reshape(tf.transpose(matrix), shape)


def _group_structure(structure) -> Structure:
    structure = Structure(structure)
    if structure is Structure.N_OF_M:
        raise ValueError(
            "Expected a group structure (filter, channel, column or block); received: "
            "structure='n_of_m' (use n_of_m_mask)"
        )
    return structure


def group_count(
    shape: Sequence[int],
    structure: Structure | str,
    layout: Layout | str = Layout.DENSE,
    block: Sequence[int] | None = None,
) -> int:
    """Number of groups of ``structure`` in a kernel of ``shape``.

    Example:
      >>> group_count((3, 3, 16, 32), "column")
      144
      >>> group_count((128, 64), "block", block=(1, 4))
      2048

    Raises:
      ValueError: for ``n_of_m``, or a block that does not tile the GEMM view.
    """
    structure, layout, shape = _group_structure(structure), Layout(layout), _shape(shape)
    rows, columns = gemm_shape(shape, layout)
    if structure is Structure.FILTER:
        return rows
    if structure is Structure.COLUMN:
        return columns
    if structure is Structure.CHANNEL:
        return shape[-2]
    r, c = _check_block(shape, layout, block)
    return (rows // r) * (columns // c)


def group_size(
    shape: Sequence[int],
    structure: Structure | str,
    layout: Layout | str = Layout.DENSE,
    block: Sequence[int] | None = None,
) -> int:
    """Weights per group: the kernel's size over :func:`group_count`."""
    return math.prod(_shape(shape)) // group_count(shape, structure, layout, block)


def group_norms(
    x: tf.Tensor,
    structure: Structure | str,
    layout: Layout | str = Layout.DENSE,
    block: Sequence[int] | None = None,
) -> tf.Tensor:
    """Squared L2 norm of every group of ``x``, a vector in group index order.

    Group ``i`` is filter (output channel) ``i``, input channel ``i``, GEMM column ``i`` (the
    flat index of ``(kernel position, input channel)``), or block ``i`` counted row-block major
    across the GEMM view.
    """
    x = tf.convert_to_tensor(x)
    groups = _to_groups(x, _group_structure(structure), Layout(layout), block)
    return tf.reduce_sum(tf.square(groups), axis=1)


def _keep_groups_mask(x, k, structure, layout, block) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    structure, layout = _group_structure(structure), Layout(layout)
    groups = _to_groups(x, structure, layout, block)
    count = groups.shape[0]
    if not 0 <= k <= count:
        raise ValueError(
            f"Expected k in [0, {count}] ({structure.value} groups of the kernel of shape "
            f"{tuple(x.shape)}); received: k={k}"
        )
    norms = tf.reduce_sum(tf.square(groups), axis=1)
    # tf.math.top_k is stable: among equal norms the lower group index comes first.
    _, indices = tf.math.top_k(norms, k=k, sorted=False)
    kept = tf.scatter_nd(indices[:, None], tf.ones([k], x.dtype), shape=[count])
    return _from_groups(
        tf.broadcast_to(kept[:, None], tf.shape(groups)), x.shape, structure, layout, block
    )


def filter_mask(x: tf.Tensor, k: int, layout: Layout | str = Layout.DENSE) -> tf.Tensor:
    """0/1 mask of the ``k`` filters (output channels, GEMM rows) of ``x`` of largest norm.

    Args:
      x: a kernel in Keras' layout.
      k: filters kept, in [0, outputs].
      layout: ``"dense"`` or ``"depthwise"``.

    Returns:
      A tensor of ``x``'s shape and dtype; exactly ``k`` filters are all ones, the rest zeros.
    """
    return _keep_groups_mask(x, k, Structure.FILTER, layout, None)


def project_filters(x: tf.Tensor, k: int, layout: Layout | str = Layout.DENSE) -> tf.Tensor:
    """Euclidean projection onto the kernels with at most ``k`` nonzero filters.

    Solves ``argmin_{z : at most k rows of G(z) nonzero} ||z - x||_2^2``: keep the ``k``
    filters of largest L2 norm, zero the others (ties: lower output channel first).

    Example:
      >>> project_filters(tf.constant([[1.0, 0.1, -2.0], [1.0, 0.1, 0.0]]), 2).numpy()
      array([[ 1.,  0., -2.],
             [ 1.,  0.,  0.]], dtype=float32)
    """
    return x * filter_mask(x, k, layout)


def coupled_filter_masks(
    kernels: Sequence[tf.Tensor], k: int, layouts: Sequence[Layout | str] | None = None
) -> list[tf.Tensor]:
    """0/1 masks keeping the same ``k`` filters in every kernel: the ``k`` output channels of
    largest summed squared norm across the kernels.

    Args:
      kernels: kernels with the same number of filters (output channels of their GEMM views),
        e.g. the convolutions whose outputs meet in a residual Add.
      k: filters kept, the same channel indices in every kernel, in [0, outputs].
      layouts: one layout per kernel (default ``"dense"`` for all).

    Returns:
      One mask per kernel, of its shape and dtype.

    Raises:
      ValueError: for no kernels, kernels with different filter counts or k out of range.
    """
    if not kernels:
        raise ValueError("Expected at least one kernel; received: kernels=[]")
    layouts = [Layout.DENSE] * len(kernels) if layouts is None else [Layout(x) for x in layouts]
    kernels = [tf.convert_to_tensor(x) for x in kernels]
    counts = [gemm_shape(x.shape, layout)[0] for x, layout in zip(kernels, layouts)]
    if len(set(counts)) != 1:
        raise ValueError(
            f"Expected kernels with the same number of filters; received: filters={counts} "
            f"for shapes {[tuple(x.shape) for x in kernels]}"
        )
    count = counts[0]
    if not 0 <= k <= count:
        raise ValueError(f"Expected k in [0, {count}] (filters per kernel); received: k={k}")
    norms = tf.add_n(
        [
            tf.cast(group_norms(x, Structure.FILTER, layout), tf.float64)
            for x, layout in zip(kernels, layouts)
        ]
    )
    # Stable: among equal sums the lower output channel is kept.
    _, indices = tf.math.top_k(norms, k=k, sorted=False)
    kept = tf.scatter_nd(indices[:, None], tf.ones([k], tf.float64), shape=[count])
    masks = []
    for x, layout in zip(kernels, layouts):
        rows = tf.broadcast_to(
            tf.cast(kept, x.dtype)[:, None], [count, gemm_shape(x.shape, layout)[1]]
        )
        masks.append(_from_groups(rows, x.shape, Structure.FILTER, layout))
    return masks


def project_coupled_filters(
    kernels: Sequence[tf.Tensor], k: int, layouts: Sequence[Layout | str] | None = None
) -> list[tf.Tensor]:
    """Euclidean projection onto kernels that keep the same ``k`` filters (output channels).

    For kernels ``x_1 .. x_n`` with the same number of filters, solves
    ``argmin_{z_1..z_n : all z_i zero outside one common set of k filters}
    sum_i ||z_i - x_i||_2^2``. For a fixed set ``K`` the best ``z_i`` is ``x_i`` on ``K`` and
    0 elsewhere, leaving ``sum_{c not in K} sum_i ||x_i[c]||^2`` outside; so the optimum keeps
    the ``k`` channels ``c`` of largest summed squared norm ``sum_i ||x_i[c]||^2`` (ties: lower
    channel first). This is the Z-step for layers tied by a residual Add, whose outputs must
    lose the same channels for ``tf_admm.shrink`` to remove them.

    Example:
      >>> a = tf.constant([[3.0, 0.0, 1.0]])  # Filter norms 9, 0, 1.
      >>> b = tf.constant([[0.0, 4.0, 2.0]])  # Filter norms 0, 16, 4: sums 9, 16, 5.
      >>> [z.numpy() for z in project_coupled_filters([a, b], 2)]
      [array([[3., 0., 0.]], dtype=float32), array([[0., 4., 0.]], dtype=float32)]

    Arguments as for :func:`coupled_filter_masks`; returns the projected kernels.
    """
    masks = coupled_filter_masks(kernels, k, layouts)
    return [tf.convert_to_tensor(x) * mask for x, mask in zip(kernels, masks)]


def channel_mask(x: tf.Tensor, k: int, layout: Layout | str = Layout.DENSE) -> tf.Tensor:
    """0/1 mask of the ``k`` input channels (``x[..., c, :]``) of largest norm."""
    return _keep_groups_mask(x, k, Structure.CHANNEL, layout, None)


def project_channels(x: tf.Tensor, k: int, layout: Layout | str = Layout.DENSE) -> tf.Tensor:
    """Euclidean projection onto the kernels reading at most ``k`` input channels.

    Solves ``argmin_{z : z[..., c, :] = 0 for all but k channels c} ||z - x||_2^2``: keep the
    ``k`` input channels of largest L2 norm (ties: lower channel first).
    """
    return x * channel_mask(x, k, layout)


def column_mask(x: tf.Tensor, k: int, layout: Layout | str = Layout.DENSE) -> tf.Tensor:
    """0/1 mask of the ``k`` GEMM columns (fan-in positions) of largest norm."""
    return _keep_groups_mask(x, k, Structure.COLUMN, layout, None)


def project_columns(x: tf.Tensor, k: int, layout: Layout | str = Layout.DENSE) -> tf.Tensor:
    """Euclidean projection onto the kernels with at most ``k`` nonzero GEMM columns.

    Solves ``argmin_{z : at most k columns of G(z) nonzero} ||z - x||_2^2`` (Ye et al.'s
    column pruning): keep the ``k`` columns of largest L2 norm (ties: lower flat fan-in index).
    """
    return x * column_mask(x, k, layout)


def block_mask(
    x: tf.Tensor, k: int, block: Sequence[int], layout: Layout | str = Layout.DENSE
) -> tf.Tensor:
    """0/1 mask of the ``k`` ``block[0] x block[1]`` tiles of the GEMM view of largest norm."""
    return _keep_groups_mask(x, k, Structure.BLOCK, layout, block)


def project_blocks(
    x: tf.Tensor, k: int, block: Sequence[int], layout: Layout | str = Layout.DENSE
) -> tf.Tensor:
    """Euclidean projection onto the kernels with at most ``k`` nonzero blocks.

    The GEMM view is tiled by ``block = (r, c)`` tiles (``r`` output channels by ``c``
    consecutive inputs). Solves ``argmin_{z : at most k tiles of G(z) nonzero}
    ||z - x||_2^2``: keep the ``k`` tiles of largest L2 norm (ties: lower tile index, row-block
    major).

    Raises:
      ValueError: if ``block`` does not tile the GEMM view.
    """
    return x * block_mask(x, k, block, layout)


def check_n_of_m(shape: Sequence[int], n: int, m: int, layout: Layout | str = Layout.DENSE) -> None:
    """Checks that a kernel of ``shape`` in ``layout`` can hold the ``n`` of ``m`` pattern.

    Raises:
      ValueError: unless ``1 <= n < m``, ``m`` divides the input dimension (``shape[-2]``) and
        the layout is dense.
    """
    shape = _shape(shape)
    if Layout(layout) is not Layout.DENSE:
        raise ValueError(
            "Expected a dense-layout kernel for n_of_m (a depthwise output reads one input "
            f"channel, so there are no consecutive inputs to choose among); received: "
            f"layout={Layout(layout).value!r}"
        )
    if not (isinstance(n, int) and isinstance(m, int) and 1 <= n < m):
        raise ValueError(f"Expected integers 1 <= n < m; received: n={n!r}, m={m!r}")
    if shape[-2] % m:
        raise ValueError(
            f"Expected m dividing the input dimension ({shape[-2]}) of the kernel of shape "
            f"{shape}; received: m={m}"
        )


def n_of_m_mask(x: tf.Tensor, n: int, m: int, layout: Layout | str = Layout.DENSE) -> tf.Tensor:
    """0/1 mask of the ``n`` largest magnitudes in every run of ``m`` consecutive inputs.

    Runs are taken along the input-channel axis (``x[..., c, o]``, ``c`` in ``[j*m, j*m+m)``)
    for every kernel position and output channel; exactly ``n`` ones per run.

    Raises:
      ValueError: unless ``1 <= n < m``, ``m`` divides the input dimension and the layout is
        dense.
    """
    x = tf.convert_to_tensor(x)
    shape = _shape(x.shape)
    check_n_of_m(shape, n, m, layout)
    positions, channels, outputs = _channels(shape)
    runs = tf.reshape(x, [positions, channels // m, m, outputs])
    runs = tf.transpose(runs, [0, 1, 3, 2])  # Each run along the last axis.
    _, indices = tf.math.top_k(tf.abs(runs), k=n, sorted=False)
    kept = tf.reduce_sum(tf.one_hot(indices, m, dtype=x.dtype), axis=-2)
    return tf.reshape(tf.transpose(kept, [0, 1, 3, 2]), shape)


def project_n_of_m(x: tf.Tensor, n: int, m: int, layout: Layout | str = Layout.DENSE) -> tf.Tensor:
    """Euclidean projection onto the kernels with at most ``n`` nonzeros in every run of ``m``.

    The set is a product over runs of ``m`` consecutive inputs, so the problem
    ``argmin_{z : ||z_run||_0 <= n for every run} ||z - x||_2^2`` separates: in each run keep
    the ``n`` entries of largest magnitude (ties: lower input channel first). 2:4 is the
    pattern of sparse tensor cores and tfmot's ``sparsity_m_by_n``.

    Example:
      >>> project_n_of_m(tf.constant([[0.1], [-3.0], [2.0], [0.5]]), 2, 4).numpy().ravel()
      array([ 0., -3.,  2.,  0.], dtype=float32)
    """
    return x * n_of_m_mask(x, n, m, layout)


def structured_mask(
    x: tf.Tensor,
    structure: Structure | str,
    keep: int | None = None,
    *,
    layout: Layout | str = Layout.DENSE,
    block: Sequence[int] | None = None,
    n: int | None = None,
    m: int | None = None,
) -> tf.Tensor:
    """The mask of :func:`project_structured`: one entry point for every structure.

    Args:
      x: a kernel in Keras' layout.
      structure: ``"filter"``, ``"channel"``, ``"column"``, ``"block"`` or ``"n_of_m"``.
      keep: groups kept (not used by ``n_of_m``).
      layout: ``"dense"`` or ``"depthwise"``.
      block: the ``(r, c)`` tile, for ``"block"``.
      n: entries kept per run, for ``"n_of_m"``.
      m: run length, for ``"n_of_m"``.

    Returns:
      A 0/1 tensor of ``x``'s shape and dtype.
    """
    structure = Structure(structure)
    if structure is Structure.N_OF_M:
        return n_of_m_mask(x, n, m, layout)
    return _keep_groups_mask(x, keep, structure, layout, block)


def project_structured(
    x: tf.Tensor,
    structure: Structure | str,
    keep: int | None = None,
    *,
    layout: Layout | str = Layout.DENSE,
    block: Sequence[int] | None = None,
    n: int | None = None,
    m: int | None = None,
) -> tf.Tensor:
    """Euclidean projection of ``x`` onto the kernels with the given structured sparsity.

    Solves ``argmin_{z in S} ||z - x||_2^2`` where ``S`` holds the kernels with at most
    ``keep`` nonzero groups of ``structure`` (or, for ``n_of_m``, at most ``n`` nonzeros per
    run of ``m``); see :func:`project_filters` and its siblings. Arguments as for
    :func:`structured_mask`.
    """
    return x * structured_mask(x, structure, keep, layout=layout, block=block, n=n, m=m)
