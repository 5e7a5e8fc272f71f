"""Back from an ADMM model to a plain Keras model with the compressed weights."""

from __future__ import annotations

from tf_admm import cloning, compat, phases, subclassed
from tf_admm.compat import keras
from tf_admm.wrapper import AdmmWrapper

__all__ = ["strip"]


def strip(model: keras.Model) -> keras.Model:
    """A plain ``tf_keras`` model of the same architecture with the effective weights.

    Pruned weights are exactly zero in the result. The ADMM model is left untouched.

    Args:
      model: an ADMM model (from ``admm_wrap``), or any built functional/Sequential model
        containing ADMM wrappers.

    Returns:
      A ``keras.Model`` (or ``keras.Sequential``) without any tf-admm layer; for an ADMM model
      made from a subclassed model, an instance of the user's class. A Keras 3 ADMM model
      gives a plain Keras 3 model (:func:`tf_admm.keras3.strip`).
    """
    phases.warn_if_unpruned(model)
    adapter = compat.keras3_adapter(model)
    if adapter is not None:
        return adapter.strip(model)
    if getattr(model, "subclassed", False):
        return subclassed.strip(model.wrapped_model, _strip_graph)
    if cloning.is_subclassed(model):
        return subclassed.strip(model, _strip_graph)
    return _strip_graph(model)


def _strip_graph(model: keras.Model) -> keras.Model:
    def unwrap(layer):
        inner = layer.layer if isinstance(layer, AdmmWrapper) else layer
        return cloning.copy_layer(inner)

    def fill(old, new):
        new.set_weights(
            old.stripped_weights() if isinstance(old, AdmmWrapper) else old.get_weights()
        )

    plain = cloning.rebuild(model, unwrap, fill)
    if getattr(model, "from_sequential", False):
        plain = keras.Sequential(plain.layers, name=plain.name)
    return plain
