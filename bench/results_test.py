"""bench.results on small hand-made benchmark outputs: tables, computed comparisons, noise, plots.

The outputs below have the shape the benchmarks write (see bench/smoke_test.py for the real
ones); their numbers are chosen so that every comparison has a known answer.
"""

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


def _frontier_run(library, target, accuracy, seconds=10.0):
    kept = round(430_500 / target)
    return {
        "library": library,
        "target_ratio": float(target),
        "achieved_ratio": 430_500 / kept,
        "accuracy": accuracy,
        "total_nonzeros": kept,
        "nonzeros": {"conv1": 1, "conv2": 2, "fc1": kept - 4, "fc2": 1},
        "seconds": seconds,
    }


def _frontier(dataset="mnist", seed=0, shift=0.0):
    doc = _provenance(
        "frontier", dataset, seed=seed, epochs=18, prune_epochs=10, libraries=["tf_admm", "tfmot"]
    )
    doc["layers"] = ["conv1", "conv2", "fc1", "fc2"]
    doc["dense"] = {"accuracy": 0.9900}
    doc["runs"] = [
        _frontier_run("tf_admm", 50, 0.9905 + shift, seconds=30),
        _frontier_run("tfmot", 50, 0.9895 + shift, seconds=20),
        _frontier_run("tf_admm", 167, 0.9891 + shift, seconds=30),  # within 0.1 points
        _frontier_run("tfmot", 167, 0.9870 + shift, seconds=20),  # 0.3 points down
        _frontier_run("tf_admm", 250, 0.9800 + shift, seconds=30),
        _frontier_run("tfmot", 250, 0.9820 + shift, seconds=20),  # tfmot ahead here
    ]
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


def test_best_ratio_within_tolerance_picks_the_highest_ratio_close_to_dense():
    doc = _frontier()
    best = results.best_ratio_within(doc["runs"], 0.99, tolerance_points=0.1)
    assert best["tf_admm"]["target_ratio"] == 167.0  # 98.91% is 0.09 points down
    assert best["tfmot"]["target_ratio"] == 50.0  # 98.95%; 98.70% at 167x is too far
    none = results.best_ratio_within(doc["runs"], 0.999, tolerance_points=0.1)
    assert none == {"tf_admm": None, "tfmot": None}


def test_shortfalls_list_every_comparison_tfmot_wins_and_none_it_loses():
    found = results.shortfalls([_frontier(), _combined(), _overhead()], tolerance_points=0.1)
    text = "\n".join(found)
    # Frontier: tfmot ahead at 250x and faster; tf-admm reaches further within 0.1 points.
    assert "250x: tfmot 98.20% against tf-admm 98.00% (+0.20 points)" in text
    assert "wall time per point" in text
    assert "within 0.1 points of dense, tfmot reaches" not in text
    assert ", 167x: tfmot" not in text and ", 50x: tfmot" not in text
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
    first, second = _frontier(seed=0), _frontier(seed=1, shift=0.001)
    result = results.noise(first, second)
    assert result["settings"] == {"seed": (0, 1)}
    assert len(result["points"]) == 6
    for _, measures in result["points"]:
        assert measures["accuracy"][2] == pytest.approx(0.001)
        assert measures["ratio"][2] == 0
    assert result["max_accuracy_points"] == pytest.approx(0.1)
    # A rerun of some of the points only is still a noise measure on those points.
    subset = _frontier(seed=1, shift=0.001)
    subset["runs"] = [run for run in subset["runs"] if run["target_ratio"] == 50.0]
    subset["settings"]["ratios"] = [50.0]
    # Settings an older output did not record, and the profile's path, are not differences.
    subset["settings"]["prune_stages"] = [1.0]
    subset["settings"]["profile_config"] = "/elsewhere/lenet5_admm_71x_oneshot.json"
    result = results.noise(first, subset)
    assert result["settings"] == {"seed": (0, 1)}
    assert [key for key, _ in result["points"]] == [("50x", "tf_admm"), ("50x", "tfmot")]


