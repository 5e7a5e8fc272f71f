"""How spec resolution (:mod:`tf_admm.resolution`) finds layers and weights in Keras 3 models.

:data:`ACCESS` is the Keras 3 :class:`~tf_admm.resolution.LayerAccess`: layers through
:func:`tf_admm.keras3.registry.leaf_layers`, weights by variable name through
:mod:`tf_admm.keras3.registry`. The tf_keras twin is :data:`tf_admm.access.ACCESS`.
"""

from __future__ import annotations

import keras
import numpy as np

from tf_admm.keras3 import registry
from tf_admm.keras3.wrapper import AdmmWrapper

__all__ = ["ACCESS", "Keras3Access"]


class Keras3Access:
    """:class:`tf_admm.resolution.LayerAccess` for Keras 3 models."""

    leaf_layers = staticmethod(registry.leaf_layers)
    supports = staticmethod(registry.supports)
    compressible_weights = staticmethod(registry.compressible_weights)
    find = staticmethod(registry.find)

    @staticmethod
    def is_wrapped(layer) -> bool:
        """Whether the layer is already a Keras 3 :class:`~tf_admm.keras3.wrapper.AdmmWrapper`."""
        return isinstance(layer, AdmmWrapper)

    @staticmethod
    def shape(layer, name: str) -> tuple[int, ...]:
        """The shape of the layer's variable ``name``."""
        return tuple(registry.resolve(layer, name)[0].shape)

    @staticmethod
    def values(layer, name: str) -> np.ndarray:
        """The current values of the layer's variable ``name``, on the host."""
        return keras.ops.convert_to_numpy(registry.resolve(layer, name)[0])

    @staticmethod
    def untouched(layer) -> tuple[str, ...]:
        """The layer's trainable variables of rank 2 or more, as ``"name shape"``."""
        return tuple(
            f"{name} {'x'.join(str(d) for d in variable.shape)}"
            for name, variable in registry.own_variables(layer).items()
            if variable.trainable and len(variable.shape) >= 2
        )

    structured_layers = registry.STRUCTURED_LAYERS
    structure_layout = staticmethod(registry.structure_layout)


ACCESS = Keras3Access()
