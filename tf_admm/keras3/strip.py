"""Back from a Keras 3 ADMM model to a plain Keras 3 model with the pruned weights."""

from __future__ import annotations

import keras

from tf_admm.keras3 import registry
from tf_admm.keras3.wrapper import AdmmWrapper

__all__ = ["strip"]


def strip(model: keras.Model) -> keras.Model:
    """A plain Keras 3 model of the same architecture with the effective (masked) weights.

    Pruned weights are exactly zero in the result, which holds no tf-admm class: it loads in
    plain Keras 3 without tf-admm. The ADMM model is left untouched. Called by
    :func:`tf_admm.strip` for Keras 3 models.

    Args:
      model: a Keras 3 ADMM model (from ``admm_wrap``), or any Functional/Sequential Keras 3
        model containing ADMM wrappers.

    Returns:
      A ``keras.Model`` (``keras.Sequential`` for a model made from a Sequential one).
    """
    pairs: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def unwrap(layer):
        inner = layer.layer if isinstance(layer, AdmmWrapper) else layer
        copy = inner.__class__.from_config(inner.get_config())
        pairs.append((layer, copy))
        return copy

    # A plain Functional view of the same graph: cloning the AdmmModel itself would give
    # another AdmmModel.
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # as admm_wrap built
    view = keras.Model(inputs=inputs, outputs=model.outputs, name=model.name)
    plain = keras.models.clone_model(view, clone_function=unwrap, recursive=True)
    for old, new in pairs:
        new.set_weights(
            old.stripped_weights() if isinstance(old, AdmmWrapper) else old.get_weights()
        )
    if getattr(model, "from_sequential", False):
        (shape,) = [tuple(x.shape) for x in plain.inputs]
        layers = [la for la in plain.layers if not isinstance(la, keras.layers.InputLayer)]
        layers = [keras.Input(batch_shape=shape, dtype=plain.inputs[0].dtype), *layers]
        plain = keras.Sequential(layers, name=model.name)
    assert not any(isinstance(la, AdmmWrapper) for la in registry.leaf_layers(plain))
    return plain
