"""Training tests: penalty, residuals, phases, masked retraining, save/load, distribution."""

import numpy as np
import pytest

import tf_admm
from tf_admm import keras, tf
from tf_admm.testing import compile_for_classification, small_convnet, small_data

SPARSITY = {"conv": 0.5, "depthwise": 0.6, "fc1": 0.9, "fc2": 0.7}


def _spec(rounds=3, every=4, unit="step", rho=0.05, multiplier=1.0):
    return tf_admm.Spec(
        rules=[tf_admm.Rule(name=n, sparsity=s) for n, s in SPARSITY.items()],
        rho=tf_admm.RhoSchedule(rho, multiplier),
        admm_rounds=rounds,
        update_every=every,
        update_unit=unit,
    )


def _wrapped(spec=None):
    return compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec or _spec()))


def _effective(model):
    return {w.layer.name: [s.effective().numpy() for s in w.slots] for w in model.admm_wrappers}


def test_hard_projection_exact_counts_and_retraining_never_revives():
    x, y = small_data()
    model = _wrapped()
    # 3 rounds x 4 steps = 12 steps of ADMM, then retraining; 8 steps per epoch.
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=tf_admm.callbacks())
    assert model.phase is tf_admm.Phase.RETRAIN
    after_projection = _effective(model)
    for wrapper in model.admm_wrappers:
        for slot, value in zip(wrapper.slots, after_projection[wrapper.layer.name]):
            assert np.count_nonzero(value) == slot.keep
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=tf_admm.callbacks())
    after_retraining = _effective(model)
    changed = 0
    for name, values in after_projection.items():
        for before, after in zip(values, after_retraining[name]):
            np.testing.assert_array_equal(after[before == 0], 0.0)
            assert np.count_nonzero(after) == np.count_nonzero(before)
            changed += int(np.any(after != before))
    assert changed, "retraining should still move the kept weights"
    stripped = tf_admm.strip(model)
    np.testing.assert_allclose(stripped(x).numpy(), model(x).numpy(), atol=1e-6)


def test_admm_drives_primal_residual_down():
    x, y = small_data(256)
    spec = _spec(rounds=20, every=1, unit="epoch", rho=0.05, multiplier=1.5)
    model = _wrapped(spec)
    history = model.fit(
        x, y, batch_size=32, epochs=6, verbose=0, callbacks=tf_admm.callbacks()
    ).history
    primal = history["primal_residual"]
    assert primal[-1] < 0.5 * primal[0], primal
    assert all(p > 0 for p in history["admm_penalty"])
    assert [int(r) for r in history["admm_round"]] == [1, 2, 3, 4, 5, 6]
    assert model.phase is tf_admm.Phase.ADMM


def test_reported_loss_is_task_loss_plus_penalty():
    x, y = small_data(32)
    model = tf_admm.admm_wrap(small_convnet(), _spec(rho=0.5))
    model.compile(
        keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    slot = model.admm_wrappers[2].slots[0]
    slot.dual.assign(tf.ones_like(slot.dual))
    penalty = float(model.admm_penalty())
    task_loss = model.evaluate(x, y, batch_size=32, verbose=0)
    assert penalty > 1.0
    logs = model.train_on_batch(x, y, return_dict=True)
    assert logs["admm_penalty"] == pytest.approx(penalty, rel=1e-5)
    assert logs["loss"] == pytest.approx(task_loss + penalty, rel=1e-5)


def test_penalty_pulls_weights_toward_auxiliary():
    x, y = small_data(32)
    distances = []
    for rho in (1e-9, 40.0):
        model = tf_admm.admm_wrap(small_convnet(), _spec(rho=rho, rounds=50))
        model.compile(
            keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        slot = model.admm_wrappers[2].slots[0]
        for _ in range(5):
            model.train_on_batch(x, y)
        distances.append(float(tf.norm(slot.variable - slot.auxiliary)))
    assert distances[1] < 0.25 * distances[0], distances


def test_fit_without_update_callback_says_what_to_add():
    x, y = small_data(32)
    with pytest.raises(ValueError, match=r"callbacks=tf_admm.callbacks\(\)"):
        _wrapped().fit(x, y, epochs=1, verbose=0)


def test_phase_machine_counts_epochs_and_grows_rho():
    x, y = small_data(64)
    model = _wrapped(_spec(rounds=2, every=2, unit="epoch", rho=0.01, multiplier=3.0))
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=tf_admm.callbacks())
    assert int(model.admm_round.numpy()) == 1
    assert model.phase is tf_admm.Phase.ADMM
    assert float(model.admm_wrappers[0].slots[0].rho.numpy()) == pytest.approx(0.03)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=tf_admm.callbacks())
    assert int(model.admm_round.numpy()) == 2
    assert model.phase is tf_admm.Phase.RETRAIN
    assert int(model.admm_epoch.numpy()) == 4
    assert int(model.admm_step.numpy()) == 8


