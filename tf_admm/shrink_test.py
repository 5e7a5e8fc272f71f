"""tf_admm.shrink: zero filters leave the network and the outputs stay the masked model's."""

import numpy as np
import pytest

import tf_admm
from tf_admm import keras
from tf_admm.shrink import ShrinkError, shrink, shrink_plan
from tf_admm.testing import (
    compile_for_classification,
    mobilenet_v2_like,
    randomize_weights,
    small_data,
    zero_filters,
)

_layers = keras.layers


def _mobile_like():
    """Conv -> BN -> ReLU -> Depthwise(x2) -> 1x1 Conv -> pool -> Conv -> Flatten -> Dense."""
    inputs = keras.Input((10, 10, 3))
    h = _layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    h = _layers.BatchNormalization(name="bn1")(h)
    h = _layers.ReLU(name="relu1")(h)
    h = _layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(h)
    h = _layers.BatchNormalization(name="bn2")(h)
    h = _layers.Conv2D(6, 1, activation="relu", name="pointwise")(h)
    h = _layers.MaxPooling2D(name="pool")(h)
    h = _layers.Conv2D(5, 3, activation="tanh", name="conv3")(h)
    h = _layers.Flatten(name="flatten")(h)
    h = _layers.Dropout(0.5, name="dropout")(h)
    h = _layers.Dense(12, activation="relu", name="fc1")(h)
    outputs = _layers.Dense(3, name="fc2")(h)
    return randomize_weights(keras.Model(inputs, outputs, name="mobile_like"))


ZEROS = {"conv1": [1, 4], "pointwise": [0, 5], "conv3": [2], "fc1": [3, 7, 8]}


def _inputs(shape, seed=1):
    return np.random.default_rng(seed).normal(size=(4, *shape)).astype(np.float32)


def _assert_same_outputs(small, model, shape):
    x = _inputs(shape)
    np.testing.assert_allclose(small(x).numpy(), model(x).numpy(), rtol=0, atol=1e-5)


def test_shrunk_model_has_fewer_channels_everywhere_and_the_same_outputs():
    model = zero_filters(_mobile_like(), ZEROS)
    small = shrink(model)
    _assert_same_outputs(small, model, (10, 10, 3))
    shapes = {layer.name: [tuple(w.shape) for w in layer.weights] for layer in small.layers}
    assert shapes["conv1"] == [(3, 3, 3, 6), (6,)]
    assert shapes["bn1"] == [(6,)] * 4
    assert shapes["depthwise"] == [(3, 3, 6, 2), (12,)]  # Multiplier 2: 12 outputs of 16.
    assert shapes["bn2"] == [(12,)] * 4
    assert shapes["pointwise"] == [(1, 1, 12, 4), (4,)]
    assert shapes["conv3"] == [(3, 3, 4, 4), (4,)]
    assert shapes["fc1"] == [(2 * 2 * 4, 9), (9,)]  # Flatten of 2x2x4.
    assert shapes["fc2"] == [(9, 3), (3,)]
    assert small.count_params() < model.count_params()
    assert [layer.name for layer in small.layers] == [layer.name for layer in model.layers]


def test_plan_names_what_is_removed_and_the_path_to_the_consumer():
    plans = {p.layer: p for p in shrink_plan(zero_filters(_mobile_like(), ZEROS))}
    assert plans["conv1"].removed == (1, 4)
    assert plans["conv1"].chain == ("bn1", "relu1", "depthwise", "bn2")
    assert plans["conv1"].consumer == "pointwise"
    assert plans["conv3"].chain == ("flatten", "dropout") and plans["conv3"].consumer == "fc1"
    assert plans["fc1"].removed == (3, 7, 8) and plans["fc1"].consumer == "fc2"


