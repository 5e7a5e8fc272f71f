"""What to compress and how: the ADMM compression spec.

A :class:`Spec` is a list of per-layer :class:`Rule` objects (matched by layer name, regular
expression or layer type; the first matching rule wins), an optional default rule for every
other layer with compressible weights, the penalty parameter rho and its schedule, and the
timing of the ADMM updates. Everything is a frozen dataclass validated on construction and
round-trips through plain dicts and JSON.

With only a target (``Spec(target_ratio=167)``) the schedule is automatic: 100 Z/U rounds
spread over the first 60% of the first ``fit``, rho from 3e-4 growing 1.042 per round, then
masked retraining. Giving ``update_every`` fixes the schedule instead.

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
from collections.abc import Mapping, Sequence
from typing import Any

from tf_admm.allocation import Allocation
from tf_admm.projections.structured import Structure
from tf_admm.rule import RhoSchedule, Rule, Scheme
from tf_admm.spec_checks import (
    FrozenCounts,
    SpecError,
    check_bool,
    check_count,
    check_fractions,
    check_positive_int,
    check_positive_number,
    check_ratio,
    fail,
    from_mapping,
    plain_fields,
    set_enum,
    show,
)

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


class CentroidUpdate(str, enum.Enum):
    """How shared levels (k-means centroids, or a grid's scale) train on their members."""

    NONE = "none"
    SUM = "sum"
    MEAN = "mean"


class Unit(str, enum.Enum):
    """Unit of the interval between ADMM updates."""

    STEP = "step"
    EPOCH = "epoch"


# The defaults of the schedule fields a Spec leaves None. With update_every unset (the automatic
# schedule, chosen by measurement on LeNet-5/MNIST: docs/experiments.md, 2026-12-07): 100 rounds
# of steps sized by the first fit, rho from 3e-4 growing 1.042 per round (about 60x over them).
# With update_every given (a fixed schedule): rounds of epochs, 10 of them, rho 1e-3 constant.
AUTO_SCHEDULE = {
    "update_unit": Unit.STEP,
    "admm_rounds": 100,
    "rho": lambda: RhoSchedule(initial=3e-4, multiplier=1.042),
}
FIXED_SCHEDULE = {"update_unit": Unit.EPOCH, "admm_rounds": 10, "rho": RhoSchedule}


def _rho_schedule(field: str, value: Any) -> RhoSchedule:
    """``value`` (a RhoSchedule, its config mapping or a number > 0) as a RhoSchedule."""
    if isinstance(value, Mapping):
        return RhoSchedule.from_config(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        check_positive_number("Spec", field, value)
        return RhoSchedule(initial=float(value))
    if not isinstance(value, RhoSchedule):
        raise fail("Spec", f"{field} to be a number > 0, a RhoSchedule or a mapping", field, value)
    return value


@dataclasses.dataclass(frozen=True)
class Spec:
    """A whole ADMM compression run.

    Training runs in rounds of ``update_every`` steps or epochs. When a rule prunes:
    ``admm_rounds`` ADMM rounds (W-steps with the penalty ``rho/2 ||W - Z + U||^2``, then the
    Z/U update), the hard projection, then masked retraining. When a rule quantizes, after
    ``retrain_rounds`` rounds of masked retraining: ``quant_admm_rounds`` ADMM rounds onto the
    quantization levels, then iterative quantization (``quant_lock_rounds`` rounds per entry of
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
        for that rule's layers, the multiplier and maximum apply to every layer. Default: from
        3e-4 growing 1.042 per round with the automatic schedule, 1e-3 constant with a fixed one.
      update_every: length of an ADMM round, in ``update_unit``. Unset (None, the default): the
        automatic schedule, which sizes the rounds at the start of the first ``fit`` so that
        every scheduled round ends within its first ``admm_fraction`` (:meth:`scheduled_for`);
        the model then holds (and saves) the spec with the number filled in.
      update_unit: ``"step"`` or ``"epoch"``. Default: steps with the automatic schedule,
        epochs with a fixed one.
      admm_rounds: number of Z/U updates before the hard projection (per pruning stage).
        Default: 100 with the automatic schedule, 10 with a fixed one.
      retrain_rounds: rounds of masked retraining after each pruning stage but the last, and
        between pruning and quantization.
      prune_stages: increasing fractions in (0, 1] of the final compression ratios, one per
        pruning stage; the last must be 1. ``(1.0,)``: one stage.
      quant_admm_rounds: ADMM rounds onto the quantization levels.
      quant_fractions: increasing cumulative fractions of kept weights locked, one per round;
        the last must be 1.
      quant_lock_rounds: rounds each locking step lasts: after a fraction is locked, the
        weights still free retrain for this many rounds before the next one is (default 1).
        The last fraction locks everything, so the final phase begins with it.
      quant_rho: the rho schedule of the quantization ADMM rounds, counted from their first
        round, the same for every layer; None (the default) runs ``rho`` again from each
        layer's initial value. ADMM onto levels wants a rho far above the small start that
        step-level pruning rounds use (e.g. ``{"initial": 0.01, "multiplier": 1.3}``).
      centroid_update: ``"sum"`` or ``"mean"`` of the members' gradients moves each k-means
        centroid once all weights are locked; ``"none"`` keeps them fixed.
      scale_update: the same for uniform and power-of-two levels: ``"none"`` (the default)
        keeps the fitted scale; ``"sum"`` or ``"mean"`` trains the levels on their members'
        gradients and puts them back on the grid after every optimizer step (the
        least-squares scale, one per tensor or per channel), so they stay a scaled grid and
        export as integer codes.
      straight_through: False (the default): a locked weight stays on the level it was locked
        to. True: locked weights keep training in float through a straight-through estimator
        and compute with their nearest level, so they may move to another level as training
        goes on (quantization-aware training from the locking onwards); the stripped and
        exported weights are still exactly on the levels.
      target_ratio: one pruning ratio (total / kept weights) shared by every weight whose rule
        gives no sparsity, ratio or keep of its own; with no rules and no default, by every
        compressible layer. ``admm_wrap`` splits the budget among them by ``allocation``.
      allocation: how ``target_ratio``'s budget is split: ``"lamp"`` (default),
        ``"global_magnitude"``, ``"uniform"`` or ``"sensitivity"`` (measured on validation
        data by :func:`tf_admm.sensitivity_allocation`); see :mod:`tf_admm.allocation`.
      allocated: the split, ``{"layer/weight": kept}``; filled in by ``admm_wrap`` (and so
        saved with the model) and used as given when present, so a saved spec reproduces it.
      admm_fraction: with the automatic schedule, the share of the first ``fit`` in (0, 1]
        that the scheduled rounds take; the rest retrains. Ignored once ``update_every`` is set.
    """

    rules: tuple[Rule, ...] = ()
    default: Rule | None = None
    rho: RhoSchedule | None = None
    update_every: int | None = None
    update_unit: Unit | None = None
    admm_rounds: int | None = None
    retrain_rounds: int = 0
    prune_stages: tuple[float, ...] = (1.0,)
    quant_admm_rounds: int = 5
    quant_fractions: tuple[float, ...] = (0.5, 0.75, 0.9, 1.0)
    quant_lock_rounds: int = 1
    quant_rho: RhoSchedule | None = None
    centroid_update: CentroidUpdate = CentroidUpdate.SUM
    scale_update: CentroidUpdate = CentroidUpdate.NONE
    straight_through: bool = False
    target_ratio: float | None = None
    allocation: Allocation = Allocation.LAMP
    allocated: Mapping[str, int] | None = None
    admm_fraction: float = 0.6

    def __post_init__(self):
        plain_fields(self)
        self._fill_schedule_defaults()
        self._check_allocation()
        if isinstance(self.rules, (Rule, str, bytes)) or not isinstance(self.rules, Sequence):
            raise fail("Spec", "rules to be a list of Rule", "rules", self.rules)
        rules = tuple(Rule.from_config(r) if isinstance(r, Mapping) else r for r in self.rules)
        for index, rule in enumerate(rules):
            if not isinstance(rule, Rule):
                raise fail("Spec", "each rule to be a Rule or a mapping", f"rules[{index}]", rule)
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
                raise fail("Spec", "default to be a Rule or None", "default", default)
            if default.has_matcher:
                raise fail("Spec", "a default rule without matcher", "default", default)
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
        object.__setattr__(self, "rho", _rho_schedule("rho", self.rho))
        self._check_rule_rho()
        if self.quant_rho is not None:
            object.__setattr__(self, "quant_rho", _rho_schedule("quant_rho", self.quant_rho))
        if self.update_every is not None:
            check_positive_int("Spec", "update_every", self.update_every)
        check_positive_int("Spec", "admm_rounds", self.admm_rounds)
        if (
            isinstance(self.retrain_rounds, bool)
            or not isinstance(self.retrain_rounds, int)
            or (self.retrain_rounds < 0)
        ):
            raise fail(
                "Spec",
                "retrain_rounds to be an integer >= 0",
                "retrain_rounds",
                self.retrain_rounds,
            )
        check_count("Spec", "retrain_rounds", self.retrain_rounds)
        check_positive_int("Spec", "quant_admm_rounds", self.quant_admm_rounds)
        check_positive_int("Spec", "quant_lock_rounds", self.quant_lock_rounds)
        for field in ("prune_stages", "quant_fractions"):
            object.__setattr__(self, field, check_fractions(field, getattr(self, field)))
        set_enum(self, "centroid_update", CentroidUpdate)
        set_enum(self, "scale_update", CentroidUpdate)
        check_bool("Spec", "straight_through", self.straight_through)
        set_enum(self, "update_unit", Unit)

    def _fill_schedule_defaults(self) -> None:
        """Fills the schedule fields left None: the automatic or the fixed schedule's defaults."""
        auto = self.update_every is None
        defaults = AUTO_SCHEDULE if auto else FIXED_SCHEDULE
        for field, value in defaults.items():
            if getattr(self, field) is None:
                object.__setattr__(self, field, value() if callable(value) else value)
        fraction = self.admm_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise fail("Spec", "admm_fraction to be a number in (0, 1]", "admm_fraction", fraction)
        if not 0.0 < fraction <= 1.0:
            raise fail("Spec", "admm_fraction in (0, 1]", "admm_fraction", fraction)
        object.__setattr__(self, "admm_fraction", float(fraction))

    @property
    def automatic(self) -> bool:
        """Whether the round length is still to be chosen by the first ``fit`` (``update_every``
        unset); see :meth:`scheduled_for`."""
        return self.update_every is None

    def scheduled_for(self, epochs: int, steps_per_epoch: int | None) -> Spec:
        """This spec with the automatic schedule's round length fixed for a ``fit`` of
        ``epochs`` epochs of ``steps_per_epoch`` steps (itself if ``update_every`` is set).

        Every scheduled round (all pruning stages with the retraining between them, the
        quantization ADMM and locking) fits in the first ``admm_fraction`` of the fit: a round
        lasts ``max(1, floor(admm_fraction * total / scheduled_rounds()))`` units, ``total``
        being the fit's steps (or epochs, with ``update_unit="epoch"``). The rest of the fit
        retrains the pruned (and locked) weights.

        Raises:
          ValueError: if the fit's length is unknown (a dataset of unknown size without
            ``steps_per_epoch``).
        """
        if not self.automatic:
            return self
        if self.update_unit is Unit.STEP and not steps_per_epoch:
            raise ValueError(
                "Spec: Expected fit's steps per epoch to size the automatic ADMM schedule "
                "(update_every unset); received a dataset of unknown size. Pass "
                "fit(steps_per_epoch=...), a dataset whose size is known, or Spec(update_every=...)"
            )
        total = self.units_in_fit(epochs, steps_per_epoch)
        length = max(1, int(self.admm_fraction * total // self.scheduled_rounds()))
        return dataclasses.replace(self, update_every=length)

    def units_in_fit(self, epochs: int, steps_per_epoch: int | None) -> int:
        """How many ``update_unit`` a ``fit`` of ``epochs`` epochs of ``steps_per_epoch`` steps
        lasts (steps per epoch unknown: 1)."""
        steps = int(steps_per_epoch or 1) if self.update_unit is Unit.STEP else 1
        return int(epochs) * steps

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
                    f"rho={show(rule.rho)}"
                )

    def _check_allocation(self) -> None:
        if self.target_ratio is not None:
            check_ratio("Spec", "target_ratio", self.target_ratio)
        set_enum(self, "allocation", Allocation)
        if self.allocated is None:
            return
        if not isinstance(self.allocated, Mapping):
            raise fail(
                "Spec",
                "allocated to be a mapping 'layer/weight' -> kept",
                "allocated",
                self.allocated,
            )
        for key, kept in self.allocated.items():
            if not isinstance(key, str) or key.count("/") != 1 or "" in key.split("/"):
                raise fail("Spec", "allocated keys of the form 'layer/weight'", "allocated", key)
            if isinstance(kept, bool) or not isinstance(kept, int) or kept < 1:
                raise fail(
                    "Spec", "allocated counts to be integers >= 1", f"allocated[{key!r}]", kept
                )
        if self.target_ratio is None:
            raise SpecError(
                "Spec: Expected allocated only together with target_ratio; received "
                "allocated without target_ratio"
            )
        # A read-only copy, so that the frozen spec cannot change under its users.
        object.__setattr__(self, "allocated", FrozenCounts(self.allocated))

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
            # Locking happens at the end of rounds quant_admm + i * quant_lock_rounds,
            # i = 0 .. len - 1; the last lock starts the final phase.
            steps = len(self.quant_fractions) - 1
            bounds["quant_lock"] = bounds["quant_admm"] + steps * self.quant_lock_rounds
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
        ``allocation``, ``allocated``, ``quant_rho``, ``straight_through``) appear only when set.
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
            "quant_lock_rounds": self.quant_lock_rounds,
            "centroid_update": self.centroid_update.value,
            "scale_update": self.scale_update.value,
        }
        if self.quant_rho is not None:
            config["quant_rho"] = self.quant_rho.get_config()
        if self.straight_through:
            config["straight_through"] = True
        if self.automatic:
            config["admm_fraction"] = self.admm_fraction
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
        return from_mapping(cls, "Spec", config)

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
            raise fail("Spec", "JSON text (str or bytes)", "text", text)
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
