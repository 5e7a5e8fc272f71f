"""Per-layer compression figures of a Keras model, for tables and storage accounting.

The Keras side of :mod:`tf_admm.storage`: it reads the compressible weights of a (stripped or
wrapped) model and hands plain arrays to the storage math.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tf_admm import cloning, grid, registry, storage
from tf_admm.compat import keras, keras3
from tf_admm.keras3 import registry as keras3_registry
from tf_admm.keras3.wrapper import AdmmWrapper as Keras3Wrapper
from tf_admm.wrapper import AdmmWrapper

__all__ = [
    "LayerCompression",
    "compression_table",
    "format_compression_table",
    "storage_report",
    "value_coding",
]


@dataclasses.dataclass(frozen=True)
class LayerCompression:
    """Pruning figures of one weight tensor."""

    layer: str
    weight: str
    weights: int
    nonzeros: int

    @property
    def sparsity(self) -> float:
        """Pruned entries over all entries: the fraction set to zero."""
        return 1.0 - self.nonzeros / self.weights

    @property
    def ratio(self) -> float:
        """All entries over nonzero entries (``inf`` if every entry is zero)."""
        return self.weights / self.nonzeros if self.nonzeros else float("inf")

    def to_dict(self) -> dict:
        """The fields plus ``sparsity`` and ``ratio``, for JSON."""
        return {**dataclasses.asdict(self), "sparsity": self.sparsity, "ratio": self.ratio}


def _keras3_arrays(model):
    for layer in keras3_registry.leaf_layers(model):
        if isinstance(layer, Keras3Wrapper):
            for slot in layer.slots:
                yield layer.layer.name, slot.target.weight, slot.host_effective()
        elif keras3_registry.supports(layer) and layer.built:
            for name in keras3_registry.compressible_weights(layer):
                variable, _ = keras3_registry.resolve(layer, name)
                yield layer.name, name, keras3.ops.convert_to_numpy(variable)


def _compressible_arrays(model: keras.Model):
    if isinstance(model, keras3.Model):  # Keras 3 (``import keras``), on any backend.
        yield from _keras3_arrays(model)
        return
    for layer in cloning.leaf_layers(model):
        if isinstance(layer, AdmmWrapper):
            for slot in layer.slots:
                yield layer.layer.name, slot.target.weight, slot.effective().numpy()
        elif registry.supports(layer) and layer.built:
            for name in registry.compressible_weights(layer):
                yield layer.name, name, registry.variable(layer, name).numpy()


def compression_table(model: keras.Model) -> list[LayerCompression]:
    """Weights and nonzeros of every compressible weight tensor of ``model``."""
    return [
        LayerCompression(layer, weight, int(value.size), int(np.count_nonzero(value)))
        for layer, weight, value in _compressible_arrays(model)
    ]


def format_compression_table(rows: list[LayerCompression]) -> str:
    """Text table: layer, weights, nonzeros, sparsity, compression; with a total row."""
    total_weights = sum(r.weights for r in rows)
    total_nonzeros = sum(r.nonzeros for r in rows)
    lines = [("layer", "weights", "nonzeros", "sparsity", "compression")]
    for r in rows:
        name = r.layer if r.weight in ("kernel", "embeddings") else f"{r.layer}.{r.weight}"
        lines.append(
            (
                name,
                f"{r.weights:,}",
                f"{r.nonzeros:,}",
                f"{100 * r.sparsity:.2f}%",
                f"{r.ratio:.1f}x",
            )
        )
    total = LayerCompression("total", "", total_weights, total_nonzeros)
    lines.append(
        (
            "total",
            f"{total_weights:,}",
            f"{total_nonzeros:,}",
            f"{100 * total.sparsity:.2f}%",
            f"{total.ratio:.1f}x",
        )
    )
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    rendered = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))
        )
        for line in lines
    ]
    rendered.insert(1, "-" * len(rendered[0]))
    rendered.insert(len(rendered) - 1, "-" * len(rendered[0]))
    return "\n".join(rendered)


def value_coding(values: np.ndarray) -> tuple[int, int]:
    """(bits per stored value, codebook bits) for a weight tensor, read off its values.

    Few distinct nonzero values (at most 256, and only where it saves bits) are codes into a
    table: ``ceil(log2(count))`` bits each. If they lie on one uniform grid ``{c * q}`` (uniform
    levels, also the power-of-two ones; :func:`tf_admm.grid.on_grid`, the exporter's test), the
    table is that one 32-bit step; otherwise every shared value is stored as a 32-bit float.
    Anything else stays 32-bit float with no table.
    """
    nonzero = values[values != 0]
    distinct = np.unique(nonzero)
    if distinct.size == 0 or distinct.size > 256:
        return storage.BASELINE_BITS, 0
    bits = storage.bits_for_levels(int(distinct.size))
    if grid.on_grid(distinct):
        codebook = storage.BASELINE_BITS
    else:
        codebook = storage.codebook_size_bits(int(distinct.size))
    if nonzero.size * bits + codebook >= nonzero.size * storage.BASELINE_BITS:
        return storage.BASELINE_BITS, 0  # A table would cost more than it saves.
    return bits, codebook


def storage_report(model: keras.Model, bits: dict[str, int] | None = None) -> storage.StorageReport:
    """Paper-style storage of the compressible weights of ``model``.

    Each weight tensor is stored the cheaper way: sparse with relative indices or dense, with
    the value coding of :func:`value_coding` (32-bit floats unless its values are quantized).

    Args:
      model: a stripped or ADMM-wrapped model.
      bits: bits per value by layer name, as configured (e.g. ``{"fc1": 2}``), for layers
        whose trained values happen to use fewer levels than they may; the papers count the
        configured width.
    """
    bits = bits or {}
    layers = []
    for layer, weight, value in _compressible_arrays(model):
        name = layer if weight in ("kernel", "embeddings") else f"{layer}.{weight}"
        value_bits, codebook = value_coding(value)
        if name in bits and value_bits != storage.BASELINE_BITS:
            value_bits = max(value_bits, bits[name])
        options = [
            storage.layer_storage(
                name,
                weights=value,
                bits_per_value=value_bits,
                codebook_bits=codebook,
                sparse=sparse,
            )
            for sparse in (True, False)
        ]
        layers.append(min(options, key=lambda option: option.total_bits))
    return storage.storage_report(layers)