def test_sequential_stays_sequential_with_global_pooling_before_dense():
    model = keras.Sequential(
        [
            keras.Input((9, 9, 2)),
            _layers.Conv2D(6, 3, activation="relu", name="conv1"),
            _layers.Conv2D(7, 3, name="conv2"),
            _layers.GlobalAveragePooling2D(name="gap"),
            _layers.Dense(4, name="head"),
        ],
        name="seq",
    )
    model = zero_filters(randomize_weights(model), {"conv1": [0, 2, 3], "conv2": [6]})
    small = shrink(model)
    assert isinstance(small, keras.Sequential)
    assert small.get_layer("conv1").kernel.shape == (3, 3, 2, 3)
    assert small.get_layer("conv2").kernel.shape == (3, 3, 3, 6)
    assert small.get_layer("head").kernel.shape == (6, 4)
    _assert_same_outputs(small, model, (9, 9, 2))


def test_fixed_output_meeting_zero_padding_keeps_the_channel_and_says_why():
    inputs = keras.Input((6, 6, 1))
    h = _layers.Conv2D(4, 3, name="conv1")(inputs)  # Bias: a zero filter outputs its bias.
    h = _layers.Conv2D(3, 3, padding="same", name="conv2")(h)
    h = _layers.Conv2D(2, 3, padding="same", use_bias=False, name="conv3")(h)
    outputs = _layers.Conv2D(2, 1, name="conv4")(h)
    model = zero_filters(
        randomize_weights(keras.Model(inputs, outputs)), {"conv1": [1], "conv3": [0]}
    )
    # conv3 has no bias, so its zero filter outputs exactly 0 and can go.
    plans = {p.layer: p for p in shrink_plan(model)}
    assert plans["conv1"].removed == ()
    assert "zero padding of 'conv2' (padding='same')" in plans["conv1"].kept_zero[1]
    assert plans["conv3"].removed == (0,)
    small = shrink(model)
    assert small.get_layer("conv1").kernel.shape[-1] == 4
    assert small.get_layer("conv4").kernel.shape == (1, 1, 1, 2)
    _assert_same_outputs(small, model, (6, 6, 1))


def test_zero_filters_of_an_output_layer_stay_and_one_filter_always_stays():
    inputs = keras.Input((5,))
    h = _layers.Dense(3, name="hidden")(inputs)
    outputs = _layers.Dense(2, name="out")(h)
    model = zero_filters(randomize_weights(keras.Model(inputs, outputs)), {"hidden": [0, 1, 2]})
    model = zero_filters(model, {"out": [1]})
    plans = {p.layer: p for p in shrink_plan(model)}
    assert plans["hidden"].removed == (0, 1)
    assert plans["hidden"].kept_zero == {2: "a layer keeps at least one filter"}
    assert plans["out"].removed == () and plans["out"].consumer is None
    small = shrink(model)
    assert small.get_layer("hidden").kernel.shape == (5, 1)
    _assert_same_outputs(small, model, (5,))


def _residual():
    inputs = keras.Input((6, 6, 4))
    h = _layers.Conv2D(4, 1, name="expand")(inputs)
    h = _layers.Add(name="add")([h, inputs])
    return keras.Model(inputs, _layers.Conv2D(2, 1, name="head")(h))


def _concatenated(axis=-1):
    inputs = keras.Input((6, 6, 4))
    a = _layers.Conv2D(3, 1, name="left")(inputs)
    b = _layers.Conv2D(3, 1, name="right")(inputs)
    h = _layers.Concatenate(axis=axis, name="concat")([a, b])
    return keras.Model(inputs, _layers.Conv2D(2, 1, name="head")(h))


def _residual_reshaped():
    inputs = keras.Input((6, 6, 4))
    a = _layers.Conv2D(4, 1, name="expand")(inputs)
    b = _layers.Conv2D(4, 1, name="other")(inputs)
    h = _layers.Add(name="add")([a, b])
    h = _layers.Reshape((36, 4), name="reshape")(h)
    return keras.Model(inputs, _layers.Conv1D(2, 1, name="head")(h))


def _branching():
    inputs = keras.Input((4,))
    h = _layers.Dense(3, name="trunk")(inputs)
    return keras.Model(inputs, [_layers.Dense(2, name="a")(h), _layers.Dense(2, name="b")(h)])


