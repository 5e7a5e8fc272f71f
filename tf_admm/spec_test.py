"""Tests for the spec: rule order, validation messages of its fields and dict/JSON round trips."""

import dataclasses
import json

import numpy as np
import pytest

from tf_admm.spec import RhoSchedule, Rule, Spec, SpecError, Structure, Unit


def _spec():
    return Spec(
        rules=(
            Rule(name="conv1", sparsity=0.8, rho=2e-3),
            Rule(pattern="fc.*", ratio=50.0, weights=("kernel",)),
            Rule(layer_type="DepthwiseConv2D", sparsity=0.5),
        ),
        default=Rule(sparsity=0.3),
        rho=RhoSchedule(initial=1e-3, multiplier=1.5, maximum=1e-1),
        update_every=300,
        update_unit="step",
        admm_rounds=7,
    )


def test_dict_and_json_round_trips_are_exact():
    spec = _spec()
    assert Spec.from_dict(spec.to_dict()) == spec
    assert Spec.from_json(spec.to_json()) == spec
    assert Spec.from_dict(json.loads(json.dumps(spec.get_config()))) == spec


def test_optional_straight_through_appears_only_when_set_and_round_trips():
    assert "straight_through" not in _spec().to_dict()
    spec = dataclasses.replace(_spec(), straight_through=True)
    assert spec.to_dict()["straight_through"] is True
    assert Spec.from_json(spec.to_json()) == spec


