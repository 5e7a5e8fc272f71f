"""The Keras 3 adapter: ADMM pruning and quantization for ``import keras`` models on TensorFlow
and JAX.

The public functions :func:`tf_admm.admm_wrap`, :func:`tf_admm.strip` and :func:`tf_admm.plan`
hand a Keras 3 model to this package (and ``AdmmModel.fit`` takes :func:`tf_admm.callbacks`'
list); it holds only what differs from the tf_keras adapter: the wrapper (masked, level-locked
weight through ``keras.ops``), the model (penalty in ``compute_loss``), the callback (updates
where the JAX state is synced), the layer registry, strip, the copy and shared weights that
:func:`tf_admm.sensitivity_allocation` probes, and the accessors through which the shared code
reads Keras 3 models (:mod:`tf_admm.keras3.access`; :data:`GRAPH` is the one
:func:`tf_admm.shrink` reads their graphs with). Spec resolution
(:mod:`tf_admm.resolution`), the phase machine (:mod:`tf_admm.phases`), the projections (with
their NumPy twins) and the allocation are shared.
See ``docs/keras3.md``.
"""

# First: tf_admm.compat loads TensorFlow and Keras 3 with the lines their native libraries write
# at start-up filtered (see there); the modules below import keras themselves.
from tf_admm import compat  # noqa: F401
from tf_admm.keras3.access import GRAPH
from tf_admm.keras3.callback import AdmmUpdate, callbacks
from tf_admm.keras3.model import (
    AdmmModel,
    admm_wrap,
    copy,
    owns,
    plan,
    shared_weights,
    wrappers,
)
from tf_admm.keras3.strip import strip
from tf_admm.keras3.wrapper import AdmmWrapper

__all__ = [
    "AdmmModel",
    "AdmmUpdate",
    "AdmmWrapper",
    "GRAPH",
    "admm_wrap",
    "callbacks",
    "copy",
    "owns",
    "plan",
    "shared_weights",
    "strip",
    "wrappers",
]