@pytest.mark.parametrize(
    "make, zero, message",
    [
        (
            lambda: _concatenated(axis=1),
            {"left": [0]},
            r"Layer 'concat' \(Concatenate\) after filter-pruned 'left' \(Conv2D\): Expected a "
            r"concatenation along the channel axis of distinct inputs; received: axis=1",
        ),
        (
            _residual_reshaped,
            {"expand": [1], "other": [1]},
            r"Layer 'reshape' \(Reshape\) reads them and is a Reshape: Expected per-channel "
            r"layers, joins .* tied to filter-pruned \['expand', 'other'\]",
        ),
    ],
)
def test_structures_not_grouped_yet_are_refused_naming_the_layer(make, zero, message):
    model = zero_filters(randomize_weights(make()), zero)
    with pytest.raises(ShrinkError, match=message):
        shrink(model)


def test_model_without_zero_filters_is_copied_unchanged():
    model = _mobile_like()
    small = shrink(model)
    assert small is not model and small.count_params() == model.count_params()
    _assert_same_outputs(small, model, (10, 10, 3))


def test_filter_pruned_admm_model_shrinks_to_its_masked_outputs():
    inputs = keras.Input((8, 8, 1))
    h = _layers.Conv2D(8, 3, name="conv")(inputs)
    h = _layers.BatchNormalization(name="bn")(h)
    h = _layers.ReLU(name="relu")(h)
    h = _layers.Conv2D(8, 3, name="conv2", activation="relu")(h)
    h = _layers.Conv2D(4, 3, padding="same", name="conv3", activation="relu")(h)
    h = _layers.Flatten(name="flatten")(h)
    h = _layers.Dense(16, activation="relu", name="fc1")(h)
    model = keras.Model(inputs, _layers.Dense(3, name="fc2")(h), name="cnn")
    spec = tf_admm.Spec(
        rules=[
            tf_admm.Rule(pattern="conv.*", structure="filter", keep=3),
            tf_admm.Rule(name="fc1", structure="filter", sparsity=0.5),
        ],
        admm_rounds=2,
        update_every=2,
        update_unit="step",
    )
    admm = compile_for_classification(tf_admm.admm_wrap(model, spec))
    x, y = small_data(48)
    admm.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.RETRAIN
    masked = tf_admm.strip(admm)
    small = tf_admm.shrink(admm)
    assert small.get_layer("conv").kernel.shape == (3, 3, 1, 3)
    assert small.get_layer("bn").gamma.shape == (3,)
    assert small.get_layer("conv2").kernel.shape == (3, 3, 3, 3)
    # conv2's removed filters lost their bias too: relu(0) = 0 meets conv3's zero padding.
    assert small.get_layer("conv3").kernel.shape == (3, 3, 3, 3)
    assert small.get_layer("fc1").kernel.shape == (4 * 4 * 3, 8)
    assert small.get_layer("fc2").kernel.shape == (8, 3)
    np.testing.assert_allclose(small(x).numpy(), masked(x).numpy(), rtol=0, atol=1e-5)


def test_concatenation_drops_each_inputs_channels_at_its_offset():
    inputs = keras.Input((7, 7, 2))
    left = _layers.Conv2D(3, 3, activation="relu", name="left")(inputs)
    right = _layers.Conv2D(4, 3, name="right")(inputs)
    right = _layers.BatchNormalization(name="right_bn")(right)
    h = _layers.Concatenate(name="concat")([left, right])
    h = _layers.BatchNormalization(name="bn")(h)
    h = _layers.DepthwiseConv2D(3, name="depthwise")(h)
    h = _layers.Flatten(name="flatten")(h)
    outputs = _layers.Dense(3, name="head")(h)
    model = randomize_weights(keras.Model(inputs, outputs))
    model = zero_filters(model, {"left": [1], "right": [0, 3]})
    small = shrink(model)
    assert small.get_layer("left").kernel.shape[-1] == 2
    assert small.get_layer("right").kernel.shape[-1] == 2
    assert small.get_layer("right_bn").gamma.shape == (2,)
    assert small.get_layer("bn").gamma.shape == (4,)  # 7 channels less left's 1 and right's 2.
    assert small.get_layer("depthwise").depthwise_kernel.shape == (3, 3, 4, 1)
    assert small.get_layer("head").kernel.shape == (3 * 3 * 4, 3)
    _assert_same_outputs(small, model, (7, 7, 2))


