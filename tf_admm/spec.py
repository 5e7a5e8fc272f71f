"""What to compress and how: the ADMM compression spec.

A :class:`Spec` is a list of per-layer :class:`Rule` objects (matched by layer name, regular
expression or layer type; the first matching rule wins), an optional default rule for every
other layer with compressible weights, the penalty parameter rho and its schedule, and the
timing of the ADMM updates. Everything is a frozen dataclass validated on construction and
round-trips through plain dicts and JSON.

Example:
  >>> spec = Spec(
  ...     rules=(Rule(name="conv1", sparsity=0.8), Rule(layer_type="Dense", ratio=50)),
  ...     rho=RhoSchedule(initial=1e-3, multiplier=1.5),
  ...     update_every=1, update_unit="epoch", admm_rounds=8)
  >>> Spec.from_json(spec.to_json()) == spec
  True
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tf_admm.allocation import Allocation
from tf_admm.projections.structured import Structure

__all__ = [
    "Allocation",
    "CentroidUpdate",
    "Rule",
    "RhoSchedule",
    "Scheme",
    "Spec",
    "SpecError",
    "Structure",
    "Unit",
]


class SpecError(ValueError):
    """A spec, rule or schedule was given a value outside what it accepts."""


class Scheme(str, enum.Enum):
    """How quantized weights are spaced: fixed grids with a fitted scale, or free centroids."""

    UNIFORM = "uniform"
    POWER_OF_TWO = "power_of_two"
    KMEANS = "kmeans"


class CentroidUpdate(str, enum.Enum):
    """How the shared values of k-means clusters train once every weight is locked."""

    NONE = "none"
    SUM = "sum"
    MEAN = "mean"


class Unit(str, enum.Enum):
    """Unit of the interval between ADMM updates."""

    STEP = "step"
    EPOCH = "epoch"


# Counts are compared with int64 step, epoch and round variables, so nothing larger is reachable
# (and every accepted spec can be written to JSON: Python refuses to print ints of > 4300 digits).
_MAX_COUNT = 2**63 - 1


def _show(value: Any) -> str:
    """``repr(value)``, or a short description for values Python cannot print."""
    try:
        return repr(value)
    except (ValueError, RecursionError):
        # ValueError: an int of more than sys.get_int_max_str_digits() digits.
        if isinstance(value, int):
            return f"<int of {value.bit_length()} bits>"
        return f"<unprintable {type(value).__name__}>"


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars (also inside lists and tuples) turned into Python ones.

    Sparsities and ratios are often computed with NumPy; ``np.float32(0.9)`` should mean 0.9.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)) and any(isinstance(v, np.generic) for v in value):
        return type(value)(v.item() if isinstance(v, np.generic) else v for v in value)
    return value


def _plain_fields(instance: Any) -> None:
    """Replaces NumPy scalars in the fields of frozen dataclass ``instance`` (see ``_plain``)."""
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        plain = _plain(value)
        if plain is not value:
            object.__setattr__(instance, field.name, plain)


def _value(member: enum.Enum | None) -> Any:
    """An enum member's value (None stays None), to show in messages."""
    return None if member is None else member.value


def _fail(where: str, expected: str, field: str, value: Any) -> SpecError:
    return SpecError(f"{where}: Expected {expected}; received: {field}={_show(value)}")


def _is_finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # An int too large for a float.
        return False


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # An int too large for a float: out of range either way.
        return math.inf if value > 0 else -math.inf


