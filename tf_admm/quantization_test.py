"""Quantization and clustering through training: ADMM onto levels, locking, shared values."""

import dataclasses

import numpy as np
import pytest

import tf_admm
from tf_admm import keras, tf
from tf_admm.testing import compile_for_classification, small_convnet, small_data

Phase = tf_admm.Phase


def _spec(rules, **overrides):
    values = dict(
        rules=rules,
        rho=tf_admm.RhoSchedule(0.05, 1.5),
        update_every=2,
        update_unit="step",
        admm_rounds=2,
        retrain_rounds=1,
        quant_admm_rounds=2,
        quant_fractions=(0.5, 1.0),
    )
    values.update(overrides)
    return tf_admm.Spec(**values)


def _fit(model, epochs=1, count=64):
    x, y = small_data(count)
    model.fit(
        x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=tf_admm.callbacks()
    )
    return x


def _kernel_slot(model, name):
    wrapper = next(w for w in model.admm_wrappers if w.layer.name == name)
    return wrapper.slots[0]


def test_prune_then_uniform_quantize_puts_every_kept_weight_on_its_levels():
    spec = _spec(
        [
            tf_admm.Rule(name="fc1", sparsity=0.8, bits=2),
            tf_admm.Rule(name="conv", sparsity=0.5, bits=3, per_channel=True),
            tf_admm.Rule(name="fc2", bits=2, scheme="power_of_two"),
        ]
    )
    model = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    # Rounds of 2 steps, 4 steps per epoch: 2 prune + 1 retrain + 2 quant ADMM + 2 lock = 7.
    _fit(model, epochs=4)
    assert model.phase is Phase.QUANT_RETRAIN
    for name, bits in (("fc1", 2), ("conv", 3), ("fc2", 2)):
        slot = _kernel_slot(model, name)
        value = slot.effective().numpy()
        assert np.count_nonzero(value) == slot.keep
        levels = slot.levels.numpy()
        if slot.target.per_channel:
            for channel in range(value.shape[-1]):
                column = value[..., channel]
                assert set(np.unique(column[column != 0])) <= set(levels[channel])
        else:
            nonzero = value[value != 0]
            assert len(np.unique(nonzero)) <= 2**bits
            assert set(np.unique(nonzero)) <= set(levels)
        scale = np.min(np.abs(levels), axis=-1, keepdims=True)
        if slot.target.scheme == "uniform":
            np.testing.assert_allclose(levels / scale, np.round(levels / scale), atol=1e-5)
    frozen = {n: _kernel_slot(model, n).effective().numpy() for n in ("fc1", "conv", "fc2")}
    bias_before = model.get_layer("admm_fc1").layer.bias.numpy().copy()
    _fit(model, epochs=2)
    for name, value in frozen.items():
        np.testing.assert_array_equal(_kernel_slot(model, name).effective().numpy(), value)
    assert np.any(model.get_layer("admm_fc1").layer.bias.numpy() != bias_before)


def test_progressive_pruning_stages_then_quantization_end_on_levels_with_final_counts():
    spec = _spec([tf_admm.Rule(name="fc1", sparsity=0.8, bits=2)], prune_stages=(0.25, 0.5, 1.0))
    model = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    slot = _kernel_slot(model, "fc1")
    # Rounds of 2 steps, 2 rounds per epoch: three stages of 2 ADMM + 1 retraining rounds, then
    # 2 quantization ADMM rounds and 1 more locking round: 12 scheduled rounds.
    assert spec.scheduled_rounds() == 12
    _fit(model, epochs=3)  # 6 rounds: the third stage begins from the second's zeros.
    assert model.phase is Phase.ADMM
    assert np.count_nonzero(slot.effective().numpy()) == slot.keep_at(0.5) > slot.keep
    _fit(model, epochs=3)
    assert model.phase is Phase.QUANT_RETRAIN
    value = slot.effective().numpy()
    assert np.count_nonzero(value) == slot.keep
    nonzero = value[value != 0]
    assert len(np.unique(nonzero)) <= 4 and set(np.unique(nonzero)) <= set(slot.levels.numpy())


