"""Which Keras weights structured pruning can take, and the layout of their GEMM view.

One table for both Keras generations, keyed by the names of Keras' own layer classes: tf_keras
and Keras 3 name their convolution and dense classes alike and keep their kernels in the same
axis order, so :func:`structure_layout` answers for a layer of either (the tf_keras registry,
:mod:`tf_admm.registry`, and the Keras 3 one, :mod:`tf_admm.keras3.registry`, both ask it). The
layouts are those of :mod:`tf_admm.projections.structured`.

Example::

    structure_layout(keras.layers.DepthwiseConv2D(3), "kernel")  # "depthwise" (Keras 3's name)
"""

from __future__ import annotations

__all__ = ["STRUCTURED_LAYERS", "filter_bias_follows", "structure_layout"]

# Weight name -> layout, by class name, looked up along the layer's MRO (Keras' own classes
# only), most derived first. A depthwise kernel is ``depthwise_kernel`` in tf_keras and
# ``kernel`` in Keras 3. Transposed convolutions keep (*spatial, out, in) kernels (and in
# tf_keras subclass Conv), so they are listed with none.
_LAYOUTS: dict[str, dict[str, str]] = {
    "Dense": {"kernel": "dense"},
    "Conv1D": {"kernel": "dense"},
    "Conv2D": {"kernel": "dense"},
    "Conv3D": {"kernel": "dense"},
    "Conv1DTranspose": {},
    "Conv2DTranspose": {},
    "Conv3DTranspose": {},
    "DepthwiseConv1D": {"depthwise_kernel": "depthwise", "kernel": "depthwise"},
    "DepthwiseConv2D": {"depthwise_kernel": "depthwise", "kernel": "depthwise"},
    "SeparableConv1D": {"depthwise_kernel": "depthwise", "pointwise_kernel": "dense"},
    "SeparableConv2D": {"depthwise_kernel": "depthwise", "pointwise_kernel": "dense"},
}

# A separable convolution adds its bias after the pointwise kernel, so the depthwise kernel's
# filters do not own it; it is left alone for both kernels.
_NO_FILTER_BIAS = ("SeparableConv1D", "SeparableConv2D")

STRUCTURED_LAYERS = (
    "Dense, Conv1D/2D/3D kernels; DepthwiseConv1D/2D and SeparableConv1D/2D depthwise and "
    "pointwise kernels (n_of_m: not depthwise ones)"
)


def _keras_classes(layer):
    """The classes along the layer's MRO that Keras itself defines (tf_keras or Keras 3)."""
    return [c for c in type(layer).__mro__ if c.__module__.split(".")[0] in ("keras", "tf_keras")]


def _entry(layer) -> tuple[str, dict[str, str]] | None:
    for cls in _keras_classes(layer):
        if cls.__name__ in _LAYOUTS:
            return cls.__name__, _LAYOUTS[cls.__name__]
    return None


def structure_layout(layer, weight: str) -> str | None:
    """The GEMM-view layout (``"dense"`` or ``"depthwise"``) of ``layer``'s weight ``weight``
    (its tf_keras attribute path or Keras 3 variable name), or None if the weight has no
    filter/channel structure that structured pruning knows."""
    entry = _entry(layer)
    return None if entry is None else entry[1].get(weight)


def filter_bias_follows(layer, weight: str) -> bool:
    """Whether the layer's bias, if it has one, goes with the filters of weight ``weight``: a
    Dense/Conv kernel or a depthwise kernel, not a separable convolution's kernels."""
    entry = _entry(layer)
    return entry is not None and weight in entry[1] and entry[0] not in _NO_FILTER_BIAS