def _check_positive_number(where: str, field: str, value: Any, *, allow_none: bool = False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _is_finite(value):
        raise _fail(where, f"{field} to be a finite number", field, value)
    if value <= 0:
        raise _fail(where, f"{field} > 0", field, value)


def _check_ratio(where: str, field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"{field} to be a number >= 1", field, value)
    if not (_is_finite(value) and value >= 1):
        raise _fail(where, f"{field} >= 1", field, value)


def _set_enum(instance: Any, field: str, enum_class: type[enum.Enum]) -> None:
    """Replaces field ``field`` of frozen ``instance`` by its ``enum_class`` member."""
    value = getattr(instance, field)
    try:
        object.__setattr__(instance, field, enum_class(value))
    except ValueError:
        allowed = [member.value for member in enum_class]
        raise _fail(type(instance).__name__, f"{field} in {allowed}", field, value) from None


def _check_count(where: str, field: str, value: Any) -> None:
    if value > _MAX_COUNT:
        raise _fail(where, f"{field} <= 2**63 - 1", field, value)


def _check_positive_int(where: str, field: str, value: Any):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(where, f"{field} to be an integer >= 1", field, value)
    _check_count(where, field, value)


def _check_fractions(field: str, fractions: Any) -> tuple[float, ...]:
    """``fractions`` as a tuple of floats increasing in (0, 1] and ending at 1."""
    if (
        isinstance(fractions, (str, bytes))
        or not isinstance(fractions, Sequence)
        or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions)
    ):
        raise _fail("Spec", f"{field} to be a list of numbers", field, fractions)
    fractions = tuple(_as_float(f) for f in fractions)
    if (
        not fractions
        or fractions[-1] != 1.0
        or any(not 0 < f <= 1 for f in fractions)
        or any(b <= a for a, b in zip(fractions, fractions[1:]))
    ):
        raise _fail("Spec", f"{field} increasing in (0, 1] and ending at 1", field, list(fractions))
    return fractions


