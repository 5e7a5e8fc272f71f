"""bench.seeds: one row per recipe run, the mean gap to dense per config over its seeds."""

import pytest

from bench import seeds
from bench.results_testing import recipe_run


def _write(directory, config, seed, dense, pruned, validation=None):
    return recipe_run(
        directory,
        f"{config}_s{seed}.json",
        seed,
        dense,
        pruned,
        ratio=167.02,
        validation=validation,
        flagfile=None,
        config=f"recipes/configs/{config}",
    )


def test_table_has_a_row_per_run_and_the_mean_and_spread_of_the_gaps_per_config(tmp_path):
    _write(tmp_path, "a.json", 1, 0.9920, 0.9910, (0.9910, 0.9890))
    _write(tmp_path, "a.json", 0, 0.9920, 0.9900, (0.9914, 0.9894))
    _write(tmp_path, "a.json", 2, 0.9930, 0.9930, (0.9920, 0.9920))
    _write(tmp_path, "b.json", 0, 0.9920, 0.9880)
    runs = seeds.load([str(tmp_path / "*.json")])
    assert [(r.config, r.seed) for r in runs] == [("a.json", 0), ("a.json", 1), ("a.json", 2)] + [
        ("b.json", 0)
    ]
    table = seeds.format_table(runs).splitlines()
    assert table[2] == (
        "| a.json | 0 | 167.0x | 99.14 → 98.94 | -0.20 | 99.20 → 99.00 | -0.20 | 89abcdef | "
        "2026-12-07 |"
    )
    assert (
        table[5] == "| b.json | 0 | 167.0x |  |  | 99.20 → 98.80 | -0.40 | 89abcdef | 2026-12-07 |"
    )
    # Test gaps -0.20, -0.10, 0.00: mean -0.10, sample sd 0.10; validation -0.20, -0.20, 0.
    assert table[-2] == "| a.json | 3 | -0.13 ± 0.12 | -0.10 ± 0.10 |"
    assert table[-1] == "| b.json | 1 |  | -0.40 |"


def test_no_matching_file_names_the_flag(tmp_path):
    with pytest.raises(ValueError, match="--runs: .*none match"):
        seeds.load([str(tmp_path / "*.json")])


def test_main_without_runs_is_a_usage_error_and_the_flag_leaves_other_parsers_alone():
    from absl import app, flags

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["prog"])  # Parses: --runs is not required globally.
    with pytest.raises(app.UsageError, match="--runs"):
        seeds.main(["prog"])
