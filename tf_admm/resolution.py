"""Resolving a spec against a model's layers: which weights are compressed, to what, and why not.

Written once for every Keras adapter: the adapter hands in a :class:`LayerAccess` that finds
layers and weights in its Keras generation's models (:data:`tf_admm.access.ACCESS` for tf_keras,
:data:`tf_admm.keras3.access.ACCESS` for Keras 3); everything here is plain Python over names,
shapes and NumPy values. The result is the :class:`~tf_admm.planning.Target` of every
compressed weight, the spec with a ``target_ratio`` budget allocated, and the readable
:class:`~tf_admm.planning.Plan`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
from absl import logging

from tf_admm import allocation, planning, projections
from tf_admm.allocation import Allocation
from tf_admm.planning import Target
from tf_admm.rule import Rule
from tf_admm.spec import Spec

__all__ = ["LayerAccess", "choose", "log", "resolve", "shared_weights"]


class LayerAccess(Protocol):
    """How a Keras adapter finds layers and weights in its models."""

    def leaf_layers(self, model) -> Iterable[Any]:
        """The model's layers, nested models flattened, in layer order."""

    def is_wrapped(self, layer) -> bool:
        """Whether the layer is already one of the adapter's ADMM wrappers."""

    def supports(self, layer) -> bool:
        """Whether the layer offers compressible weights by default."""

    def compressible_weights(self, layer) -> tuple[str, ...]:
        """Names of the weights compressed by default (raises ValueError if none)."""

    def find(self, layer, weight) -> str:
        """The name of the weight a rule's ``weights`` entry means (raises ValueError)."""

    def shape(self, layer, name: str) -> tuple[int, ...]:
        """The shape of a weight named as :meth:`find` returns it."""

    def values(self, layer, name: str) -> np.ndarray:
        """The current values of a weight, on the host."""

    def untouched(self, layer) -> tuple[str, ...]:
        """The layer's trainable weights of rank 2 or more, as ``"name shape"``."""

    def structure_layout(self, layer, name: str) -> str | None:
        """The GEMM-view layout (``"dense"`` or ``"depthwise"``) of a weight for structured
        pruning, or None if the adapter cannot prune that weight in structures."""

    @property
    def structured_layers(self) -> str:
        """Which weights structured pruning takes, for the error about one it cannot."""


Chosen = dict[int, tuple[Any, Rule, list[str], str]]


def choose(model, spec: Spec, access: LayerAccess) -> tuple[Chosen, dict[int, str]]:
    """({id(layer): (layer, rule, weight names, where the rule is)}, {id(layer): why not} for
    the layers no rule takes); validates every rule."""
    chosen: Chosen = {}
    left_out: dict[int, str] = {}
    used = [False] * len(spec.rules)
    layers = list(access.leaf_layers(model))
    for layer in layers:
        if access.is_wrapped(layer):
            raise ValueError(
                f"Layer '{layer.name}': Expected an unwrapped model; received a model that is "
                "already ADMM-wrapped (strip it first with tf_admm.strip)"
            )
        index, rule = spec.rule_for(layer.name, type(layer).__name__)
        if rule is None:
            left_out[id(layer)] = planning.NO_RULE
            continue
        if index is not None:
            used[index] = True
        elif not access.supports(layer):
            # The default rule applies only to layers that have compressible weights.
            left_out[id(layer)] = planning.unregistered(type(layer).__name__)
            continue
        where = f"rules[{index}] ({rule.describe()})" if index is not None else "default rule"
        try:
            if rule.weights:
                names = [access.find(layer, name) for name in rule.weights]
            else:
                names = list(access.compressible_weights(layer))
        except ValueError as error:
            if rule.weights:
                raise ValueError(f"Spec {where}, field 'weights': {error}") from None
            raise ValueError(f"Spec {where} matches layer '{layer.name}': {error}") from None
        if len(set(names)) != len(names):
            raise ValueError(
                f"Spec {where}, layer '{layer.name}': Expected distinct weights; received: "
                f"weights={list(rule.weights)!r}, which name {names!r}"
            )
        chosen[id(layer)] = (layer, rule, list(names), where)
    _check_rules_used(model, spec, layers, used)
    if not chosen:
        raise ValueError(f"Spec matches no compressible layer of model '{model.name}'")
    return chosen, left_out


