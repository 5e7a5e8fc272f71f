"""bench.combined_plan: the epochs each library gets and the per-layer targets of each point."""

import dataclasses
import os

import pytest

import tf_admm
from bench import combined_plan, combined_setup
from recipes import models
from tf_admm.projections import keep_count


def test_budget_gives_both_libraries_the_same_epochs_with_pruning_ending_together():
    spec = combined_setup.Settings().spec()  # recipes/configs/lenet5_admm_quant_105x.json
    plan = combined_plan.budget(spec, final_epochs=12, pcqat_epochs=4)
    # Five pruning stages of 6 ADMM + 2 retraining rounds, 3 quantization ADMM + 3 more
    # locking rounds.
    assert plan.scheduled == 5 * 8 + 3 + 3 and plan.epochs == 46 + 12
    # tfmot ramps through tf-admm's stages (4 * 8 + 6) and fine-tunes as long as tf-admm
    # retrains after the last one.
    assert (plan.prune_ramp, plan.prune_finetune) == (38, spec.retrain_rounds)
    assert plan.prune_ramp + plan.prune_finetune + plan.cluster + plan.pcqat == plan.epochs
    assert plan.cluster == 14
    one_stage = dataclasses.replace(spec, prune_stages=(1.0,))
    assert combined_plan.budget(one_stage, 12, 4).prune_ramp == spec.admm_rounds


def test_budget_without_a_clustering_epoch_is_refused():
    spec = combined_setup.Settings.smoke().spec()
    with pytest.raises(ValueError, match="at least one clustering epoch"):
        combined_plan.budget(spec, final_epochs=0, pcqat_epochs=2)


def test_allocate_scales_a_profile_to_the_requested_ratio():
    spec = tf_admm.Spec.from_file(
        os.path.join(combined_setup.CONFIGS, "lenet5_admm_71x_oneshot.json")
    )
    profile = {rule.name: rule.target_sparsity for rule in spec.rules}
    sizes = {"conv1": 500, "conv2": 25_000, "fc1": 400_000, "fc2": 5_000}
    # The config's own counts (100/2000/3600/350, Ye et al. 2018) come back at its own ratio.
    assert combined_plan.allocate(430_500 / 6_050, sizes, profile) == {
        "conv1": 100,
        "conv2": 2_000,
        "fc1": 3_600,
        "fc2": 350,
    }
    for ratio in (20, 50, 100, 167, 250):
        kept = combined_plan.allocate(ratio, sizes, profile)
        assert sum(kept.values()) == pytest.approx(430_500 / ratio, abs=2)
        # Same proportions as the profile while no layer is full.
        assert kept["fc1"] / kept["conv2"] == pytest.approx(3_600 / 2_000, rel=1e-2)


def test_allocate_caps_full_layers_and_gives_the_rest_to_the_others():
    profile = {"small": 0.2, "big": 0.99}
    kept = combined_plan.allocate(2.0, {"small": 100, "big": 10_000}, profile)
    assert kept["small"] == 100  # 0.8 * scale would exceed 1: the layer keeps everything.
    assert sum(kept.values()) == 5_050
    with pytest.raises(ValueError, match="ratio >= 1"):
        combined_plan.allocate(0.5, {"small": 100, "big": 10_000}, profile)


def test_point_spec_scales_the_config_keeping_its_quantization():
    spec = combined_setup.Settings().spec()
    plans = combined_plan.layer_plans(models.lenet5(), spec)
    assert [(p.name, p.bits) for p in plans] == [("conv1", 3), ("conv2", 3), ("fc1", 2), ("fc2", 3)]
    sizes = {p.name: p.size for p in plans}
    kept = combined_plan.allocate(50, sizes, {p.name: p.rule.target_sparsity for p in plans})
    scaled = combined_plan.point_spec(spec, plans, kept)
    for rule, plan in zip(scaled.rules, plans):
        assert rule.name == plan.name and rule.bits == plan.rule.bits
        # The integer kept counts survive the round trip through a sparsity.
        assert keep_count(plan.size, rule.sparsity) == kept[plan.name]
    assert sum(kept.values()) == pytest.approx(430_500 / 50, abs=2)
    assert scaled.admm_rounds == spec.admm_rounds and scaled.rho == spec.rho
