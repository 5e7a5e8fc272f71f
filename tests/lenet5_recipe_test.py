"""End-to-end: the LeNet-5/MNIST recipe on a few batches of real MNIST."""

import dataclasses
import json
import os

import numpy as np
import pytest
from absl.testing import flagsaver

import tf_admm
from recipes import lenet5_mnist
from tf_admm.compat import keras

CONFIG = os.path.join(lenet5_mnist.CONFIG_DIR, "lenet5_admm_71x.json")


def _settings(tmp_path, data_dir, **overrides):
    spec = dataclasses.replace(tf_admm.Spec.from_file(CONFIG), admm_rounds=2, retrain_rounds=1)
    values = dict(
        spec=spec,
        model_dir=str(tmp_path),
        data_dir=data_dir,
        pretrain_epochs=1,
        retrain_epochs=1,
        train_batches=6,
        verbose=0,
    )
    values.update(overrides)
    return lenet5_mnist.Settings(**values)


def test_recipe_prunes_to_config_budgets_and_saves_a_plain_model(tmp_path, mnist_data_dir):
    results = lenet5_mnist.run(_settings(tmp_path, mnist_data_dir))
    budgets = {"conv1": 100, "conv2": 2000, "fc1": 3600, "fc2": 350}  # Ye et al. 71.2x config.
    assert {r["layer"]: r["nonzeros"] for r in results["layers"]} == budgets
    assert results["weights"] == 430_500
    assert results["pruning_ratio"] == pytest.approx(430_500 / 6_050)
    assert set(results["seconds"]) == {"data", "pretrain", "admm", "retrain", "export"}
    lite = results["tflite"]
    assert lite["file_bytes"] == os.path.getsize(lite["path"])
    assert lite["ratio_vs_float"] > 20
    # Same weights, so the file classifies the test set as the Keras model does.
    assert abs(lite["accuracy"] - results["pruned_accuracy"]) <= 0.001
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        assert json.load(f)["nonzeros"] == 6_050
    model = keras.models.load_model(results["model"])
    assert not any(isinstance(la, tf_admm.AdmmWrapper) for la in model.layers)
    nonzeros = {
        la.name: int(np.count_nonzero(la.kernel.numpy()))
        for la in model.layers
        if hasattr(la, "kernel")
    }
    assert nonzeros == budgets
    # A second run reuses the cached dense checkpoint instead of pretraining again.
    cached = [f for f in os.listdir(tmp_path) if f.startswith("dense_")]
    assert len(cached) == 1
    mtime = os.path.getmtime(tmp_path / cached[0])
    lenet5_mnist.run(_settings(tmp_path, mnist_data_dir, retrain_epochs=0, export=False))
    assert os.path.getmtime(tmp_path / cached[0]) == mtime


def test_flags_build_settings_and_bad_config_is_a_usage_error(tmp_path):
    lenet5_mnist.flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(config=CONFIG, model_dir=str(tmp_path), retrain_epochs=3):
        settings = lenet5_mnist.settings_from_flags()
    assert settings.retrain_epochs == 3
    assert settings.spec == tf_admm.Spec.from_file(CONFIG)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"name": "fc1", "sparsity": 1.5}]}))
    with flagsaver.flagsaver(config=str(bad)):
        with pytest.raises(lenet5_mnist.app.UsageError, match="sparsity"):
            lenet5_mnist.settings_from_flags()