def test_one_zero_filter_carries_the_others_into_a_zero_padded_convolution():
    inputs = keras.Input((6, 6, 2))
    h = _layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    h = _layers.BatchNormalization(name="bn")(h)
    h = _layers.ReLU(name="relu")(h)
    outputs = _layers.Conv2D(3, 3, padding="same", name="conv2")(h)
    model = zero_filters(
        randomize_weights(keras.Model(inputs, outputs)), {"conv1": [0, 2, 5, 6, 7]}
    )
    bn = model.get_layer("bn")
    gamma, beta, mean, variance = bn.get_weights()
    beta[[0, 2, 5, 6, 7]] = [0.4, -3.0, 0.7, 1.1, 0.9]  # Channel 2: relu of a negative shift.
    mean[[0, 2, 5, 6, 7]] = 0.0
    bn.set_weights([gamma, beta, mean, variance])
    (plan,) = shrink_plan(model)
    assert plan.carrier == 0 and plan.carried == (5, 6, 7)
    assert plan.removed == (2, 5, 6, 7)
    assert (
        "carries the fixed outputs of removed filters [5, 6, 7] into 'conv2'" in (plan.kept_zero[0])
    )
    small = shrink(model)
    assert small.get_layer("conv1").kernel.shape == (3, 3, 2, 4)
    assert small.get_layer("conv2").kernel.shape == (3, 3, 4, 3)
    _assert_same_outputs(small, model, (6, 6, 2))


def test_residual_partner_that_is_a_model_input_keeps_the_channel_and_says_why():
    model = zero_filters(randomize_weights(_residual()), {"expand": [1]})
    (plan,) = shrink_plan(model)
    assert plan.removed == () and plan.group == ("expand",) and plan.joins == ("add",)
    assert "is a model input" in plan.kept_zero[1]
    _assert_same_outputs(shrink(model), model, (6, 6, 4))


def test_layer_feeding_several_layers_loses_its_zero_filters_in_each_of_them():
    model = zero_filters(randomize_weights(_branching()), {"trunk": [0, 2]})
    (plan,) = shrink_plan(model)
    assert plan.removed == (0, 2) and plan.consumers == ("a", "b")
    small = shrink(model)
    assert small.get_layer("a").kernel.shape == (1, 2)
    assert small.get_layer("b").kernel.shape == (1, 2)
    x = _inputs((4,))
    for got, want in zip(small(x), model(x)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)


def _mask_filters(model, filters):
    """Zero filters and the gamma and beta of the BatchNormalization after them, as filter
    pruning leaves them (tf_admm.grouping masks those BatchNorms)."""
    for name, zero in filters.items():
        zero_filters(model, {name: zero})
        norm = model.get_layer(f"bn_{name}")
        weights = norm.get_weights()
        weights[0][zero] = 0.0
        weights[1][zero] = 0.0
        norm.set_weights(weights)
    return model


def test_mobilenet_v2_residual_groups_lose_their_shared_channels_with_the_same_outputs():
    model = randomize_weights(mobilenet_v2_like())
    tied_a = {name: [1, 5] for name in ("stem", "project1", "project2")}
    tied_b = {name: [0, 3, 11] for name in ("project3", "project4")}
    # project1's filter 2 is zero alone: its partners keep theirs, so channel 2 stays.
    plain = {"project1": [1, 2, 5], "expand2": [4, 7], "expand4": [0], "head": [2, 3]}
    _mask_filters(model, {**tied_a, **tied_b, **plain})
    plans = {p.layer: p for p in shrink_plan(model)}
    assert plans["stem"].group == ("stem", "project1", "project2")
    assert plans["stem"].joins == ("add1", "add2")
    assert set(plans["stem"].consumers) == {"project1", "expand2", "expand3"}
    for name in tied_a:
        assert plans[name].removed == (1, 5)
    assert "filter 2 of tied ['stem', 'project2'] is not zero" in plans["project1"].kept_zero[2]
    for name in tied_b:
        assert plans[name].removed == (0, 3, 11) and plans[name].joins == ("add4",)
    assert plans["expand2"].removed == (4, 7) and plans["expand2"].group == ()
    small = shrink(model)
    shapes = {layer.name: layer.kernel.shape for layer in small.layers if hasattr(layer, "kernel")}
    assert shapes["stem"] == (3, 3, 1, 6)
    assert small.get_layer("depthwise1").depthwise_kernel.shape == (3, 3, 6, 1)
    assert shapes["project1"] == (1, 1, 6, 6) and shapes["expand2"] == (1, 1, 6, 14)
    assert shapes["project2"] == (1, 1, 14, 6) and shapes["expand3"] == (1, 1, 6, 16)
    assert shapes["project3"] == (1, 1, 16, 9) and shapes["expand4"] == (1, 1, 9, 23)
    assert shapes["head"] == (1, 1, 9, 14) and shapes["classifier"] == (14, 3)
    assert small.get_layer("bn_project2").gamma.shape == (6,)
    assert small.count_params() < model.count_params()
    _assert_same_outputs(small, model, (8, 8, 1))


