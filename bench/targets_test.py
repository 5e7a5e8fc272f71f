"""bench.targets: recipe runs over seeds against an issue's bars, with computed verdicts."""

import os

import pytest

from bench import targets
from bench.results_testing import recipe_run as write_run


def _target(tmp_path, **fields):
    return targets.Target(
        name=fields.pop("name", "300x"), runs=(str(tmp_path / "*.json"),), **fields
    )


def test_a_mean_gap_beyond_the_bar_is_missed_by_its_distance(tmp_path):
    # Test gaps -0.32, -0.36, -0.28: mean -0.32, sd 0.04; the bar is 0.25.
    for seed, compressed in enumerate((0.9888, 0.9884, 0.9892)):
        write_run(tmp_path, f"s{seed}.json", seed, 0.9920, compressed, tflite=compressed)
    (result,) = targets.measure([_target(tmp_path, max_drop=0.25, min_ratio=300)])
    assert [r.seed for r in result.runs] == [0, 1, 2]
    assert result.mean_test_gap == pytest.approx(-0.32)
    assert result.verdict() == "**missed**: accuracy by 0.07 points (-0.32 against -0.25)"
    # Within the bar, the same runs meet it.
    (result,) = targets.measure([_target(tmp_path, max_drop=0.35, min_ratio=300)])
    assert result.verdict() == "**met**"


def test_ratios_below_their_bars_are_missed_and_compare_to_one_decimal(tmp_path):
    for seed in range(3):
        write_run(
            tmp_path,
            f"s{seed}.json",
            seed,
            0.99,
            0.99,
            ratio=166.99,
            weight_data=2047.9 - seed,
            with_indices=600.0 + seed,
        )
    bars = {"min_ratio": 167, "min_weight_data_ratio": 1910, "min_ratio_with_indices": 623}
    (result,) = targets.measure([_target(tmp_path, max_drop=0.1, **bars)])
    # 166.99 shows as 167.0x: it meets 167; the smallest ratio with indices is 600.0x.
    assert result.verdict() == "**missed**: ratio with indices (600.0x against 623x)"
    (result,) = targets.measure([_target(tmp_path, max_drop=0.1, min_ratio=168)])
    assert result.verdict() == "**missed**: pruning ratio (167.0x against 168x)"
    # A ratio the runs did not record cannot meet a bar.
    write_run(tmp_path, "s3.json", 3, 0.99, 0.99)
    (result,) = targets.measure([_target(tmp_path, max_drop=0.1, min_weight_data_ratio=1910)])
    assert result.verdict() == "**missed**: weight data ratio (not measured against 1,910x)"


def test_fewer_runs_than_seeds_leave_it_undecided(tmp_path):
    write_run(tmp_path, "s0.json", 0, 0.99, 0.98)
    (one,) = targets.measure([_target(tmp_path, max_drop=0.1)])
    assert one.verdict() == "not decided: 1 of 3 seeds"
    (none,) = targets.measure([targets.Target("absent", (str(tmp_path / "nothing_*.json"),), 0.1)])
    assert none.runs == () and none.verdict() == "not decided: 0 of 3 seeds"
    table = targets.format_markdown([none]).splitlines()
    assert table[-1] == "| absent | 0 | - | - | - | - | - | not decided: 0 of 3 seeds | - | - |"


def test_table_row_shows_seeds_spreads_litert_command_and_link(tmp_path):
    for seed, compressed in enumerate((0.9902, 0.9885, 0.9879)):
        write_run(
            tmp_path,
            f"s{seed}.json",
            seed,
            0.9920 - 0.0001 * seed,
            compressed,
            ratio=239.97,
            weight_data=2047.9 + seed,
            with_indices=624.5,
            tflite=compressed - (0.0001 if seed == 1 else 0.0),
        )
    target = _target(
        tmp_path,
        name="combined",
        max_drop=0.1,
        record="docs/experiments.md#an-entry",
        config="docs/data/x.json",
    )
    row = targets.format_markdown(targets.measure([target]), "docs/RESULTS.md").splitlines()[-1]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # Test gaps -0.18, -0.34, -0.39: mean -0.303, sd 0.110; validation 0, -0.1, -0.2.
    assert cells == [
        "[combined](experiments.md#an-entry)",
        "0, 1, 2",
        "240.0x",
        "2,047.9-2,049.9x / 624.5x",
        "-0.10 ± 0.10",
        "-0.30 ± 0.11",
        "-0.01 (3 files)",
        "**missed**: accuracy by 0.20 points (-0.30 against -0.10)",
        "`python -m recipes.lenet5_mnist --flagfile=recipes/configs/x.flags "
        "--config=docs/data/x.json --seed=S --model_dir=DIR --verbose=2`",
        "89abcdef 2026-12-07",
    ]


def test_claims_fill_the_published_rows_they_name(tmp_path):
    for seed in range(2):
        write_run(
            tmp_path,
            f"s{seed}.json",
            seed,
            0.99,
            0.9897 - 0.0002 * seed,
            ratio=240.0,
            weight_data=2048.0,
            with_indices=624.5,
        )
    target = _target(
        tmp_path,
        name="combined",
        max_drop=0.1,
        published=("weight_data_ratio", "ratio_with_indices"),
    )
    assert targets.claims(targets.measure([target])) == {
        "weight_data_ratio": "tf-admm recipe: 2,048.0x less weight data, -0.04 ± 0.01 test points "
        "from dense (2 seeds)",
        "ratio_with_indices": "tf-admm recipe: 624.5x with indices, -0.04 ± 0.01 test points "
        "from dense (2 seeds)",
    }


def test_a_malformed_target_names_itself_and_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"Target 'x': Expected keys among .*\['colour'\]"):
        targets.Target.from_config({"name": "x", "runs": ["a"], "max_drop": 0.1, "colour": 1})
    with pytest.raises(ValueError, match=r"Target 'x': Expected published keys among .*\['p'\]"):
        targets.Target.from_config(
            {"name": "x", "runs": ["a"], "max_drop": 0.1, "published": ["p"]}
        )
    with pytest.raises(ValueError, match="Target 'x': Expected max_drop >= 0"):
        targets.Target("x", ("a",), -0.1)
    with pytest.raises(ValueError, match="a name and globs of runs"):
        targets.Target("x", (), 0.1)


def test_the_shipped_targets_file_loads_and_names_runs_that_exist(monkeypatch):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(root)  # Its globs start at the repository root.
    loaded = targets.load("bench/targets_issue13.json")
    assert len(loaded) == 4
    for result in targets.measure(loaded):
        assert len(result.runs) >= 3, result.target.name
