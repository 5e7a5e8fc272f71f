"""Planning in :mod:`bench.combined`: the per-layer targets of each point (the config, or its
kept fractions scaled to another ratio) and the epochs each library gets."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import tf_admm
from tf_admm.compat import keras

__all__ = ["Budget", "LayerPlan", "allocate", "budget", "layer_plans", "point_spec"]


def allocate(
    ratio: float, sizes: Mapping[str, int], profile: Mapping[str, float]
) -> dict[str, int]:
    """Kept weights per layer for an overall ``ratio``, shaped like ``profile``.

    Every layer keeps ``min(size, scale * (1 - profile sparsity) * size)`` weights (rounded,
    at least 1), with the one ``scale`` that makes the total ``sum(sizes) / ratio``: layers
    that would keep more than all their weights keep all, and the others share the rest in the
    profile's proportions.

    Args:
      ratio: overall compression ratio, >= 1.
      sizes: {layer: number of weights}.
      profile: {layer: sparsity} with the same keys, each in [0, 1).

    Returns:
      {layer: kept weights}.

    Raises:
      ValueError: if the keys differ or ``ratio`` < 1.
    """
    if set(sizes) != set(profile):
        raise ValueError(
            f"Expected a profile for every layer {sorted(sizes)}; received: {sorted(profile)}"
        )
    if not ratio >= 1:
        raise ValueError(f"Expected ratio >= 1; received: ratio={ratio}")
    kept_fraction = {name: 1.0 - float(profile[name]) for name in sizes}
    wanted = sum(sizes.values()) / ratio
    full: set[str] = set()
    while True:
        free = [n for n in sizes if n not in full]
        budget = wanted - sum(sizes[n] for n in full)
        scale = budget / sum(kept_fraction[n] * sizes[n] for n in free)
        capped = {n for n in free if kept_fraction[n] * scale >= 1.0}
        if not capped:
            break
        full |= capped
    return {
        name: sizes[name]
        if name in full
        else min(sizes[name], max(1, round(kept_fraction[name] * scale * sizes[name])))
        for name in sizes
    }


# ----------------------------------------------------------------------------------------------
# Plan: budget, per-layer targets, points
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Budget:
    """Epochs of every stage; both libraries train ``epochs`` in all.

    Attributes:
      epochs: the budget.
      scheduled: tf-admm's scheduled rounds (pruning ADMM to the last locking round), in epochs.
      final: tf-admm's epochs after them (all weights on their levels).
      prune_ramp: tfmot's sparsity ramp (the config's pruning stages: their ADMM rounds and
        the retraining rounds between them).
      prune_finetune: tfmot's fine-tuning at full sparsity (the config's retraining rounds after
        the last stage).
      cluster: tfmot's clustering epochs.
      pcqat: tfmot's PCQAT epochs.
    """

    epochs: int
    scheduled: int
    final: int
    prune_ramp: int
    prune_finetune: int
    cluster: int
    pcqat: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def budget(spec: tf_admm.Spec, final_epochs: int, pcqat_epochs: int) -> Budget:
    """Splits the epoch budget of ``spec`` (scheduled rounds + ``final_epochs``) into stages.

    Raises:
      ValueError: if tfmot would have no clustering epoch left.
    """
    every = spec.update_every
    scheduled = spec.scheduled_rounds() * every
    epochs = scheduled + final_epochs
    # tfmot's ramp spans all of tf-admm's pruning stages (ADMM and the retraining between).
    ramp = (spec.stage_starts()[-1] + spec.admm_rounds) * every
    finetune = spec.retrain_rounds * every
    cluster = epochs - ramp - finetune - pcqat_epochs
    if cluster < 1:
        raise ValueError(
            "Expected at least one clustering epoch for tfmot (scheduled rounds + final_epochs - "
            "pruning rounds - retraining rounds - pcqat_epochs >= 1); received: "
            f"{scheduled} + {final_epochs} - {ramp} - {finetune} - {pcqat_epochs} = {cluster}"
        )
    return Budget(epochs, scheduled, final_epochs, ramp, finetune, cluster, pcqat_epochs)


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """What one layer's rule asks for.

    Attributes:
      name: layer name.
      size: kernel weights.
      rule: the config's rule for the layer.
    """

    name: str
    size: int
    rule: tf_admm.Rule

    @property
    def levels(self) -> int | None:
        """Nonzero values a kept weight may take (``2**bits`` or clusters), None if float."""
        return self.rule.num_levels

    @property
    def bits(self) -> int | None:
        """Configured bits per kept weight (clusters: the bits of their count)."""
        if self.rule.bits is not None:
            return self.rule.bits
        return None if self.levels is None else tf_admm.storage.bits_for_levels(self.levels)


def layer_plans(model: keras.Model, spec: tf_admm.Spec) -> list[LayerPlan]:
    """The rule of every compressible kernel of ``model`` that ``spec`` compresses."""
    plans = []
    for row in tf_admm.report.compression_table(model):
        if row.weight != "kernel":
            continue
        layer = model.get_layer(row.layer)
        _, rule = spec.rule_for(layer.name, type(layer).__name__)
        if rule is not None:
            plans.append(LayerPlan(layer.name, row.weights, rule))
    return plans


def point_spec(spec: tf_admm.Spec, plans, kept: Mapping[str, int]) -> tf_admm.Spec:
    """``spec`` with one rule per layer that keeps ``kept[layer]`` weights, quantization as is."""
    rules = []
    for plan in plans:
        config = plan.rule.get_config()
        for field in ("name", "pattern", "layer_type", "ratio", "sparsity"):
            config.pop(field, None)
        if plan.rule.prunes:
            config["sparsity"] = 1.0 - kept[plan.name] / plan.size
        rules.append(tf_admm.Rule.from_config({"name": plan.name, **config}))
    return dataclasses.replace(spec, rules=tuple(rules), default=None)
