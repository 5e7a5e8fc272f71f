"""bench.results on small hand-made benchmark outputs: tables, computed comparisons, noise, plots.

The outputs below have the shape the benchmarks write (see bench/smoke_test.py for the real
ones); their numbers are chosen so that every comparison has a known answer.
"""

import dataclasses
import json
import os

import pytest

from bench import plots, results
from bench import results_testing as fixtures


def test_a_second_protocol_of_a_dataset_gets_its_own_section_and_plot(tmp_path):
    longer = fixtures.frontier("fashion_mnist", shift=0.001)
    longer["protocol"].update(epochs=60, prune_epochs=36, distill_weight=0.5)
    paths = [
        fixtures.write(tmp_path, "fashion.json", fixtures.frontier("fashion_mnist")),
        fixtures.write(tmp_path, "fashion_60.json", longer),
    ]
    out = tmp_path / "docs" / "RESULTS.md"
    report = results.run(
        results.Settings(
            frontier=tuple(paths),
            combined=(),
            overhead=(),
            structured=(),
            ablation=None,
            out=str(out),
            command="python -m bench.results --test",
        )
    )
    markdown = out.read_text(encoding="utf-8")
    first = "## Accuracy against pruning ratio: LeNet-5 on fashion_mnist\n"
    second = (
        "## Accuracy against pruning ratio: LeNet-5 on fashion_mnist, 60 epochs, distillation\n"
    )
    assert markdown.count(first) == 1 and markdown.count(second) == 1
    assert markdown.index(first) < markdown.index(second)
    names = sorted(os.path.basename(p) for p in report["plots"])
    assert names == ["frontier_fashion_mnist.png", "frontier_fashion_mnist_60ep_distilled.png"]
    assert all(os.path.exists(p) for p in report["plots"])
    assert "(frontier_fashion_mnist_60ep_distilled.png)" in markdown


