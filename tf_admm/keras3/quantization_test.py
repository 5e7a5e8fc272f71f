"""Quantization on the Keras 3 adapter, on the backend this process runs (KERAS_BACKEND).

ADMM onto uniform, power-of-two and k-means levels, iterative locking, trained shared values
and strip, as ``tf_admm/quantization_test.py`` checks them on tf_keras. pytest runs this file on
Keras 3's default backend (TensorFlow); ``backends_test.py`` runs it again on JAX.
"""

import keras
import numpy as np
import pytest

import tf_admm
from tf_admm.keras3 import AdmmModel, wrappers
from tf_admm.testing import small_convnet

BACKEND = keras.backend.backend()
Phase = tf_admm.Phase


pytestmark = pytest.mark.usefixtures("keras3_session")


def _convnet() -> keras.Model:
    return small_convnet("net", units=16, keras_module=keras)


def _data(count: int = 32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(count, 8, 8, 1)).astype("float32"), rng.integers(0, 3, size=count)


def _spec(rules, **overrides) -> tf_admm.Spec:
    # Rounds of 2 steps; 32 samples in batches of 8 make 4 steps, 2 rounds, per epoch.
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


def _wrap(spec) -> AdmmModel:
    admm = tf_admm.admm_wrap(_convnet(), spec)
    admm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return admm


def _fit(model, epochs=1, steps=None):
    x, y = _data()
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        steps_per_epoch=steps,
        shuffle=False,
        verbose=0,
        callbacks=tf_admm.callbacks(),
    )


def _slot(model, name):
    return next(w for w in wrappers(model) if w.layer.name == name).slots[0]


def _host(variable) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable)


def test_prune_then_quantize_strips_to_exact_levels_and_locked_weights_stay():
    spec = _spec(
        [
            tf_admm.Rule(name="fc1", sparsity=0.8, bits=2),
            tf_admm.Rule(name="conv", sparsity=0.5, bits=3, per_channel=True),
            tf_admm.Rule(name="fc2", bits=2, scheme="power_of_two"),
            tf_admm.Rule(name="depthwise", sparsity=0.5, clusters=3),
        ]
    )
    admm = _wrap(spec)
    # 2 prune ADMM + 1 retrain + 2 quantization ADMM + 2 locking rounds = 7 rounds, 14 steps.
    _fit(admm, epochs=4)
    assert admm.phase is Phase.QUANT_RETRAIN
    plain = tf_admm.strip(admm)
    assert not [la for la in plain.layers if "admm" in type(la).__name__.lower()]
    x, _ = _data(8)
    np.testing.assert_allclose(plain.predict(x, verbose=0), admm.predict(x, verbose=0), atol=1e-5)
    for name, levels_per_set in (("fc1", 4), ("conv", 8), ("fc2", 4), ("depthwise", 3)):
        slot = _slot(admm, name)
        kernel = _host(plain.get_layer(name).kernel)
        assert np.count_nonzero(kernel) == slot.keep, name
        levels = _host(slot.levels)
        if slot.target.per_channel:
            for channel in range(kernel.shape[-1]):
                column = kernel[..., channel]
                values = np.unique(column[column != 0])
                assert len(values) <= levels_per_set and set(values) <= set(levels[channel])
        else:
            values = np.unique(kernel[kernel != 0])
            assert len(values) <= levels_per_set, name
            assert set(values) <= set(levels), name
        scale = np.min(np.abs(levels), axis=-1, keepdims=True)
        if slot.target.scheme == "uniform":
            np.testing.assert_allclose(levels / scale, np.round(levels / scale), atol=1e-5)
        if slot.target.scheme == "power_of_two":
            np.testing.assert_allclose(np.log2(np.abs(levels) / scale) % 1, 0.0, atol=1e-5)
    frozen = {n: _slot(admm, n).host_effective() for n in ("fc1", "conv", "fc2")}
    bias = _host(admm.get_layer("admm_fc1").layer.bias).copy()
    _fit(admm, epochs=2)
    for name, value in frozen.items():
        np.testing.assert_array_equal(_slot(admm, name).host_effective(), value, err_msg=name)
    assert np.any(_host(admm.get_layer("admm_fc1").layer.bias) != bias)


