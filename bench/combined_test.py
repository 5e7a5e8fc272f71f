"""bench.combined's planning and accounting, without training (the smoke run is in smoke_test)."""

import dataclasses
import os

import numpy as np
import pytest

import tf_admm
from bench import combined
from recipes import models
from tf_admm.compat import keras, tf
from tf_admm.projections import keep_count
from tflite_export.keras_weights import SUPPORTED_LAYERS


def test_budget_gives_both_libraries_the_same_epochs_with_pruning_ending_together():
    spec = combined.Settings().spec()  # recipes/configs/lenet5_admm_quant_105x.json
    plan = combined.budget(spec, final_epochs=12, pcqat_epochs=4)
    # Five pruning stages of 6 ADMM + 2 retraining rounds, 3 quantization ADMM + 3 more
    # locking rounds.
    assert plan.scheduled == 5 * 8 + 3 + 3 and plan.epochs == 46 + 12
    # tfmot ramps through tf-admm's stages (4 * 8 + 6) and fine-tunes as long as tf-admm
    # retrains after the last one.
    assert (plan.prune_ramp, plan.prune_finetune) == (38, spec.retrain_rounds)
    assert plan.prune_ramp + plan.prune_finetune + plan.cluster + plan.pcqat == plan.epochs
    assert plan.cluster == 14
    one_stage = dataclasses.replace(spec, prune_stages=(1.0,))
    assert combined.budget(one_stage, 12, 4).prune_ramp == spec.admm_rounds


def test_budget_without_a_clustering_epoch_is_refused():
    spec = combined.Settings.smoke().spec()
    with pytest.raises(ValueError, match="at least one clustering epoch"):
        combined.budget(spec, final_epochs=0, pcqat_epochs=2)


def test_settings_refuse_a_config_that_does_not_quantize():
    pruning_only = os.path.join(combined.CONFIGS, "lenet5_admm_71x_oneshot.json")
    settings = combined.Settings(config=pruning_only)
    with pytest.raises(ValueError, match="prunes and quantizes"):
        settings.spec()


def test_allocate_scales_a_profile_to_the_requested_ratio():
    spec = tf_admm.Spec.from_file(os.path.join(combined.CONFIGS, "lenet5_admm_71x_oneshot.json"))
    profile = {rule.name: rule.target_sparsity for rule in spec.rules}
    sizes = {"conv1": 500, "conv2": 25_000, "fc1": 400_000, "fc2": 5_000}
    # The config's own counts (100/2000/3600/350, Ye et al. 2018) come back at its own ratio.
    assert combined.allocate(430_500 / 6_050, sizes, profile) == {
        "conv1": 100,
        "conv2": 2_000,
        "fc1": 3_600,
        "fc2": 350,
    }
    for ratio in (20, 50, 100, 167, 250):
        kept = combined.allocate(ratio, sizes, profile)
        assert sum(kept.values()) == pytest.approx(430_500 / ratio, abs=2)
        # Same proportions as the profile while no layer is full.
        assert kept["fc1"] / kept["conv2"] == pytest.approx(3_600 / 2_000, rel=1e-2)


def test_allocate_caps_full_layers_and_gives_the_rest_to_the_others():
    profile = {"small": 0.2, "big": 0.99}
    kept = combined.allocate(2.0, {"small": 100, "big": 10_000}, profile)
    assert kept["small"] == 100  # 0.8 * scale would exceed 1: the layer keeps everything.
    assert sum(kept.values()) == 5_050
    with pytest.raises(ValueError, match="ratio >= 1"):
        combined.allocate(0.5, {"small": 100, "big": 10_000}, profile)


def test_point_spec_scales_the_config_keeping_its_quantization():
    spec = combined.Settings().spec()
    plans = combined.layer_plans(models.lenet5(), spec)
    assert [(p.name, p.bits) for p in plans] == [("conv1", 3), ("conv2", 3), ("fc1", 2), ("fc2", 3)]
    sizes = {p.name: p.size for p in plans}
    kept = combined.allocate(50, sizes, {p.name: p.rule.target_sparsity for p in plans})
    scaled = combined.point_spec(spec, plans, kept)
    for rule, plan in zip(scaled.rules, plans):
        assert rule.name == plan.name and rule.bits == plan.rule.bits
        # The integer kept counts survive the round trip through a sparsity.
        assert keep_count(plan.size, rule.sparsity) == kept[plan.name]
    assert sum(kept.values()) == pytest.approx(430_500 / 50, abs=2)
    assert scaled.admm_rounds == spec.admm_rounds and scaled.rho == spec.rho


def _dense_with(kernel: np.ndarray) -> tuple[keras.Model, keras.layers.Layer]:
    inputs = keras.Input((kernel.shape[0],))
    layer = keras.layers.Dense(kernel.shape[1], name="fc")
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([kernel, np.zeros(kernel.shape[1], np.float32)])
    return model, layer


def test_kmeans_plus_plus_failure_on_few_nonzeros_falls_back_to_linear():
    kernel = np.zeros((20, 10), np.float32)
    kernel[0, 0], kernel[3, 4] = 0.5, -0.2  # One weight on each side of the zero centroid.
    model, layer = _dense_with(kernel)
    used, failed = combined._working_init(layer, 9, "kmeans_plus_plus")
    assert used == "linear" and failed.startswith("kmeans_plus_plus: ")
    # Enough nonzeros on both sides: k-means++ works and nothing is recorded as failed.
    kernel = np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32)
    model, layer = _dense_with(kernel)
    assert combined._working_init(layer, 9, "kmeans_plus_plus") == ("kmeans_plus_plus", "")
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel)  # Probed on a copy.


@pytest.mark.parametrize(
    "layer",
    [keras.layers.Dense(7), keras.layers.Conv2D(6, (3, 2))],
    ids=["dense", "conv2d"],
)
def test_keras_layout_inverts_the_tflite_layout(layer):
    layer.build((None, 5, 4, 3) if isinstance(layer, keras.layers.Conv2D) else (None, 5))
    kernel = np.arange(layer.kernel.shape.num_elements()).reshape(layer.kernel.shape)
    _, to_tflite = SUPPORTED_LAYERS[type(layer)]
    np.testing.assert_array_equal(combined._keras_layout(layer, to_tflite(kernel)), kernel)
    assert combined._keras_layout(layer, np.zeros((2, 2))) is None


def test_storage_from_tflite_counts_the_int8_codes_of_the_file():
    rng = np.random.default_rng(0)
    # 64 x 32 (enough weights for the converter to quantize them), 90% zeros, values on
    # {+-0.5, +-1}, every output channel reaching 1.0 so that all channels share their codes.
    kernel = rng.choice([-1.0, -0.5, 0.5, 1.0], size=(64, 32)).astype(np.float32)
    kernel[rng.random((64, 32)) < 0.9] = 0.0
    kernel[0, :] = 1.0
    model, _ = _dense_with(kernel)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    report, distinct = combined.storage_from_tflite(converter.convert(), model, ["fc"])
    (layer,) = report.layers
    assert layer.num_nonzeros == np.count_nonzero(kernel)
    assert distinct == {"fc": len(np.unique(kernel[kernel != 0]))} == {"fc": 4}
    assert layer.bits_per_value == 2
    # The 4 codes at 8 bits, and one 32-bit scale per tensor or per channel.
    assert (layer.codebook_bits - 4 * 8) in (32, 32 * 32)
    with pytest.raises(ValueError, match="Expected one weight tensor"):
        other, _ = _dense_with(np.ones((8, 3), np.float32))
        combined.storage_from_tflite(converter.convert(), other, ["fc"])