def test_recipe_prunes_and_quantizes_with_paper_bits(tmp_path, mnist_data_dir):
    config = os.path.join(lenet5_mnist.CONFIG_DIR, "lenet5_admm_quant_167x.json")
    spec = dataclasses.replace(
        tf_admm.Spec.from_file(config),
        admm_rounds=1,
        retrain_rounds=1,
        quant_admm_rounds=1,
        quant_fractions=(0.5, 1.0),
    )
    results = lenet5_mnist.run(
        _settings(tmp_path, mnist_data_dir, spec=spec, train_batches=4, tflite_int8=True)
    )
    budgets = {"conv1": 200, "conv2": 1100, "fc1": 1120, "fc2": 150}
    bits = {"conv1": 3, "conv2": 3, "fc1": 2, "fc2": 3}
    assert {r["layer"]: r["nonzeros"] for r in results["layers"]} == budgets
    model = keras.models.load_model(results["model"])
    for name, b in bits.items():
        kernel = model.get_layer(name).kernel.numpy()
        assert len(np.unique(kernel[kernel != 0])) <= 2**b
    storage = {layer["name"]: layer for layer in results["storage"]["layers"]}
    assert {name: storage[name]["bits_per_value"] for name in bits} == bits
    assert results["storage"]["totals"]["weight_data_ratio"] > 1_000
    lite = results["tflite"]
    assert abs(lite["accuracy"] - results["pruned_accuracy"]) <= 0.001
    # The full-integer file: int8 compute, same pruned and quantized weights.
    int8 = results["tflite_int8"]
    assert int8["activations"] == "int8" and int8["path"].endswith("lenet5_int8.tflite")
    assert int8["file_bytes"] == os.path.getsize(int8["path"]) < lite["float_file_bytes"] / 5
    assert abs(int8["accuracy"] - results["pruned_accuracy"]) <= 0.01
    assert "export_int8" in results["seconds"]


def test_recipe_distills_from_its_dense_model(tmp_path, mnist_data_dir):
    results = lenet5_mnist.run(
        _settings(
            tmp_path,
            mnist_data_dir,
            train_batches=4,
            export=False,
            distill_weight=0.5,
            distill_temperature=2.0,
        )
    )
    assert results["distillation"] == {"weight": 0.5, "temperature": 2.0}
    budgets = {"conv1": 100, "conv2": 2000, "fc1": 3600, "fc2": 350}
    assert {r["layer"]: r["nonzeros"] for r in results["layers"]} == budgets
    # The stripped model is plain: it loads without the distillation loss.
    assert keras.models.load_model(results["model"]).loss is not None
    with pytest.raises(ValueError, match="distillation weight"):
        _settings(tmp_path, mnist_data_dir, distill_weight=2.0)


@pytest.mark.parametrize(
    "name, every",
    [
        ("lenet5_admm_167x_lamp.json", 1),
        ("lenet5_admm_167x_lamp_steps.json", 2),
        ("lenet5_admm_167x.json", 2),  # The shipped protocol: one stage, cosine retraining.
        ("lenet5_admm_167x_sensitivity.json", 1),  # Measured on the validation split.
    ],
)
def test_recipe_splits_a_target_ratio_and_reports_the_validation_split(
    tmp_path, mnist_data_dir, name, every
):
    # Rounds of 1 epoch, or of 2 of the 6 steps of an epoch (Z/U mid-epoch, as the steps
    # config does every 100 steps).
    config = os.path.join(lenet5_mnist.CONFIG_DIR, name)
    spec = dataclasses.replace(
        tf_admm.Spec.from_file(config), admm_rounds=1, retrain_rounds=0, update_every=every
    )
    decay = "cosine" if name == "lenet5_admm_167x.json" else "step"
    settings = _settings(
        tmp_path,
        mnist_data_dir,
        spec=spec,
        validation_examples=1_000,
        export=False,
        retrain_decay=decay,
    )
    results = lenet5_mnist.run(settings)
    assert results["retraining"]["decay"] == decay
    # 430,500 / 167 = 2,577.8: 2,578 kept, split by LAMP on the dense weights (or by the
    # sensitivities measured on the validation split).
    assert results["spec"]["allocation"] == spec.allocation.value
    assert results["run"]["seed"] == 0
    allocated = results["spec"]["allocated"]
    assert sum(allocated.values()) == 2_578
    nonzeros = {r["layer"]: r["nonzeros"] for r in results["layers"]}
    assert nonzeros == {key.split("/")[0]: kept for key, kept in allocated.items()}
    validation = results["validation"]
    assert validation["examples"] == 1_000
    assert 0 < validation["pruned_accuracy"] <= 1 and 0 < validation["dense_accuracy"] <= 1
    # One point per epoch of the ADMM fit; the last is the stripped model's accuracy.
    curve = validation["curve"]
    assert [point["epoch"] for point in curve] == list(range(1, len(curve) + 1))
    assert len(curve) > results["retraining"]["epochs"] and curve[-1]["phase"] == "retrain"
    assert curve[-1]["accuracy"] == pytest.approx(validation["pruned_accuracy"], abs=1e-3)
    # The held-out images change the dense checkpoint's name, so it is not mixed up.
    assert [f for f in os.listdir(tmp_path) if f.startswith("dense_")] == [
        "dense_e1_s0_v1000_b6.weights.h5"
    ]