def test_locking_follows_the_schedule_and_locked_weights_never_move():
    spec = _spec([tf_admm.Rule(name="fc1", sparsity=0.5, bits=2)], quant_fractions=(0.5, 0.9, 1.0))
    admm = _wrap(spec)
    slot = _slot(admm, "fc1")
    kept = slot.keep
    # Rounds of 2 steps: 1-2 prune ADMM, 3 retrain (then quantization ADMM begins), 4-5
    # quantization ADMM (levels fixed and 50% locked at the end of 5), 6 locks 90%, 7 all.
    _fit(admm, epochs=2, steps=4)
    assert admm.phase is Phase.QUANT_ADMM
    assert int(_host(slot.locked).sum()) == 0
    history = []
    for fraction in (0.5, 0.9, 1.0):
        _fit(admm, epochs=1, steps=2)
        mask = _host(slot.mask) > 0
        locked = (_host(slot.locked) > 0) & mask
        assert locked.sum() == round(fraction * kept), fraction
        value = slot.host_effective()
        assert set(np.unique(value[locked])) <= set(_host(slot.levels))
        assert np.all(value[~mask] == 0)
        for earlier, earlier_value in history:
            # Once locked, always locked, at the same value.
            assert np.all(locked[earlier])
            np.testing.assert_array_equal(value[earlier], earlier_value)
        history.append((locked, value[locked]))
        logs = admm.admm_logs()
        assert logs["fc1_locked"] == pytest.approx(round(fraction * kept) / kept)
    assert admm.phase is Phase.QUANT_RETRAIN
    assert admm.admm_logs()["fc1_quant_error"] == 0.0


def test_unlocked_weights_keep_training_while_locked_ones_stay():
    spec = _spec([tf_admm.Rule(name="fc1", sparsity=0.5, bits=2)], quant_fractions=(0.5, 1.0))
    admm = _wrap(spec)
    _fit(admm, epochs=2)
    _fit(admm, epochs=1, steps=2)  # 10 steps: 5 rounds, half of fc1 locked.
    assert admm.phase is Phase.QUANT_LOCK
    slot = _slot(admm, "fc1")
    mask = _host(slot.mask) > 0
    locked = (_host(slot.locked) > 0) & mask
    before = slot.host_effective()
    _fit(admm, epochs=1, steps=1)
    after = slot.host_effective()
    np.testing.assert_array_equal(after[locked], before[locked])
    assert np.any(after[~locked & mask] != before[~locked & mask])
    assert np.all(after[~mask] == 0)


def _levels_gradient(slot) -> np.ndarray:
    """d sum(effective) / d levels on this backend."""
    if BACKEND == "jax":
        import jax

        def total(levels):
            with keras.StatelessScope(state_mapping=[(slot.levels, levels)]):
                return keras.ops.sum(slot.effective())

        return np.asarray(jax.grad(total)(slot.levels.value))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        total = tf.reduce_sum(slot.effective())
    return tape.gradient(total, slot.levels.value).numpy()


@pytest.mark.parametrize("straight_through", [False, True])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_centroid_gradient_is_sum_or_mean_of_member_gradients(mode, straight_through):
    rules = [tf_admm.Rule(name="fc1", sparsity=0.5, clusters=4)]
    spec = _spec(rules, centroid_update=mode, straight_through=straight_through)
    wrapper = tf_admm.admm_wrap(_convnet(), spec).get_layer("admm_fc1")
    wrapper.hard_project()
    wrapper.quant_begin()
    wrapper.quant_lock(1.0, first=True)
    slot = wrapper.slots[0]
    assert slot.levels.trainable
    counts = _host(slot.level_counts)
    assert counts.sum() == slot.keep
    expected = counts if mode == "sum" else np.ones(4)
    np.testing.assert_allclose(_levels_gradient(slot), expected, rtol=1e-5)


def test_straight_through_locked_weights_train_and_strip_to_their_nearest_levels():
    spec = _spec([tf_admm.Rule(name="fc1", sparsity=0.5, bits=2)], straight_through=True)
    admm = _wrap(spec)
    _fit(admm, epochs=4)
    assert admm.phase is Phase.QUANT_RETRAIN
    slot = _slot(admm, "fc1")
    kept = _host(slot.mask) > 0
    assert np.all(_host(slot.locked)[kept] == 1)
    levels = np.sort(_host(slot.levels))

    def on_nearest_level():
        weight = _host(slot.variable)
        kernel = _host(tf_admm.strip(admm).get_layer("fc1").kernel)
        nearest = levels[np.argmin(np.abs(weight[..., None] - levels), axis=-1)]
        np.testing.assert_array_equal(kernel[kept], nearest[kept])  # Exactly on a level.
        assert np.all(kernel[~kept] == 0)
        np.testing.assert_array_equal(slot.host_effective(), kernel)
        return weight, kernel

    weight_before, kernel_before = on_nearest_level()
    _fit(admm, epochs=2)
    weight_after, _ = on_nearest_level()
    assert np.all(weight_after[kept] != weight_before[kept])  # Every locked weight trained.
    # Moving W past the midpoint between two levels moves the weight to the other level.
    first = tuple(np.argwhere(kept)[0])
    other = levels[0] if kernel_before[first] != levels[0] else levels[-1]
    weight_after[first] = other
    slot.variable.assign(weight_after)
    assert on_nearest_level()[1][first] == other