def test_report_writes_tables_plots_noise_and_missing_inputs(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    frontier = _write(inputs, "frontier_mnist.json", _frontier())
    again = _write(inputs, "frontier_mnist_seed1.json", _frontier(seed=1, shift=-0.002))
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
    # Provenance of every run, the published figures, and our rows.
    assert "python -m bench.frontier --seed=0" in markdown
    assert "2 cores (test CPU)" in markdown
    for figure in ("71.2x", "167x", "1,910x", "623x", "~39x", "~10x"):
        assert f"| {figure} |" in markdown
    assert "| 167x | tf-admm | 98.91 | 167.0x |" in markdown
    assert "tf-admm 167.0x (98.91%); tfmot 50.0x (98.95%)" in markdown
    assert "| config | tf-admm prune + quantize | 34 | 98.90 | 167.5x | 2,000x | 600x |" in markdown
    assert "| lenet5 | admm | 11.20 | 11.20 | 1.120x |" in markdown
    # Noise: the seed-1 run against the first, per point.
    assert "frontier_mnist_seed1.json` minus `" in markdown
    assert "98.91 -> 98.71 (-0.20)" in markdown
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


def test_a_staged_frontier_gets_its_own_section_and_is_not_taken_for_noise(tmp_path):
    one_shot = _write(tmp_path, "one_shot.json", _frontier())
    staged_doc = _frontier(shift=0.002)
    staged_doc["settings"].update(
        epochs=36, prune_epochs=20, prune_stages=[0.3333, 1.0], stage_retrain_epochs=4
    )
    staged = _write(tmp_path, "staged.json", staged_doc)
    out = tmp_path / "RESULTS.md"
    report = results.run(
        results.Settings(
            frontier=(one_shot, staged), combined=(), overhead=(), out=str(out), command="x"
        )
    )
    markdown = report["markdown"]
    assert "## Accuracy against pruning ratio: LeNet-5 on mnist\n" in markdown
    assert (
        "## Accuracy against pruning ratio: LeNet-5 on mnist, tf-admm in 2 stages, 36 epochs"
        in (markdown)
    )
    assert (
        "tf-admm prunes in 2 stages at 0.3333 / 1 of the final ratios, 10 ADMM epochs each with "
        "4 epochs of masked retraining between stages; tfmot's sparsity ramp spans the same 24 "
        "epochs" in markdown
    )
    assert "frontier (mnist, 36 epochs, tf-admm in 2 stages), 250x: tfmot" in markdown
    assert "frontier (mnist, 18 epochs), 250x: tfmot" in markdown
    assert "Pass a second run of the same benchmark" in markdown  # No pair to compare.
    names = {os.path.basename(p) for p in report["plots"]}
    assert names == {"frontier_mnist.png", "frontier_mnist_2stages_e36.png"}


def test_report_with_nothing_to_read_names_every_missing_output(tmp_path):
    out = tmp_path / "RESULTS.md"
    report = results.run(
        results.Settings(
            frontier=(str(tmp_path / "a.json"),),
            combined=(),
            overhead=(str(tmp_path / "b.json"),),
            out=str(out),
        )
    )
    assert report["plots"] == []
    assert "python -m bench.overhead" in report["markdown"]
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


def test_frontier_histories_explain_the_shortfalls(tmp_path):
    doc = _frontier()
    history = [
        {"epoch": 0, "phase": 0, "accuracy": 0.95},
        {"epoch": 1, "phase": 0, "accuracy": 0.90},
        {"epoch": 2, "phase": 1, "accuracy": 0.97},
    ]
    doc["runs"][4]["history"] = history  # tf-admm at 250x, where tfmot is ahead.
    assert results.admm_training_accuracy(doc) == [(250.0, 0.90, 0.97)]
    path = _write(tmp_path, "frontier_mnist.json", doc)
    report = results.run(
        results.Settings(
            frontier=(path,), combined=(), overhead=(), out=str(tmp_path / "RESULTS.md")
        )
    )
    assert "Why, from the recorded histories:" in report["markdown"]
    assert "last epoch: 250.0x 90.00% -> 97.00%." in report["markdown"]
