"""bench.comparisons on hand-made point records whose comparisons have known answers."""

import math

import pytest

from bench import comparisons

# Each seed has its own dense model: the gaps below are to these.
DENSE = {0: {"test": 0.9900, "validation": 0.9850}, 1: {"test": 0.9920, "validation": 0.9860}}


def record(arm, ratio, seed, test_gap, validation_gap=None, seconds=10.0):
    """A point record as bench.sweep.run_point writes it, gaps given in points."""
    validation_gap = test_gap if validation_gap is None else validation_gap
    library, allocation = arm.split(":")
    return {
        "arm": arm,
        "library": library,
        "allocation": allocation,
        "seed": seed,
        "target_ratio": float(ratio),
        "achieved_ratio": float(ratio),
        "dense": dict(DENSE[seed]),
        "test": DENSE[seed]["test"] + test_gap / 100,
        "validation": DENSE[seed]["validation"] + validation_gap / 100,
        "seconds": seconds,
    }


def grid():
    """(arm, ratio): (test gaps of seeds 0 and 1, validation gaps or None for the same)."""
    return {
        ("tf_admm:lamp", 50): ((0.02, 0.00), None),
        ("tf_admm:lamp", 100): ((-0.05, -0.15), None),  # mean -0.10: just within 0.1
        ("tf_admm:lamp", 200): ((-0.08, -0.10), None),  # within: tf-admm's highest
        ("tf_admm:lamp", 400): ((-0.30, -0.50), None),
        ("tfmot:lamp", 50): ((-0.05, -0.05), None),  # tfmot:lamp's highest
        ("tfmot:lamp", 100): ((-0.20, -0.10), (-0.20, -0.10)),
        ("tfmot:lamp", 200): ((-0.40, -0.40), None),
        ("tfmot:lamp", 400): ((-1.00, -1.00), None),
        ("tfmot:uniform", 50): ((0.00, 0.00), None),
        # Better on test than tfmot:lamp, worse on validation: not chosen.
        ("tfmot:uniform", 100): ((-0.05, -0.05), (-0.50, -0.50)),
        # Better on validation: chosen, and within on test.
        ("tfmot:uniform", 200): ((-0.10, -0.10), (-0.10, -0.10)),
        ("tfmot:uniform", 400): ((-2.00, -2.00), None),
    }


def records():
    found = []
    for (arm, ratio), (test, validation) in grid().items():
        for seed in (0, 1):
            found.append(record(arm, ratio, seed, test[seed], validation and validation[seed]))
    return found


def test_cells_hold_each_seeds_gap_to_its_own_dense_model_with_mean_and_sd():
    table = comparisons.cells(records())
    cell = table[("tf_admm:lamp", 100.0)]
    assert cell.seeds == (0, 1)
    assert cell.test == pytest.approx((-0.05, -0.15))
    assert cell.test_mean == pytest.approx(-0.10)
    assert cell.test_sd == pytest.approx(math.sqrt(0.005))  # sample sd of -0.05, -0.15
    assert comparisons.format_cell(cell.test_mean, cell.test_sd) == "-0.10 ± 0.07"
    assert table[("tfmot:uniform", 100.0)].validation_mean == pytest.approx(-0.50)
    one_seed = comparisons.cells([record("tfmot:lamp", 50, 1, -0.25)])
    assert one_seed[("tfmot:lamp", 50.0)].test_sd is None
    assert comparisons.format_cell(-0.25, None) == "-0.25"


def test_cells_refuse_two_records_of_one_seed_arm_and_ratio():
    with pytest.raises(ValueError, match="seed=0, arm=tfmot:lamp, ratio=50"):
        comparisons.cells([record("tfmot:lamp", 50, 0, 0.0), record("tfmot:lamp", 50, 0, 0.1)])


def test_arm_rows_give_exact_cells_per_ratio_and_arm():
    rows = comparisons.arm_rows(comparisons.cells(records()))
    assert rows[0] == (
        "50x",
        "tf_admm:lamp",
        "2",
        "50.0x",
        "99.11 ± 0.13",
        "+0.01 ± 0.01",
        "+0.01 ± 0.01",
        "10",
    )
    assert [row[:2] for row in rows[:3]] == [
        ("50x", "tf_admm:lamp"),
        ("50x", "tfmot:lamp"),
        ("50x", "tfmot:uniform"),
    ]
    assert rows[4][1:] == (
        "tfmot:lamp",
        "2",
        "100.0x",
        "98.95 ± 0.21",
        "-0.15 ± 0.07",
        "-0.15 ± 0.07",
        "10",
    )


def test_same_allocation_compares_lamp_with_lamp_and_tf_admm_reaches_four_times_as_far():
    same, _ = comparisons.comparisons(records(), tolerance_points=0.1)
    assert same.ratios == [50.0, 100.0, 200.0, 400.0]
    assert {cell.arm for cell in same.theirs.values()} == {"tfmot:lamp"}
    assert same.highest == {"tf_admm": 200.0, "tfmot": 50.0}
    assert same.factor == 4.0 and same.at_least_twice
    assert same.verdict() == (
        "Same allocation (tf_admm:lamp against tfmot:lamp): highest ratio within 0.1 point of "
        "dense (mean test gap over seeds): tf-admm 200x, tfmot 50x; tf-admm's is 4.00x "
        "tfmot's: at least 2x."
    )
    assert comparisons.comparison_rows(same)[1] == (
        "100x",
        "-0.10 ± 0.07",
        "tfmot:lamp",
        "-0.15 ± 0.07",
        "-0.15 ± 0.07",
        "+0.05",
    )


