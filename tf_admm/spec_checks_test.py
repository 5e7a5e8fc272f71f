"""Tests for the spec's field checks: message wording, NumPy scalars, frozen counts."""

import dataclasses

import numpy as np
import pytest

from tf_admm import spec_checks
from tf_admm.spec_checks import SpecError


def test_fail_words_the_error_as_expected_then_received():
    error = spec_checks.fail("Rule(name='a')", "keep >= 1", "keep", 0)
    assert isinstance(error, SpecError) and isinstance(error, ValueError)
    assert str(error) == "Rule(name='a'): Expected keep >= 1; received: keep=0"


def test_show_describes_values_python_cannot_print():
    assert spec_checks.show("x") == "'x'"
    assert spec_checks.show(10**5000) == f"<int of {(10**5000).bit_length()} bits>"


def test_numpy_scalars_become_python_numbers_in_frozen_fields():
    @dataclasses.dataclass(frozen=True)
    class Pair:
        first: object
        second: object

    pair = Pair(np.float32(0.5), [np.int64(3), 4])
    spec_checks.plain_fields(pair)
    assert type(pair.first) is float and pair.second == [3, 4]
    assert all(type(v) is int for v in pair.second)


@pytest.mark.parametrize("value", [0, -1.0, True, "1", float("nan"), 10**400])
def test_check_positive_number_refuses_naming_the_field(value):
    with pytest.raises(SpecError, match=r"Expected rho"):
        spec_checks.check_positive_number("Spec", "rho", value)


def test_counts_above_int64_are_refused():
    spec_checks.check_positive_int("Spec", "admm_rounds", spec_checks.MAX_COUNT)
    with pytest.raises(SpecError, match=r"admm_rounds <= 2\*\*63 - 1"):
        spec_checks.check_positive_int("Spec", "admm_rounds", spec_checks.MAX_COUNT + 1)


def test_fractions_must_increase_to_one():
    assert spec_checks.check_fractions("f", [0.5, 1]) == (0.5, 1.0)
    for bad in ([], [0.5], [0.5, 0.5, 1.0], [0.0, 1.0], "1", [True, 1.0]):
        with pytest.raises(SpecError, match="f"):
            spec_checks.check_fractions("f", bad)


def test_frozen_counts_refuse_changes_and_hash():
    counts = spec_checks.FrozenCounts({"a/kernel": 3})
    with pytest.raises(TypeError, match="cannot change"):
        counts["a/kernel"] = 4
    with pytest.raises(TypeError, match="cannot change"):
        counts.update(b=1)
    assert hash(counts) == hash(spec_checks.FrozenCounts({"a/kernel": 3}))


def test_from_mapping_names_unknown_fields():
    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int = 0

    assert spec_checks.from_mapping(Point, "Point", {"x": 2}) == Point(2)
    with pytest.raises(SpecError, match=r"received unknown field\(s\) \['y', 3\]"):
        spec_checks.from_mapping(Point, "Point", {"x": 1, "y": 2, 3: 4})
    with pytest.raises(SpecError, match="a mapping of Point fields"):
        spec_checks.from_mapping(Point, "Point", [1])
