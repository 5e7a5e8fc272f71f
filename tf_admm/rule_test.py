"""Tests for rules and rho schedules: targets, matching and validation messages."""

import pytest

from tf_admm.rule import RhoSchedule, Rule
from tf_admm.spec import Spec, SpecError


def test_ratio_and_sparsity_are_equivalent_targets():
    assert Rule(name="a", ratio=50).target_sparsity == pytest.approx(0.98)
    assert Rule(name="a", sparsity=0.98).target_sparsity == 0.98


def test_rho_schedule_grows_geometrically_up_to_its_cap():
    schedule = RhoSchedule(initial=1e-3, multiplier=10.0, maximum=5e-2)
    assert [schedule(r) for r in range(4)] == pytest.approx([1e-3, 1e-2, 5e-2, 5e-2])
    assert schedule(1, initial=2e-3) == pytest.approx(2e-2)


def test_layer_type_matches_exact_class_only():
    assert not Rule(layer_type="Conv2D", sparsity=0.5).matches("dw", "DepthwiseConv2D")


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: Rule(name="a", sparsity=1.0), r"sparsity in \[0, 1\); received: sparsity=1.0"),
        (lambda: Rule(name="a", sparsity=-0.1), "received: sparsity=-0.1"),
        (lambda: Rule(name="a", sparsity="high"), "received: sparsity='high'"),
        (lambda: Rule(name="a", ratio=0.5), "ratio >= 1; received: ratio=0.5"),
        (lambda: Rule(name="a", sparsity=0.5, ratio=2), "one of sparsity, ratio or keep"),
        (lambda: Rule(name="a", ratio=2, keep=5), "received: ratio=2, keep=5"),
        (lambda: Rule(name="a", keep=0), "keep to be an integer >= 1; received: keep=0"),
        (lambda: Rule(name="a", keep=2.5), "received: keep=2.5"),
        (lambda: Rule(name="a", pattern="b", sparsity=0.5), "at most one of name, pattern"),
        (lambda: Rule(pattern="(", sparsity=0.5), "regular expression"),
        (lambda: Rule(name="a", sparsity=0.5, rho=0), "rho > 0; received: rho=0"),
        (lambda: Rule(name="a", sparsity=0.5, rho=-1.0), "received: rho=-1.0"),
        (lambda: Rule(name="a", sparsity=0.5, weights="kernel"), "weights"),
        (lambda: RhoSchedule(initial=0.0), "initial > 0"),
        (lambda: RhoSchedule(multiplier=0.5), "multiplier >= 1"),
        (lambda: RhoSchedule(initial=1.0, maximum=0.5), "maximum >= initial"),
    ],
)
def test_bad_input_names_the_field(make, message):
    with pytest.raises(SpecError, match=message):
        make()


def test_structured_sparsity_counts_groups_and_n_of_m_fixes_it():
    assert Rule(name="a", structure="filter", keep=3).sparsity_for(12) == 0.75
    assert Rule(name="a", structure="block", block=(1, 4), ratio=4).sparsity_for(100) == 0.75
    n_of_m = Rule(name="a", structure="n_of_m", n=1, m=4)
    assert n_of_m.prunes and n_of_m.sparsity_for(1000) == 0.75
    # A structured rule has its own target, so it never shares target_ratio.
    spec = Spec(rules=(n_of_m,), default=Rule(), target_ratio=10)
    assert not spec.shares_budget(n_of_m) and spec.shares_budget(spec.default)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: Rule(name="a", structure="row", sparsity=0.5),
            r"Rule\(name='a'\): Expected structure in \['filter', 'channel', 'column', 'block', "
            r"'n_of_m'\]; received: structure='row'",
        ),
        (
            lambda: Rule(name="a", structure="block", sparsity=0.5),
            r"Expected block=\(rows, columns\) with structure='block'; received no block",
        ),
        (
            lambda: Rule(name="a", structure="block", block=(4,), sparsity=0.5),
            r"Expected block to be two integers >= 1 .*; received: block=\(4,\)",
        ),
        (
            lambda: Rule(name="a", structure="block", block=(0, 4), sparsity=0.5),
            r"received: block=\(0, 4\)",
        ),
        (lambda: Rule(name="a", structure="block", block="1x4", sparsity=0.5), "block='1x4'"),
        (
            lambda: Rule(name="a", structure="filter", block=(1, 4), sparsity=0.5),
            r"Expected block only with structure='block'; received: structure='filter'",
        ),
        (
            lambda: Rule(name="a", sparsity=0.5, n=2),
            r"Expected n only with structure='n_of_m'; received: structure=None",
        ),
        (
            lambda: Rule(name="a", structure="n_of_m", n=4, m=4),
            r"Rule\(name='a'\): Expected n < m with structure='n_of_m'; received: n=4, m=4",
        ),
        (
            lambda: Rule(name="a", structure="n_of_m", n=2),
            r"Expected n and m with structure='n_of_m'; received: n=2, m=None",
        ),
        (lambda: Rule(name="a", structure="n_of_m", n=0, m=4), r"n to be an integer >= 1"),
        (lambda: Rule(name="a", structure="n_of_m", n=1, m=4.0), r"received: m=4.0"),
        (
            lambda: Rule(name="a", structure="n_of_m", n=2, m=4, sparsity=0.5),
            r"Expected no sparsity, ratio or keep with structure='n_of_m' .*; "
            r"received: sparsity=0.5",
        ),
        (
            lambda: Rule(name="a", structure="filter", bits=4),
            r"Expected sparsity, ratio or keep \(counting filter groups\) with "
            r"structure='filter'; structured rules do not share Spec.target_ratio; received none",
        ),
        (
            lambda: Spec(default=Rule(structure="channel"), target_ratio=10),
            r"Rule\(default\): Expected sparsity, ratio or keep",
        ),
    ],
)
def test_bad_structure_fields_name_the_field(make, message):
    with pytest.raises(SpecError, match=message):
        make()