def resolve(
    model, spec: Spec, access: LayerAccess
) -> tuple[dict[int, tuple[Target, ...]], Spec, planning.Plan]:
    """({id(layer): targets}, the spec with its ``target_ratio`` budget split into
    ``allocated``, the readable plan); validates every rule."""
    chosen, left_out = choose(model, spec, access)
    spec = _allocate(spec, chosen.values(), access)
    resolved: dict[int, tuple[Target, ...]] = {}
    for key, (layer, rule, names, where) in chosen.items():
        rho = rule.rho if rule.rho is not None else spec.rho.initial
        targets = []
        for name in names:
            shape = tuple(int(d) for d in access.shape(layer, name))
            structure = _structure(layer, name, rule, where, shape, access)
            size = math.prod(shape)
            groups = Target(name, 0.0, 0.0, **structure).groups(shape)
            if spec.shares_budget(rule):
                sparsity = 1.0 - spec.allocated[f"{layer.name}/{name}"] / size
            else:
                if rule.keep is not None and rule.keep > groups:
                    what = f"{structure['structure']} groups" if structure else "entries"
                    raise ValueError(
                        f"Spec {where}, layer '{layer.name}', weight '{name}': "
                        f"Expected keep <= the weight's {groups} {what}; received: keep={rule.keep}"
                    )
                sparsity = rule.sparsity_for(groups)
            kept = Target(name, sparsity, 0.0, **structure).kept(shape)
            if rule.quantizes and rule.num_levels > kept:
                given = f"clusters={rule.clusters}" if rule.clusters else f"bits={rule.bits}"
                raise ValueError(
                    f"Spec {where}, layer '{layer.name}', weight '{name}': Expected at most as "
                    f"many quantization levels as kept weights ({kept}); received: {given} "
                    f"({rule.num_levels} levels)"
                )
            targets.append(
                Target(
                    name,
                    sparsity,
                    float(rho),
                    bits=rule.bits,
                    scheme=None if rule.scheme is None else rule.scheme.value,
                    clusters=rule.clusters,
                    per_channel=rule.per_channel,
                    centroid_update=spec.centroid_update.value,
                    scale_update=spec.scale_update.value,
                    straight_through=spec.straight_through,
                    **structure,
                )
            )
        resolved[key] = tuple(targets)
    return resolved, spec, _readable(model, chosen, resolved, left_out, access)


def _structure(
    layer, name: str, rule: Rule, where: str, shape: tuple[int, ...], access: LayerAccess
) -> dict[str, Any]:
    """The structure fields of the Target for weight ``name`` of ``layer`` under ``rule``
    (empty when the rule prunes single weights); checks that the weight can have them."""
    if rule.structure is None:
        return {}
    culprit = f"Spec {where}, layer '{layer.name}' ({type(layer).__name__}), weight '{name}'"
    layout = access.structure_layout(layer, name)
    if layout is None:
        raise ValueError(
            f"{culprit}: Expected a weight with filters, input channels and a GEMM view "
            f"({access.structured_layers}); received: structure={rule.structure.value!r}"
        )
    fields = dict(structure=rule.structure.value, layout=layout, block=rule.block)
    fields.update(n=rule.n, m=rule.m)
    try:
        if rule.structure is projections.Structure.N_OF_M:
            projections.structured.check_n_of_m(shape, rule.n, rule.m, layout)
        else:
            projections.group_count(shape, rule.structure, layout, rule.block)
    except ValueError as error:
        raise ValueError(f"{culprit}: {error}") from None
    return fields


def _readable(model, chosen: Chosen, targets, left_out, access: LayerAccess) -> planning.Plan:
    rows = []
    for layer in access.leaf_layers(model):
        if not layer.weights:
            continue
        size = sum(math.prod(int(d) for d in w.shape) for w in layer.weights)
        kind = type(layer).__name__
        if id(layer) in left_out:
            row = planning.LayerPlan(layer.name, kind, size, reason=left_out[id(layer)])
            rows.append(dataclasses.replace(row, untouched=access.untouched(layer)))
            continue
        _, _, _, where = chosen[id(layer)]
        weights = []
        for target in targets[id(layer)]:
            shape = tuple(int(d) for d in access.shape(layer, target.weight))
            weights.append(planning.WeightPlan(target=target, shape=shape, kept=target.kept(shape)))
        reason = None if any(w.compresses for w in weights) else planning.KEEPS_ALL
        rows.append(planning.LayerPlan(layer.name, kind, size, where, tuple(weights), reason))
    return planning.Plan(model.name, tuple(rows))