def test_rule_rho_follows_the_schedule_from_its_own_start_and_stops_at_the_cap():
    # Default rho 1e-4 and fc1's own 1e-3 both double each round; both stop at 4e-3.
    spec = tf_admm.Spec(
        rules=[
            tf_admm.Rule(name="fc1", sparsity=0.9, rho=1e-3),
            tf_admm.Rule(name="fc2", sparsity=0.7),
        ],
        rho=tf_admm.RhoSchedule(initial=1e-4, multiplier=2.0, maximum=4e-3),
        admm_rounds=8,
        update_every=1,
        update_unit="step",
    )
    model = tf_admm.admm_wrap(small_convnet(), spec)
    fc1, fc2 = (w.slots[0] for w in model.admm_wrappers)
    rho = [(float(fc1.rho.numpy()), float(fc2.rho.numpy()))]
    for _ in range(7):
        model.admm_step.assign_add(1)
        model.advance(tf_admm.Unit.STEP)
        rho.append((float(fc1.rho.numpy()), float(fc2.rho.numpy())))
    fc1_expected = [1e-3, 2e-3, 4e-3, 4e-3, 4e-3, 4e-3, 4e-3, 4e-3]
    fc2_expected = [1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3, 3.2e-3, 4e-3, 4e-3]
    assert [r[0] for r in rho] == pytest.approx(fc1_expected, rel=1e-6)
    assert [r[1] for r in rho] == pytest.approx(fc2_expected, rel=1e-6)
    assert model.phase is tf_admm.Phase.ADMM


def test_capped_rho_keeps_the_unscaled_multiplier():
    # Rho goes 3e-3 -> 4e-3 (capped, not 6e-3): U must shrink by 3/4, so that rho * U holds.
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc1", sparsity=0.9, rho=3e-3)],
        rho=tf_admm.RhoSchedule(initial=1e-3, multiplier=2.0, maximum=4e-3),
        admm_rounds=4,
        update_every=1,
        update_unit="step",
    )
    model = tf_admm.admm_wrap(small_convnet(), spec)
    slot = model.admm_wrappers[0].slots[0]
    slot.dual.assign(np.random.default_rng(0).normal(size=slot.dual.shape).astype(np.float32))
    w, u = slot.variable.numpy(), slot.dual.numpy()
    z = tf_admm.projections.project_top_k(tf.constant(w + u), slot.keep).numpy()
    model.admm_step.assign_add(1)
    model.advance(tf_admm.Unit.STEP)
    assert float(slot.rho.numpy()) == pytest.approx(4e-3, rel=1e-6)
    np.testing.assert_allclose(slot.dual.numpy(), (u + w - z) * 0.75, rtol=1e-5, atol=1e-7)


def _state(model):
    return {
        "weights": [w.numpy() for w in model.weights],
        "step": int(model.admm_step.numpy()),
        "round": int(model.admm_round.numpy()),
        "phase": int(model.admm_phase.numpy()),
    }


