"""bench.results_recipe: a recipe run's section (layer bars, ADMM history, its claims beside the
published numbers), through bench.results.run and directly."""

import json
import os

from bench import results, results_recipe


def test_recipe_dir_gives_a_section_with_layer_bars_and_admm_history(tmp_path, monkeypatch):
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
        # The recipe's held-out accuracy after epochs 1 and 3 (a run resumed after epoch 1
        # would lack epoch 2's point).
        "validation": {
            "curve": [
                {"epoch": 1, "phase": "retrain", "accuracy": 0.97},
                {"epoch": 3, "phase": "quant_admm", "accuracy": 0.98},
            ]
        },
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

    plotted = []
    admm_history = results_recipe.plots.admm_history
    monkeypatch.setattr(
        results_recipe.plots,
        "admm_history",
        lambda epochs, *args: plotted.append(epochs) or admm_history(epochs, *args),
    )
    out = tmp_path / "RESULTS.md"
    report = results.run(
        results.Settings(
            frontier=(),
            combined=(),
            overhead=(),
            targets=None,
            recipe_dir=str(recipe),
            out=str(out),
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
    # The held-out accuracy is plotted at the epochs it was measured after.
    ((first, second, third),) = plotted
    assert (first["val_accuracy"], second["val_accuracy"], third["val_accuracy"]) == (
        0.97,
        None,
        0.98,
    )


def test_a_pruning_recipe_run_is_set_beside_the_published_pruning_ratio():
    recipe = {
        "dense_accuracy": 0.9932,
        "pruned_accuracy": 0.9931,
        "pruning_ratio": 71.16,
        "spec": {"rules": [{"name": "fc1", "sparsity": 0.991}]},
    }
    assert results_recipe.claims(recipe) == {
        "pruning": "tf-admm recipe 71.2x (99.31%, its dense model 99.32%)"
    }


def test_a_spec_prunes_by_rule_by_target_ratio_or_by_default():
    assert results_recipe.prunes({"rules": [{"name": "conv1", "sparsity": 0.6, "bits": 3}]})
    # The combined 240x configs: bits per rule, the pruning from target_ratio.
    assert results_recipe.prunes({"target_ratio": 240, "rules": [{"name": "fc1", "bits": 3}]})
    assert results_recipe.prunes({})
    assert not results_recipe.prunes({"rules": [{"name": "fc1", "bits": 3}]})
