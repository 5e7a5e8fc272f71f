"""Property-based fuzzing of the spec: any JSON-like input builds a valid spec or a SpecError.

Every property feeds ``Spec.from_dict`` / ``Spec.from_json`` / ``Rule.from_config`` /
``RhoSchedule.from_config`` with arbitrary JSON-like values (nested dicts and lists of strings,
numbers, NaN/inf, bools and None) or with valid configs mutated a few times (keys removed or
added, values replaced by wrong types, out-of-range numbers, NaN/inf, huge ints). The outcome
must be either a valid object that round-trips exactly through its dict and JSON forms, or a
``SpecError``; any other exception fails the test. Runs are derandomized, so CI sees the same
500 examples per property every time.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tf_admm.spec import RhoSchedule, Rule, Spec, SpecError

FUZZ = settings(
    max_examples=500,
    deadline=None,
    derandomize=True,  # The same examples on every run: CI failures reproduce.
    database=None,  # Nothing written beside the sources.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_SPEC_FIELDS = [
    "rules",
    "default",
    "rho",
    "update_every",
    "update_unit",
    "admm_rounds",
    "retrain_rounds",
    "prune_stages",
    "quant_admm_rounds",
    "quant_fractions",
    "centroid_update",
]
_RULE_FIELDS = [
    "name",
    "pattern",
    "layer_type",
    "sparsity",
    "ratio",
    "rho",
    "weights",
    "bits",
    "scheme",
    "clusters",
    "per_channel",
    "structure",
    "block",
    "n",
    "m",
]
_RHO_FIELDS = ["initial", "multiplier", "maximum"]
_WORDS = [
    "uniform",
    "power_of_two",
    "kmeans",
    "step",
    "epoch",
    "none",
    "sum",
    "mean",
    "filter",
    "block",
    "n_of_m",
    "kernel",
    "fc1",
    "Dense",
    ".*",
    "(",
    "",
]

# Values that broke or nearly broke validation: non-finite floats, ints beyond float and int64
# range, bools where numbers are expected, empty containers and strings, bad regexes.
_NASTY = st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        -1,
        0,
        0.0,
        -0.0,
        1,
        1.0,
        1e-320,
        1e308,
        2**63,
        2**64,
        10**400,
        -(10**400),
        True,
        False,
        None,
        "",
        "1",
        [],
        {},
        [None],
        "a{4294967296}",
        "(" * 200 + ")" * 200,
    ]
).map(copy.deepcopy)  # Fresh containers: a mutation must not edit the constants.

_KEYS = st.sampled_from(_SPEC_FIELDS + _RULE_FIELDS + _RHO_FIELDS) | st.text(max_size=8)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and +-inf included.
    | st.text(max_size=12)
    | st.sampled_from(_WORDS)
    | _NASTY
)
_JSON_LIKE = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=6),
    max_leaves=25,
)

# Valid configs.

_positive = st.floats(min_value=1e-12, max_value=1e6) | st.integers(min_value=1, max_value=10**6)
_text = st.text(min_size=1, max_size=10)


@st.composite
def _rho_configs(draw) -> dict[str, Any]:
    initial = draw(_positive)
    config = {
        "initial": initial,
        "multiplier": draw(st.floats(min_value=1, max_value=100) | st.integers(1, 10)),
    }
    maximum = draw(st.sampled_from(["absent", "none", "number"]))
    if maximum == "none":
        config["maximum"] = None
    elif maximum == "number":
        # initial * factor with factor >= 1 never rounds below initial.
        config["maximum"] = initial * draw(st.floats(min_value=1, max_value=1e6))
    return config


@st.composite
def _rule_configs(draw, matcher: bool) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if matcher:
        field, value = draw(
            st.tuples(st.just("name"), _text)
            | st.tuples(st.just("pattern"), st.sampled_from([".*", "fc\\d+", "conv[12]", "a|b"]))
            | st.tuples(st.just("layer_type"), st.sampled_from(["Conv2D", "Dense", "Embedding"]))
        )
        config[field] = value
    prune = draw(st.sampled_from(["none", "sparsity", "ratio"]))
    if prune == "sparsity":
        config["sparsity"] = draw(
            st.floats(min_value=0, max_value=1, exclude_max=True) | st.just(0)
        )
    elif prune == "ratio":
        config["ratio"] = draw(st.floats(min_value=1, max_value=1e6) | st.integers(1, 10**300))
    quantize = draw(st.sampled_from(["none", "bits", "clusters"]))
    if quantize == "bits":
        config["bits"] = draw(st.integers(1, 8))
        scheme = draw(st.sampled_from([None, "uniform", "power_of_two", "kmeans"]))
        if scheme is not None:
            config["scheme"] = scheme
        if scheme != "kmeans" and draw(st.booleans()):
            config["per_channel"] = draw(st.booleans())
    elif quantize == "clusters":
        config["clusters"] = draw(st.integers(2, 2**63 - 1))
        if draw(st.booleans()):
            config["scheme"] = "kmeans"
    if prune == "none" and quantize == "none":
        config["sparsity"] = 0.5
    structure = draw(st.sampled_from([None, "filter", "channel", "column", "block", "n_of_m"]))
    if structure is not None:
        config["structure"] = structure
        if structure == "n_of_m":
            # n and m fix the sparsity: no sparsity, ratio or keep of its own.
            config.pop("sparsity", None)
            config.pop("ratio", None)
            m = draw(st.integers(2, 2**63 - 1))
            config.update(n=draw(st.integers(1, m - 1)), m=m)
        elif prune == "none":
            config["sparsity"] = 0.5  # A structured rule needs its own target.
        if structure == "block":
            config["block"] = draw(st.lists(st.integers(1, 2**63 - 1), min_size=2, max_size=2))
    if draw(st.booleans()):
        config["rho"] = draw(_positive)
    if draw(st.booleans()):
        config["weights"] = draw(st.lists(_text, min_size=1, max_size=3, unique=True))
    return config


def _fractions():
    """Valid fraction lists: increasing in (0, 1), then 1."""
    return st.tuples(
        st.lists(
            st.floats(min_value=0, max_value=1, exclude_min=True, exclude_max=True),
            max_size=4,
            unique=True,
        ),
        st.sampled_from([1, 1.0]),
    ).map(lambda t: sorted(t[0]) + [t[1]])


@st.composite
def _spec_configs(draw) -> dict[str, Any]:
    rules = draw(st.lists(_rule_configs(matcher=True), max_size=3))
    config: dict[str, Any] = {"rules": rules}
    if not rules or draw(st.booleans()):
        config["default"] = draw(_rule_configs(matcher=False))
    optional = {
        "rho": _positive | _rho_configs(),
        "update_every": st.integers(1, 2**63 - 1),
        "update_unit": st.sampled_from(["step", "epoch"]),
        "admm_rounds": st.integers(1, 10**4),
        "retrain_rounds": st.integers(0, 10**4),
        "quant_admm_rounds": st.integers(1, 10**4),
        "prune_stages": _fractions(),
        "quant_fractions": _fractions(),
        "centroid_update": st.sampled_from(["none", "sum", "mean"]),
    }
    config.update(draw(st.fixed_dictionaries({}, optional=optional)))
    maximum = config.get("rho", {}).get("maximum") if isinstance(config.get("rho"), dict) else None
    if maximum is not None:
        # A rule's own rho above the schedule's cap is refused (tested in spec_test).
        for rule in config["rules"] + ([config["default"]] if "default" in config else []):
            if "rho" in rule:
                rule["rho"] = min(rule["rho"], maximum)
    return config


# Mutation of a valid config.


def _slots(value: Any, parent: Any = None, key: Any = None):
    """Every (container, key) pair inside ``value``, depth first."""
    if parent is not None:
        yield parent, key
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _slots(v, value, k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _slots(v, value, i)


@st.composite
def _mutated(draw, valid) -> Any:
    config = copy.deepcopy(draw(valid))
    for _ in range(draw(st.integers(1, 3))):
        slots = list(_slots(config))
        action = draw(st.sampled_from(["replace", "nasty", "delete", "add"]))
        if action == "add":
            dicts = [config] + [c[k] for c, k in slots if isinstance(c[k], dict)]
            target = draw(st.sampled_from(dicts))
            target[draw(_KEYS)] = copy.deepcopy(draw(_JSON_LIKE))
            continue
        if not slots:
            continue
        container, key = draw(st.sampled_from(slots))
        if action == "delete":
            del container[key]
        else:
            # A copy: later mutations must not edit values that hypothesis may hand out again.
            container[key] = copy.deepcopy(draw(_NASTY if action == "nasty" else _JSON_LIKE))
    return config


# The properties.


def _round_trips(spec: Spec) -> None:
    assert isinstance(spec, Spec)
    assert Spec.from_dict(spec.to_dict()) == spec
    assert Spec.from_json(spec.to_json()) == spec
    # A valid spec is strict JSON (no NaN or infinity) and survives a reload of that text.
    strict = json.dumps(spec.to_dict(), allow_nan=False)
    assert Spec.from_dict(json.loads(strict)) == spec
    for rule in spec._all_rules():
        assert Rule.from_config(rule.get_config()) == rule
    assert RhoSchedule.from_config(spec.rho.get_config()) == spec.rho


def _builds_or_refuses(build, config) -> Any:
    """``build(config)``, or None for a SpecError; any other exception fails the test."""
    try:
        return build(config)
    except SpecError as error:
        assert str(error)  # Every refusal says something.
        return None


@FUZZ
@given(_spec_configs())
def test_valid_configs_build_and_round_trip_exactly(config):
    spec = Spec.from_dict(config)
    _round_trips(spec)
    assert Spec.from_json(json.dumps(config)) == spec


@FUZZ
@given(_JSON_LIKE | _mutated(_spec_configs()))
@example({"rules": "", "default": {"sparsity": 0.5}})
@example({1: 2, "a": 3})
@example({"default": {"sparsity": 0.5}, "rho": 10**400})
@example({"default": {"sparsity": 0.5}, "quant_fractions": [10**400]})
@example({"default": {"sparsity": 0.5}, "update_every": 10**5000})
@example({"rules": [{"pattern": "a{4294967296}", "sparsity": 0.5}]})
@example({"rules": [{"name": "a", "sparsity": 10**5000}]})
@example({"rules": [{"name": "fc1", "sparsity": 0.5, "weights": ["kernel", "kernel"]}]})
def test_any_json_like_config_builds_a_valid_spec_or_raises_spec_error(config):
    spec = _builds_or_refuses(Spec.from_dict, config)
    if spec is not None:
        _round_trips(spec)


@FUZZ
@given(
    _JSON_LIKE.map(json.dumps)  # NaN and Infinity tokens included.
    | _mutated(_spec_configs()).map(json.dumps)
    | st.tuples(_spec_configs().map(json.dumps), st.floats(0, 1)).map(
        lambda t: t[0][: int(len(t[0]) * t[1])]  # Truncated, as by a partial write.
    )
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
@example("[" * 100_000 + "]" * 100_000)
@example('{"admm_rounds": ' + "1" * 5000 + "}")
@example(b"\xff\xfe{")
@example(None)
@example(42)
def test_any_json_text_builds_a_valid_spec_or_raises_spec_error(text):
    spec = _builds_or_refuses(Spec.from_json, text)
    if spec is not None:
        _round_trips(spec)


@FUZZ
@given(_JSON_LIKE | _mutated(_rule_configs(matcher=True)) | _mutated(_rule_configs(False)))
@example({"name": 10**5000, "sparsity": 0.5})
@example({"name": "a", "ratio": 10**400})
@example({"name": "a", "clusters": 2**64})
def test_rule_from_config_builds_a_valid_rule_or_raises_spec_error(config):
    rule = _builds_or_refuses(Rule.from_config, config)
    if rule is not None:
        assert isinstance(rule, Rule)
        assert Rule.from_config(rule.get_config()) == rule
        assert Rule.from_config(json.loads(json.dumps(rule.get_config(), allow_nan=False))) == rule
        assert 0 <= rule.target_sparsity < 1


@FUZZ
@given(_JSON_LIKE | _mutated(_rho_configs()))
@example({"initial": 10**400})
@example({"initial": 1, "maximum": 10**400})
def test_rho_schedule_from_config_builds_a_valid_schedule_or_raises_spec_error(config):
    schedule = _builds_or_refuses(RhoSchedule.from_config, config)
    if schedule is not None:
        assert isinstance(schedule, RhoSchedule)
        assert RhoSchedule.from_config(schedule.get_config()) == schedule
        text = json.dumps(schedule.get_config(), allow_nan=False)
        assert RhoSchedule.from_config(json.loads(text)) == schedule
        assert schedule(0) == pytest.approx(schedule.initial)


@FUZZ
@given(_rho_configs(), st.integers(0, 10_000))
def test_rho_schedule_is_positive_and_capped_for_any_round(config, round_index):
    schedule = RhoSchedule.from_config(config)
    rho = schedule(round_index)
    assert rho > 0
    if schedule.maximum is not None:
        assert rho <= schedule.maximum