@pytest.mark.parametrize("mode", ["sum", "mean", "none"])
def test_kmeans_centroids_train_assignments_and_zeros_stay(mode):
    spec = _spec([tf_admm.Rule(name="fc1", sparsity=0.7, clusters=4)], centroid_update=mode)
    admm = _wrap(spec)
    _fit(admm, epochs=4)
    assert admm.phase is Phase.QUANT_RETRAIN
    slot = _slot(admm, "fc1")
    assert slot.levels.trainable is (mode != "none")
    levels, assignment = _host(slot.levels).copy(), _host(slot.assignment).copy()
    zeros = slot.host_effective() == 0
    _fit(admm, epochs=2)
    if mode == "none":
        np.testing.assert_array_equal(_host(slot.levels), levels)
    else:
        assert np.any(_host(slot.levels) != levels)
    np.testing.assert_array_equal(_host(slot.assignment), assignment)
    kernel = _host(tf_admm.strip(admm).get_layer("fc1").kernel)
    np.testing.assert_array_equal(kernel == 0, zeros)
    values = np.unique(kernel[kernel != 0])
    assert len(values) <= 4 and set(values) <= set(_host(slot.levels))


def test_quantize_only_spec_starts_in_quantization_admm_and_keeps_existing_zeros():
    model = _convnet()
    kernel = model.get_layer("fc1").kernel.numpy().copy()
    kernel[:, :4] = 0.0  # Zeros from an earlier pruning stay pruned.
    model.get_layer("fc1").kernel.assign(kernel)
    spec = _spec([tf_admm.Rule(layer_type="Dense", bits=3)])
    admm = tf_admm.admm_wrap(model, spec)
    assert admm.phase is Phase.QUANT_ADMM
    admm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    _fit(admm, epochs=2)  # 2 quantization ADMM rounds, 2 locking rounds.
    assert admm.phase is Phase.QUANT_RETRAIN
    stripped = _host(tf_admm.strip(admm).get_layer("fc1").kernel)
    np.testing.assert_array_equal(stripped == 0, kernel == 0)
    assert len(np.unique(stripped[stripped != 0])) <= 8


def _quant_state(model) -> dict[str, np.ndarray]:
    state = {}
    for wrapper in wrappers(model):
        for slot in wrapper.slots:
            for field in (
                "variable",
                "auxiliary",
                "dual",
                "mask",
                "rho",
                "levels",
                "assignment",
                "locked",
                "level_counts",
            ):
                state[f"{wrapper.layer.name}.{field}"] = _host(getattr(slot, field))
    for counter in ("admm_step", "admm_epoch", "admm_round", "admm_phase"):
        state[counter] = _host(getattr(model, counter))
    return state


def test_save_and_load_mid_locking_continue_identically(tmp_path):
    spec = _spec(
        [
            tf_admm.Rule(name="fc1", sparsity=0.5, bits=2),
            tf_admm.Rule(name="fc2", clusters=4),
        ],
        quant_fractions=(0.5, 0.9, 1.0),
    )
    admm = _wrap(spec)
    _fit(admm, epochs=2)
    _fit(admm, epochs=1, steps=2)  # 5 rounds: half locked.
    assert admm.phase is Phase.QUANT_LOCK
    path = str(tmp_path / "mid_locking.keras")
    admm.save(path)
    loaded = keras.models.load_model(path)  # No custom_objects.
    assert isinstance(loaded, AdmmModel) and loaded.spec == admm.spec
    original, restored = _quant_state(admm), _quant_state(loaded)
    assert original.keys() == restored.keys()
    for key in original:
        np.testing.assert_array_equal(restored[key], original[key], err_msg=key)
    x, _ = _data(8)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), admm.predict(x, verbose=0))
    for model in (admm, loaded):
        _fit(model, epochs=2)
        assert model.phase is Phase.QUANT_RETRAIN
    original, restored = _quant_state(admm), _quant_state(loaded)
    for key in original:
        np.testing.assert_allclose(restored[key], original[key], rtol=1e-5, atol=1e-6, err_msg=key)
    a, b = tf_admm.strip(admm), tf_admm.strip(loaded)
    for name in ("fc1", "fc2"):
        np.testing.assert_allclose(
            _host(b.get_layer(name).kernel), _host(a.get_layer(name).kernel), atol=1e-6
        )


