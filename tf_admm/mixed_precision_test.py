"""ADMM under Keras mixed precision: float16 compute, float32 variables, penalty and projections."""

import numpy as np
import pytest

import tf_admm
from tf_admm import keras, tf
from tf_admm.testing import compile_for_classification, small_data

# conv: 3 * 3 * 1 * 4 = 36 kernel entries, 10 kept; fc: 6 * 6 * 4 * 3 = 432, 25% (108) kept.
KEPT = {"conv": 10, "fc": 108}


@pytest.fixture
def mixed_float16():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _model(head_dtype=None):
    """Conv2D + Dense on 8x8x1; ``head_dtype="float32"`` is Keras' advice for the last layer."""
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten(name="flatten")(h)
    outputs = keras.layers.Dense(3, name="fc", dtype=head_dtype)(h)
    return keras.Model(inputs, outputs)


def _spec():
    return tf_admm.Spec(
        rules=[tf_admm.Rule(name="conv", keep=10), tf_admm.Rule(name="fc", sparsity=0.75)],
        rho=tf_admm.RhoSchedule(0.05, 1.5),
        admm_rounds=2,
        update_every=2,
        update_unit="step",
    )


@pytest.mark.parametrize("head_dtype", [None, "float32"])
def test_mixed_float16_trains_through_admm_and_projection_with_exact_kept_counts(
    mixed_float16, head_dtype, tmp_path
):
    x, y = small_data(32)
    model = _model(head_dtype)
    admm = compile_for_classification(tf_admm.admm_wrap(model, _spec()))
    # Every wrapper computes in its layer's policy; the output dtype is the unwrapped model's.
    assert admm.output.dtype == model.output.dtype
    assert admm(x[:2]).dtype == model(x[:2]).dtype
    assert model.output.dtype == (tf.float32 if head_dtype else tf.float16)
    for wrapper in admm.admm_wrappers:
        assert wrapper.dtype_policy.name == wrapper.layer.dtype_policy.name
        for slot in wrapper.slots:
            for variable in (slot.auxiliary, slot.dual, slot.mask, slot.rho):
                assert variable.dtype == tf.float32
                assert not hasattr(variable, "true_dtype")  # Not an AutoCastVariable.
    assert admm.admm_penalty().dtype == tf.float32

    # 2 rounds of 2 steps: the hard projection after step 4, then masked retraining.
    history = admm.fit(
        x, y, batch_size=8, epochs=2, verbose=0, callbacks=tf_admm.callbacks()
    ).history
    assert admm.phase is tf_admm.Phase.RETRAIN
    assert all(np.isfinite(history["loss"])), history["loss"]
    assert history["admm_penalty"][0] > 0

    path = str(tmp_path / "mixed.keras")
    admm.save(path)
    loaded = tf_admm.load_model(path)
    assert [w.dtype_policy.name for w in tf_admm.wrappers(loaded)] == [
        w.dtype_policy.name for w in admm.admm_wrappers
    ]
    np.testing.assert_array_equal(loaded(x).numpy(), admm(x).numpy())

    plain = tf_admm.strip(admm)
    for name, kept in KEPT.items():
        layer = plain.get_layer(name)
        assert layer.dtype_policy.name == model.get_layer(name).dtype_policy.name
        assert np.count_nonzero(layer.kernel.numpy()) == kept
    assert plain(x[:2]).dtype == model(x[:2]).dtype
    np.testing.assert_allclose(plain(x).numpy(), admm(x).numpy(), rtol=0, atol=0)


def test_model_built_in_float32_and_wrapped_under_mixed_float16_keeps_its_policy():
    model = _model()  # Built under the default float32 policy.
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        admm = tf_admm.admm_wrap(model, _spec())
    finally:
        keras.mixed_precision.set_global_policy(previous)
    x, _ = small_data(4)
    assert [w.dtype_policy.name for w in admm.admm_wrappers] == ["float32", "float32"]
    assert admm(x).dtype == tf.float32
    np.testing.assert_allclose(admm(x).numpy(), model(x).numpy(), atol=1e-6)


def test_mixed_float16_quantization_puts_locked_weights_on_float32_levels(mixed_float16):
    x, y = small_data(32)
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc", bits=2)],
        admm_rounds=1,
        update_every=1,
        update_unit="step",
        quant_admm_rounds=1,
        quant_fractions=(0.5, 1.0),
    )
    admm = compile_for_classification(tf_admm.admm_wrap(_model(), spec))
    # Quantization ADMM (1 round), lock 50%, lock 100%: all locked after step 3.
    admm.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.QUANT_RETRAIN
    slot = admm.admm_wrappers[0].slots[0]
    assert slot.levels.dtype == tf.float32
    levels = np.sort(slot.levels.numpy())
    kernel = tf_admm.strip(admm).get_layer("fc").kernel.numpy()
    # Kept weights are exactly on the 2**2 float32 levels (rounding to float16 would move them).
    assert set(np.unique(kernel[kernel != 0])) <= set(levels)
    assert levels.size == 4
