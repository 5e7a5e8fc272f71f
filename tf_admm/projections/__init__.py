"""Euclidean projections onto the ADMM constraint sets, as plain TensorFlow functions.

The Z-step of ADMM is ``Z <- argmin_{Z in S} ||Z - (W + U)||^2``: a projection onto the set ``S``
of allowed weights. Each function here solves one such problem and knows nothing about Keras:
``sparsity`` (at most k nonzeros), ``structured`` (at most k filters, input channels, GEMM
columns or blocks, or n nonzeros in every run of m inputs), ``levels`` (uniform or
power-of-two quantization levels with a fitted scale) and ``kmeans`` (free cluster centroids).
"""

from tf_admm.projections.kmeans import (
    KMeansResult,
    assign,
    kmeans,
    kmeans_plus_plus,
    linear_init,
    nearest_centroid,
    update_centroids,
)
from tf_admm.projections.levels import (
    LevelScheme,
    ScaleFit,
    fit_scale,
    fraction_on_levels,
    make_levels,
    nearest_level_index,
    paper_grid_multipliers,
    power_of_two_levels,
    project_to_levels,
    relative_error,
    uniform_levels,
)
from tf_admm.projections.sparsity import (
    keep_count,
    project_top_k,
    project_top_k_numpy,
    stage_keep_count,
    top_k_mask,
    top_k_mask_numpy,
)
from tf_admm.projections.structured import (
    Layout,
    Structure,
    block_mask,
    channel_mask,
    column_mask,
    filter_mask,
    gemm_shape,
    group_count,
    group_norms,
    group_size,
    n_of_m_mask,
    project_blocks,
    project_channels,
    project_columns,
    project_filters,
    project_n_of_m,
    project_structured,
    structured_mask,
)

__all__ = [
    "KMeansResult",
    "LevelScheme",
    "ScaleFit",
    "assign",
    "fit_scale",
    "fraction_on_levels",
    "keep_count",
    "kmeans",
    "kmeans_plus_plus",
    "linear_init",
    "make_levels",
    "nearest_centroid",
    "nearest_level_index",
    "paper_grid_multipliers",
    "power_of_two_levels",
    "project_to_levels",
    "project_top_k",
    "project_top_k_numpy",
    "stage_keep_count",
    "relative_error",
    "top_k_mask",
    "top_k_mask_numpy",
    "uniform_levels",
    "update_centroids",
    "Layout",
    "Structure",
    "block_mask",
    "channel_mask",
    "column_mask",
    "filter_mask",
    "gemm_shape",
    "group_count",
    "group_norms",
    "group_size",
    "n_of_m_mask",
    "project_blocks",
    "project_channels",
    "project_columns",
    "project_filters",
    "project_n_of_m",
    "project_structured",
    "structured_mask",
]
