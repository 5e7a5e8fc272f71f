"""bench.results on small hand-made benchmark outputs: tables, computed comparisons, noise, plots.

The outputs below have the shape the benchmarks write (see bench/smoke_test.py for the real
ones); their numbers are chosen so that every comparison has a known answer.
"""

import dataclasses
import json
import os

import pytest

from bench import plots, results


def _provenance(benchmark, dataset=None, **settings):
    if dataset is not None:
        settings["dataset"] = dataset
    return {
        "benchmark": benchmark,
        "command": f"python -m bench.{benchmark} --seed={settings.get('seed', 0)}",
        "settings": settings,
        "machine": {"nproc": 2, "cpu_model": "test CPU", "tensorflow": "2.x", "tfmot": "0.8"},
        "start": {"time_utc": "2026-01-01T00:00:00+00:00", "load_average": [0.5, 0.5, 0.5]},
        "end": {"time_utc": "2026-01-01T01:00:00+00:00", "load_average": [0.7, 0.6, 0.5]},
    }


# Each seed has its own dense model; the frontier's gaps are to these.
DENSE = {0: {"test": 0.9900, "validation": 0.9850}, 1: {"test": 0.9920, "validation": 0.9860}}
# (arm, ratio): test gaps of seeds 0 and 1 in points, validation gaps (None: the same).
# Same allocation: tf-admm reaches 100x (mean -0.10), tfmot:lamp 50x: 2x.
# Best practice: tfmot:uniform is chosen at 100x on validation and is within too: 1x.
FRONTIER_GRID = {
    ("tf_admm:lamp", 50): ((0.00, -0.02), None),
    ("tf_admm:lamp", 100): ((-0.05, -0.15), None),
    ("tf_admm:lamp", 200): ((-0.30, -0.50), None),
    ("tfmot:lamp", 50): ((-0.05, -0.05), None),
    ("tfmot:lamp", 100): ((-0.20, -0.40), None),
    ("tfmot:lamp", 200): ((-1.00, -1.20), None),
    ("tfmot:uniform", 50): ((0.10, 0.10), (-0.20, -0.20)),  # Best on test, not on validation.
    ("tfmot:uniform", 100): ((-0.05, -0.05), (-0.10, -0.10)),
    ("tfmot:uniform", 200): ((-0.60, -0.60), None),
}


def _record(arm, ratio, seed, test_gap, validation_gap):
    """A point record as bench.sweep.run_point writes it."""
    library, allocation = arm.split(":")
    kept = round(430_500 / ratio)
    return {
        "protocol": {"dataset": "mnist"},
        "seed": seed,
        "arm": arm,
        "library": library,
        "allocation": allocation,
        "target_ratio": float(ratio),
        "kept": {"conv1": 1, "conv2": 2, "fc1": kept - 4, "fc2": 1},
        "nonzeros": {"conv1": 1, "conv2": 2, "fc1": kept - 4, "fc2": 1},
        "weights": 430_500,
        "achieved_ratio": 430_500 / kept,
        "dense": dict(DENSE[seed]),
        "validation": DENSE[seed]["validation"] + validation_gap / 100,
        "test": DENSE[seed]["test"] + test_gap / 100,
        "seconds": 30.0 if library == "tf_admm" else 20.0,
        "load_average": {"start": [1.5, 1.0, 1.0], "end": [2.5, 1.0, 1.0]},
        "date": f"2026-01-01T0{seed}:00:00+0000",
        "provenance": {
            "command": "python -m bench.frontier --seeds=0,1",
            "commit": "0123456789abcdef",
            "seed": seed,
        },
        "machine": {"nproc": 2, "cpu_model": "test CPU", "tensorflow": "2.x", "tfmot": "0.8"},
    }


def _frontier(dataset="mnist", shift=0.0):
    """A bench.frontier document; ``shift`` is added to every test accuracy."""
    doc = _provenance("frontier", dataset, seeds=[0, 1], ratios=[50.0, 100.0, 200.0])
    doc["format"] = 2
    doc["protocol"] = {
        "dataset": dataset,
        "epochs": 40,
        "prune_epochs": 24,
        "pretrain_epochs": 12,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "final_learning_rate": 1e-5,
        "update_every": 100,
        "rho": 3e-4,
        "rho_multiplier": 1.042,
        "validation_examples": 5000,
        "train_examples": None,
    }
    doc["tolerance_points"] = {"mnist": 0.1, "fashion_mnist": 0.5}[dataset]
    doc["records"] = []
    doc["points"] = []
    for seed in (0, 1):
        for (arm, ratio), (test, validation) in FRONTIER_GRID.items():
            record = _record(arm, ratio, seed, test[seed], (validation or test)[seed])
            record["test"] += shift
            doc["records"].append(record)
            source = "cached" if seed == 0 else "run"
            doc["points"].append({"seed": seed, "arm": arm, "ratio": ratio, "source": source})
    return doc


