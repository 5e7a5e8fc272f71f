"""Tests for recipes.schedules: step decay and the schedule of a compression run."""

import dataclasses

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