def test_best_practice_chooses_tfmots_arm_on_validation_and_reports_its_test_gap():
    _, best = comparisons.comparisons(records(), tolerance_points=0.1)
    chosen = {ratio: cell.arm for ratio, cell in best.theirs.items()}
    # 100x: tfmot:uniform is better on test (-0.05) but worse on validation: tfmot:lamp.
    assert chosen == {
        50.0: "tfmot:uniform",
        100.0: "tfmot:lamp",
        200.0: "tfmot:uniform",
        400.0: "tfmot:lamp",
    }
    assert best.highest == {"tf_admm": 200.0, "tfmot": 200.0}
    assert best.factor == 1.0 and not best.at_least_twice
    assert best.verdict().endswith(
        "tf-admm 200x, tfmot 200x; tf-admm's is 1.00x tfmot's: NOT at least 2x."
    )
    assert comparisons.comparison_rows(best)[2] == (
        "200x",
        "-0.09 ± 0.01",
        "tfmot:uniform",
        "-0.10 ± 0.00",
        "-0.10 ± 0.00",
        "+0.01",
    )


def test_a_tie_on_validation_goes_to_uniform():
    tie = [record("tfmot:lamp", 50, 0, -0.3, -0.2), record("tfmot:uniform", 50, 0, -0.1, -0.2)]
    best = comparisons.best_practice(comparisons.cells(tie), 0.1)
    assert best.theirs[50.0].arm == "tfmot:uniform"


def test_verdict_when_one_library_reaches_none_and_at_the_highest_ratio_measured():
    only_ours = [record("tf_admm:lamp", 100, 0, -0.05), record("tfmot:lamp", 100, 0, -0.5)]
    same = comparisons.same_allocation(comparisons.cells(only_ours), 0.1)
    assert same.highest == {"tf_admm": 100.0, "tfmot": None}
    # tfmot's highest is somewhere below 100x, the lowest ratio measured: not decided.
    assert same.at_least_twice is None
    assert (
        "tf-admm 100x (the highest ratio measured), tfmot none of the measured ratios (below "
        "100x); tfmot reaches none: not decided yet: measure lower ratios for tfmot or higher "
        "ones for tf-admm." in same.verdict()
    )
    # With 50x measured and missed by tfmot, tf-admm's 100x is at least twice tfmot's.
    lower = only_ours + [record("tf_admm:lamp", 50, 0, 0.0), record("tfmot:lamp", 50, 0, -0.2)]
    same = comparisons.same_allocation(comparisons.cells(lower), 0.1)
    assert same.at_least_twice is True
    assert same.verdict().endswith("tfmot reaches none: at least 2x.")
    # tf-admm at the highest ratio measured, tfmot one step below: a lower bound, not decided.
    bound = [
        record("tf_admm:lamp", 100, 0, -0.05),
        record("tf_admm:lamp", 50, 0, 0.0),
        record("tfmot:lamp", 100, 0, -0.5),
        record("tfmot:lamp", 50, 0, -0.05),
    ]
    same = comparisons.same_allocation(comparisons.cells(bound), 0.1)
    assert same.factor == 2.0 and same.at_least_twice is True
    bound[0] = record("tf_admm:lamp", 100, 0, -0.5)
    same = comparisons.same_allocation(comparisons.cells(bound), 0.1)
    assert same.factor == 1.0 and same.at_least_twice is False
    # Both reach the highest ratio measured: tf-admm's may go further, so not decided.
    top = [record("tf_admm:lamp", 100, 0, -0.05), record("tfmot:lamp", 100, 0, -0.05)]
    same = comparisons.same_allocation(comparisons.cells(top), 0.1)
    assert same.factor == 1.0 and same.at_least_twice is None
    neither = [record("tf_admm:lamp", 100, 0, -0.5), record("tfmot:lamp", 100, 0, -0.05)]
    same = comparisons.same_allocation(comparisons.cells(neither), 0.1)
    assert same.factor is None and same.at_least_twice is False
    assert "tf-admm reaches none: NOT at least 2x." in same.verdict()
    alone = comparisons.cells([record("tf_admm:lamp", 100, 0, -0.05)])
    assert (
        comparisons.same_allocation(alone, 0.1)
        .verdict()
        .endswith("no ratio measured for both libraries yet.")
    )
    # Fashion-MNIST's tolerance is wider: -0.5 is within 0.5.
    assert comparisons.tolerance_for("fashion_mnist") == 0.5
    wide = comparisons.same_allocation(comparisons.cells(neither), 0.5)
    assert wide.highest == {"tf_admm": 100.0, "tfmot": 100.0}
    with pytest.raises(ValueError, match="dataset='cifar10'"):
        comparisons.tolerance_for("cifar10")


def test_summary_prints_both_comparisons_with_their_verdicts():
    text = comparisons.format_summary(records(), 0.1)
    assert "-0.10 ± 0.07" in text
    assert text.count("at least 2x.") == 2 and "NOT at least 2x." in text


def test_verdict_when_neither_reaches_a_measured_ratio_asks_for_lower_ones():
    missed = [record("tf_admm:lamp", 100, 0, -0.6), record("tfmot:lamp", 100, 0, -0.9)]
    same = comparisons.same_allocation(comparisons.cells(missed), 0.5)
    assert same.at_least_twice is None
    assert same.verdict().endswith(
        "tf-admm reaches none: not decided yet: neither reaches a measured ratio; measure "
        "lower ones."
    )
