"""Every registered layer type, one table: the weights found, exact kept counts after the hard
projection, pruned positions that cannot leak into the output, wrap -> strip identity and a
`.keras` round trip in the middle of ADMM."""

from __future__ import annotations

import numpy as np
import pytest

import tf_admm
from tf_admm import keras, registry, tf

L = keras.layers


@keras.utils.register_keras_serializable(package="tf_admm_test")
class ScaledDense(L.Dense):
    """A subclass of a registered layer that only rescales its output."""

    def call(self, inputs):
        return 2.0 * super().call(inputs)


@keras.utils.register_keras_serializable(package="tf_admm_test")
class Gated(L.Layer):
    """A custom layer that names its compressible weight."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], 6))
        self.g = self.add_weight(name="g", shape=(input_shape[-1], 6))

    def call(self, inputs):
        return tf.sigmoid(inputs @ self.g) * (inputs @ self.w)

    def get_admm_weights(self):
        return [self.w]


def _rnn(cls):
    return lambda x: cls(6)(x)


KERNELS = ("cell.kernel", "cell.recurrent_kernel")

# name: (input shape, input dtype, model body, compressed weight paths)
CASES = {
    "Dense": ((7,), "float32", lambda x: L.Dense(5)(x), ("kernel",)),
    "EinsumDense": (
        (4, 6),
        "float32",
        lambda x: L.EinsumDense("abc,cd->abd", output_shape=(None, 5))(x),
        ("kernel",),
    ),
    "Conv1D": ((9, 2), "float32", lambda x: L.Conv1D(4, 3)(x), ("kernel",)),
    "Conv2D": ((6, 6, 2), "float32", lambda x: L.Conv2D(4, 3)(x), ("kernel",)),
    "Conv3D": ((4, 4, 4, 2), "float32", lambda x: L.Conv3D(3, 2)(x), ("kernel",)),
    "Conv1DTranspose": ((5, 2), "float32", lambda x: L.Conv1DTranspose(3, 3)(x), ("kernel",)),
    "Conv2DTranspose": ((4, 4, 2), "float32", lambda x: L.Conv2DTranspose(3, 3)(x), ("kernel",)),
    "Conv3DTranspose": (
        (3, 3, 3, 2),
        "float32",
        lambda x: L.Conv3DTranspose(3, 2)(x),
        ("kernel",),
    ),
    "DepthwiseConv1D": (
        (9, 3),
        "float32",
        lambda x: L.DepthwiseConv1D(3)(x),
        ("depthwise_kernel",),
    ),
    "DepthwiseConv2D": (
        (6, 6, 3),
        "float32",
        lambda x: L.DepthwiseConv2D(3)(x),
        ("depthwise_kernel",),
    ),
    "SeparableConv1D": (
        (9, 3),
        "float32",
        lambda x: L.SeparableConv1D(4, 3)(x),
        ("depthwise_kernel", "pointwise_kernel"),
    ),
    "SeparableConv2D": (
        (6, 6, 3),
        "float32",
        lambda x: L.SeparableConv2D(4, 3)(x),
        ("depthwise_kernel", "pointwise_kernel"),
    ),
    "Embedding": ((5,), "int32", lambda x: L.Embedding(20, 6)(x), ("embeddings",)),
    "LocallyConnected1D": ((8, 2), "float32", lambda x: L.LocallyConnected1D(3, 3)(x), ("kernel",)),
    "LocallyConnected2D": (
        (5, 5, 2),
        "float32",
        lambda x: L.LocallyConnected2D(3, 3)(x),
        ("kernel",),
    ),
    "LSTM": ((5, 4), "float32", _rnn(L.LSTM), KERNELS),
    "GRU": ((5, 4), "float32", _rnn(L.GRU), KERNELS),
    "SimpleRNN": ((5, 4), "float32", _rnn(L.SimpleRNN), KERNELS),
    "RNN(LSTMCell)": ((5, 4), "float32", lambda x: L.RNN(L.LSTMCell(6))(x), KERNELS),
    "RNN(StackedRNNCells)": (
        (5, 4),
        "float32",
        lambda x: L.RNN(L.StackedRNNCells([L.GRUCell(5), L.SimpleRNNCell(3)]))(x),
        (
            "cell.cells.0.kernel",
            "cell.cells.0.recurrent_kernel",
            "cell.cells.1.kernel",
            "cell.cells.1.recurrent_kernel",
        ),
    ),
    "Bidirectional(LSTM)": (
        (5, 4),
        "float32",
        lambda x: L.Bidirectional(L.LSTM(6))(x),
        tuple(f"{side}_layer.{path}" for side in ("forward", "backward") for path in KERNELS),
    ),
    "ConvLSTM1D": ((3, 6, 2), "float32", lambda x: L.ConvLSTM1D(3, 3)(x), KERNELS),
    "ConvLSTM2D": ((3, 5, 5, 1), "float32", lambda x: L.ConvLSTM2D(3, 3)(x), KERNELS),
    "ConvLSTM3D": ((2, 4, 4, 4, 1), "float32", lambda x: L.ConvLSTM3D(2, 2)(x), KERNELS),
    "TimeDistributed(Dense)": (
        (4, 6),
        "float32",
        lambda x: L.TimeDistributed(L.Dense(5))(x),
        ("layer.kernel",),
    ),
    "TimeDistributed(Conv2D)": (
        (3, 5, 5, 2),
        "float32",
        lambda x: L.TimeDistributed(L.Conv2D(3, 3))(x),
        ("layer.kernel",),
    ),
    "MultiHeadAttention": (
        (4, 8),
        "float32",
        lambda x: L.MultiHeadAttention(2, 4)(x, x),
        ("_query_dense.kernel", "_key_dense.kernel", "_value_dense.kernel", "_output_dense.kernel"),
    ),
    "ScaledDense(Dense)": ((7,), "float32", lambda x: ScaledDense(5)(x), ("kernel",)),
    "Gated(get_admm_weights)": ((7,), "float32", lambda x: Gated()(x), ("w",)),
}

SPARSITY = 0.7


def _model(name):
    shape, dtype, body, _ = CASES[name]
    inputs = keras.Input(shape, dtype=dtype)
    return keras.Model(inputs, body(inputs), name="m")


def _inputs(name, seed=0):
    shape, dtype, _, _ = CASES[name]
    rng = np.random.default_rng(seed)
    if dtype == "int32":
        return rng.integers(0, 20, size=(3, *shape)).astype(np.int32)
    return rng.normal(size=(3, *shape)).astype(np.float32)


def _spec():
    return tf_admm.Spec(default=tf_admm.Rule(sparsity=SPARSITY))


def test_the_table_covers_at_least_25_layer_types():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", sorted(CASES))
def test_registered_weights_are_found(name):
    model = _model(name)
    layer = model.layers[-1]
    assert registry.supports(layer)
    assert registry.compressible_weights(layer) == CASES[name][3]
    admm = tf_admm.admm_wrap(model, _spec())
    assert [s.target.weight for s in admm.admm_wrappers[0].slots] == list(CASES[name][3])


@pytest.mark.parametrize("name", sorted(CASES))
def test_projection_counts_leaks_strip_and_round_trip(name, tmp_path):
    model = _model(name)
    x = _inputs(name)
    expected = model(x).numpy()
    admm = tf_admm.admm_wrap(model, _spec())
    np.testing.assert_allclose(admm(x).numpy(), expected, rtol=0, atol=1e-6)

    # Mid-ADMM: Z and U differ from W; the saved file brings them back.
    wrapper = admm.admm_wrappers[0]
    for slot in wrapper.slots:
        slot.variable.assign_add(0.01 * tf.ones_like(slot.variable))
    wrapper.admm_update()
    path = str(tmp_path / "mid.keras")
    admm.save(path)
    loaded = tf_admm.load_model(path)
    for before, after in zip(wrapper.slots, loaded.admm_wrappers[0].slots):
        assert after.target.weight == before.target.weight
        for field in ("variable", "auxiliary", "dual", "rho"):
            np.testing.assert_array_equal(
                getattr(after, field).numpy(), getattr(before, field).numpy()
            )
    np.testing.assert_allclose(loaded(x).numpy(), admm(x).numpy(), rtol=0, atol=1e-6)

    # Hard projection: exactly keep_count(size, 0.7) nonzeros in each weight.
    wrapper.hard_project()
    projected = admm(x).numpy()
    # Values written into pruned positions of W never reach the output: the layer (or the
    # layer inside it that owns the weight) computes with mask * W.
    for slot in wrapper.slots:
        noise = tf.random.stateless_normal(slot.variable.shape, seed=(1, 2))
        slot.variable.assign(slot.variable + (1.0 - slot.mask) * noise)
    np.testing.assert_allclose(admm(x).numpy(), projected, rtol=0, atol=1e-6)

    stripped = tf_admm.strip(admm)
    np.testing.assert_allclose(stripped(x).numpy(), projected, rtol=0, atol=1e-5)
    layer = stripped.layers[-1]
    assert type(layer) is type(model.layers[-1])
    for slot in wrapper.slots:
        value = registry.variable(layer, slot.target.weight).numpy()
        size = int(value.size)
        assert np.count_nonzero(value) == tf_admm.projections.keep_count(size, SPARSITY)
    # Every other weight is copied unchanged (same order in the stripped layer).
    compressed = {id(s.variable) for s in wrapper.slots}
    assert len(layer.weights) == len(wrapper.layer.weights)
    for new, old in zip(layer.weights, wrapper.layer.weights):
        if id(old) not in compressed:
            np.testing.assert_array_equal(new.numpy(), old.numpy())