@pytest.mark.parametrize("suffix", [".keras"])
def test_save_load_mid_admm_restores_state_and_continues_identically(tmp_path, suffix):
    x, y = small_data(64)
    model = _wrapped(_spec(rounds=4, every=3, unit="step", multiplier=2.0))
    model.fit(
        x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=tf_admm.callbacks()
    )
    assert model.phase is tf_admm.Phase.ADMM and int(model.admm_round.numpy()) == 2
    path = str(tmp_path / f"model{suffix}")
    model.save(path)
    loaded = keras.models.load_model(path)  # No custom_objects, no scope.
    assert isinstance(loaded, tf_admm.AdmmModel)
    assert loaded.spec == model.spec
    before, restored = _state(model), _state(loaded)
    assert {k: v for k, v in before.items() if k != "weights"} == {
        k: v for k, v in restored.items() if k != "weights"
    }
    for a, b in zip(before["weights"], restored["weights"]):
        np.testing.assert_array_equal(a, b)
    for m in (model, loaded):
        m.fit(
            x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=tf_admm.callbacks()
        )
    assert loaded.phase is tf_admm.Phase.RETRAIN
    for a, b in zip(_state(model)["weights"], _state(loaded)["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_get_config_from_config_round_trip():
    model = _wrapped(_spec(rounds=4, multiplier=2.0))
    clone = tf_admm.AdmmModel.from_config(model.get_config())
    assert clone.spec == model.spec
    base = lambda m: [(w.name.split("/")[-1], tuple(w.shape)) for w in m.weights]
    assert base(clone) == base(model)
    assert [w.targets for w in clone.admm_wrappers] == [w.targets for w in model.admm_wrappers]


def test_sequential_and_nested_models_are_wrapped_and_stripped():
    inner = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(8, activation="relu", name="inner_fc")],
        name="block",
    )
    inputs = keras.Input((6,))
    h = keras.layers.Dense(12, name="outer_fc")(inputs)
    outer = keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(h)))
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    expected = outer(x).numpy()
    spec = tf_admm.Spec(rules=[tf_admm.Rule(name="inner_fc", sparsity=0.75)])
    wrapped = tf_admm.admm_wrap(outer, spec)
    assert [w.layer.name for w in wrapped.admm_wrappers] == ["inner_fc"]
    np.testing.assert_array_equal(wrapped(x).numpy(), expected)
    wrapped.admm_wrappers[0].hard_project()
    stripped = tf_admm.strip(wrapped)
    assert isinstance(stripped.get_layer("block"), keras.Sequential)
    kernel = stripped.get_layer("block").get_layer("inner_fc").kernel.numpy()
    assert np.count_nonzero(kernel) == 24

    sequential = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(10, name="a"), keras.layers.Dense(3, name="b")]
    )
    wrapped = tf_admm.admm_wrap(sequential, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5)))
    np.testing.assert_array_equal(wrapped(x).numpy(), sequential(x).numpy())
    assert isinstance(tf_admm.strip(wrapped), keras.Sequential)


def test_distributed_training_matches_single_device():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(devices) >= 2, "conftest configures two virtual CPUs"
    x, y = small_data(128)
    spec = _spec(rounds=2, every=4, unit="step")
    initial = small_convnet()

    def train(strategy):
        with strategy.scope():
            model = compile_for_classification(tf_admm.admm_wrap(initial, spec))
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
        model.fit(data, epochs=2, verbose=0, callbacks=tf_admm.callbacks())
        return model

    single = train(tf.distribute.OneDeviceStrategy(devices[0]))
    mirrored = train(tf.distribute.MirroredStrategy(devices[:2]))
    assert mirrored.phase is tf_admm.Phase.RETRAIN
    assert int(mirrored.admm_step.numpy()) == int(single.admm_step.numpy()) == 8
    for a, b in zip(single.admm_wrappers, mirrored.admm_wrappers):
        for sa, sb in zip(a.slots, b.slots):
            np.testing.assert_array_equal(sa.mask.numpy(), sb.mask.numpy())
            np.testing.assert_allclose(sa.variable.numpy(), sb.variable.numpy(), atol=1e-4)


def test_bad_model_and_rule_errors_name_the_culprit():
    model = small_convnet()
    cases = [
        (
            tf_admm.Spec(rules=[tf_admm.Rule(name="conv9", sparsity=0.5)]),
            r"rules\[0\] \(name='conv9'\) matches no layer.*conv \(Conv2D\)",
        ),
        (tf_admm.Spec(rules=[tf_admm.Rule(pattern="lstm.*", sparsity=0.5)]), "matches no layer"),
        (tf_admm.Spec(rules=[tf_admm.Rule(layer_type="LSTM", sparsity=0.5)]), "matches no layer"),
        (
            tf_admm.Spec(rules=[tf_admm.Rule(name="flatten", sparsity=0.5)]),
            "'flatten' \\(Flatten\\) has no compressible weights",
        ),
        (
            tf_admm.Spec(rules=[tf_admm.Rule(name="fc1", sparsity=0.5, weights=["kernal"])]),
            r"received: weight='kernal' \(no variable matches\)",
        ),
    ]
    for spec, message in cases:
        with pytest.raises(ValueError, match=message):
            tf_admm.admm_wrap(model, spec)
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built.*keras.Input"):
        tf_admm.admm_wrap(unbuilt, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5)))

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed"):
        tf_admm.admm_wrap(Sub(), tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5)))
    wrapped = tf_admm.admm_wrap(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5)))
    with pytest.raises(ValueError, match="already ADMM-wrapped"):
        tf_admm.admm_wrap(wrapped, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5)))