def test_file_round_trip(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(_spec().to_json(indent=2))
    assert Spec.from_file(str(path)) == _spec()


def test_first_matching_rule_wins():
    spec = _spec()
    assert spec.rule_for("conv1", "Conv2D")[0] == 0
    assert spec.rule_for("fc1", "Dense")[0] == 1
    assert spec.rule_for("dw", "DepthwiseConv2D")[0] == 2
    index, rule = spec.rule_for("conv2", "Conv2D")
    assert index is None and rule == spec.default


def test_numbers_are_accepted_for_rho_and_unit_strings():
    spec = Spec(rules=[{"name": "a", "sparsity": 0.5}], rho=0.01, update_unit="epoch")
    assert spec.rho == RhoSchedule(initial=0.01)
    assert spec.update_unit is Unit.EPOCH
    assert isinstance(spec.rules[0], Rule)


@pytest.mark.parametrize(
    "make,message",
    [
        (
            lambda: Spec(rules=[Rule(name="a")]),
            r"rules\[0\]: Rule\(name=.a.\): Expected a compression",
        ),
        (lambda: Spec(default=Rule(sparsity=0.5), target_ratio=0.5), "target_ratio >= 1"),
        (lambda: Spec(target_ratio=10, allocation="best"), "allocation in"),
        (lambda: Spec(default=Rule(), allocated={"a/kernel": 3}), "only together with"),
        (lambda: Spec(target_ratio=10, allocated={"a": 3}), "keys of the form"),
        (
            lambda: Spec(target_ratio=10, allocated={"a/kernel": 0}),
            r"received: allocated\[.a/kernel.\]=0",
        ),
        (
            lambda: Spec(
                rules=[Rule(name="fc", sparsity=0.5, rho=1.0)],
                rho=RhoSchedule(initial=1e-3, multiplier=2.0, maximum=4e-3),
            ),
            r"Spec rules\[0\] \(name='fc'\): Expected rho <= rho.maximum \(0.004\), .*; "
            r"received: rho=1.0",
        ),
        (
            lambda: Spec(default=Rule(sparsity=0.5, rho=0.5), rho=RhoSchedule(maximum=0.1)),
            r"Spec default \(default\): Expected rho <= rho.maximum \(0.1\)",
        ),
        (lambda: Spec(rules=()), "at least one rule"),
        (lambda: Spec(rules=[Rule(sparsity=0.5)]), "rules\\[0\\] to have one of name"),
        (lambda: Spec(default=Rule(name="a", sparsity=0.5)), "default rule without matcher"),
        (lambda: Spec(default=Rule(sparsity=0.5), rho=0.0), "rho > 0; received: rho=0.0"),
        (lambda: Spec(default=Rule(sparsity=0.5), update_unit="hour"), "update_unit"),
        (lambda: Spec(default=Rule(sparsity=0.5), admm_rounds=0), "admm_rounds"),
        (lambda: Spec(default=Rule(sparsity=0.5), update_every=1.5), "update_every"),
        (lambda: Spec.from_dict({"rules": [], "colour": 1}), "unknown field.*colour"),
        (lambda: Spec.from_dict({"rules": [{"name": "a", "sparsty": 0.5}]}), "sparsty"),
        (lambda: Spec.from_json("{not json"), "invalid JSON"),
    ],
)
def test_bad_input_names_the_field(make, message):
    with pytest.raises(SpecError, match=message):
        make()


def test_numpy_scalars_mean_their_python_values():
    spec = Spec(
        rules=(Rule(name="fc1", sparsity=np.float32(0.5), bits=np.int64(3)),),
        rho=RhoSchedule(initial=np.float32(0.25), multiplier=np.float64(2.0)),
        admm_rounds=np.int32(4),
        quant_fractions=[np.float32(0.5), 1.0],
        quant_lock_rounds=np.int64(3),
    )
    assert spec == Spec(
        rules=(Rule(name="fc1", sparsity=0.5, bits=3),),
        rho=RhoSchedule(initial=0.25, multiplier=2.0),
        admm_rounds=4,
        quant_fractions=(0.5, 1.0),
        quant_lock_rounds=3,
    )
    assert type(spec.admm_rounds) is int and type(spec.rules[0].bits) is int
    assert Spec.from_json(spec.to_json()) == spec
    with pytest.raises(SpecError, match="admm_rounds"):
        Spec(rules=spec.rules, admm_rounds=np.float32(2.5))
    with pytest.raises(SpecError, match="per_channel"):
        Rule(name="a", sparsity=0.5, bits=3, per_channel=np.float32(1.0))


def test_prune_stages_validate_and_shape_the_schedule():
    rules = (Rule(name="fc1", sparsity=0.9),)
    spec = Spec(rules=rules, admm_rounds=3, retrain_rounds=2, prune_stages=[0.5, 1])
    assert spec.prune_stages == (0.5, 1.0)
    assert spec.stage_starts() == (0, 5)
    assert [spec.stage_at(r) for r in range(9)] == [0] * 5 + [1] * 4
    assert spec.phase_boundaries() == {"prune_admm": 8}
    assert Spec.from_json(spec.to_json()) == spec
    quantized = Spec(
        rules=(Rule(name="fc1", sparsity=0.9, bits=3),),
        admm_rounds=3,
        retrain_rounds=2,
        prune_stages=(0.5, 1.0),
    )
    assert quantized.phase_boundaries()["quant_start"] == 10
    assert Spec.from_dict({"rules": [{"name": "a", "sparsity": 0.5}]}).prune_stages == (1.0,)
    for bad in ([0.5], [1.0, 0.5, 1.0], [0.0, 1.0], "1", [True]):
        with pytest.raises(SpecError, match="prune_stages"):
            Spec(rules=rules, prune_stages=bad)


def test_structured_rules_round_trip_through_dict_and_json():
    spec = Spec(
        rules=(
            Rule(name="conv1", structure="filter", sparsity=0.5, bits=4),
            Rule(name="conv2", structure="channel", keep=8),
            Rule(name="conv3", structure="column", ratio=4),
            Rule(pattern="fc.*", structure="block", block=[1, 4], sparsity=0.75),
            Rule(layer_type="Dense", structure="n_of_m", n=2, m=4, clusters=8),
        ),
    )
    assert spec.rules[0].structure is Structure.FILTER
    assert spec.rules[3].block == (1, 4)
    config = json.loads(spec.to_json())
    assert config["rules"][3] == {
        "pattern": "fc.*",
        "sparsity": 0.75,
        "structure": "block",
        "block": [1, 4],
    }
    assert config["rules"][4]["n"] == 2 and config["rules"][4]["m"] == 4
    assert "structure" not in _spec().to_dict()["rules"][0]
    assert Spec.from_dict(config) == spec
    assert Spec.from_json(spec.to_json()) == spec
