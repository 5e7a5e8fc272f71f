"""The automatic ADMM schedule: a Spec without ``update_every`` sizes its rounds from the first
``fit`` (``Spec.scheduled_for``, ``phases.schedule``), on tf_keras and on Keras 3."""

import json

import keras as keras3
import numpy as np
import pytest

import tf_admm
from tf_admm.spec import RhoSchedule, Rule, Spec, SpecError, Unit
from tf_admm.testing import compile_for_classification, small_convnet, small_data

KEEP = {"conv": 20, "fc1": 300}


def test_the_automatic_and_the_fixed_schedule_have_their_own_defaults():
    auto = Spec(target_ratio=10)
    assert auto.automatic and auto.update_every is None
    assert (auto.update_unit, auto.admm_rounds) == (Unit.STEP, 100)
    assert auto.rho == RhoSchedule(initial=3e-4, multiplier=1.042)
    assert auto.admm_fraction == 0.6
    fixed = Spec(target_ratio=10, update_every=2)
    assert not fixed.automatic
    assert (fixed.update_unit, fixed.admm_rounds, fixed.rho) == (Unit.EPOCH, 10, RhoSchedule())
    # What the user gives is kept on either schedule.
    mixed = Spec(target_ratio=10, admm_rounds=7, rho=0.01, update_unit="epoch")
    assert (mixed.admm_rounds, mixed.rho, mixed.update_unit) == (7, RhoSchedule(0.01), Unit.EPOCH)


@pytest.mark.parametrize(
    "spec,epochs,steps,every",
    [
        # 0.6 * 40 * 430 / 100 rounds = 103.2 -> 103 steps per round.
        (Spec(target_ratio=167), 40, 430, 103),
        # Three stages of 100 rounds with 5 retraining rounds between them: 310 rounds.
        (Spec(target_ratio=50, prune_stages=(0.3, 0.6, 1), retrain_rounds=5), 60, 430, 49),
        # Pruning (100) then quantization: 5 ADMM rounds and 3 more locking rounds: 108.
        (Spec(default=Rule(sparsity=0.9, bits=4)), 10, 100, 5),
        (Spec(target_ratio=10, admm_fraction=1.0, admm_rounds=8), 2, 20, 5),
        # Fewer steps than rounds: rounds of one step.
        (Spec(target_ratio=10), 1, 30, 1),
        # Epoch rounds count epochs: 0.6 * 50 / 10 = 3.
        (Spec(target_ratio=10, update_unit="epoch", admm_rounds=10), 50, None, 3),
    ],
)
def test_scheduled_for_fits_every_round_in_the_first_fraction(spec, epochs, steps, every):
    scheduled = spec.scheduled_for(epochs, steps)
    assert scheduled.update_every == every and not scheduled.automatic
    assert scheduled.scheduled_rounds() == spec.scheduled_rounds()
    # Nothing else changes, and a fixed spec is its own schedule.
    unset = {"update_every": None, "admm_fraction": spec.admm_fraction}
    assert scheduled.to_dict() | unset == spec.to_dict() | unset
    assert scheduled.scheduled_for(1, 1) is scheduled


def test_an_unknown_fit_length_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match=r"steps_per_epoch=.*Spec\(update_every=\.\.\.\)"):
        Spec(target_ratio=10).scheduled_for(5, None)


def test_automatic_spec_round_trips_and_admm_fraction_is_checked():
    spec = Spec(target_ratio=20, admm_fraction=0.5)
    config = json.loads(spec.to_json())
    assert config["update_every"] is None and config["admm_fraction"] == 0.5
    assert Spec.from_dict(config) == spec
    assert "admm_fraction" not in Spec(target_ratio=20, update_every=3).to_dict()
    for bad in (0, 1.5, "half", True):
        with pytest.raises(SpecError, match=r"Spec: Expected admm_fraction .*admm_fraction="):
            Spec(target_ratio=20, admm_fraction=bad)


