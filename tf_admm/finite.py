"""Finding NaN and infinite values in an ADMM model: :class:`NonFiniteError` and its culprits.

:class:`~tf_admm.training.AdmmUpdate` checks the loss and the variables listed by
:func:`named_float_variables` (a compressed weight's W, Z, U, rho and levels by their ADMM
symbols, every other floating-point weight by its name) and raises :class:`NonFiniteError`
naming each :func:`culprits` entry, before a checkpointing callback can save the bad state.
The Keras 3 callback raises the same error.
"""

from __future__ import annotations

import math

import numpy as np

from tf_admm import cloning
from tf_admm.compat import keras, tf
from tf_admm.wrapper import AdmmWrapper

__all__ = ["NonFiniteError", "culprits", "named_float_variables"]


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss or variable; raised by :class:`AdmmUpdate`.

    Attributes:
      epoch: the Keras epoch (0-based) in which it was found.
      step: the model's ADMM step count (``admm_step``) when it was found.
      loss: the epoch's mean training loss so far, if known.
      culprits: ``(layer, variable, nan_count, inf_count, size)`` for every non-finite variable,
        where ``variable`` reads like ``"U (kernel_dual)"``: W, Z, U, rho and levels are the
        ADMM symbols of a compressed weight; other weights go by their own names.
    """

    def __init__(
        self,
        epoch: int,
        step: int,
        loss: float | None,
        culprits: list[tuple[str, str, int, int, int]],
    ):
        self.epoch, self.step, self.loss, self.culprits = epoch, step, loss, culprits
        found = "; ".join(
            f"layer '{layer}' {variable}: {nan} NaN and {inf} Inf of {size}"
            for layer, variable, nan, inf, size in culprits
        )
        received = [f"loss={loss}"] if loss is not None and not math.isfinite(loss) else []
        received += [found] if found else []
        super().__init__(
            f"Training stopped at epoch {epoch} (ADMM step {step}): Expected a finite loss and "
            f"finite weights and ADMM variables; received: {'; '.join(received)}. No checkpoint "
            "was written after this was found: the last one (e.g. the BackupAndRestore backup) "
            "holds the last good state. Lower the learning rate or rho, or look for bad inputs"
        )

    def __reduce__(self):
        return type(self), (self.epoch, self.step, self.loss, self.culprits)


# The ADMM symbols of a slot's variables, in the order the error message lists them.
_SYMBOLS = (
    ("W", "variable"),
    ("Z", "auxiliary"),
    ("U", "dual"),
    ("rho", "rho"),
    ("levels", "levels"),
)


def _short_name(variable: tf.Variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def named_float_variables(model: keras.Model) -> list[tuple[str, str, tf.Variable]]:
    """(layer, label, variable) for every floating-point weight of ``model``, ADMM ones first."""
    named: list[tuple[str, str, tf.Variable]] = []
    for layer in cloning.leaf_layers(model):
        name, seen = layer.name, set()
        if isinstance(layer, AdmmWrapper):
            name = layer.layer.name
            for slot in layer.slots:
                for symbol, attribute in _SYMBOLS:
                    variable = getattr(slot, attribute)
                    if variable is not None:
                        named.append((name, f"{symbol} ({_short_name(variable)})", variable))
                        seen.add(id(variable))
        for variable in layer.weights:
            if id(variable) not in seen and variable.dtype.is_floating:
                named.append((name, _short_name(variable), variable))
                seen.add(id(variable))
    return named


@tf.function
def _finite_flags(variables):
    return tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in variables])


def culprits(named: list[tuple[str, str, tf.Variable]]) -> list[tuple[str, str, int, int, int]]:
    """``(layer, label, nan_count, inf_count, size)`` for every variable of ``named`` (as from
    :func:`named_float_variables`) that holds a NaN or an infinity; one device check for all."""
    if not named:
        return []
    flags = _finite_flags([v for _, _, v in named]).numpy()
    found = []
    for (layer, label, variable), finite in zip(named, flags):
        if not finite:
            value = variable.numpy()
            found.append(
                (layer, label, int(np.isnan(value).sum()), int(np.isinf(value).sum()), value.size)
            )
    return found
