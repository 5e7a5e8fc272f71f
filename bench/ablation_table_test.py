"""bench.ablation_table on hand-made bench.ablation outputs and recipe results.json files."""

import dataclasses
import json
import os

import pytest

from bench import ablation_table


def _ablation(directory, variant, allocation, seed, test, validation, **settings):
    """A bench.ablation output (its settings and scores) with dense 99.00% / 98.80%."""
    result = {
        "variant": variant,
        "allocation": allocation,
        "seed": seed,
        "kept": [131, 1311, 874, 262],
        "target_ratio": None,
        "admm_epochs": 24,
        "retrain_epochs": 16,
        "pretrain_epochs": 12,
        "rho0": 3e-4,
        "rho_mult": 1.042,
        "every": 100,
        "batch_size": 128,
        "cache_dir": "runs/ablation",
        "ratio": 167.0,
        "dense_test": 0.9900,
        "dense_validation": 0.9880,
        "test": test,
        "validation": validation,
    }
    result.update(settings)
    path = directory / f"{variant}_{allocation}_s{seed}.json"
    path.write_text(json.dumps(result), encoding="utf-8")
    return path


def _recipe(directory, config, seed, dense, pruned, validation=None):
    directory.mkdir(parents=True)
    results = {
        "dense_accuracy": dense,
        "pruned_accuracy": pruned,
        "pruning_ratio": 167.02,
        "run": {
            "command": f"python -m recipes.lenet5_mnist --config={config} --seed={seed}",
            "commit": "0123456789abcdef",
            "seed": seed,
        },
    }
    if validation:
        results["validation"] = dict(zip(("dense_accuracy", "pruned_accuracy"), validation))
    (directory / "results.json").write_text(json.dumps(results), encoding="utf-8")


def test_ablation_defaults_are_bench_ablations_so_commands_name_only_what_differs():
    from bench import ablation

    defaults = dataclasses.asdict(ablation.Settings())
    for name, value in ablation_table._ABLATION_DEFAULTS.items():
        expected = list(defaults[name]) if isinstance(defaults[name], tuple) else defaults[name]
        assert value == expected, name


def test_frontier_defaults_are_the_sweep_protocols_so_commands_name_only_what_differs():
    from bench import sweep

    defaults = dataclasses.asdict(sweep.Protocol())
    del defaults["dataset"]
    assert ablation_table._FRONTIER_DEFAULTS == defaults


def test_a_frontier_point_is_a_run_with_its_gaps_and_rebuilt_command(tmp_path):
    protocol = dict(ablation_table._FRONTIER_DEFAULTS, dataset="mnist")
    protocol.update(epochs=60, prune_epochs=36, rho_multiplier=1.028, distill_weight=0.5)
    record = {
        "protocol": protocol,
        "seed": 2,
        "arm": "tf_admm:lamp",
        "target_ratio": 167.0,
        "achieved_ratio": 166.99,
        "dense": {"validation": 0.9930, "test": 0.9923},
        "validation": 0.9911,
        "test": 0.9916,
        "provenance": {"command": "python -m bench.frontier ...", "commit": "abc123", "seed": 2},
    }
    path = tmp_path / "point.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    run = ablation_table.load_run(str(path))
    assert run.test_gap == pytest.approx(-0.07) and run.validation_gap == pytest.approx(-0.19)
    assert (run.seed, run.ratio, run.commit) == (2, 166.99, "abc123")
    assert run.command == (
        "python -m bench.frontier --dataset=mnist --seeds=2 --ratios=167 --arms=tf_admm:lamp "
        "--epochs=60 --prune_epochs=36 --rho_multiplier=1.028 --distill_weight=0.5"
    )


