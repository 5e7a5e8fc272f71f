"""One rule of a spec: which layers it matches and how it compresses them.

A :class:`Rule` names its layers (by name, regular expression or layer type) and gives the
pruning target (sparsity, ratio or kept count; optionally in structures) and the quantization
(bits or k-means clusters); a :class:`RhoSchedule` gives the penalty parameter per ADMM round.
Both are frozen dataclasses validated on construction (with :mod:`tf_admm.spec_checks`) and
gathered by :class:`tf_admm.spec.Spec`.

Example:
  >>> Rule(layer_type="Dense", ratio=50, bits=4).matches("dense_1", "Dense")
  True
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tf_admm.projections.structured import Structure
from tf_admm.spec_checks import (
    MAX_COUNT,
    SpecError,
    check_bool,
    check_count,
    check_positive_number,
    check_ratio,
    enum_value,
    fail,
    from_mapping,
    plain_fields,
    show,
)

__all__ = ["RhoSchedule", "Rule", "Scheme"]


class Scheme(str, enum.Enum):
    """How quantized weights are spaced: fixed grids with a fitted scale, or free centroids."""

    UNIFORM = "uniform"
    POWER_OF_TWO = "power_of_two"
    KMEANS = "kmeans"


@dataclasses.dataclass(frozen=True)
class RhoSchedule:
    """Penalty parameter rho of the augmented Lagrangian, per ADMM round.

    ``rho(r) = min(initial * multiplier**r, maximum)`` for round ``r = 0, 1, ...``: constant when
    ``multiplier == 1``, growing geometrically (the progressive ADMM of Ye et al. 2018) when > 1.

    Attributes:
      initial: rho in the first round, > 0.
      multiplier: factor applied after each round, >= 1.
      maximum: optional cap, >= initial.
    """

    initial: float = 1e-3
    multiplier: float = 1.0
    maximum: float | None = None

    def __post_init__(self):
        plain_fields(self)
        where = "RhoSchedule"
        check_positive_number(where, "initial", self.initial)
        check_positive_number(where, "multiplier", self.multiplier)
        if self.multiplier < 1:
            raise fail(where, "multiplier >= 1 (rho never shrinks)", "multiplier", self.multiplier)
        check_positive_number(where, "maximum", self.maximum, allow_none=True)
        if self.maximum is not None and self.maximum < self.initial:
            raise fail(where, f"maximum >= initial ({self.initial})", "maximum", self.maximum)

    def __call__(self, round_index: int, initial: float | None = None) -> float:
        """Rho for ``round_index``, optionally starting from a per-layer ``initial`` value."""
        try:
            value = (self.initial if initial is None else initial) * self.multiplier**round_index
        except OverflowError:  # Beyond 1e308 after many rounds; the cap below still applies.
            value = math.inf
        return value if self.maximum is None else min(value, self.maximum)

    def get_config(self) -> dict[str, Any]:
        """The fields as a flat dict (``initial``, ``multiplier``, ``maximum``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RhoSchedule:
        """Builds a schedule from a :meth:`get_config` dict.

        Raises:
          SpecError: if ``config`` is not a mapping, has unknown fields or gives invalid values.
        """
        return from_mapping(cls, "RhoSchedule", config)


@dataclasses.dataclass(frozen=True)
class Rule:
    """How to compress the layers that one rule matches.

    Give at most one matcher: ``name`` (exact layer name), ``pattern`` (regular expression that
    must match the whole layer name) or ``layer_type`` (class name, e.g. ``"Conv2D"``; subclasses
    do not match, so ``"Conv2D"`` leaves ``DepthwiseConv2D`` alone). A rule with no matcher is
    only valid as :attr:`Spec.default`.

    Give the pruning target as ``sparsity`` (fraction of weights pruned, in [0, 1)), as
    ``ratio`` (compression ratio = total / kept weights, >= 1) or as ``keep`` (exact number of
    weights kept in each weight the rule compresses); or give none and let the spec's
    ``target_ratio`` share one budget among such rules' layers. Give quantization as ``bits``
    (``uniform`` levels {±q, ±2q, ..., ±2**(bits-1) q} or ``power_of_two`` levels
    {±q, ±2q, ±4q, ...}, 2**bits nonzero levels) or as ``clusters`` (``kmeans``, free centroids).
    Pruned weights stay exactly zero and are never put on a level. A rule may prune, quantize
    or both.

    With ``structure`` the rule prunes whole groups (see :mod:`tf_admm.projections.structured`
    for the groups and the GEMM view they are read from): ``"filter"`` (output channels),
    ``"channel"`` (input channels), ``"column"`` (GEMM columns, Ye et al.'s column pruning),
    ``"block"`` (``block = (rows, columns)`` tiles of the GEMM view) or ``"n_of_m"`` (``n`` of
    every ``m`` consecutive inputs). ``sparsity``, ``ratio`` and ``keep`` then count groups: the
    fraction of groups removed, groups / kept groups, or the groups kept; one of them is
    required, as a structured rule does not share ``Spec.target_ratio``. ``n_of_m`` takes none of
    them: ``n`` and ``m`` fix the fraction pruned, ``1 - n / m``. ``bits`` or ``clusters``
    quantize what remains.

    Attributes:
      name: exact layer name.
      pattern: regular expression matched against the whole layer name.
      layer_type: layer class name.
      sparsity: fraction of the targeted weights set to zero.
      ratio: pruning ratio, equivalent to ``sparsity = 1 - 1 / ratio``.
      keep: number of weights kept, >= 1, in each weight the rule compresses.
      rho: this rule's initial rho, overriding ``Spec.rho.initial``: its layers' rho in round
        ``r`` is ``Spec.rho(r, initial=rho)``, i.e. it grows by the spec's multiplier and is
        capped at ``Spec.rho.maximum`` (a rho above that maximum is an error).
      weights: the weights to compress, each an attribute path from the layer (``"kernel"``,
        ``"cell.recurrent_kernel"``) or a variable name (``"lstm_cell/kernel"``); any variable
        of any layer may be named. By default the layer's registered compressible weights.
      bits: bits per kept weight, 1..8 (for ``kmeans`` it sets ``clusters = 2**bits``).
      scheme: ``"uniform"`` (default with ``bits``), ``"power_of_two"`` or ``"kmeans"``
        (default with ``clusters``).
      clusters: number of k-means clusters, >= 2.
      per_channel: one scale per output channel (last axis) instead of one per tensor;
        uniform and power-of-two only.
      structure: ``"filter"``, ``"channel"``, ``"column"``, ``"block"`` or ``"n_of_m"``; None
        prunes single weights.
      block: ``(rows, columns)`` of a block of the GEMM view, with ``structure="block"``.
      n: weights kept in every run of ``m``, with ``structure="n_of_m"``; ``1 <= n < m``.
      m: length of a run of consecutive inputs, with ``structure="n_of_m"``.
    """

    name: str | None = None
    pattern: str | None = None
    layer_type: str | None = None
    sparsity: float | None = None
    ratio: float | None = None
    keep: int | None = None
    rho: float | None = None
    weights: tuple[str, ...] | None = None
    bits: int | None = None
    scheme: Scheme | None = None
    clusters: int | None = None
    per_channel: bool = False
    structure: Structure | None = None
    block: tuple[int, int] | None = None
    n: int | None = None
    m: int | None = None

    def __post_init__(self):
        plain_fields(self)
        where = f"Rule({self.describe()})"
        self._check_quantization(where)
        for field in ("name", "pattern", "layer_type"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise fail(where, f"{field} to be a non-empty string", field, value)
        matchers = [f for f in ("name", "pattern", "layer_type") if getattr(self, f) is not None]
        if len(matchers) > 1:
            raise SpecError(
                f"{where}: Expected at most one of name, pattern, layer_type; "
                f"received: {', '.join(f'{f}={getattr(self, f)!r}' for f in matchers)}"
            )
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            # OverflowError: a repeat count such as a{4294967296}; RecursionError: deep nesting.
            except (re.error, OverflowError, RecursionError) as error:
                expected = f"a valid regular expression ({error})"
                raise fail(where, expected, "pattern", self.pattern) from None
        given = [f for f in ("sparsity", "ratio", "keep") if getattr(self, f) is not None]
        if len(given) > 1:
            raise SpecError(
                f"{where}: Expected one of sparsity, ratio or keep; received: "
                + ", ".join(f"{f}={getattr(self, f)!r}" for f in given)
            )
        if self.sparsity is not None:
            if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)):
                raise fail(where, "sparsity to be a number in [0, 1)", "sparsity", self.sparsity)
            if not 0 <= self.sparsity < 1:
                raise fail(where, "sparsity in [0, 1)", "sparsity", self.sparsity)
        if self.ratio is not None:
            check_ratio(where, "ratio", self.ratio)
        if self.keep is not None:
            if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1:
                raise fail(where, "keep to be an integer >= 1", "keep", self.keep)
            check_count(where, "keep", self.keep)
        check_positive_number(where, "rho", self.rho, allow_none=True)
        if self.weights is not None:
            if isinstance(self.weights, str) or not isinstance(self.weights, Sequence):
                raise fail(
                    where, "weights to be a list of attribute names", "weights", self.weights
                )
            if not self.weights or not all(isinstance(w, str) and w for w in self.weights):
                raise fail(where, "a non-empty list of attribute names", "weights", self.weights)
            if len(set(self.weights)) != len(self.weights):
                # A repeated name would get two sets of ADMM state for one variable.
                raise fail(where, "distinct attribute names", "weights", self.weights)
            object.__setattr__(self, "weights", tuple(self.weights))
        self._check_structure(where)

    def _check_structure(self, where: str) -> None:
        structure = self.structure
        if structure is not None:
            try:
                structure = Structure(structure)
            except ValueError:
                allowed = [s.value for s in Structure]
                raise fail(where, f"structure in {allowed}", "structure", structure) from None
            object.__setattr__(self, "structure", structure)
        if self.block is not None:
            block = self.block
            if (
                isinstance(block, (str, bytes))
                or not isinstance(block, Sequence)
                or len(block) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in block)
                or not all(1 <= b <= MAX_COUNT for b in block)
            ):
                raise fail(
                    where,
                    "block to be two integers >= 1 (rows, columns of the GEMM view)",
                    "block",
                    block,
                )
            if structure is not Structure.BLOCK:
                raise fail(
                    where, "block only with structure='block'", "structure", enum_value(structure)
                )
            object.__setattr__(self, "block", tuple(block))
        elif structure is Structure.BLOCK:
            raise SpecError(
                f"{where}: Expected block=(rows, columns) with structure='block'; received no block"
            )
        for field in ("n", "m"):
            value = getattr(self, field)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise fail(where, f"{field} to be an integer >= 1", field, value)
            check_count(where, field, value)
            if structure is not Structure.N_OF_M:
                raise fail(
                    where,
                    f"{field} only with structure='n_of_m'",
                    "structure",
                    enum_value(structure),
                )
        given = [f for f in ("sparsity", "ratio", "keep") if getattr(self, f) is not None]
        if structure is Structure.N_OF_M:
            if self.n is None or self.m is None:
                raise SpecError(
                    f"{where}: Expected n and m with structure='n_of_m'; received: n={self.n!r}, "
                    f"m={self.m!r}"
                )
            if self.n >= self.m:
                raise SpecError(
                    f"{where}: Expected n < m with structure='n_of_m'; received: n={self.n!r}, "
                    f"m={self.m!r}"
                )
            if given:
                raise SpecError(
                    f"{where}: Expected no sparsity, ratio or keep with structure='n_of_m' (n and "
                    f"m fix the fraction pruned, 1 - n/m); received: "
                    + ", ".join(f"{f}={getattr(self, f)!r}" for f in given)
                )
        elif structure is not None and not given:
            raise SpecError(
                f"{where}: Expected sparsity, ratio or keep (counting {structure.value} groups) "
                f"with structure={structure.value!r}; structured rules do not share "
                "Spec.target_ratio; received none"
            )

    def _check_quantization(self, where: str) -> None:
        if self.bits is not None and (
            isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 8
        ):
            raise fail(where, "bits to be an integer in [1, 8]", "bits", self.bits)
        if self.clusters is not None and (
            isinstance(self.clusters, bool)
            or not isinstance(self.clusters, int)
            or self.clusters < 2
        ):
            raise fail(where, "clusters to be an integer >= 2", "clusters", self.clusters)
        if self.clusters is not None:
            check_count(where, "clusters", self.clusters)
        if self.bits is not None and self.clusters is not None:
            raise SpecError(
                f"{where}: Expected one of bits or clusters; received: bits={self.bits!r}, "
                f"clusters={self.clusters!r}"
            )
        check_bool(where, "per_channel", self.per_channel)
        scheme = self.scheme
        if scheme is not None:
            try:
                scheme = Scheme(scheme)
            except ValueError:
                raise fail(
                    where, f"scheme in {[s.value for s in Scheme]}", "scheme", self.scheme
                ) from None
            if self.bits is None and self.clusters is None:
                raise SpecError(
                    f"{where}: Expected bits or clusters with scheme={scheme.value!r}; "
                    "received neither"
                )
        elif self.clusters is not None:
            scheme = Scheme.KMEANS
        elif self.bits is not None:
            scheme = Scheme.UNIFORM
        if self.clusters is not None and scheme is not Scheme.KMEANS:
            raise fail(where, "clusters only with scheme 'kmeans'", "scheme", scheme.value)
        if self.per_channel and scheme is Scheme.KMEANS:
            raise fail(where, "per_channel only with uniform or power_of_two", "scheme", "kmeans")
        if self.per_channel and scheme is None:
            raise SpecError(f"{where}: Expected bits with per_channel=True; received no bits")
        object.__setattr__(self, "scheme", scheme)

    @property
    def quantizes(self) -> bool:
        """Whether the rule gives a quantization target (``bits`` or ``clusters``)."""
        return self.bits is not None or self.clusters is not None

    @property
    def prunes(self) -> bool:
        """Whether the rule gives a pruning target of its own."""
        return (
            self.sparsity is not None
            or self.ratio is not None
            or self.keep is not None
            or self.structure is Structure.N_OF_M
        )

    def sparsity_for(self, size: int) -> float:
        """The fraction pruned of a weight of ``size`` entries (``keep`` is an exact count).

        For a structured rule ``size`` counts groups and so does the result; ``n_of_m`` prunes
        ``1 - n / m`` whatever the size.
        """
        if self.structure is Structure.N_OF_M:
            return 1.0 - self.n / self.m
        if self.keep is not None:
            return 1.0 - min(self.keep, size) / size
        return self.target_sparsity

    @property
    def num_levels(self) -> int | None:
        """Number of nonzero values a kept weight may take (2**bits, or clusters)."""
        if self.clusters is not None:
            return self.clusters
        return None if self.bits is None else 2**self.bits

    @property
    def target_sparsity(self) -> float:
        """Fraction of weights pruned given as sparsity or ratio (0 if neither)."""
        if self.sparsity is not None:
            return float(self.sparsity)
        if self.ratio is not None:
            # A ratio above 2**53 would round to 1.0, which no sparsity may be: keep the
            # largest sparsity below 1 (the layer then keeps a single weight).
            return min(1.0 - 1.0 / float(self.ratio), math.nextafter(1.0, 0.0))
        return 0.0

    @property
    def has_matcher(self) -> bool:
        """Whether the rule names its layers (``name``, ``pattern`` or ``layer_type``)."""
        return self.name is not None or self.pattern is not None or self.layer_type is not None

    def describe(self) -> str:
        """The rule's matcher for messages, e.g. ``name='fc1'``; ``default`` if it has none."""
        for field in ("name", "pattern", "layer_type"):
            value = getattr(self, field, None)
            if value is not None:
                return f"{field}={show(value)}"
        return "default"

    def matches(self, layer_name: str, layer_class: str) -> bool:
        """Whether the rule takes a layer.

        Args:
          layer_name: the layer's name.
          layer_class: the layer's class name (compared exactly; subclasses do not match).

        Returns:
          True if the rule's matcher fits the layer, or if the rule has no matcher.
        """
        if self.name is not None:
            return layer_name == self.name
        if self.pattern is not None:
            return re.fullmatch(self.pattern, layer_name) is not None
        if self.layer_type is not None:
            return layer_class == self.layer_type
        return True

    def get_config(self) -> dict[str, Any]:
        """The fields that are set, as a JSON-ready dict (``scheme`` as its string value)."""
        config = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if "weights" in config:
            config["weights"] = list(config["weights"])
        if not self.per_channel:
            del config["per_channel"]
        if self.scheme is not None:
            config["scheme"] = self.scheme.value
        if self.structure is not None:
            config["structure"] = self.structure.value
        if self.block is not None:
            config["block"] = list(self.block)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Rule:
        """Builds a rule from a :meth:`get_config` dict.

        Raises:
          SpecError: if ``config`` is not a mapping, has unknown fields or gives invalid values.
        """
        return from_mapping(cls, "Rule", config)
