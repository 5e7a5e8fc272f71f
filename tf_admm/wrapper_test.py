"""Wrapper tests: every registered layer type wraps and strips without changing outputs."""

import numpy as np
import pytest

import tf_admm
import tf_admm.testing
from tf_admm import keras, tf

L = keras.layers

# (layer factory, input shape, compressed weight attributes)
LAYERS = [
    (lambda: L.Dense(5), (7,), ("kernel",)),
    (lambda: L.Conv1D(4, 3), (9, 2), ("kernel",)),
    (lambda: L.Conv2D(4, 3), (6, 6, 2), ("kernel",)),
    (lambda: L.Conv3D(3, 2), (4, 4, 4, 2), ("kernel",)),
    (lambda: L.Conv2DTranspose(3, 3), (5, 5, 2), ("kernel",)),
    (lambda: L.DepthwiseConv2D(3), (6, 6, 3), ("depthwise_kernel",)),
    (lambda: L.SeparableConv2D(4, 3), (6, 6, 3), ("depthwise_kernel", "pointwise_kernel")),
    (lambda: L.Embedding(20, 6), (5,), ("embeddings",)),
]


def _model(factory, shape):
    inputs = keras.Input(shape, dtype="int32" if len(shape) == 1 and shape == (5,) else "float32")
    return keras.Model(inputs, factory()(inputs))


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    if shape == (5,):
        return rng.integers(0, 20, size=(4, 5)).astype(np.int32)
    return rng.normal(size=(4, *shape)).astype(np.float32)


@pytest.mark.parametrize("factory,shape,weights", LAYERS)
def test_wrap_then_strip_untrained_changes_no_output(factory, shape, weights):
    model = _model(factory, shape)
    x = _inputs(shape)
    expected = model(x).numpy()
    wrapped = tf_admm.admm_wrap(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5)))
    assert [s.target.weight for s in wrapped.admm_wrappers[0].slots] == list(weights)
    np.testing.assert_array_equal(wrapped(x).numpy(), expected)
    np.testing.assert_array_equal(tf_admm.strip(wrapped)(x).numpy(), expected)


@pytest.mark.parametrize("factory,shape,weights", LAYERS)
def test_hard_projection_leaves_exact_keep_count(factory, shape, weights):
    model = _model(factory, shape)
    wrapped = tf_admm.admm_wrap(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.7)))
    wrapper = wrapped.admm_wrappers[0]
    wrapper.hard_project()
    stripped = tf_admm.strip(wrapped)
    layer = stripped.layers[-1]
    for slot in wrapper.slots:
        value = getattr(layer, slot.target.weight).numpy()
        expected = tf_admm.projections.keep_count(value.size, 0.7)
        assert np.count_nonzero(value) == expected == slot.keep


def test_wrapping_does_not_reorder_or_touch_the_users_model():
    model = tf_admm.testing.small_convnet()
    before = [w.numpy().copy() for w in model.weights]
    names = [w.name for w in model.weights]
    wrapped = tf_admm.admm_wrap(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.9)))
    for wrapper in wrapped.admm_wrappers:
        wrapper.hard_project()
    assert [w.name for w in model.weights] == names
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, new.numpy())
    inner = wrapped.admm_wrappers[0].layer
    assert [w.name.split("/")[-1] for w in inner.weights] == ["kernel:0", "bias:0"]


def test_initial_state_is_projection_of_weights_with_zero_dual():
    model = tf_admm.testing.small_convnet()
    wrapped = tf_admm.admm_wrap(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.75, rho=0.3)))
    for wrapper in wrapped.admm_wrappers:
        for slot in wrapper.slots:
            weight = slot.variable.numpy()
            z = slot.auxiliary.numpy()
            assert np.count_nonzero(z) == slot.keep
            np.testing.assert_array_equal(z[z != 0], weight[z != 0])
            assert not slot.dual.numpy().any()
            assert slot.rho.numpy() == pytest.approx(0.3)


def test_admm_update_follows_the_scaled_form():
    model = tf_admm.testing.small_convnet()
    wrapped = tf_admm.admm_wrap(model, tf_admm.Spec(rules=[tf_admm.Rule(name="fc1", sparsity=0.8)]))
    slot = wrapped.admm_wrappers[0].slots[0]
    rng = np.random.default_rng(0)
    slot.dual.assign(rng.normal(size=slot.dual.shape).astype(np.float32))
    w, u = slot.variable.numpy(), slot.dual.numpy()
    z_expected = tf_admm.projections.project_top_k(tf.constant(w + u), slot.keep).numpy()
    wrapped.admm_wrappers[0].admm_update(rho=lambda initial: 2.0 * initial)
    np.testing.assert_allclose(slot.auxiliary.numpy(), z_expected, rtol=0, atol=0)
    # U <- (U + W - Z) * rho_old / rho_new keeps the unscaled multiplier rho * U unchanged.
    np.testing.assert_allclose(slot.dual.numpy(), (u + w - z_expected) / 2.0, atol=1e-7)
    assert slot.rho.numpy() == pytest.approx(2 * 3e-4)  # From the default initial rho.


class _Gated(L.Layer):
    """A custom layer that opts in through get_admm_weights()."""

    def build(self, input_shape):
        self.gate = self.add_weight(name="gate", shape=(input_shape[-1], 6))
        self.offset = self.add_weight(name="offset", shape=(6,), initializer="ones")

    def call(self, x):
        return tf.sigmoid(tf.matmul(x, self.gate) + self.offset)

    def get_admm_weights(self):
        return [self.gate]


def test_custom_layer_through_interface_is_compressed_and_strips():
    inputs = keras.Input((5,))
    model = keras.Model(inputs, _Gated(name="gated")(inputs))
    x = _inputs((5,), seed=3).astype(np.float32)
    x = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
    expected = model(x).numpy()
    wrapped = tf_admm.admm_wrap(model, tf_admm.Spec(rules=[tf_admm.Rule(name="gated", ratio=3)]))
    np.testing.assert_array_equal(wrapped(x).numpy(), expected)
    wrapped.admm_wrappers[0].hard_project()
    stripped = tf_admm.strip(wrapped)
    assert np.count_nonzero(stripped.layers[-1].gate.numpy()) == 10
    np.testing.assert_allclose(stripped(x).numpy(), wrapped(x).numpy(), atol=1e-6)


def test_wrapper_config_round_trip():
    wrapped = tf_admm.admm_wrap(
        tf_admm.testing.small_convnet(), tf_admm.Spec(default=tf_admm.Rule(sparsity=0.6, rho=0.2))
    )
    wrapper = wrapped.admm_wrappers[0]
    clone = tf_admm.AdmmWrapper.from_config(wrapper.get_config())
    assert clone.targets == wrapper.targets
    assert clone.layer.get_config() == wrapper.layer.get_config()
    assert clone.name == wrapper.name


def test_malformed_target_config_names_the_layer_and_keys():
    with pytest.raises(ValueError, match="Layer 'fc'.*received: .*colour"):
        tf_admm.AdmmWrapper(
            L.Dense(3, name="fc"), [{"weight": "kernel", "sparsity": 0.5, "rho": 1e-3, "colour": 1}]
        )
    with pytest.raises(ValueError, match="weight, sparsity and rho required"):
        tf_admm.AdmmWrapper(L.Dense(3, name="fc"), [{"weight": "kernel"}])