def _storage(bits, kept, weight_data_ratio, ratio_with_indices):
    sizes = {"conv1": 500, "conv2": 25_000, "fc1": 400_000, "fc2": 5_000}
    return {
        "layers": [
            {"name": n, "num_weights": sizes[n], "num_nonzeros": kept[n], "bits_per_value": bits[n]}
            for n in sizes
        ],
        "totals": {
            "weight_data_ratio": weight_data_ratio,
            "ratio_with_indices": ratio_with_indices,
        },
    }


def _combined_run(variant, accuracy, weight_data, with_indices, gzip_bytes, seconds, **extra):
    kept = {"conv1": 200, "conv2": 1100, "fc1": 1120, "fc2": 150}
    bits = {"conv1": 3, "conv2": 3, "fc1": 2, "fc2": 3}
    run = {
        "point": "config",
        "target_ratio": 167.5,
        "variant": variant,
        "library": "tf_admm" if variant == "tf_admm" else "tfmot",
        "epochs": 34,
        "accuracy": accuracy,
        "nonzeros": kept,
        "requested_nonzeros": kept,
        "pruning_ratio": 167.5,
        "bits": bits,
        "distinct_values": {"conv1": 8, "conv2": 8, "fc1": 4, "fc2": 8},
        "storage": _storage(bits, kept, weight_data, with_indices),
        "files": {
            "converter_default": {"file_bytes": 444_256, "gzip_bytes": gzip_bytes, "accuracy": 0.9},
            "tflite_export": {"file_bytes": 16_800, "gzip_bytes": 10_000, "accuracy": 0.9},
        },
        "seconds": seconds,
    }
    run.update(extra)
    return run


def _history():
    # Two pruning ADMM epochs, one retraining, one quantization ADMM, one on the levels.
    phases = [0, 0, 1, 2, 4]
    return [
        {
            "epoch": e,
            "phase": phase,
            "primal_residual": 0.1 / (e + 1),
            "dual_residual": 0.01 / (e + 1),
            "rho": 0.003 * 1.6**e,
            "admm_phase": phases[min(e + 1, 4)],
            "conv1_sparsity": 0.6 if e >= 1 else 0.0,
            "fc1_sparsity": 0.9972 if e >= 1 else 0.0,
            **({"conv1_quant_error": 0.05 / (e + 1)} if phase >= 2 else {}),
        }
        for e, phase in enumerate(phases)
    ]


def _combined(seed=0):
    doc = _provenance("combined", "mnist", seed=seed)
    doc["config"] = {"path": "recipes/configs/lenet5_admm_quant.json"}
    doc["budget"] = {
        "epochs": 34,
        "scheduled": 22,
        "final": 12,
        "prune_ramp": 12,
        "prune_finetune": 4,
        "cluster": 14,
        "pcqat": 4,
    }
    doc["layers"] = ["conv1", "conv2", "fc1", "fc2"]
    doc["sizes"] = {"conv1": 500, "conv2": 25_000, "fc1": 400_000, "fc2": 5_000}
    doc["points"] = [{"name": "config", "target_ratio": 167.5}]
    doc["dense"] = {
        "accuracy": 0.99,
        "checkpoint": "dense.h5",
        "float_file_bytes": 1_727_420,
        "float_gzip_bytes": 1_590_000,
    }
    doc["runs"] = [
        _combined_run("tf_admm", 0.9890, 2000.0, 600.0, 9_000, 300.0, history=_history()),
        # tfmot: better accuracy and smaller gzip file, worse storage ratios, faster.
        _combined_run("tfmot_cluster", 0.9895, 1800.0, 480.0, 8_000, 200.0),
        _combined_run("tfmot_pcqat", 0.9850, 1100.0, 400.0, 9_500, 350.0),
    ]
    return doc


def _overhead():
    doc = _provenance("overhead", steps=40, repeats=3, batch_size=128, sparsity=0.9)
    variant = lambda ratio, state: {  # noqa: E731
        "median_ms": 10 * ratio,
        "mean_ms": 10 * ratio,
        "ratio": ratio,
        "ratio_per_repeat": [ratio, ratio],
        "extra_state_bytes": state,
    }
    doc["models"] = {
        "lenet5": {
            "variants": {
                "plain": variant(1.0, 0),
                "admm": variant(1.12, 5_000_000),
                "retrain": variant(1.02, 5_000_000),
                "tfmot": variant(1.05, 1_700_000),
            }
        }
    }
    return doc