def test_more_levels_than_kept_weights_is_refused():
    spec = _spec([tf_admm.Rule(name="fc2", sparsity=0.9, clusters=16)])
    with pytest.raises(
        ValueError,
        match=r"rules\[0\] \(name='fc2'\), layer 'fc2', weight 'kernel': .*\(5\); "
        r"received: clusters=16",
    ):
        tf_admm.admm_wrap(_convnet(), spec)


@pytest.mark.parametrize(
    "quantization",
    [
        dict(bits=2, scheme="uniform"),
        dict(bits=3, scheme="uniform", per_channel=True),
        dict(bits=2, scheme="power_of_two"),
        dict(clusters=4, scheme="kmeans"),
    ],
    ids=["uniform", "uniform_per_channel", "power_of_two", "kmeans"],
)
def test_quantization_steps_match_the_tf_keras_adapter(quantization):
    """The same weights give the same levels, Z, U, assignment, locks and counts on both."""
    from tf_admm import compat
    from tf_admm import wrapper as tf_keras_wrapper
    from tf_admm.keras3 import AdmmWrapper
    from tf_admm.planning import Target

    target = Target("kernel", 0.5, 0.1, **quantization)
    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(12, 5)).astype("float32")
    dual = rng.normal(scale=0.05, size=(12, 5)).astype("float32")
    ours = AdmmWrapper(keras.layers.Dense(5, name="fc"), [target])
    ours.build((None, 12))
    theirs = tf_keras_wrapper.AdmmWrapper(compat.keras.layers.Dense(5, name="fc"), [target])
    theirs.build((None, 12))
    for wrapper in (ours, theirs):
        slot = wrapper.slots[0]
        slot.variable.assign(kernel)
        wrapper.initialize()
        wrapper.hard_project()
        wrapper.quant_begin()
        slot.dual.assign(dual * _host(slot.mask))
        wrapper.quant_update(rho=lambda initial: 2 * initial)
        wrapper.quant_lock(0.5, first=True)
        wrapper.quant_lock(1.0, first=False)
    mine, reference = ours.slots[0], theirs.slots[0]
    for field in ("mask", "levels", "auxiliary", "dual", "rho", "assignment", "locked"):
        np.testing.assert_allclose(
            _host(getattr(mine, field)),
            getattr(reference, field).numpy(),
            rtol=1e-5,
            atol=1e-7,
            err_msg=field,
        )
    np.testing.assert_array_equal(_host(mine.level_counts), reference.level_counts.numpy())
    np.testing.assert_allclose(mine.host_effective(), reference.effective().numpy(), rtol=1e-6)
    assert ours.quantization_state() == pytest.approx(theirs.quantization_state(), abs=1e-6)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 3:
            raise KeyboardInterrupt


def test_backup_and_restore_mid_quantization_resumes_as_an_uninterrupted_run(tmp_path):
    spec = _spec(
        [tf_admm.Rule(name="fc1", sparsity=0.5, bits=2), tf_admm.Rule(name="fc2", clusters=4)],
        quant_fractions=(0.5, 0.9, 1.0),
    )
    x, y = _data()

    def run(backup_dir, interrupt):
        keras.utils.clear_session()
        keras.utils.set_random_seed(3)
        admm = _wrap(spec)
        kwargs = dict(batch_size=8, epochs=5, shuffle=False, verbose=0)
        if interrupt:
            callbacks = tf_admm.callbacks(backup_dir=backup_dir) + [_Interrupt()]
            with pytest.raises(KeyboardInterrupt):
                admm.fit(x, y, callbacks=callbacks, **kwargs)
            assert admm.phase is Phase.QUANT_LOCK  # Stopped with 90% of the weights locked.
            keras.utils.clear_session()
            keras.utils.set_random_seed(3)
            admm = _wrap(spec)
        admm.fit(x, y, callbacks=tf_admm.callbacks(backup_dir=backup_dir), **kwargs)
        return _quant_state(admm)

    resumed = run(str(tmp_path / "resumed"), interrupt=True)
    straight = run(str(tmp_path / "straight"), interrupt=False)
    assert int(straight["admm_phase"]) == int(Phase.QUANT_RETRAIN)
    for key in straight:
        np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-5, atol=1e-6, err_msg=key)