def test_tensorboard_receives_admm_metrics(tmp_path):
    x, y = small_data(64)
    model = _wrapped(_spec(rounds=2, every=1, unit="epoch"))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=tf_admm.callbacks(str(tmp_path)))
    tags = set()
    for path in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    for expected in ("epoch_admm_penalty", "epoch_primal_residual", "epoch_fc1_sparsity"):
        assert expected in tags, sorted(tags)


def test_fit_accepts_a_lone_callback_object_like_keras():
    x, y = small_data(32)
    model = _wrapped(_spec(rounds=1, every=1, unit="epoch"))
    model.fit(x, y, epochs=1, verbose=0, callbacks=tf_admm.AdmmUpdate())
    assert int(model.admm_round.numpy()) == 1


def test_progressive_stages_project_per_stage_and_restart_admm():
    x, y = small_data(64)
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name=n, sparsity=s) for n, s in SPARSITY.items()],
        rho=tf_admm.RhoSchedule(0.05, 2.0),
        admm_rounds=2,
        retrain_rounds=1,
        prune_stages=(0.25, 1.0),
        update_every=2,
        update_unit="step",
    )
    # Stage 1: rounds 0-1 ADMM, round 2 retraining; stage 2: rounds 3-4 ADMM; then retraining.
    assert spec.stage_starts() == (0, 3) and spec.scheduled_rounds() == 5
    model = _wrapped(spec)
    slots = [s for w in model.admm_wrappers for s in w.slots]
    # Z starts at the first stage's count, which keeps 4x the final count (at most all).
    for slot in slots:
        size = int(np.prod(slot.variable.shape))
        assert slot.keep_at(0.25) == min(size, 4 * slot.keep)
        assert np.count_nonzero(slot.auxiliary.numpy()) == slot.keep_at(0.25)
    fit = dict(batch_size=16, shuffle=False, verbose=0, callbacks=tf_admm.callbacks())
    model.fit(x, y, epochs=1, **fit)  # 4 steps: two rounds, then the first projection.
    assert model.phase is tf_admm.Phase.RETRAIN
    first = _effective(model)
    for slot, value in zip(slots, [v for w in model.admm_wrappers for v in first[w.layer.name]]):
        assert np.count_nonzero(value) == slot.keep_at(0.25)
    rho = [float(s.rho.numpy()) for s in slots]
    model.fit(x, y, epochs=1, **fit)  # Round 2 retrains, then stage 2 starts; round 3 ADMM.
    assert model.phase is tf_admm.Phase.ADMM and int(model.admm_round.numpy()) == 4
    # rho restarted from its initial value (0.05) and grew once (x2) in stage 2.
    assert [float(s.rho.numpy()) for s in slots] == pytest.approx([0.1] * len(slots))
    assert rho == pytest.approx([0.2] * len(slots))
    # Stage 2 reopened every mask; Z keeps the final count.
    for slot in slots:
        assert np.all(slot.mask.numpy() == 1)
        assert np.count_nonzero(slot.auxiliary.numpy()) == slot.keep
    model.fit(x, y, epochs=2, **fit)
    assert model.phase is tf_admm.Phase.RETRAIN and int(model.admm_round.numpy()) == 5
    final = _effective(model)
    for wrapper in model.admm_wrappers:
        name = wrapper.layer.name
        for slot, after in zip(wrapper.slots, final[name]):
            assert np.count_nonzero(after) == slot.keep
            np.testing.assert_array_equal(slot.mask.numpy() != 0, after != 0)
    # The last retraining is open-ended.
    model.fit(x, y, epochs=1, **fit)
    assert model.phase is tf_admm.Phase.RETRAIN and int(model.admm_round.numpy()) == 5


def test_begin_stage_keeps_the_last_stages_zeros_in_w_and_reopens_the_mask():
    model = _wrapped()
    wrapper = model.admm_wrappers[-1]
    slot = wrapper.slots[0]
    wrapper.hard_project(0.5)
    pruned = slot.mask.numpy() == 0
    assert pruned.any()
    slot.variable.assign(slot.variable + 0.01)  # Drift under Adam at pruned positions.
    wrapper.begin_stage(1.0)
    np.testing.assert_array_equal(slot.variable.numpy()[pruned], 0.0)
    assert np.all(slot.mask.numpy() == 1)
    np.testing.assert_array_equal(slot.dual.numpy(), 0.0)
    assert np.count_nonzero(slot.auxiliary.numpy()) == slot.keep