def test_tied_filter_pruned_mobilenet_v2_shrinks_to_its_masked_outputs():
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(layer_type="Conv2D", structure="filter", sparsity=0.5)],
        update_every=2,
        admm_rounds=2,
        update_unit="step",
    )
    admm = compile_for_classification(tf_admm.admm_wrap(mobilenet_v2_like(), spec))
    x, y = small_data(32)
    admm.fit(x, y, batch_size=8, epochs=2, callbacks=tf_admm.callbacks(), verbose=0)
    assert admm.phase == tf_admm.Phase.RETRAIN
    plain = tf_admm.strip(admm)
    small = shrink(plain)
    shapes = {layer.name: layer.kernel.shape for layer in small.layers if hasattr(layer, "kernel")}
    # Tied layers lost the same half of their filters, the plain chains theirs.
    assert shapes["stem"][-1] == shapes["project1"][-1] == shapes["project2"][-1] == 4
    assert shapes["project3"][-1] == shapes["project4"][-1] == 6
    assert shapes["expand2"][-1] == 8 and shapes["head"][-1] == 8
    _assert_same_outputs(small, plain, (8, 8, 1))


@pytest.mark.parametrize("join", [_layers.Multiply, _layers.Subtract, _layers.Average])
def test_fixed_values_meeting_at_a_join_fold_into_every_consumer(join):
    inputs = keras.Input((4,))
    a = _layers.Dense(5, activation="relu", name="a")(inputs)
    b = _layers.Dense(5, name="b")(inputs)
    h = join(name="join")([a, b])
    outputs = [_layers.Dense(3, name="c")(h), _layers.Dense(2, name="d")(h)]
    model = zero_filters(randomize_weights(keras.Model(inputs, outputs)), {"a": [2, 4], "b": [2]})
    plans = {p.layer: p for p in shrink_plan(model)}
    assert plans["a"].removed == plans["b"].removed == (2,)
    assert "filter 4 of tied ['b'] is not zero" in plans["a"].kept_zero[4]
    small = shrink(model)
    assert small.get_layer("c").kernel.shape == (4, 3)
    x = _inputs((4,))
    for got, want in zip(small(x), model(x)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-5)


def test_residual_written_as_an_operator_is_grouped_like_an_add_layer():
    inputs = keras.Input((5, 5, 3))
    stem = _layers.Conv2D(6, 1, use_bias=False, name="stem")(inputs)
    branch = _layers.Conv2D(6, 3, padding="same", activation="relu", name="branch")(stem)
    h = stem + branch  # A TFOpLambda, not an Add layer.
    h = h * _layers.Conv2D(6, 1, name="gate")(inputs)
    model = keras.Model(inputs, _layers.Conv2D(2, 1, name="head")(h))
    model = zero_filters(randomize_weights(model), {"stem": [0, 4], "branch": [0, 4], "gate": [4]})
    plans = {p.layer: p for p in shrink_plan(model)}
    assert plans["stem"].group == ("stem", "branch", "gate") and plans["stem"].removed == (4,)
    assert len(plans["stem"].joins) == 2
    small = shrink(model)
    assert small.get_layer("head").kernel.shape == (1, 1, 5, 2)
    _assert_same_outputs(small, model, (5, 5, 3))