def _write(directory, name, doc):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    return path


def test_shortfalls_list_every_comparison_tfmot_wins_and_none_it_loses():
    found = results.shortfalls([_frontier(), _combined(), _overhead()])
    text = "\n".join(found)
    # Frontier, same allocation: tf-admm ahead at every ratio and twice as far: nothing.
    assert "same allocation" not in text
    # Best practice: tfmot:uniform (chosen on validation) ahead at 100x, as far, and faster.
    assert (
        "frontier (mnist, 40 epochs), best practice, 100x: tfmot:uniform -0.05 ± 0.00 points "
        "from dense against tf-admm -0.10 ± 0.07 (test, mean over 2 seeds)." in found
    )
    assert (
        "frontier (mnist, 40 epochs), best practice: within 0.1 point of dense, tfmot reaches "
        "100x and tf-admm 100x." in found
    )
    assert "best practice, 50x" not in text  # tfmot:uniform is better on test, not chosen.
    assert "wall time per point, median: tfmot 20 s, tf-admm 30 s (1.50x)" in text
    # Combined: tfmot_cluster has higher accuracy, a smaller converter file and less time.
    assert "tfmot prune + cluster test accuracy 98.95% against tf-admm's 98.90%" in text
    assert "tfmot prune + cluster converter (Optimize.DEFAULT) file, gzipped bytes 8,000" in text
    assert "tfmot prune + cluster wall time (s) 200 against tf-admm's 300" in text
    assert "weight-data ratio" not in text and "ratio with indices" not in text
    assert "PCQAT test accuracy" not in text
    # Overhead: tfmot's step is cheaper than ADMM's, not than retraining's; its state smaller.
    assert "tfmot 1.05x plain against tf-admm (admm) 1.12x" in text
    assert "(retrain)" not in text
    assert "added training state, tfmot 1,660 KiB against tf-admm 4,883 KiB" in text


def test_noise_reports_per_point_differences_and_differing_settings():
    first, second = _frontier(), _frontier(shift=0.001)
    second["settings"]["work_dir"] = "elsewhere"  # Where files go is no difference.
    result = results.noise(first, second)
    assert result["settings"] == {}
    assert len(result["points"]) == 18  # Per ratio, arm and seed.
    for _, measures in result["points"]:
        assert measures["accuracy"][2] == pytest.approx(0.001)
        assert measures["ratio"][2] == 0
    assert result["max_accuracy_points"] == pytest.approx(0.1)
    # A rerun of some of the points only is still a noise measure on those points.
    subset = _frontier(shift=0.001)
    subset["records"] = [r for r in subset["records"] if r["target_ratio"] == 50.0][:2]
    subset["settings"].update(ratios=[50.0], seeds=[0])
    result = results.noise(first, subset)
    assert result["settings"] == {}
    assert [key for key, _ in result["points"]] == [
        ("50x", "tf_admm:lamp", "seed 0"),
        ("50x", "tfmot:lamp", "seed 0"),
    ]
    combined_other = _combined(seed=1)
    assert results.noise(_combined(), combined_other)["settings"] == {"seed": (0, 1)}