def test_iterative_locking_locks_the_fraction_and_keeps_locked_weights_on_levels():
    spec = _spec([tf_admm.Rule(name="fc1", sparsity=0.5, bits=2)], quant_fractions=(0.5, 0.9, 1.0))
    model = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    # Rounds of 2 steps: 1-2 prune ADMM, 3 retrain (then quantization ADMM begins), 4-5
    # quantization ADMM (levels fixed and 50% locked at the end of 5), 6 locks 90%.
    _fit(model, epochs=2)
    x, y = small_data(64)
    model.fit(
        x, y, batch_size=16, epochs=1, steps_per_epoch=2, verbose=0, callbacks=tf_admm.callbacks()
    )
    assert model.phase is Phase.QUANT_LOCK
    slot = _kernel_slot(model, "fc1")
    locked = slot.locked.numpy().astype(bool) & slot.mask.numpy().astype(bool)
    assert locked.sum() == round(0.5 * slot.keep)
    before = slot.effective().numpy()[locked]
    assert set(np.unique(before)) <= set(slot.levels.numpy())
    unlocked_before = slot.effective().numpy()[~locked & (slot.mask.numpy() > 0)]
    model.fit(
        x, y, batch_size=16, epochs=1, steps_per_epoch=1, verbose=0, callbacks=tf_admm.callbacks()
    )
    np.testing.assert_array_equal(slot.effective().numpy()[locked], before)
    assert np.any(slot.effective().numpy()[~locked & (slot.mask.numpy() > 0)] != unlocked_before)


def test_quant_lock_rounds_lets_the_free_weights_retrain_between_locks():
    spec = _spec([tf_admm.Rule(name="fc1", sparsity=0.5, bits=2)], quant_lock_rounds=3)
    # Rounds of 2 steps: 1-2 prune ADMM, 3 retrain, 4-5 quantization ADMM (50% locked at the
    # end of 5), 6-8 retrain the free half, 100% locked at the end of 8.
    assert spec.phase_boundaries()["quant_lock"] == 8 == spec.scheduled_rounds()
    model = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    slot = _kernel_slot(model, "fc1")
    batches = tf.data.Dataset.from_tensor_slices(small_data(64)).batch(16).repeat()

    def rounds(count):
        model.fit(
            batches, epochs=1, steps_per_epoch=2 * count, verbose=0, callbacks=tf_admm.callbacks()
        )
        kept = slot.mask.numpy() > 0
        return int((slot.locked.numpy() > 0)[kept].sum()), slot.effective().numpy()[kept]

    locked, _ = rounds(5)
    assert model.phase is Phase.QUANT_LOCK and locked == round(0.5 * slot.keep)
    locked_at_6, before = rounds(1)
    free = ~(slot.locked.numpy() > 0)[slot.mask.numpy() > 0]
    locked_at_7, after = rounds(1)  # No lock at the end of 6 or 7: the free half trains.
    assert locked_at_6 == locked_at_7 == locked and model.phase is Phase.QUANT_LOCK
    np.testing.assert_array_equal(after[~free], before[~free])
    assert np.all(after[free] != before[free])
    locked, after = rounds(1)  # Round 8 locks the rest.
    assert locked == slot.keep and model.phase is Phase.QUANT_RETRAIN
    assert set(np.unique(after)) <= set(slot.levels.numpy())


