"""tf_admm.shrink: channels whose consumer rows are all zero (column pruning) leave the network."""

import numpy as np

from tf_admm import keras
from tf_admm.shrink import shrink, shrink_plan

_layers = keras.layers


def _lenet_like():
    """conv1 -> pool -> conv2 -> pool -> Flatten -> fc1 (ReLU) -> fc2, random weights."""
    inputs = keras.Input((12, 12, 1))
    h = _layers.Conv2D(4, 3, name="conv1")(inputs)
    h = _layers.MaxPool2D(2, name="pool1")(h)
    h = _layers.Conv2D(5, 3, name="conv2")(h)
    h = _layers.Flatten(name="flatten")(h)  # 3x3x5 = 45 inputs, channel fastest.
    h = _layers.Dense(8, activation="relu", name="fc1")(h)
    outputs = _layers.Dense(3, name="fc2")(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in weights])
    return model


def _zero_rows(model, name, rows):
    layer = model.get_layer(name)
    weights = layer.get_weights()
    weights[0][..., rows, :] = 0.0
    layer.set_weights(weights)


def _same_outputs(small, model):
    x = np.random.default_rng(1).normal(size=(4, 12, 12, 1)).astype(np.float32)
    # Outputs reach ~800 here; removing channels changes the order of float32 sums, which moves
    # them by a few ulps (6e-5 on an AMD EPYC CI machine): a relative bound, not an absolute one.
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=2e-6, atol=1e-5)


def test_zero_input_columns_of_a_dense_remove_the_units_feeding_them():
    model = _lenet_like()
    _zero_rows(model, "fc2", [1, 4, 6])  # Column pruning of fc2: fc1's units 1, 4, 6 unused.
    plans = {p.layer: p for p in shrink_plan(model)}
    assert plans["fc1"].removed == (1, 4, 6) and plans["fc1"].unused == (1, 4, 6)
    assert plans["fc1"].consumer == "fc2" and plans["fc1"].kept_zero == {}
    small = shrink(model)
    assert small.get_layer("fc1").kernel.shape == (45, 5)
    assert small.get_layer("fc1").bias.shape == (5,)
    assert small.get_layer("fc2").kernel.shape == (5, 3)
    _same_outputs(small, model)


def test_channel_ignored_at_every_flattened_position_leaves_the_convolution():
    model = _lenet_like()
    positions = np.arange(9) * 5
    # Channel 2 of conv2 ignored at every position; channel 3 only at some (it stays).
    _zero_rows(model, "fc1", list(positions + 2) + list(positions[:4] + 3))
    plans = {p.layer: p for p in shrink_plan(model)}
    assert plans["conv2"].removed == (2,) and plans["conv2"].unused == (2,)
    assert plans["conv2"].chain == ("flatten",) and plans["conv2"].consumer == "fc1"
    small = shrink(model)
    assert small.get_layer("conv2").kernel.shape == (3, 3, 4, 4)
    assert small.get_layer("fc1").kernel.shape == (36, 8)
    _same_outputs(small, model)


def test_ignored_convolution_input_channel_removes_the_producer_filter():
    model = _lenet_like()
    _zero_rows(model, "conv2", [0])  # conv2 reads nothing from conv1's channel 0 (via pool1).
    plans = {p.layer: p for p in shrink_plan(model)}
    assert plans["conv1"].removed == (0,) and plans["conv1"].chain == ("pool1",)
    small = shrink(model)
    assert small.get_layer("conv1").kernel.shape == (3, 3, 1, 3)
    assert small.get_layer("conv2").kernel.shape == (3, 3, 3, 5)
    _same_outputs(small, model)


def test_zero_filter_with_a_fixed_output_the_consumer_ignores_leaves_without_folding():
    model = _lenet_like()
    fc1 = model.get_layer("fc1")
    kernel, bias = fc1.get_weights()
    kernel[:, 2] = 0.0
    bias[2] = 5.0  # A zero filter with a fixed output, ReLU(5) = 5 ...
    fc1.set_weights([kernel, bias])
    _zero_rows(model, "fc2", [2])  # ... that fc2 ignores: nothing to fold into fc2's bias.
    bias_before = model.get_layer("fc2").bias.numpy()
    plans = {p.layer: p for p in shrink_plan(model)}
    assert plans["fc1"].removed == (2,) and plans["fc1"].unused == ()  # It is a zero filter.
    small = shrink(model)
    np.testing.assert_array_equal(small.get_layer("fc2").bias.numpy(), bias_before)
    _same_outputs(small, model)


def test_dense_model_is_not_planned_at_all():
    assert shrink_plan(_lenet_like()) == []


def test_model_without_zero_filters_and_dynamic_shapes_or_branches_still_shrinks():
    inputs = keras.Input((None, None, 3))  # No static shape: no fixed values to compute.
    h = _layers.Conv2D(4, 3, name="conv1")(inputs)
    outputs = [_layers.Conv2D(2, 1, name="a")(h), _layers.Conv2D(2, 1, name="b")(h)]
    model = keras.Model(inputs, outputs)
    assert shrink_plan(model) == []
    small = shrink(model)
    assert small.count_params() == model.count_params()


def test_ignored_channel_after_a_dynamic_shape_is_kept_when_nothing_else_is_zero():
    inputs = keras.Input((None, None, 3))
    h = _layers.Conv2D(4, 3, name="conv1")(inputs)
    outputs = _layers.Conv2D(2, 1, name="conv2")(h)
    model = keras.Model(inputs, outputs)
    _zero_rows(model, "conv2", [1])
    small = shrink(model)  # Fixed values need static shapes: the ignored channel stays.
    assert small.get_layer("conv1").kernel.shape == (3, 3, 3, 4)
