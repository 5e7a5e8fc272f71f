"""What a spec will do to a model, layer by layer, before any training: the plan.

:func:`tf_admm.plan` resolves a spec against a model and returns a :class:`Plan`: one
:class:`LayerPlan` per layer that holds weights, saying which weights will be compressed and to
what (kept count, sparsity, bits, initial rho), or why the layer is left alone. ``admm_wrap``
logs the same plan at INFO and warns about every layer it leaves alone that holds trainable
matrices or larger tensors (see :attr:`LayerPlan.warn`). This module only holds and prints the
plan; resolving the spec against a Keras model is the Keras adapter's job.

Example:
  >>> print(tf_admm.plan(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.8))))

prints a summary line and one row per weight (the README shows one).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tf_admm.projections import levels as levels_projection
from tf_admm.projections import structured
from tf_admm.projections.sparsity import keep_count
from tf_admm.rule import Scheme
from tf_admm.spec import CentroidUpdate

__all__ = ["LayerPlan", "Plan", "Target", "WeightPlan"]

# Why a layer with weights is left alone (LayerPlan.reason).
NO_RULE = "no rule matches it and the spec has no default rule"
KEEPS_ALL = "its rule keeps every weight (sparsity 0) and sets no bits"


def unregistered(layer_type: str) -> str:
    return f"no compressible weights registered for {layer_type}"


# How to opt a layer in, for the warning about a layer left alone.
OPT_IN = (
    "the default rule takes only registered layer types and layers implementing "
    "get_admm_weights() (see tf_admm.CompressibleLayer); a rule naming the layer with "
    "weights=[...] compresses any of its variables"
)


@dataclasses.dataclass(frozen=True)
class Target:
    """One compressed weight: attribute path, pruning and quantization targets, initial rho.

    A structured target (``structure`` set) prunes whole groups of the weight read through its
    GEMM view in ``layout`` (see :mod:`tf_admm.projections.structured`); its ``sparsity`` is the
    fraction of groups removed (``1 - n / m`` for ``n_of_m``).
    """

    weight: str
    sparsity: float
    rho: float
    bits: int | None = None
    scheme: str | None = None
    clusters: int | None = None
    per_channel: bool = False
    centroid_update: str = CentroidUpdate.SUM.value
    scale_update: str = CentroidUpdate.NONE.value
    straight_through: bool = False
    structure: str | None = None
    layout: str | None = None
    block: tuple[int, int] | None = None
    n: int | None = None
    m: int | None = None

    def __post_init__(self):
        # A config read back from JSON holds the block as a list.
        if self.block is not None:
            object.__setattr__(self, "block", tuple(int(b) for b in self.block))

    def groups(self, shape) -> int:
        """Groups of a weight of ``shape``: its entries when unstructured, its runs of ``m``
        for ``n_of_m``."""
        size = math.prod(int(d) for d in shape)
        if self.structure is None:
            return size
        if self.structure == structured.Structure.N_OF_M.value:
            return size // self.m
        return structured.group_count(shape, self.structure, self.layout, self.block)

    def kept_groups(self, shape) -> int:
        """Groups kept by the hard projection (entries when unstructured)."""
        if self.structure == structured.Structure.N_OF_M.value:
            return self.groups(shape)  # Every run keeps n.
        return keep_count(self.groups(shape), self.sparsity)

    def kept(self, shape) -> int:
        """Entries kept by the hard projection."""
        size = math.prod(int(d) for d in shape)
        if self.structure is None:
            return self.kept_groups(shape)
        if self.structure == structured.Structure.N_OF_M.value:
            return size // self.m * self.n
        return self.kept_groups(shape) * (size // self.groups(shape))

    def structure_mask(self, values, keep: int):
        """The mask of the ``keep`` groups of ``values`` this structured target keeps
        (:func:`tf_admm.projections.structured.structured_mask` with the target's fields)."""
        return structured.structured_mask(
            values, self.structure, keep, layout=self.layout, block=self.block, n=self.n, m=self.m
        )

    def describe_structure(self, shape) -> str:
        """``-``, ``"2:4"``, ``"filter 6/16"`` or ``"block 1x4 40/96"`` (groups kept/all)."""
        if self.structure is None:
            return "-"
        if self.structure == structured.Structure.N_OF_M.value:
            return f"{self.n}:{self.m}"
        name = self.structure
        if self.block is not None:
            name += f" {self.block[0]}x{self.block[1]}"
        return f"{name} {self.kept_groups(shape):,}/{self.groups(shape):,}"

    @property
    def prunes(self) -> bool:
        """Whether the weight is pruned (sparsity > 0)."""
        return self.sparsity > 0

    @property
    def quantizes(self) -> bool:
        """Whether the weight is quantized (a scheme is set)."""
        return self.scheme is not None

    @property
    def num_levels(self) -> int:
        """Nonzero values a kept weight may take: ``clusters``, else ``2**bits``."""
        return self.clusters if self.clusters is not None else 2**self.bits

    @property
    def level_update(self) -> str:
        """How the shared levels train once weights are locked on them: ``centroid_update``
        for k-means centroids, ``scale_update`` for a grid's scale (a :class:`CentroidUpdate`
        value; ``"none"``: the levels are fixed)."""
        if self.scheme == Scheme.KMEANS.value:
            return self.centroid_update
        return self.scale_update

    def grid_constraint(self, xp=None):
        """For uniform or power-of-two levels that train (``scale_update``), the constraint
        that puts them back on their grid after every optimizer step
        (:func:`tf_admm.projections.onto_grid` in the array namespace ``xp``, default
        TensorFlow's); None for fixed levels, k-means centroids or no quantization."""
        grid = self.scheme not in (None, Scheme.KMEANS.value)
        if not grid or self.scale_update == CentroidUpdate.NONE.value:
            return None
        return lambda levels: levels_projection.onto_grid(levels, self.bits, self.scheme, xp)

    @classmethod
    def from_config(cls, config: Any, layer_name: str) -> Target:
        """A Target from :meth:`get_config`'s dict (as a saved model's config holds it), or
        ``config`` itself when it already is one; ``layer_name`` names the layer in the error."""
        if isinstance(config, cls):
            return config
        fields = {f.name for f in dataclasses.fields(cls)}
        if (
            not isinstance(config, dict)
            or not {"weight", "sparsity", "rho"} <= set(config)
            or (set(config) - fields)
        ):
            raise ValueError(
                f"Layer '{layer_name}': Expected each target to be a Target or a dict with keys "
                f"among {sorted(fields)} (weight, sparsity and rho required); received: {config!r}"
            )
        return cls(**config)

    def get_config(self) -> dict[str, Any]:
        """The fields as a flat dict; ``Target(**config)`` (or :meth:`from_config`) rebuilds it."""
        config = dataclasses.asdict(self)
        if self.block is not None:
            config["block"] = list(self.block)
        return config

    def describe_quantization(self) -> str:
        """``-``, ``"<n> clusters"`` or ``"<bits> (<scheme>[, per channel])"``."""
        if self.scheme is None:
            return "-"
        if self.clusters is not None:
            return f"{self.clusters} clusters"
        channel = ", per channel" if self.per_channel else ""
        return f"{self.bits} ({self.scheme}{channel})"


@dataclasses.dataclass(frozen=True)
class WeightPlan:
    """One weight that a rule targets: its target, shape and the entries it keeps.

    Attributes:
      target: what the rule asks of the weight (sparsity, bits, rho, ...).
      shape: its shape.
      kept: entries kept after the hard projection (all of them when the sparsity is 0).
    """

    target: Target
    shape: tuple[int, ...]
    kept: int

    @property
    def size(self) -> int:
        """Entries of the weight: the product of its shape."""
        return math.prod(self.shape)

    @property
    def compresses(self) -> bool:
        """Whether the target prunes or quantizes the weight."""
        return self.target.prunes or self.target.quantizes

    @property
    def sparsity(self) -> float:
        """Fraction of the weight's entries pruned: the target's sparsity, except for a
        structured target, whose sparsity counts groups (``n_of_m``: runs, none removed)."""
        if self.target.structure is None:
            return self.target.sparsity
        return 1.0 - self.kept / self.size


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """What happens to one layer that holds weights.

    Attributes:
      layer: the layer's name.
      layer_type: its class name.
      size: entries of all its weights (trainable or not).
      rule: where the rule that takes it is (``"rules[0] (name='fc')"``, ``"default rule"``),
        or None if none does.
      weights: the weights its rule targets (empty if none).
      reason: why it is not compressed; None if it is.
      untouched: for a layer left alone, its trainable weights of rank 2 or more that nothing
        compresses, as ``"name shape"`` (e.g. ``"lstm_cell/kernel 24x20"``).
    """

    layer: str
    layer_type: str
    size: int
    rule: str | None = None
    weights: tuple[WeightPlan, ...] = ()
    reason: str | None = None
    untouched: tuple[str, ...] = ()

    @property
    def compressed(self) -> bool:
        """Whether the layer is compressed (it has no ``reason`` to be left alone)."""
        return self.reason is None

    @property
    def warn(self) -> bool:
        """Whether ``admm_wrap`` warns about this layer: it is left alone although it holds
        trainable matrices or larger tensors. Vectors (biases, BatchNormalization's scales and
        offsets) are not worth a warning; the plan still lists them."""
        return bool(self.untouched)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Per layer with weights, what a spec will compress in a model; ``str()`` prints it.

    Attributes:
      model: the model's name.
      layers: one entry per layer that holds weights, in layer order.
      groups: one line per group of filter-pruned layers tied by a residual join (they keep
        the same filters; see :mod:`tf_admm.grouping`).
    """

    model: str
    layers: tuple[LayerPlan, ...]
    groups: tuple[str, ...] = ()

    @property
    def compressed(self) -> tuple[LayerPlan, ...]:
        """The layers that are compressed, in layer order."""
        return tuple(layer for layer in self.layers if layer.compressed)

    @property
    def left_out(self) -> tuple[LayerPlan, ...]:
        """The layers that hold weights but are left alone, in layer order."""
        return tuple(layer for layer in self.layers if not layer.compressed)

    def summary(self) -> str:
        """One line: layers compressed, targeted weights kept, weights left as they are."""
        targeted = [w for layer in self.compressed for w in layer.weights]
        size = sum(w.size for w in targeted)
        kept = sum(w.kept for w in targeted)
        ratio = f" ({size / kept:.1f}x)" if kept else ""
        untouched = sum(layer.size for layer in self.layers) - size
        return (
            f"Plan for model '{self.model}': {len(self.compressed)} of {len(self.layers)} layers "
            f"with weights compressed; {kept:,} of {size:,} targeted weights kept{ratio}; "
            f"{untouched:,} other weights stay as they are"
        )

    def __str__(self) -> str:
        # The structure column (groups kept) appears only when some weight is structured.
        structured_plan = any(w.target.structure for layer in self.layers for w in layer.weights)
        header = ("layer", "type", "weight", "shape", "kept", "sparsity", "bits", "rho", "rule")
        if structured_plan:
            header = header[:4] + ("structure",) + header[4:]
        lines = [header]
        for layer in self.layers:
            for weight in layer.weights:
                cells = [
                    layer.layer,
                    layer.layer_type,
                    weight.target.weight,
                    "x".join(str(d) for d in weight.shape),
                    f"{weight.kept:,}/{weight.size:,}",
                    f"{100 * weight.sparsity:.2f}%",
                    weight.target.describe_quantization(),
                    f"{weight.target.rho:.3g}",
                    layer.rule + ("" if layer.compressed else f"; not compressed: {layer.reason}"),
                ]
                if structured_plan:
                    cells.insert(4, weight.target.describe_structure(weight.shape))
                lines.append(tuple(cells))
            if not layer.weights:
                note = f"not compressed: {layer.reason}"
                cells = [layer.layer, layer.layer_type, "-", "-", f"-/{layer.size:,}"]
                cells += ["-", "-", "-", note]
                if structured_plan:
                    cells.insert(4, "-")
                lines.append(tuple(cells))
        widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
        numeric = {5, 6, 8} if structured_plan else {4, 5, 7}
        rendered = [
            "  ".join(
                [
                    cell.rjust(width) if column in numeric else cell.ljust(width)
                    for column, (cell, width) in enumerate(zip(line, widths))
                ]
                + [line[-1]]
            )
            for line in lines
        ]
        rendered.insert(1, "-" * max(len(r) for r in rendered[:1]))
        return "\n".join([self.summary(), *rendered, *self.groups])