# Shipped flag files: name, retraining epochs, pruning ratio, bits of conv1/conv2/fc1/fc2, and
# the ADMM schedule in rounds of 100 steps (until everything is pruned, or locked on levels).
FLAGFILES = {
    "lenet5_admm_167x": (24, 167, None, 154),
    "lenet5_admm_300x": (24, 300, None, 154),
    # 154 rounds of pruning ADMM, 43 of masked retraining, 8 of ADMM onto the levels, 4 of
    # locking (the last ends the schedule at round 208).
    "lenet5_admm_quant_240x": (12, 240, (3, 3, 2, 3), 208),
}


@pytest.mark.parametrize("name", sorted(FLAGFILES))
def test_shipped_flagfiles_give_the_distilled_step_protocol(tmp_path, name):
    # The command the README and docs give: --flagfile=recipes/configs/<name>.flags, from the
    # repository root (the config's path in the file is relative to it).
    retrain_epochs, ratio, bits, rounds = FLAGFILES[name]
    flag_values = lenet5_mnist.flags.FLAGS
    path = os.path.join(lenet5_mnist.CONFIG_DIR, f"{name}.flags")
    args = flag_values.read_flags_from_files([f"--flagfile={path}"], force_gnu=False)
    given = dict(arg.removeprefix("--").split("=", 1) for arg in args)
    assert given.pop("config") == f"recipes/configs/{name}.json"
    assert given.pop("model_dir") == f"runs/{name.replace('admm_', 'mnist_')}"
    values = {key: flag_values[key].parser.parse(text) for key, text in given.items()}
    root = os.path.dirname(os.path.dirname(lenet5_mnist.CONFIG_DIR))
    values["config"] = os.path.join(root, "recipes", "configs", f"{name}.json")
    flag_values.mark_as_parsed()
    with flagsaver.flagsaver(model_dir=str(tmp_path), **values):
        settings = lenet5_mnist.settings_from_flags()
    assert (settings.retrain_epochs, settings.retrain_decay) == (retrain_epochs, "cosine")
    assert (settings.retrain_learning_rate, settings.final_learning_rate) == (1e-3, 1e-5)
    assert (settings.distill_weight, settings.distill_temperature) == (0.5, 4.0)
    assert settings.validation_examples == 5_000
    spec = settings.spec
    assert spec.target_ratio == ratio and spec.allocation is tf_admm.Allocation.LAMP
    assert spec.prune_stages == (1.0,) and spec.update_unit is tf_admm.Unit.STEP
    assert (spec.rho.initial, spec.rho.multiplier) == (3e-4, 1.028)
    assert spec.admm_rounds == 154 and spec.update_every == 100
    assert tuple(r.bits for r in spec.rules) == (bits or ())
    # 55,000 training images in batches of 128: 430 steps an epoch. The pruning's hard
    # projection comes after 154 rounds of 100 steps, in the 36th epoch.
    steps_per_epoch = -(-55_000 // 128)
    assert -(-spec.phase_boundaries()["prune_admm"] * 100 // steps_per_epoch) == 36
    assert spec.scheduled_rounds() == rounds


def test_sensitivity_allocation_without_a_validation_split_is_refused_before_training(
    tmp_path, mnist_data_dir
):
    config = os.path.join(lenet5_mnist.CONFIG_DIR, "lenet5_admm_167x_sensitivity.json")
    with pytest.raises(ValueError, match="sensitivity.*validation_examples > 0"):
        _settings(tmp_path, mnist_data_dir, spec=tf_admm.Spec.from_file(config))
    assert os.listdir(tmp_path) == []
