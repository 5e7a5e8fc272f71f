"""Sensitivity allocation: split a shared pruning budget by measured validation losses.

Each weight that shares ``Spec.target_ratio`` is magnitude-pruned alone (the others stay dense)
to a range of kept counts, and the model is evaluated each time; :func:`allocation.
allocate_by_sensitivity` then chooses the counts whose summed loss increase is smallest within
the budget. Measure on a validation split, never on the test set.

tf_keras and Keras 3 models (TensorFlow or JAX backend) alike: the probe prunes a copy made by
the model's adapter, on host copies of the weights with :func:`tf_admm.projections.
project_top_k_numpy`, so the same weights give the same curves and split on every stack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from absl import logging

from tf_admm import allocation, cloning, compat, projections, training
from tf_admm.compat import keras
from tf_admm.spec import Allocation, Spec

__all__ = ["sensitivity_allocation", "sensitivity_curves"]


def _copy(model):
    """A copy of ``model`` with variables of its own, from the model's adapter."""
    adapter = compat.keras3_adapter(model)
    if adapter is not None:
        return adapter.copy(model)
    return cloning.rebuild(model, cloning.copy_layer, cloning.copy_weights)


def sensitivity_curves(
    model: keras.Model,
    spec: Spec,
    evaluate: Callable[[keras.Model], float],
    points: int = 12,
) -> dict[str, list[tuple[int, float]]]:
    """Validation-loss increase of each shared weight pruned alone to ``points`` kept counts.

    Args:
      model: the trained dense model, Sequential or Functional, tf_keras or Keras 3 (left
        untouched: a copy is pruned, and each weight of the copy is put back exactly after its
        probe).
      spec: a spec with ``target_ratio``.
      evaluate: ``evaluate(model) -> loss`` on validation data (lower is better); it is called
        ``1 + points * weights`` times with the same copy of ``model``.
      points: kept counts per weight, spaced geometrically from 1 to all.

    Returns:
      ``{"layer/weight": [(kept, loss - dense loss), ...]}``.
    """
    copy = _copy(model)
    shared = training.shared_weights(copy, spec)
    if not shared:
        raise ValueError("Spec: Expected weights that share target_ratio; received none")
    base = float(evaluate(copy))
    curves: dict[str, list[tuple[int, float]]] = {}
    for key, variable in shared.items():
        # A host copy (np.array copies): the variable's buffer changes under the probe.
        original = np.array(variable.numpy())
        size = original.size
        counts = np.unique(np.geomspace(1, size, points).round().astype(np.int64))
        curve = []
        for kept in counts[:-1]:  # Keeping everything costs nothing.
            variable.assign(projections.project_top_k_numpy(original, int(kept)))
            curve.append((int(kept), float(evaluate(copy)) - base))
        variable.assign(original)
        curve.append((int(size), 0.0))
        curves[key] = curve
        logging.info(
            "Sensitivity of %s: %s",
            key,
            ", ".join(f"{k}: {v:+.3g}" for k, v in curve),
        )
    return curves


def sensitivity_allocation(
    model: keras.Model,
    spec: Spec,
    evaluate: Callable[[keras.Model], float],
    points: int = 12,
) -> Spec:
    """``spec`` with ``allocated`` chosen from measured sensitivities (see module docstring).

    Example:
      >>> def val_loss(m):
      ...     return float(loss_fn(y_val, m.predict(x_val, verbose=0)))
      >>> spec = tf_admm.sensitivity_allocation(dense, tf_admm.Spec(target_ratio=167), val_loss)
      >>> admm = tf_admm.admm_wrap(dense, spec)   # uses spec.allocated as given

    Args:
      model: the trained dense model, tf_keras or Keras 3 (left untouched).
      spec: a spec with ``target_ratio`` (any ``allocation``; the result says ``sensitivity``).
      evaluate: ``evaluate(model) -> validation loss``.
      points: kept counts measured per weight.

    Returns:
      The spec with ``allocation="sensitivity"`` and ``allocated`` filled in.
    """
    if not isinstance(spec, Spec):
        spec = Spec.from_dict(spec)
    if spec.target_ratio is None:
        raise ValueError("Spec: Expected a target_ratio to allocate; received target_ratio=None")
    curves = sensitivity_curves(model, spec, evaluate, points)
    sizes = {key: max(k for k, _ in curve) for key, curve in curves.items()}
    keep = allocation.keep_for_ratio(sum(sizes.values()), spec.target_ratio, layers=len(sizes))
    counts = allocation.allocate_by_sensitivity(sizes, curves, keep)
    logging.info("Sensitivity allocation of %d kept weights: %s", keep, counts)
    flat = allocation.saturated(curves, counts)
    if flat:
        logging.warning(
            "Sensitivity allocation at %gx: %s. Pruned alone to these counts the layers "
            "already cost nearly all they can, so the summed one-layer curves no longer rank "
            "them and the split may starve a layer; allocation='lamp' does not measure curves.",
            spec.target_ratio,
            "; ".join(
                f"{name} keeps {counts[name]:,} at a loss increase of {at:+.3g}, "
                f"{100 * at / worst:.0f}% of its largest ({worst:+.3g})"
                for name, (at, worst) in flat.items()
            ),
        )
    return dataclasses.replace(spec, allocation=Allocation.SENSITIVITY, allocated=counts)