def test_straight_through_locked_weights_train_in_float_and_compute_with_their_nearest_level():
    spec = _spec([tf_admm.Rule(name="fc1", sparsity=0.5, bits=2)], straight_through=True)
    model = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    _fit(model, epochs=4)
    assert model.phase is Phase.QUANT_RETRAIN
    slot = _kernel_slot(model, "fc1")
    kept = slot.mask.numpy() > 0
    assert np.all(slot.locked.numpy()[kept] == 1)
    levels = np.sort(slot.levels.numpy())

    def on_nearest_level():
        weight, value = slot.variable.numpy(), slot.effective().numpy()
        nearest = levels[np.argmin(np.abs(weight[..., None] - levels), axis=-1)]
        np.testing.assert_array_equal(value[kept], nearest[kept])  # Exactly on a level.
        assert np.all(value[~kept] == 0)
        return weight, value

    weight_before, value_before = on_nearest_level()
    _fit(model, epochs=2)
    weight_after, _ = on_nearest_level()
    assert np.all(weight_after[kept] != weight_before[kept])  # Every locked weight trained.
    # Moving W past the midpoint between two levels moves the weight to the other level.
    first = tuple(np.argwhere(kept)[0])
    other = levels[0] if value_before[first] != levels[0] else levels[-1]
    moved = weight_after.copy()
    moved[first] = other
    slot.variable.assign(moved)
    assert on_nearest_level()[1][first] == other
    # The gradient passes straight through every kept weight (none without straight_through).
    for straight in (True, False):
        fc1 = tf_admm.admm_wrap(
            small_convnet(), dataclasses.replace(spec, straight_through=straight)
        ).get_layer("admm_fc1")
        fc1.hard_project()
        fc1.quant_begin()
        fc1.quant_lock(1.0, first=True)
        slot = fc1.slots[0]
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(slot.effective())
        gradient = tape.gradient(total, slot.variable)
        expected = (slot.mask.numpy() > 0) & straight
        actual = np.zeros(expected.shape) if gradient is None else gradient.numpy()
        np.testing.assert_array_equal(actual, expected.astype(np.float32))


def _kmeans_fc1_locked(fraction, **overrides):
    """The small convnet's fc1 as 4 k-means clusters (half pruned), ``fraction`` of it locked."""
    spec = _spec([tf_admm.Rule(name="fc1", sparsity=0.5, clusters=4)], **overrides)
    wrapper = tf_admm.admm_wrap(small_convnet(), spec).get_layer("admm_fc1")
    wrapper.hard_project()
    wrapper.quant_begin()
    wrapper.quant_lock(fraction, first=True)
    return wrapper, wrapper.slots[0]


@pytest.mark.parametrize("straight_through", [False, True])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_centroid_gradient_is_sum_or_mean_of_member_gradients(mode, straight_through):
    _, slot = _kmeans_fc1_locked(1.0, centroid_update=mode, straight_through=straight_through)
    assert slot.levels.trainable
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(slot.effective())
    gradient = tape.gradient(total, slot.levels).numpy()
    counts = slot.level_counts.numpy()
    assert counts.sum() == slot.keep
    np.testing.assert_allclose(gradient, counts if mode == "sum" else np.ones(4), rtol=1e-5)


def test_kmeans_centroids_train_assignments_and_zeros_stay():
    spec = _spec([tf_admm.Rule(name="fc1", sparsity=0.7, clusters=4)], centroid_update="mean")
    model = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    _fit(model, epochs=4)
    assert model.phase is Phase.QUANT_RETRAIN
    slot = _kernel_slot(model, "fc1")
    levels, assignment = slot.levels.numpy().copy(), slot.assignment.numpy().copy()
    zeros = slot.effective().numpy() == 0
    _fit(model, epochs=2)
    assert np.any(slot.levels.numpy() != levels)
    np.testing.assert_array_equal(slot.assignment.numpy(), assignment)
    value = slot.effective().numpy()
    np.testing.assert_array_equal(value == 0, zeros)
    assert len(np.unique(value[value != 0])) <= 4


def test_centroids_that_trained_out_of_order_still_lock_and_project():
    # Shared-value training moves k-means centroids freely; two of them can pass each other.
    wrapper, slot = _kmeans_fc1_locked(0.5)
    swapped = slot.levels.numpy()[[0, 2, 1, 3]]  # No longer ascending.
    slot.levels.assign(swapped)
    weight = slot.masked().numpy()
    nearest = slot.nearest(weight, tf.convert_to_tensor(slot.levels)).numpy()
    kept = slot.mask.numpy() > 0
    # The index points at the level (in the variable's order) closest to each kept weight.
    chosen = swapped[nearest]
    distance = np.abs(weight[..., None] - swapped).min(axis=-1)
    np.testing.assert_allclose(np.abs(weight - chosen)[kept], distance[kept], rtol=1e-6)
    projected = slot.project(tf.constant(weight), tf.convert_to_tensor(slot.levels)).numpy()
    np.testing.assert_allclose(projected[kept], chosen[kept], rtol=1e-6)
    wrapper.quant_lock(1.0, first=False)  # Raised "levels sorted ascending" before.
    value = slot.effective().numpy()
    assert np.all(np.isin(value[kept], swapped))
    assert set(wrapper.quantization_state()) == {"fc1_locked", "fc1_quant_error"}