def log(readable: planning.Plan) -> None:
    """Logs the plan at INFO and warns about every layer left alone that holds matrices."""
    logging.info("%s", readable)
    for row in readable.left_out:
        if row.warn:
            logging.warning(
                "Layer '%s' (%s) holds trainable weights that tf_admm will not compress (%s): %s%s",
                row.layer,
                row.layer_type,
                ", ".join(row.untouched),
                row.reason,
                f"; {planning.OPT_IN}" if row.reason != planning.NO_RULE else "",
            )


def shared_weights(spec: Spec, chosen, access: LayerAccess) -> dict[str, tuple[Any, str]]:
    """``{"layer/weight": (layer, name)}`` for the chosen weights that share ``target_ratio``."""
    return {
        f"{layer.name}/{name}": (layer, name)
        for layer, rule, names, _ in chosen
        if spec.shares_budget(rule)
        for name in names
    }


def _allocate(spec: Spec, chosen, access: LayerAccess) -> Spec:
    """``spec`` with ``allocated`` filled in for the weights that share ``target_ratio``."""
    if spec.target_ratio is None:
        return spec
    shared = shared_weights(spec, chosen, access)
    if not shared:
        raise ValueError(
            f"Spec target_ratio={spec.target_ratio!r}: Expected layers to share it (rules "
            "without sparsity, ratio or keep of their own); received none: every rule that "
            "matches gives its own pruning target"
        )
    sizes = {key: math.prod(access.shape(*where)) for key, where in shared.items()}
    if spec.allocated is not None:
        given = dict(spec.allocated)
        if set(given) != set(shared):
            raise ValueError(
                f"Spec allocated: Expected counts for exactly the weights sharing target_ratio "
                f"{sorted(shared)}; received counts for {sorted(given)}"
            )
        for key, kept in given.items():
            if kept > sizes[key]:
                raise ValueError(
                    f"Spec allocated[{key!r}]: Expected at most the weight's {sizes[key]} "
                    f"entries; received: {kept}"
                )
        return spec
    if spec.allocation is Allocation.SENSITIVITY:
        raise ValueError(
            "Spec allocation='sensitivity': Expected allocated counts, which need validation "
            "data: use tf_admm.sensitivity_allocation(model, spec, evaluate) and wrap with the "
            "spec it returns"
        )
    total = sum(sizes.values())
    keep = allocation.keep_for_ratio(total, spec.target_ratio, layers=len(shared))
    counts = allocation.allocate(
        {key: access.values(*where) for key, where in shared.items()}, keep, spec.allocation.value
    )
    logging.info(
        "Allocation (%s) of %d kept weights of %d (%.1fx): %s",
        spec.allocation.value,
        keep,
        total,
        total / keep,
        ", ".join(f"{k} {c}" for k, c in counts.items()),
    )
    return dataclasses.replace(spec, allocated=counts)


def _check_rules_used(model, spec: Spec, layers, used: list[bool]) -> None:
    for index, rule in enumerate(spec.rules):
        if not used[index]:
            shadowed = [la for la in layers if rule.matches(la.name, type(la).__name__)]
            if shadowed:
                taken = {la.name: spec.rule_for(la.name, type(la).__name__)[0] for la in shadowed}
                raise ValueError(
                    f"Spec rules[{index}] ({rule.describe()}) matches only layers that earlier "
                    "rules already take (the first matching rule wins): "
                    + ", ".join(f"'{name}' by rules[{i}]" for name, i in taken.items())
                    + "; move it before them or narrow the earlier rule"
                )
            candidates = [f"{la.name} ({type(la).__name__})" for la in layers]
            raise ValueError(
                f"Spec rules[{index}] ({rule.describe()}) matches no layer of model "
                f"'{model.name}'; its layers are: {', '.join(candidates)}"
            )
