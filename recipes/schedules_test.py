"""Tests for recipes.schedules: step and cosine decay, the schedule of a compression run."""

import dataclasses
import math

import pytest

import tf_admm
from recipes import schedules


def test_step_decay_is_constant_then_three_tenths_then_a_tenth():
    schedule = schedules.step_decay(1.0, epochs=8, start=2)
    assert [schedule(epoch, None) for epoch in range(2, 10)] == [1, 1, 1, 1, 0.3, 0.3, 0.1, 0.1]


def test_constant_then_decay_switches_to_the_retraining_rate_at_start():
    schedule = schedules.constant_then_decay(1.0, 2.0, start=3, epochs=4)
    assert [schedule(epoch, None) for epoch in range(7)] == [1, 1, 1, 2, 2, 0.6, 0.2]


def test_learning_rate_schedule_decays_between_stages_and_in_the_final_phase():
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc1", sparsity=0.9)],
        update_every=1,
        admm_rounds=3,
        retrain_rounds=4,
        prune_stages=(0.5, 1.0),
    )
    schedule = schedules.learning_rate_schedule(
        spec, learning_rate=1.0, retrain_learning_rate=2.0, retrain_epochs=4
    )
    rates = [schedule(epoch, None) for epoch in range(14)]
    # ADMM 0-2, stage retraining 3-6 (decays from 1.0), ADMM 7-9, final phase 10-13 (from 2.0).
    assert rates == [1, 1, 1, 1, 1, 0.3, 0.1, 1, 1, 1, 2, 2, 0.6, 0.2]
    one_shot = dataclasses.replace(spec, prune_stages=(1.0,))
    schedule = schedules.learning_rate_schedule(one_shot, 1.0, 2.0, retrain_epochs=2)
    assert [schedule(epoch, None) for epoch in range(5)] == [1, 1, 1, 2, 0.2]


def test_cosine_decay_runs_from_base_to_final_and_stays_there():
    schedule = schedules.cosine_decay(1.0, epochs=4, start=2, final=0.2)
    rates = [schedule(epoch, None) for epoch in range(8)]
    half = 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4))
    assert rates == pytest.approx([1.0, 1.0, 1.0, half, 0.6, 0.2 + 0.8 - (half - 0.2), 0.2, 0.2])


def test_decay_schedule_names_step_and_cosine_and_refuses_others():
    assert schedules.decay_schedule("step", 1.0, 4)(3, None) == 0.1
    assert schedules.decay_schedule("cosine", 1.0, 4, final=0.0)(2, None) == pytest.approx(0.5)
    with pytest.raises(
        ValueError, match=r"decay in \['step', 'cosine'\]; received: decay='linear'"
    ):
        schedules.decay_schedule("linear", 1.0, 4)


def test_learning_rate_schedule_with_cosine_retraining_over_steps():
    # The shipped 167x protocol's shape: one stage of ADMM rounds of 100 steps, then a cosine
    # from the retraining rate to the final rate over the final steps.
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc1", sparsity=0.9)],
        update_every=100,
        update_unit="step",
        admm_rounds=3,
    )
    schedule = schedules.learning_rate_schedule(
        spec, 1e-3, 2e-3, retrain_epochs=200, decay="cosine", final_learning_rate=1e-5
    )
    assert schedule(0, None) == schedule(299, None) == 1e-3
    assert schedule(300, None) == pytest.approx(2e-3)
    assert schedule(400, None) == pytest.approx(1e-5 + (2e-3 - 1e-5) / 2)
    assert schedule(500, None) == schedule(900, None) == pytest.approx(1e-5)