def test_quantize_only_spec_starts_in_quantization_admm():
    spec = _spec([tf_admm.Rule(layer_type="Dense", bits=3)])
    model = tf_admm.admm_wrap(small_convnet(), spec)
    assert model.phase is Phase.QUANT_ADMM
    assert spec.phase_boundaries() == {
        "prune_admm": 0,
        "quant_start": 0,
        "quant_admm": 2,
        "quant_lock": 3,
    }


def test_save_load_in_the_middle_of_locking_restores_quantization_state(tmp_path):
    spec = _spec([tf_admm.Rule(name="fc1", sparsity=0.5, bits=2)], quant_fractions=(0.5, 0.9, 1.0))
    model = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    _fit(model, epochs=2)
    x, y = small_data(64)
    model.fit(
        x, y, batch_size=16, epochs=1, steps_per_epoch=2, verbose=0, callbacks=tf_admm.callbacks()
    )
    assert model.phase is Phase.QUANT_LOCK
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(model.admm_wrappers, loaded.admm_wrappers):
        for sa, sb in zip(a.slots, b.slots):
            for name in ("levels", "assignment", "locked", "mask", "auxiliary", "dual"):
                np.testing.assert_array_equal(getattr(sa, name).numpy(), getattr(sb, name).numpy())
    x, _ = small_data(8)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    stripped = tf_admm.strip(loaded)
    np.testing.assert_allclose(stripped(x).numpy(), model(x).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "rule,message",
    [
        (dict(name="fc1", bits=0), r"bits to be an integer in \[1, 8\]; received: bits=0"),
        (dict(name="fc1", bits=9), "received: bits=9"),
        (dict(name="fc1", clusters=1), "clusters to be an integer >= 2; received: clusters=1"),
        (dict(name="fc1", bits=2, scheme="ternary"), "scheme in .*received: scheme='ternary'"),
        (dict(name="fc1", bits=2, clusters=4), "one of bits or clusters"),
        (dict(name="fc1", clusters=4, per_channel=True), "per_channel only with"),
        (dict(name="fc1", bits=3, scheme="kmeans", per_channel=True), "per_channel only with"),
        (dict(name="fc1", clusters=4, scheme="uniform"), "clusters only with scheme 'kmeans'"),
    ],
)
def test_bad_quantization_rules_name_the_field(rule, message):
    with pytest.raises(tf_admm.SpecError, match=message):
        tf_admm.Rule(**rule)


def test_more_clusters_than_kept_weights_is_refused_at_wrap():
    spec = _spec([tf_admm.Rule(name="fc2", sparsity=0.9, clusters=16)])
    with pytest.raises(
        ValueError,
        match=r"rules\[0\] \(name='fc2'\), layer 'fc2', weight 'kernel': .*\(7\); "
        r"received: clusters=16",
    ):
        tf_admm.admm_wrap(small_convnet(), spec)


def test_quantizing_a_layer_without_weights_is_refused():
    spec = _spec([tf_admm.Rule(name="flatten", bits=2)])
    with pytest.raises(ValueError, match="'flatten' \\(Flatten\\) has no compressible weights"):
        tf_admm.admm_wrap(small_convnet(), spec)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("quant_fractions", (0.5, 0.9), "ending at 1"),
        ("quant_fractions", (0.9, 0.5, 1.0), "increasing"),
        ("quant_fractions", "all", "list of numbers"),
        ("centroid_update", "median", "centroid_update in"),
        ("retrain_rounds", -1, "retrain_rounds to be an integer >= 0"),
        ("quant_admm_rounds", 0, "quant_admm_rounds"),
    ],
)
def test_bad_quantization_schedule_names_the_field(field, value, message):
    with pytest.raises(tf_admm.SpecError, match=message):
        _spec([tf_admm.Rule(name="fc1", bits=2)], **{field: value})