def test_report_writes_tables_plots_noise_and_missing_inputs(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    frontier = fixtures.write(inputs, "frontier_mnist.json", fixtures.frontier())
    again = fixtures.write(inputs, "frontier_mnist_again.json", fixtures.frontier(shift=-0.002))
    combined = fixtures.write(inputs, "combined_mnist.json", fixtures.combined())
    overhead = fixtures.write(inputs, "overhead.json", fixtures.overhead())
    missing = str(inputs / "frontier_fashion_mnist.json")
    out = tmp_path / "docs" / "RESULTS.md"
    report = results.run(
        results.Settings(
            frontier=(frontier, missing),
            combined=(combined,),
            overhead=(overhead,),
            structured=(),
            compare=(again,),
            ablation=None,
            out=str(out),
            command="python -m bench.results --test",
        )
    )
    markdown = out.read_text(encoding="utf-8")
    assert markdown == report["markdown"]
    for heading in (
        "## Published numbers beside ours",
        "## Accuracy against pruning ratio: LeNet-5 on mnist",
        "## Pruning + quantization: LeNet-5 on mnist",
        "## Training-step overhead",
        "## Where tf-admm does not win",
        "## Run-to-run noise",
        "## Missing inputs",
    ):
        assert heading in markdown
    # Provenance of every run (the frontier's points too), the published figures, our rows.
    assert "python -m bench.frontier --seed=0" in markdown
    assert "2 cores (test CPU)" in markdown
    assert (
        "- points: 18 records (9 trained by this command, 9 read from the cache), trained by:\n"
        "\n```\npython -m bench.frontier --seeds=0,1\n```" in markdown
    )
    assert "- commits of the points: 0123456789ab\n" in markdown
    assert "- points trained from 2026-01-01T00:00:00+0000 to 2026-01-01T01:00:00+0000" in markdown
    assert "- 1-minute load average at the start and end of the points: 1.5 to 2.5" in markdown
    for figure in ("71.2x", "167x", "1,910x", "623x", "~39x", "~10x"):
        assert f"| {figure} |" in markdown
    assert (
        "| 71.2x | same allocation: tf-admm 100x, tfmot 50x; best practice: tf-admm 100x, "
        "tfmot 100x (highest ratio whose mean test accuracy over 2 seeds is within 0.1 point "
        "of dense, 99.10% on average) |" in markdown
    )
    # Per arm and ratio: mean ± sd over the seeds (98.95 and 99.05; gaps -0.05 and -0.15).
    assert (
        "| 100x | tf_admm:lamp | 2 | 100.0x | 99.00 ± 0.07 | -0.10 ± 0.07 | -0.10 ± 0.07 | 30 |"
        in (markdown)
    )
    assert (
        "| 50x | tfmot:uniform | 2 | 50.0x | 99.20 ± 0.14 | +0.10 ± 0.00 | -0.20 ± 0.00 | 20 |"
        in (markdown)
    )
    assert "### Same allocation (tf_admm:lamp against tfmot:lamp)" in markdown
    assert "| 100x | -0.10 ± 0.07 | tfmot:lamp | -0.30 ± 0.14 | -0.30 ± 0.14 | +0.20 |" in markdown
    # Best practice: tfmot:lamp at 50x (better on validation), tfmot:uniform at 100x.
    assert "| 50x | -0.01 ± 0.01 | tfmot:lamp | -0.05 ± 0.00 | -0.05 ± 0.00 | +0.04 |" in markdown
    assert "| 100x | -0.10 ± 0.07 | tfmot:uniform | -0.10 ± 0.00 | -0.05 ± 0.00 | -0.05 |" in (
        markdown
    )
    assert (
        "**Same allocation (tf_admm:lamp against tfmot:lamp): highest ratio within 0.1 point of "
        "dense (mean test gap over seeds): tf-admm 100x, tfmot 50x; tf-admm's is 2.00x tfmot's: "
        "at least 2x.**" in markdown
    )
    assert "tf-admm 100x, tfmot 100x; tf-admm's is 1.00x tfmot's: NOT at least 2x.**" in markdown
    assert "| config | tf-admm prune + quantize | 34 | 98.90 | 167.5x | 2,000x | 600x |" in markdown
    assert "| lenet5 | admm | 11.20 | 11.20 | 1.120x |" in markdown
    # Noise: the second run against the first, per point.
    assert "frontier_mnist_again.json` minus `" in markdown
    assert "| 100x / tf_admm:lamp / seed 0 | 98.95 -> 98.75 (-0.20) |" in markdown
    assert "Largest accuracy difference: 0.20 points." in markdown
    assert "within the noise" in markdown
    assert (
        "frontier_fashion_mnist.json` (frontier): not found; produce it with "
        "`python -m bench.frontier --dataset=fashion_mnist`" in markdown
    )
    assert report["missing"] == [("frontier", missing)]
    expected = {
        "frontier_mnist.png",
        "combined_mnist.png",
        "combined_mnist_layers.png",
        "combined_mnist_admm.png",
    }
    assert {os.path.basename(p) for p in report["plots"]} == expected
    for name in expected:
        assert (out.parent / name).read_bytes().startswith(b"\x89PNG")
        assert f"]({name})" in markdown


def test_an_old_frontier_output_is_refused_naming_the_command_that_replaces_it(tmp_path):
    old = fixtures.provenance("frontier", "fashion_mnist", seed=0, epochs=18, prune_epochs=10)
    old["dense"] = {"accuracy": 0.99}
    old["runs"] = []
    path = fixtures.write(tmp_path, "frontier_fashion_mnist.json", old)
    settings = results.Settings(
        frontier=(path,), combined=(), overhead=(), out=str(tmp_path / "RESULTS.md")
    )
    with pytest.raises(results.ObsoleteOutputError, match="old frontier protocol") as error:
        results.run(settings)
    assert "python -m bench.frontier --dataset=fashion_mnist" in str(error.value)
    assert not (tmp_path / "RESULTS.md").exists()


def test_fashion_mnist_uses_its_own_tolerance_unless_one_is_given(tmp_path):
    path = fixtures.write(
        tmp_path, "frontier_fashion_mnist.json", fixtures.frontier("fashion_mnist")
    )
    settings = results.Settings(
        frontier=(path,), combined=(), overhead=(), out=str(tmp_path / "RESULTS.md")
    )
    markdown = results.run(settings)["markdown"]
    # Within 0.5 point: tf-admm reaches 200x (mean -0.40), tfmot:lamp 100x (mean -0.30).
    assert (
        "highest ratio within 0.5 point of dense (mean test gap over seeds): tf-admm 200x (the "
        "highest ratio measured), tfmot 100x; tf-admm's is 2.00x tfmot's: at least 2x." in markdown
    )
    forced = dataclasses.replace(settings, tolerance_points=0.1)
    assert "tf-admm 100x, tfmot 50x" in results.run(forced)["markdown"]


def test_report_with_nothing_to_read_names_every_missing_output(tmp_path):
    out = tmp_path / "RESULTS.md"
    report = results.run(
        results.Settings(
            frontier=(str(tmp_path / "a.json"),),
            combined=(),
            overhead=(str(tmp_path / "b.json"),),
            ablation=str(tmp_path / "c.json"),
            out=str(out),
        )
    )
    assert report["plots"] == []
    assert "python -m bench.overhead" in report["markdown"]
    assert ("ablation", str(tmp_path / "c.json")) in report["missing"]
    assert "No benchmark output to compare." in report["markdown"]
    assert "| 71.2x | no data yet |" in report["markdown"]


def test_phase_names_follow_tf_admm_phases():
    import tf_admm

    assert sorted(plots.PHASE_NAMES) == sorted(int(p) for p in tf_admm.Phase)
    assert set(plots.VARIANT_LABELS) == {"tf_admm", "tfmot_cluster", "tfmot_pcqat"}


def test_ablation_section_has_a_row_per_ingredient_and_names_the_unmeasured(tmp_path):
    run = {
        "dense_accuracy": 0.9910,
        "pruned_accuracy": 0.9905,
        "pruning_ratio": 167.02,
        "run": {"command": "python -m recipes.lenet5_mnist --seed=0", "commit": "abc", "seed": 0},
    }
    (tmp_path / "with.json").write_text(json.dumps(run), encoding="utf-8")
    without = dict(run, pruned_accuracy=0.9890)
    (tmp_path / "without.json").write_text(json.dumps(without), encoding="utf-8")
    ingredients = {
        "ratio": 167,
        "ingredients": [
            {
                "name": "measured",
                "without": [str(tmp_path / "without.json")],
                "with": [str(tmp_path / "with.json")],
            },
            {
                "name": "unmeasured",
                "without": [str(tmp_path / "none*.json")],
                "with": [str(tmp_path / "with.json")],
            },
        ],
    }
    path = fixtures.write(tmp_path, "ingredients.json", ingredients)
    report = results.run(
        results.Settings(
            frontier=(), combined=(), overhead=(), ablation=path, out=str(tmp_path / "R.md")
        )
    )
    markdown = report["markdown"]
    assert "## Ablation: what each ingredient adds at 167x" in markdown
    assert "| measured | -0.20 (n=1) | -0.05 (n=1) | +0.15 | - | 167x | 0 |" in markdown
    assert "Not measured yet (no runs on one side): unmeasured." in markdown


def test_targets_get_a_section_and_fill_the_published_rows_they_name(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for seed in range(3):  # Test gaps -0.10, -0.20, -0.30.
        fixtures.recipe_run(
            runs,
            f"s{seed}.json",
            seed,
            0.9920,
            0.9910 - 0.001 * seed,
            ratio=240.0,
            weight_data=2048.0,
            with_indices=624.5,
            tflite=0.9910 - 0.001 * seed,
        )
    goals = {
        "targets": [
            {
                "name": "combined",
                "runs": [str(runs / "s*.json")],
                "max_drop": 0.1,
                "min_weight_data_ratio": 1910,
                "published": ["weight_data_ratio"],
            },
            {"name": "pruning 167x", "runs": [str(runs / "none_*.json")], "max_drop": 0.1},
        ]
    }
    path = fixtures.write(tmp_path, "targets.json", goals)
    markdown = results.run(
        results.Settings(
            frontier=(fixtures.write(tmp_path, "frontier_mnist.json", fixtures.frontier()),),
            combined=(),
            overhead=(),
            structured=(),
            ablation=None,
            targets=path,
            out=str(tmp_path / "RESULTS.md"),
        )
    )["markdown"]
    assert "## The recipes against their targets" in markdown
    assert "| combined | 0, 1, 2 | 240.0x | 2,048.0x / 624.5x |" in markdown
    assert "**missed**: accuracy by 0.10 points (-0.20 against -0.10) |" in markdown
    assert "| pruning 167x | 0 | - |" in markdown and "not decided: 0 of 3 seeds" in markdown
    assert (
        "| 1,910x | tf-admm recipe: 2,048.0x less weight data, -0.20 ± 0.10 test points from dense "
        "(3 seeds) |" in markdown
    )
    # A missing targets file is named like any missing input.
    missing = results.run(
        results.Settings(
            frontier=(),
            combined=(),
            overhead=(),
            structured=(),
            ablation=None,
            targets=str(tmp_path / "absent.json"),
            out=str(tmp_path / "again.md"),
        )
    )
    assert ("targets", str(tmp_path / "absent.json")) in missing["missing"]