def test_report_writes_tables_plots_noise_and_missing_inputs(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    frontier = _write(inputs, "frontier_mnist.json", _frontier())
    again = _write(inputs, "frontier_mnist_again.json", _frontier(shift=-0.002))
    combined = _write(inputs, "combined_mnist.json", _combined())
    overhead = _write(inputs, "overhead.json", _overhead())
    missing = str(inputs / "frontier_fashion_mnist.json")
    out = tmp_path / "docs" / "RESULTS.md"
    report = results.run(
        results.Settings(
            frontier=(frontier, missing),
            combined=(combined,),
            overhead=(overhead,),
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
    old = _provenance("frontier", "fashion_mnist", seed=0, epochs=18, prune_epochs=10)
    old["dense"] = {"accuracy": 0.99}
    old["runs"] = []
    path = _write(tmp_path, "frontier_fashion_mnist.json", old)
    settings = results.Settings(
        frontier=(path,), combined=(), overhead=(), out=str(tmp_path / "RESULTS.md")
    )
    with pytest.raises(results.ObsoleteOutputError, match="old frontier protocol") as error:
        results.run(settings)
    assert "python -m bench.frontier --dataset=fashion_mnist" in str(error.value)
    assert not (tmp_path / "RESULTS.md").exists()


def test_fashion_mnist_uses_its_own_tolerance_unless_one_is_given(tmp_path):
    path = _write(tmp_path, "frontier_fashion_mnist.json", _frontier("fashion_mnist"))
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


def test_recipe_dir_gives_a_section_with_layer_bars_and_admm_history(tmp_path):
    from tf_admm.compat import tf

    recipe = tmp_path / "recipe"
    (recipe / "logs" / "train").mkdir(parents=True)
    layers = [
        {"layer": "conv1", "weight": "kernel", "weights": 500, "nonzeros": 200},
        {"layer": "fc1", "weight": "kernel", "weights": 400_000, "nonzeros": 1_120},
    ]
    storage = {
        "layers": [
            {"name": "conv1", "bits_per_value": 3, "num_weights": 500, "num_nonzeros": 200},
            {"name": "fc1", "bits_per_value": 2, "num_weights": 400_000, "num_nonzeros": 1_120},
        ],
        "totals": {"weight_data_ratio": 1900.0, "ratio_with_indices": 600.0},
    }
    recipe_results = {
        "dense_accuracy": 0.991,
        "pruned_accuracy": 0.990,
        "accuracy_drop_points": 0.1,
        "pruning_ratio": 167.5,
        "layers": layers,
        "storage": storage,
        "spec": {"rules": [{"name": "conv1", "sparsity": 0.6, "bits": 3}]},
    }
    (recipe / "results.json").write_text(json.dumps(recipe_results), encoding="utf-8")
    # What Keras' TensorBoard callback writes: epoch_<metric> scalars, step = epoch.
    writer = tf.summary.create_file_writer(str(recipe / "logs" / "train"))
    with writer.as_default():
        for epoch, (residual, phase) in enumerate([(0.1, 0), (0.05, 1), (0.01, 2)]):
            tf.summary.scalar("epoch_primal_residual", residual, step=epoch)
            tf.summary.scalar("epoch_rho", 0.003 * 2**epoch, step=epoch)
            tf.summary.scalar("epoch_admm_phase", float(phase), step=epoch)
            tf.summary.scalar("epoch_conv1_sparsity", 0.6, step=epoch)
    writer.close()

    epochs = results.read_tensorboard(str(recipe / "logs" / "train"))
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    assert [round(e["primal_residual"], 4) for e in epochs] == [0.1, 0.05, 0.01]
    assert epochs[2]["admm_phase"] == 2.0

    out = tmp_path / "RESULTS.md"
    report = results.run(
        results.Settings(
            frontier=(), combined=(), overhead=(), recipe_dir=str(recipe), out=str(out)
        )
    )
    assert "## Recipe run" in report["markdown"]
    assert "| 99.10 | 99.00 | +0.10 | 167.5x | 1,900x | 600x |" in report["markdown"]
    # The published-numbers table sets the recipe's storage ratios beside the paper's.
    markdown = report["markdown"]
    assert "| 1,910x | tf-admm recipe 1,900x (99.00%, its dense model 99.10%) |" in markdown
    assert "| 623x | tf-admm recipe 600x (99.00%, its dense model 99.10%) |" in markdown
    names = {os.path.basename(p) for p in report["plots"]}
    assert names == {"recipe_layers.png", "recipe_admm.png"}


def test_phase_names_follow_tf_admm_phases():
    import tf_admm

    assert sorted(plots.PHASE_NAMES) == sorted(int(p) for p in tf_admm.Phase)
    assert set(plots.VARIANT_LABELS) == {"tf_admm", "tfmot_cluster", "tfmot_pcqat"}


def test_a_pruning_recipe_run_is_set_beside_the_published_pruning_ratio():
    recipe = {
        "dense_accuracy": 0.9932,
        "pruned_accuracy": 0.9931,
        "pruning_ratio": 71.16,
        "spec": {"rules": [{"name": "fc1", "sparsity": 0.991}]},
    }
    assert results._recipe_claims(recipe) == {
        "pruning": "tf-admm recipe 71.2x (99.31%, its dense model 99.32%)"
    }


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
    path = _write(tmp_path, "ingredients.json", ingredients)
    report = results.run(
        results.Settings(
            frontier=(), combined=(), overhead=(), ablation=path, out=str(tmp_path / "R.md")
        )
    )
    markdown = report["markdown"]
    assert "## Ablation: what each ingredient adds at 167x" in markdown
    assert "| measured | -0.20 (n=1) | -0.05 (n=1) | +0.15 | - | 167x | 0 |" in markdown
    assert "Not measured yet (no runs on one side): unmeasured." in markdown