class _FrozenCounts(dict):
    """A dict that refuses changes (the ``allocated`` counts of a frozen :class:`Spec`)."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("Spec.allocated cannot change: use dataclasses.replace(spec, ...)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self):
        return hash(tuple(self.items()))


def _from_mapping(cls, where: str, config: Any):
    """Builds dataclass ``cls`` from a mapping, refusing unknown keys by name."""
    if not isinstance(config, Mapping):
        raise _fail(where, f"a mapping of {cls.__name__} fields", "config", config)
    allowed = {f.name for f in dataclasses.fields(cls)}
    # Keys of mixed types (possible from Python, not from JSON) do not sort by themselves.
    unknown = sorted(
        set(config) - allowed, key=lambda k: (0, k) if isinstance(k, str) else (1, _show(k))
    )
    if unknown:
        raise SpecError(
            f"{where}: Expected fields among {sorted(allowed)}; "
            f"received unknown field(s) [{', '.join(_show(k) for k in unknown)}]"
        )
    return cls(**config)


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
        _plain_fields(self)
        where = "RhoSchedule"
        _check_positive_number(where, "initial", self.initial)
        _check_positive_number(where, "multiplier", self.multiplier)
        if self.multiplier < 1:
            raise _fail(where, "multiplier >= 1 (rho never shrinks)", "multiplier", self.multiplier)
        _check_positive_number(where, "maximum", self.maximum, allow_none=True)
        if self.maximum is not None and self.maximum < self.initial:
            raise _fail(where, f"maximum >= initial ({self.initial})", "maximum", self.maximum)

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
        return _from_mapping(cls, "RhoSchedule", config)


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
        _plain_fields(self)
        where = f"Rule({self.describe()})"
        self._check_quantization(where)
        for field in ("name", "pattern", "layer_type"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, str) or not value):
                raise _fail(where, f"{field} to be a non-empty string", field, value)
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
                raise _fail(where, expected, "pattern", self.pattern) from None
        given = [f for f in ("sparsity", "ratio", "keep") if getattr(self, f) is not None]
        if len(given) > 1:
            raise SpecError(
                f"{where}: Expected one of sparsity, ratio or keep; received: "
                + ", ".join(f"{f}={getattr(self, f)!r}" for f in given)
            )
        if self.sparsity is not None:
            if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)):
                raise _fail(where, "sparsity to be a number in [0, 1)", "sparsity", self.sparsity)
            if not 0 <= self.sparsity < 1:
                raise _fail(where, "sparsity in [0, 1)", "sparsity", self.sparsity)
        if self.ratio is not None:
            _check_ratio(where, "ratio", self.ratio)
        if self.keep is not None:
            if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1:
                raise _fail(where, "keep to be an integer >= 1", "keep", self.keep)
            _check_count(where, "keep", self.keep)
        _check_positive_number(where, "rho", self.rho, allow_none=True)
        if self.weights is not None:
            if isinstance(self.weights, str) or not isinstance(self.weights, Sequence):
                raise _fail(
                    where, "weights to be a list of attribute names", "weights", self.weights
                )
            if not self.weights or not all(isinstance(w, str) and w for w in self.weights):
                raise _fail(where, "a non-empty list of attribute names", "weights", self.weights)
            if len(set(self.weights)) != len(self.weights):
                # A repeated name would get two sets of ADMM state for one variable.
                raise _fail(where, "distinct attribute names", "weights", self.weights)
            object.__setattr__(self, "weights", tuple(self.weights))
        self._check_structure(where)

    def _check_structure(self, where: str) -> None:
        structure = self.structure
        if structure is not None:
            try:
                structure = Structure(structure)
            except ValueError:
                allowed = [s.value for s in Structure]
                raise _fail(where, f"structure in {allowed}", "structure", structure) from None
            object.__setattr__(self, "structure", structure)
        if self.block is not None:
            block = self.block
            if (
                isinstance(block, (str, bytes))
                or not isinstance(block, Sequence)
                or len(block) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in block)
                or not all(1 <= b <= _MAX_COUNT for b in block)
            ):
                raise _fail(
                    where,
                    "block to be two integers >= 1 (rows, columns of the GEMM view)",
                    "block",
                    block,
                )
            if structure is not Structure.BLOCK:
                raise _fail(
                    where, "block only with structure='block'", "structure", _value(structure)
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
                raise _fail(where, f"{field} to be an integer >= 1", field, value)
            _check_count(where, field, value)
            if structure is not Structure.N_OF_M:
                raise _fail(
                    where, f"{field} only with structure='n_of_m'", "structure", _value(structure)
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
            raise _fail(where, "bits to be an integer in [1, 8]", "bits", self.bits)
        if self.clusters is not None and (
            isinstance(self.clusters, bool)
            or not isinstance(self.clusters, int)
            or self.clusters < 2
        ):
            raise _fail(where, "clusters to be an integer >= 2", "clusters", self.clusters)
        if self.clusters is not None:
            _check_count(where, "clusters", self.clusters)
        if self.bits is not None and self.clusters is not None:
            raise SpecError(
                f"{where}: Expected one of bits or clusters; received: bits={self.bits!r}, "
                f"clusters={self.clusters!r}"
            )
        if not isinstance(self.per_channel, bool):
            raise _fail(where, "per_channel to be true or false", "per_channel", self.per_channel)
        scheme = self.scheme
        if scheme is not None:
            try:
                scheme = Scheme(scheme)
            except ValueError:
                raise _fail(
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
            raise _fail(where, "clusters only with scheme 'kmeans'", "scheme", scheme.value)
        if self.per_channel and scheme is Scheme.KMEANS:
            raise _fail(where, "per_channel only with uniform or power_of_two", "scheme", "kmeans")
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
                return f"{field}={_show(value)}"
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
        return _from_mapping(cls, "Rule", config)


@dataclasses.dataclass(frozen=True)
class Spec:
    """A whole ADMM compression run.

    Training runs in rounds of ``update_every`` steps or epochs. When a rule prunes:
    ``admm_rounds`` ADMM rounds (W-steps with the penalty ``rho/2 ||W - Z + U||^2``, then the
    Z/U update), the hard projection, then masked retraining. When a rule quantizes, after
    ``retrain_rounds`` rounds of masked retraining: ``quant_admm_rounds`` ADMM rounds onto the
    quantization levels, then iterative quantization (one round per entry of
    ``quant_fractions``: the given cumulative fraction of kept weights, those nearest to their
    levels, is locked onto them and the rest retrains), then training of the shared values
    (``centroid_update``) for the rest of training. The last phase lasts until training stops.

    Pruning may be progressive (Ye et al. 2018's progressive ADMM): with ``prune_stages`` =
    ``(f_1, ..., 1)`` stage ``s`` runs ``admm_rounds`` ADMM rounds towards ``f_s`` of each
    layer's final compression ratio (it keeps ``kept / f_s`` weights), projects, and retrains
    for ``retrain_rounds`` rounds; the next stage restarts ADMM from the pruned W (Z its top-k,
    U = 0, rho from its initial value) with every mask open again, so a weight pruned by an
    earlier stage may grow back; the last stage's hard projection is final.

    Attributes:
      rules: per-layer rules; the first rule that matches a layer applies. Every rule must
        match at least one layer.
      default: rule for every compressible layer that no rule matches (no matcher allowed);
        None leaves such layers alone.
      rho: the rho schedule over ADMM rounds; a rule's own ``rho`` replaces its ``initial``
        for that rule's layers, the multiplier and maximum apply to every layer.
      update_every: length of an ADMM round, in ``update_unit``.
      update_unit: ``"step"`` or ``"epoch"``.
      admm_rounds: number of Z/U updates before the hard projection.
      retrain_rounds: rounds of masked retraining after each pruning stage but the last, and
        between pruning and quantization.
      prune_stages: increasing fractions in (0, 1] of the final compression ratios, one per
        pruning stage; the last must be 1. ``(1.0,)``: one stage.
      quant_admm_rounds: ADMM rounds onto the quantization levels.
      quant_fractions: increasing cumulative fractions of kept weights locked, one per round;
        the last must be 1.
      centroid_update: ``"sum"`` or ``"mean"`` of the members' gradients moves each k-means
        centroid once all weights are locked; ``"none"`` keeps them fixed. Uniform and
        power-of-two levels always stay fixed.
      target_ratio: one pruning ratio (total / kept weights) shared by every weight whose rule
        gives no sparsity, ratio or keep of its own; with no rules and no default, by every
        compressible layer. ``admm_wrap`` splits the budget among them by ``allocation``.
      allocation: how ``target_ratio``'s budget is split: ``"lamp"`` (default),
        ``"global_magnitude"``, ``"uniform"`` or ``"sensitivity"`` (measured on validation
        data by :func:`tf_admm.sensitivity_allocation`); see :mod:`tf_admm.allocation`.
      allocated: the split, ``{"layer/weight": kept}``; filled in by ``admm_wrap`` (and so
        saved with the model) and used as given when present, so a saved spec reproduces it.
    """

    rules: tuple[Rule, ...] = ()
    default: Rule | None = None
    rho: RhoSchedule = dataclasses.field(default_factory=RhoSchedule)
    update_every: int = 1
    update_unit: Unit = Unit.EPOCH
    admm_rounds: int = 10
    retrain_rounds: int = 0
    prune_stages: tuple[float, ...] = (1.0,)
    quant_admm_rounds: int = 5
    quant_fractions: tuple[float, ...] = (0.5, 0.75, 0.9, 1.0)
    centroid_update: CentroidUpdate = CentroidUpdate.SUM
    target_ratio: float | None = None
    allocation: Allocation = Allocation.LAMP
    allocated: Mapping[str, int] | None = None

    def __post_init__(self):
        _plain_fields(self)
        self._check_allocation()
        if isinstance(self.rules, (Rule, str, bytes)) or not isinstance(self.rules, Sequence):
            raise _fail("Spec", "rules to be a list of Rule", "rules", self.rules)
        rules = tuple(Rule.from_config(r) if isinstance(r, Mapping) else r for r in self.rules)
        for index, rule in enumerate(rules):
            if not isinstance(rule, Rule):
                raise _fail("Spec", "each rule to be a Rule or a mapping", f"rules[{index}]", rule)
            if not rule.has_matcher:
                raise SpecError(
                    f"Spec: Expected rules[{index}] to have one of name, pattern, layer_type "
                    "(use Spec.default for a rule that applies to every other layer); "
                    f"received: rules[{index}]={rule!r}"
                )
        object.__setattr__(self, "rules", rules)
        default = self.default
        if isinstance(default, Mapping):
            default = Rule.from_config(default)
            object.__setattr__(self, "default", default)
        if default is not None:
            if not isinstance(default, Rule):
                raise _fail("Spec", "default to be a Rule or None", "default", default)
            if default.has_matcher:
                raise _fail("Spec", "a default rule without matcher", "default", default)
        if not rules and default is None:
            if self.target_ratio is None:
                raise SpecError(
                    "Spec: Expected at least one rule, a default rule or a target_ratio; "
                    "received none"
                )
            # target_ratio alone: every compressible layer shares the budget.
            object.__setattr__(self, "default", Rule())
        if self.target_ratio is None:
            for where, rule in self._located_rules():
                if not (rule.prunes or rule.quantizes):
                    raise SpecError(
                        f"Spec {where}: Rule({rule.describe()}): Expected a compression target: "
                        "sparsity (fraction pruned, in [0, 1)), ratio (>= 1), keep (>= 1), bits "
                        "(1..8) or clusters (>= 2), or a Spec.target_ratio for the rule's "
                        "layers to share; received none"
                    )
        rho = self.rho
        if isinstance(rho, Mapping):
            rho = RhoSchedule.from_config(rho)
        elif isinstance(rho, (int, float)) and not isinstance(rho, bool):
            _check_positive_number("Spec", "rho", rho)
            rho = RhoSchedule(initial=float(rho))
        if not isinstance(rho, RhoSchedule):
            raise _fail("Spec", "rho to be a number > 0, a RhoSchedule or a mapping", "rho", rho)
        object.__setattr__(self, "rho", rho)
        self._check_rule_rho()
        _check_positive_int("Spec", "update_every", self.update_every)
        _check_positive_int("Spec", "admm_rounds", self.admm_rounds)
        if (
            isinstance(self.retrain_rounds, bool)
            or not isinstance(self.retrain_rounds, int)
            or (self.retrain_rounds < 0)
        ):
            raise _fail(
                "Spec",
                "retrain_rounds to be an integer >= 0",
                "retrain_rounds",
                self.retrain_rounds,
            )
        _check_count("Spec", "retrain_rounds", self.retrain_rounds)
        _check_positive_int("Spec", "quant_admm_rounds", self.quant_admm_rounds)
        for field in ("prune_stages", "quant_fractions"):
            object.__setattr__(self, field, _check_fractions(field, getattr(self, field)))
        _set_enum(self, "centroid_update", CentroidUpdate)
        _set_enum(self, "update_unit", Unit)

    def _check_rule_rho(self) -> None:
        """A rule's own rho starts the schedule for its layers, so it must respect the cap.

        A rule's rho above ``rho.maximum`` is refused rather than silently lowered, as
        ``RhoSchedule(initial=...)`` refuses an initial value above its maximum.
        """
        if self.rho.maximum is None:
            return
        for where, rule in self._located_rules():
            if rule.rho is not None and rule.rho > self.rho.maximum:
                raise SpecError(
                    f"Spec {where} ({rule.describe()}): Expected rho <= rho.maximum "
                    f"({self.rho.maximum!r}), the cap of every layer's rho; received: "
                    f"rho={_show(rule.rho)}"
                )

    def _check_allocation(self) -> None:
        if self.target_ratio is not None:
            _check_ratio("Spec", "target_ratio", self.target_ratio)
        _set_enum(self, "allocation", Allocation)
        if self.allocated is None:
            return
        if not isinstance(self.allocated, Mapping):
            raise _fail(
                "Spec",
                "allocated to be a mapping 'layer/weight' -> kept",
                "allocated",
                self.allocated,
            )
        for key, kept in self.allocated.items():
            if not isinstance(key, str) or key.count("/") != 1 or "" in key.split("/"):
                raise _fail("Spec", "allocated keys of the form 'layer/weight'", "allocated", key)
            if isinstance(kept, bool) or not isinstance(kept, int) or kept < 1:
                raise _fail(
                    "Spec", "allocated counts to be integers >= 1", f"allocated[{key!r}]", kept
                )
        if self.target_ratio is None:
            raise SpecError(
                "Spec: Expected allocated only together with target_ratio; received "
                "allocated without target_ratio"
            )
        # A read-only copy, so that the frozen spec cannot change under its users.
        object.__setattr__(self, "allocated", _FrozenCounts(self.allocated))

    def _located_rules(self) -> list[tuple[str, Rule]]:
        located = [(f"rules[{i}]", r) for i, r in enumerate(self.rules)]
        return located + ([("default", self.default)] if self.default is not None else [])

    def shares_budget(self, rule: Rule) -> bool:
        """Whether ``rule``'s layers take their pruning target from ``target_ratio``."""
        return self.target_ratio is not None and not rule.prunes

    @property
    def prunes(self) -> bool:
        """Whether any rule prunes, by its own target or a share of ``target_ratio``."""
        return any(r.prunes or self.shares_budget(r) for r in self._all_rules())

    @property
    def quantizes(self) -> bool:
        """Whether any rule quantizes (gives ``bits`` or ``clusters``)."""
        return any(r.quantizes for r in self._all_rules())

    def _all_rules(self) -> tuple[Rule, ...]:
        return self.rules + ((self.default,) if self.default is not None else ())

    def phase_boundaries(self) -> dict[str, int]:
        """Round counts at which each phase ends (the last phase is open-ended).

        Keys: ``prune_admm`` (hard projection), ``quant_start``, ``quant_admm`` (levels fixed,
        locking starts) and ``quant_lock`` (all weights locked). Without quantization only
        ``prune_admm`` is present.
        """
        prune_end = self.stage_starts()[-1] + self.admm_rounds if self.prunes else 0
        bounds = {"prune_admm": prune_end}
        if self.quantizes:
            start = prune_end + (self.retrain_rounds if self.prunes else 0)
            bounds["quant_start"] = start
            bounds["quant_admm"] = start + self.quant_admm_rounds
            # Locking happens at the end of rounds quant_admm .. quant_admm + len - 1.
            bounds["quant_lock"] = bounds["quant_admm"] + len(self.quant_fractions) - 1
        return bounds

    def stage_starts(self) -> tuple[int, ...]:
        """The round at which each pruning stage's ADMM begins (``(0,)`` for one stage)."""
        length = self.admm_rounds + self.retrain_rounds
        return tuple(stage * length for stage in range(len(self.prune_stages)))

    def stage_at(self, round_: int) -> int:
        """Index of the pruning stage that round ``round_`` (0-based) belongs to."""
        starts = self.stage_starts()
        return max(i for i, start in enumerate(starts) if start <= round_)

    def scheduled_rounds(self) -> int:
        """Rounds until the last (open-ended) phase begins."""
        return max(self.phase_boundaries().values())

    def rule_for(self, layer_name: str, layer_class: str) -> tuple[int | None, Rule | None]:
        """The rule that applies to a layer and its index (None for the default rule)."""
        for index, rule in enumerate(self.rules):
            if rule.matches(layer_name, layer_class):
                return index, rule
        return None, self.default

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict, which :meth:`from_dict` turns back into the spec.

        ``get_config`` is the same method. Optional parts (``default``, ``target_ratio`` with
        ``allocation``, ``allocated``) appear only when set.
        """
        config: dict[str, Any] = {
            "rules": [r.get_config() for r in self.rules],
            "rho": self.rho.get_config(),
            "update_every": self.update_every,
            "update_unit": self.update_unit.value,
            "admm_rounds": self.admm_rounds,
            "retrain_rounds": self.retrain_rounds,
            "prune_stages": list(self.prune_stages),
            "quant_admm_rounds": self.quant_admm_rounds,
            "quant_fractions": list(self.quant_fractions),
            "centroid_update": self.centroid_update.value,
        }
        if self.default is not None:
            config["default"] = self.default.get_config()
        if self.target_ratio is not None:
            config["target_ratio"] = self.target_ratio
            config["allocation"] = self.allocation.value
        if self.allocated is not None:
            config["allocated"] = dict(self.allocated)
        return config

    get_config = to_dict

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> Spec:
        """Builds a spec from a :meth:`to_dict` dict (also ``from_config``).

        Raises:
          SpecError: if ``config`` is not a mapping, has unknown fields or gives invalid values.
        """
        return _from_mapping(cls, "Spec", config)

    from_config = from_dict

    def to_json(self, **kwargs) -> str:
        """:meth:`to_dict` as JSON text; ``kwargs`` go to ``json.dumps``."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> Spec:
        """Builds a spec from JSON text, as :meth:`to_json` writes it.

        Raises:
          SpecError: if ``text`` is not a str or bytes, is not valid JSON or holds an invalid spec.
        """
        if not isinstance(text, (str, bytes, bytearray)):
            raise _fail("Spec", "JSON text (str or bytes)", "text", text)
        try:
            config = json.loads(text)
        # ValueError covers JSONDecodeError, undecodable bytes and ints of > 4300 digits;
        # RecursionError, arrays or objects nested about a thousand deep.
        except (ValueError, RecursionError) as error:
            raise SpecError(f"Spec: Expected JSON text; received invalid JSON ({error})") from None
        return cls.from_dict(config)

    @classmethod
    def from_file(cls, path: str) -> Spec:
        """Reads a spec from a JSON file."""
        with open(path, encoding="utf-8") as f:
            try:
                text = f.read()
            except UnicodeDecodeError as error:
                raise SpecError(
                    f"{path}: Spec: Expected UTF-8 JSON text; received undecodable bytes ({error})"
                ) from None
        try:
            return cls.from_json(text)
        except SpecError as error:
            raise SpecError(f"{path}: {error}") from None
