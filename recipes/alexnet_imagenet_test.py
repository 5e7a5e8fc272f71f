"""End-to-end: the AlexNet/ImageNet recipe on synthetic data, with a model 1/8 as wide."""

import dataclasses
import json
import os

import numpy as np
import pytest
from absl import app, flags

import tf_admm
from recipes import alexnet_imagenet, image_data, image_flags, models
from tf_admm.compat import keras

CONFIG = os.path.join(alexnet_imagenet.CONFIG_DIR, "alexnet_admm_quant.json")
WIDTH, SIZE = 1 / 8, 67
# round(weights x (1 - sparsity)) for the 1/8-wide model at 67x67 with Zhang et al.'s sparsity:
# conv1 4,356 x 0.81, conv2 4,800 x 0.2, conv3 13,824 x 0.19, conv4 10,368 x 0.2,
# conv5 6,912 x 0.2, fc1 16,384 x 0.028, fc2 262,144 x 0.059, fc3 512,000 x 0.093.
NONZEROS = {
    "conv1": 3_528,
    "conv2": 960,
    "conv3": 2_627,
    "conv4": 2_074,
    "conv5": 1_382,
    "fc1": 459,
    "fc2": 15_466,
    "fc3": 47_616,
}


def _settings(model_dir, **overrides):
    # The config's per-layer sparsity and bits, one round per phase so that the run is short.
    spec = dataclasses.replace(
        tf_admm.Spec.from_file(CONFIG),
        admm_rounds=1,
        retrain_rounds=1,
        quant_admm_rounds=1,
        quant_fractions=(0.5, 1.0),
    )
    values = dict(
        spec=spec,
        model_dir=str(model_dir),
        synthetic_data=True,
        synthetic_examples=64,
        image_size=SIZE,
        width_multiplier=WIDTH,
        pretrain_epochs=1,
        retrain_epochs=1,
        batch_size=32,
        verbose=0,
    )
    values.update(overrides)
    return alexnet_imagenet.settings(**values)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """One synthetic run of the whole pipeline, shared by the module's tests.

    Pretraining, pruning ADMM, hard projection, retraining, quantization ADMM, locking, strip
    and export; returns the results, the model directory and the saved model, loaded.
    """
    model_dir = tmp_path_factory.mktemp("alexnet")
    results = alexnet_imagenet.run(_settings(model_dir))
    return results, model_dir, keras.models.load_model(results["model"])


def test_synthetic_run_prunes_every_layer_to_its_configured_count(synthetic_run):
    results, _, model = synthetic_run
    spec = tf_admm.Spec.from_file(CONFIG)
    tiny = models.alexnet(input_shape=(SIZE, SIZE, 3), width_multiplier=WIDTH)
    expected = {
        rule.name: tf_admm.projections.keep_count(
            int(np.prod(tiny.get_layer(rule.name).kernel.shape)), rule.sparsity
        )
        for rule in spec.rules
    }
    assert expected == NONZEROS
    assert {r["layer"]: r["nonzeros"] for r in results["layers"]} == NONZEROS
    assert results["nonzeros"] == sum(NONZEROS.values())
    assert not any(isinstance(la, tf_admm.AdmmWrapper) for la in model.layers)
    assert {
        name: int(np.count_nonzero(model.get_layer(name).kernel.numpy())) for name in NONZEROS
    } == NONZEROS


def test_quantized_layers_take_at_most_two_to_the_bits_values(synthetic_run):
    results, _, model = synthetic_run
    bits = {rule.name: rule.bits for rule in tf_admm.Spec.from_file(CONFIG).rules}
    for name, b in bits.items():
        kernel = model.get_layer(name).kernel.numpy()
        assert len(np.unique(kernel[kernel != 0])) <= 2**b, name
    storage = {layer["name"]: layer for layer in results["storage"]["layers"]}
    assert {name: storage[name]["bits_per_value"] for name in bits} == bits


def test_tflite_file_passes_verification_and_its_bytes_add_up(synthetic_run):
    results, _, _ = synthetic_run
    lite = results["tflite"]
    report = lite["report"]
    assert lite["file_bytes"] == os.path.getsize(lite["path"]) == report["file_bytes"]
    assert sum(t["total_bytes"] for t in report["tensors"]) == report["tensor_bytes"]
    assert report["overhead_bytes"] >= 0
    assert (
        report["tensor_bytes"] + report["metadata_bytes"] + report["overhead_bytes"]
        == (report["file_bytes"])
    )
    assert report["checks"] and all(check["passed"] for check in report["checks"])
    assert lite["ratio_vs_float"] > 5
    # The same weights: the file classifies the test set as the Keras model does.
    assert lite["accuracy"] == pytest.approx(results["pruned_accuracy"], abs=1 / 16)
    assert lite["top5_accuracy"] == pytest.approx(results["pruned_top5_accuracy"], abs=1 / 16)


def test_results_json_has_every_phase_and_the_run_leaves_no_backup(synthetic_run):
    results, model_dir, _ = synthetic_run
    with open(model_dir / "results.json", encoding="utf-8") as f:
        written = json.load(f)
    assert written["nonzeros"] == results["nonzeros"]
    assert written["data"] == "synthetic" and written["image_size"] == SIZE
    assert set(written["seconds"]) == {
        "data",
        "pretrain",
        "admm",
        "retrain",
        "quant_admm",
        "quant_lock",
        "quant_retrain",
        "export",
    }
    assert not os.listdir(model_dir / "backup")
    assert {"dense_top5_accuracy", "pruned_top5_accuracy"} <= set(written)


def test_without_imagenet_the_error_says_how_to_get_it(tmp_path):
    settings = _settings(tmp_path / "run", synthetic_data=False, data_dir=str(tmp_path / "tfds"))
    with pytest.raises(image_data.DatasetUnavailableError) as error:
        alexnet_imagenet.run(settings)
    message = str(error.value)
    assert "imagenet2012" in message and "ILSVRC2012_img_train.tar" in message
    assert "--synthetic_data" in message


def test_main_reports_a_missing_dataset_as_a_usage_error(tmp_path):
    flag_values = flags.FlagValues()
    values = alexnet_imagenet.define_flags(flag_values)
    flag_values(
        ["alexnet", f"--model_dir={tmp_path / 'run'}", "--data_dir", str(tmp_path), "--nodownload"]
    )
    assert alexnet_imagenet.settings_from_flags(values).image_size == 227
    main = image_flags.main_for(alexnet_imagenet.TASK, values)
    with pytest.raises(app.UsageError, match="imagenet2012.*--synthetic_data"):
        main(["alexnet"])
    with pytest.raises(app.UsageError, match="Unexpected arguments"):
        main(["alexnet", "extra"])
