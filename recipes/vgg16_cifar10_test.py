"""End-to-end: the VGG-16/CIFAR-10 recipe on synthetic data, with a model 1/16 as wide."""

import dataclasses
import json
import os

import numpy as np
import pytest

import tf_admm
from recipes import image_data, models, vgg16_cifar10
from tf_admm.compat import keras

CONFIG = os.path.join(vgg16_cifar10.CONFIG_DIR, "vgg16_admm.json")
WIDTH = 1 / 16
# The paper gives no bits for VGG-16; 4 bits everywhere exercise the quantization phases.
BITS = 4


def _spec():
    spec = tf_admm.Spec.from_file(CONFIG)
    return dataclasses.replace(
        spec,
        rules=tuple(dataclasses.replace(rule, bits=BITS) for rule in spec.rules),
        admm_rounds=1,
        retrain_rounds=1,
        quant_admm_rounds=1,
        quant_fractions=(0.5, 1.0),
    )


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """One synthetic run of the whole pipeline, shared by the module's tests.

    Pretraining, pruning ADMM, hard projection, retraining, quantization ADMM, locking, strip
    and export; returns the results, the model directory and the saved model, loaded.
    """
    model_dir = tmp_path_factory.mktemp("vgg16")
    settings = vgg16_cifar10.settings(
        spec=_spec(),
        model_dir=str(model_dir),
        synthetic_data=True,
        synthetic_examples=64,
        width_multiplier=WIDTH,
        pretrain_epochs=1,
        retrain_epochs=1,
        batch_size=32,
        verbose=0,
    )
    results = vgg16_cifar10.run(settings)
    return results, model_dir, keras.models.load_model(results["model"])


def test_synthetic_run_prunes_every_layer_to_its_configured_count(synthetic_run):
    results, _, model = synthetic_run
    tiny = models.vgg16(width_multiplier=WIDTH)
    expected = {}
    for rule in tf_admm.Spec.from_file(CONFIG).rules:
        size = int(np.prod(tiny.get_layer(rule.name).kernel.shape))
        # keep_count's rounding, written out: nearest integer, halves up, at least one.
        expected[rule.name] = max(1, int(np.floor(size * (1 - rule.sparsity) + 0.5)))
    assert len(expected) == 16
    assert {r["layer"]: r["nonzeros"] for r in results["layers"]} == expected
    assert {
        name: int(np.count_nonzero(model.get_layer(name).kernel.numpy())) for name in expected
    } == (expected)
    # The per-layer split prunes the tiny model about as much as the full one (23.4x).
    assert 20 < results["pruning_ratio"] < 26


def test_quantized_layers_take_at_most_two_to_the_bits_values(synthetic_run):
    results, _, model = synthetic_run
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = layer.kernel.numpy()
            assert len(np.unique(kernel[kernel != 0])) <= 2**BITS, layer.name
    assert {layer["bits_per_value"] for layer in results["storage"]["layers"]} == {BITS}


def test_tflite_file_passes_verification_and_classifies_like_keras(synthetic_run):
    results, _, _ = synthetic_run
    lite = results["tflite"]
    report = lite["report"]
    assert lite["file_bytes"] == os.path.getsize(lite["path"]) == report["file_bytes"]
    assert sum(t["total_bytes"] for t in report["tensors"]) == report["tensor_bytes"]
    assert (
        report["tensor_bytes"] + report["metadata_bytes"] + report["overhead_bytes"]
        == (report["file_bytes"])
    )
    assert report["checks"] and all(check["passed"] for check in report["checks"])
    # 16 test images: at most one may flip between Keras and LiteRT summation orders.
    assert lite["accuracy"] == pytest.approx(results["pruned_accuracy"], abs=1 / 16)


def test_results_json_is_written(synthetic_run):
    results, model_dir, _ = synthetic_run
    with open(model_dir / "results.json", encoding="utf-8") as f:
        written = json.load(f)
    assert written["layers"] == results["layers"]
    assert written["spec"] == _spec().to_dict()
    assert "quant_retrain" in written["seconds"] and "export" in written["seconds"]


def test_without_cifar10_and_downloads_the_error_says_what_to_do(tmp_path):
    settings = vgg16_cifar10.settings(
        model_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "tfds"), download=False
    )
    with pytest.raises(image_data.DatasetUnavailableError, match="cifar10.*--synthetic_data"):
        vgg16_cifar10.run(settings)