def _kept(model):
    return {
        w.layer.name: int(np.count_nonzero(w.slots[0].effective())) for w in model.admm_wrappers
    }


def test_tf_keras_fit_sizes_the_rounds_and_projects_at_the_planned_step(tmp_path):
    x, y = small_data(128)  # 8 steps per epoch at batch 16.
    spec = Spec(rules=[Rule(name=n, keep=k) for n, k in KEEP.items()], admm_rounds=4)
    model = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    assert model.spec.automatic
    # 5 epochs x 8 steps = 40; 0.6 * 40 / 4 rounds = 6 steps per round: the hard projection
    # comes after step 24 (epoch 3 of 5) and the last 16 steps retrain.
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=tf_admm.callbacks())
    assert (model.spec.update_every, model.spec.update_unit) == (6, Unit.STEP)
    assert int(model.admm_round.numpy()) == 4 and model.phase is tf_admm.Phase.RETRAIN
    assert _kept(model) == KEEP
    # The model keeps (and saves) the spec with the rounds filled in; a later fit keeps them.
    path = str(tmp_path / "model.keras")
    model.save(path)
    assert tf_admm.load_model(path).spec.update_every == 6
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=tf_admm.callbacks())
    assert model.spec.update_every == 6 and _kept(model) == KEEP


def test_target_ratio_alone_prunes_within_one_fit():
    x, y = small_data(128)
    model = compile_for_classification(tf_admm.admm_wrap(small_convnet(), Spec(target_ratio=4)))
    # 20 epochs x 4 steps = 80: 100 rounds cannot fit, so each round is one step and the
    # hard projection waits for step 100 (a warning says so); a second fit reaches it.
    model.fit(x, y, batch_size=32, epochs=20, verbose=0, callbacks=tf_admm.callbacks())
    assert model.spec.update_every == 1 and model.phase is tf_admm.Phase.ADMM
    model.fit(x, y, batch_size=32, epochs=6, verbose=0, callbacks=tf_admm.callbacks())
    assert model.phase is tf_admm.Phase.RETRAIN
    total = sum(int(np.prod(s.variable.shape)) for w in model.admm_wrappers for s in w.slots)
    kept = sum(int(np.count_nonzero(s.effective())) for w in model.admm_wrappers for s in w.slots)
    assert kept == sum(model.spec.allocated.values())
    assert total / kept == pytest.approx(4, rel=0.01)


def test_keras3_fit_sizes_the_rounds_the_same_way():
    keras3.utils.set_random_seed(3)
    inputs = keras3.Input((8, 8, 1))
    h = keras3.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    h = keras3.layers.Flatten()(h)
    h = keras3.layers.Dense(24, activation="relu", name="fc1")(h)
    model = keras3.Model(inputs, keras3.layers.Dense(3, name="fc2")(h))
    spec = Spec(rules=[Rule(name=n, keep=k) for n, k in KEEP.items()], admm_rounds=4)
    admm = tf_admm.admm_wrap(model, spec)
    admm.compile(
        optimizer=keras3.optimizers.Adam(1e-2),
        loss=keras3.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = small_data(128)
    admm.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=tf_admm.callbacks())
    assert (admm.spec.update_every, admm.spec.update_unit) == (6, Unit.STEP)
    assert int(admm.admm_round.numpy()) == 4 and admm.phase is tf_admm.Phase.RETRAIN
    kept = {
        w.layer.name: int(np.count_nonzero(keras3.ops.convert_to_numpy(w.slots[0].masked())))
        for w in admm.admm_wrappers
    }
    assert kept == KEEP


def test_strip_before_the_hard_projection_says_the_weights_are_not_pruned(caplog):
    model = tf_admm.admm_wrap(small_convnet(), Spec(target_ratio=4))
    with caplog.at_level("WARNING"):
        stripped = tf_admm.strip(model)
    assert "in pruning round 0 of 100, before its final hard projection" in caplog.text
    kernel = stripped.get_layer("fc1").kernel.numpy()
    assert np.count_nonzero(kernel) == kernel.size == 96 * 24