def test_rows_give_each_ingredients_mean_gaps_and_what_it_adds(tmp_path):
    runs = tmp_path / "ablation"
    runs.mkdir()
    # Without: gaps -0.30 and -0.10 (mean -0.20); with: -0.05 and -0.15 (mean -0.10).
    _ablation(runs, "api", "hand", 0, 0.9870, 0.9850)
    _ablation(runs, "api", "hand", 1, 0.9890, 0.9870)
    _ablation(runs, "api_fresh", "hand", 0, 0.9895, 0.9880)
    _ablation(runs, "api_fresh", "hand", 1, 0.9885, 0.9870, every=50)
    _recipe(tmp_path / "steps_s0", "steps.json", 0, 0.9920, 0.9910, (0.9900, 0.9895))
    ingredients_file = tmp_path / "ingredients.json"
    ingredients_file.write_text(
        json.dumps(
            {
                "ratio": 167,
                "ingredients": [
                    {
                        "name": "fresh optimizer",
                        "without": [str(runs / "api_hand_s*.json")],
                        "with": [str(runs / "api_fresh_hand_s*.json")],
                    },
                    {
                        "name": "steps",
                        "without": [str(tmp_path / "epochs_s*" / "results.json")],
                        "with": [str(tmp_path / "steps_s*" / "results.json")],
                    },
                ],
            }
        ),
        encoding="utf-8",
    )
    ratio, ingredients = ablation_table.load_ingredients(str(ingredients_file))
    rows = ablation_table.measure(ingredients)
    assert ratio == 167.0
    assert rows[0].added() == pytest.approx(0.10)
    assert rows[0].added("validation_gap") == pytest.approx(0.15)
    cells = ablation_table.table_rows(rows)
    assert cells[0] == (
        "fresh optimizer",
        "-0.20 ± 0.14 (n=2)",
        "-0.10 ± 0.07 (n=2)",
        "+0.10",
        "+0.15",
        "167x",
        "0, 1",
        # The seed is the seeds column; a flag off its default is named.
        "`python -m bench.ablation --variant=api_fresh --allocation=hand --seed=S`<br>"
        "`python -m bench.ablation --variant=api_fresh --allocation=hand --seed=S --every=50`",
        "-",
    )
    # No runs without the ingredient yet: the row says so and adds nothing.
    assert cells[1] == (
        "steps",
        "no runs",
        "-0.10 (n=1)",
        "-",
        "-",
        "167x",
        "0",
        "`python -m recipes.lenet5_mnist --config=steps.json --seed=S`",
        "01234567",
    )
    markdown = ablation_table.format_markdown(ratio, rows)
    assert "What each ingredient adds at 167x" in markdown
    assert "| fresh optimizer | -0.20 ± 0.14 (n=2) | -0.10 ± 0.07 (n=2) | +0.10 | +0.15 |" in (
        markdown
    )


def test_adds_compares_the_seeds_both_sides_have(tmp_path):
    runs = tmp_path / "ablation"
    runs.mkdir()
    # Without: seed 0 only (-0.30). With: seeds 0, 1, 2 (-0.10, -0.40, -0.40; mean -0.30).
    _ablation(runs, "api", "hand", 0, 0.9870, 0.9850)
    for seed, test in ((0, 0.9890), (1, 0.9860), (2, 0.9860)):
        _ablation(runs, "api", "lamp", seed, test, 0.9860)
    (row,) = ablation_table.measure(
        [
            ablation_table.Ingredient(
                "x", (str(runs / "api_hand_s*.json"),), (str(runs / "api_lamp_s*.json"),)
            )
        ]
    )
    assert row.paired_seeds() == [0]
    assert row.added() == pytest.approx(0.20)  # seed 0: -0.10 - (-0.30), not 0.00 over all
    cells = ablation_table.table_rows([row])[0]
    assert cells[2] == "-0.30 ± 0.17 (n=3)" and cells[3] == "+0.20" and cells[6] == "0"


def test_unknown_files_and_incomplete_ingredients_are_refused(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmark": "overhead"}), encoding="utf-8")
    with pytest.raises(ValueError, match="bench.ablation output .* or a bench.frontier point"):
        ablation_table.load_run(str(other))
    with pytest.raises(ValueError, match="'without' and 'with'"):
        ablation_table.Ingredient.from_config({"name": "x", "with": ["a"]})


def test_the_shipped_ingredients_file_names_issue_13s_five_ingredients():
    shipped = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ablation_167x.json")
    ratio, ingredients = ablation_table.load_ingredients(shipped)
    assert ratio == 167.0
    names = " ".join(i.name for i in ingredients).lower()
    for word in ("allocation", "steps", "stages", "distillation", "fresh optimizer"):
        assert word in names
