"""Euclidean projections onto the ADMM constraint sets, as plain TensorFlow functions.

The Z-step of ADMM is ``Z <- argmin_{Z in S} ||Z - (W + U)||^2``: a projection onto the set ``S``
of allowed weights. Each function here solves one such problem and knows nothing about Keras.
"""

from tf_admm.projections.sparsity import keep_count, project_top_k, top_k_mask

__all__ = ["keep_count", "project_top_k", "top_k_mask"]
