"""Structured ADMM pruning on the Keras 3 adapter, on the backend this process runs.

Filters, input channels, GEMM columns, blocks and n-of-m runs, as ``tf_admm/structured_test.py``
checks them on tf_keras: exact group counts after the hard projection and after strip, removed
filters taking their bias along, retraining that revives nothing, the Z-step equal to the
projection of W + U, save/load mid-ADMM. pytest runs this file on Keras 3's default backend
(TensorFlow); ``backends_test.py`` runs it again on JAX. Groups are counted with the
projections' own definitions (``tf_admm.projections.group_norms``).
"""

import keras
import numpy as np
import pytest

import tf_admm
from tf_admm import projections
from tf_admm.keras3 import wrappers
from tf_admm.testing import small_convnet

Phase = tf_admm.Phase


pytestmark = pytest.mark.usefixtures("keras3_session")


def _convnet() -> keras.Model:
    return small_convnet("net", units=16, keras_module=keras)


def _other_layers() -> keras.Model:
    """Conv3D, DepthwiseConv1D (multiplier 2) and SeparableConv1D, the other layouts."""
    inputs = keras.Input((4, 4, 4, 2), name="volume")
    h = keras.layers.Conv3D(6, 2, activation="relu", name="conv3d")(inputs)  # 3x3x3x6
    h = keras.layers.Reshape((27, 6))(h)
    h = keras.layers.DepthwiseConv1D(3, depth_multiplier=2, name="depthwise1d")(h)  # 25x12
    h = keras.layers.SeparableConv1D(8, 3, name="separable")(h)  # 23x8
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(h), name="others")


def _data(model: keras.Model, count: int = 32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count, *model.inputs[0].shape[1:])).astype("float32")
    return x, rng.integers(0, 3, size=count)


def _spec(rules, **fields) -> tf_admm.Spec:
    return tf_admm.Spec.from_dict(
        {"rules": rules, "admm_rounds": 2, "update_every": 2, "update_unit": "step", **fields}
    )


def _wrap(spec, model=None) -> keras.Model:
    admm = tf_admm.admm_wrap(model if model is not None else _convnet(), spec)
    admm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return admm


def _fit(admm, epochs=1, initial_epoch=0):
    """Epochs of 4 steps of 8 samples, in order."""
    x, y = _data(admm)
    admm.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=tf_admm.callbacks(),
    )


def _host(value) -> np.ndarray:
    return keras.ops.convert_to_numpy(value)


def _stripped(admm) -> dict[str, list[np.ndarray]]:
    """{layer name: weights} of the stripped model's layers with weights."""
    plain = tf_admm.strip(admm)
    return {la.name: la.get_weights() for la in plain.layers if la.weights}


def _masks(admm) -> dict[str, np.ndarray]:
    return {w.layer.name: _host(w.slots[0].mask) for w in wrappers(admm)}


def _groups(kernel, structure, layout="dense", block=None) -> int:
    """Groups of ``structure`` with a nonzero weight."""
    return int(np.count_nonzero(projections.group_norms(kernel, structure, layout, block).numpy()))


def _filters(kernel, layout="dense") -> np.ndarray:
    """True for each filter (output channel) with a nonzero weight."""
    return projections.group_norms(kernel, "filter", layout).numpy() > 0


# Kernel shapes: conv 3x3x1x6 (GEMM 6x9), depthwise 3x3x6x1 (GEMM 6x9), fc1 96x16 (GEMM
# 16x96), fc2 16x3 (GEMM 3x16).
LAYOUTS = {"conv": "dense", "depthwise": "depthwise", "fc1": "dense", "fc2": "dense"}

# (id, rules, {layer: (structure, block, groups kept)}).
CASES = [
    (
        "filter",
        [
            {"name": "conv", "structure": "filter", "keep": 4},
            {"name": "depthwise", "structure": "filter", "keep": 3},
            {"name": "fc1", "structure": "filter", "sparsity": 0.5},
        ],
        {"conv": ("filter", None, 4), "depthwise": ("filter", None, 3), "fc1": ("filter", None, 8)},
    ),
    (
        "channel",
        [
            {"name": "depthwise", "structure": "channel", "keep": 2},
            {"name": "fc1", "structure": "channel", "ratio": 3},
        ],
        {"depthwise": ("channel", None, 2), "fc1": ("channel", None, 32)},
    ),
    (
        "column",
        [
            {"name": "conv", "structure": "column", "keep": 4},
            {"name": "fc1", "structure": "column", "ratio": 4},
        ],
        {"conv": ("column", None, 4), "fc1": ("column", None, 24)},
    ),
    (
        "block",
        [
            {"name": "conv", "structure": "block", "block": [2, 3], "keep": 2},
            {"name": "fc1", "structure": "block", "block": [1, 4], "sparsity": 0.75},
        ],
        {"conv": ("block", (2, 3), 2), "fc1": ("block", (1, 4), 96)},
    ),
]


@pytest.mark.parametrize("rules, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hard_projection_keeps_exactly_the_specified_groups_and_retraining_keeps_the_rest_zero(
    rules, expected
):
    admm = _wrap(_spec(rules))
    _fit(admm)  # 4 steps: two ADMM rounds of two, then the hard projection.
    assert admm.phase is Phase.RETRAIN
    masks, stripped = _masks(admm), _stripped(admm)
    for layer, (structure, block, kept) in expected.items():
        layout = LAYOUTS[layer]
        kernel = stripped[layer][0]
        assert _groups(kernel, structure, layout, block) == kept, layer
        assert _groups(masks[layer], structure, layout, block) == kept, layer
        size = projections.group_size(kernel.shape, structure, layout, block)
        assert masks[layer].sum() == kept * size, layer
    x, _ = _data(admm, 8)
    plain = tf_admm.strip(admm)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), admm.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    _fit(admm, epochs=3, initial_epoch=1)
    after = _stripped(admm)
    for layer, (structure, block, kept) in expected.items():
        kernel, bias = after[layer]
        np.testing.assert_array_equal(_masks(admm)[layer], masks[layer], err_msg=layer)
        assert np.all(kernel[masks[layer] == 0] == 0), f"{layer}: a pruned weight revived"
        assert _groups(kernel, structure, LAYOUTS[layer], block) == kept, layer
        # A removed filter takes its bias along; kept filters and other structures keep the
        # bias the layer trained.
        trained = _host(admm.get_layer(f"admm_{layer}").layer.bias)
        if structure == "filter":
            filters = _filters(masks[layer], LAYOUTS[layer])
            trained = np.where(filters, trained, 0.0)
        np.testing.assert_array_equal(bias, trained, err_msg=layer)


def test_conv2d_filter_keep_4_strips_to_exactly_4_output_channels_and_their_biases():
    admm = _wrap(_spec([{"name": "conv", "structure": "filter", "keep": 4}]))
    _fit(admm)
    kernel, bias = _stripped(admm)["conv"]
    kept = np.flatnonzero(np.any(kernel != 0, axis=(0, 1, 2)))
    assert len(kept) == 4
    assert np.all(bias[kept] != 0)
    np.testing.assert_array_equal(np.delete(bias, kept), 0.0)
    # The wrapped layer computes with that bias: a removed channel is exactly 0 after the
    # convolution (and its ReLU) on any input.
    x, _ = _data(admm, 8)
    conv = keras.Model(admm.inputs[0], admm.get_layer("admm_conv").output)
    outputs = _host(conv(x))
    np.testing.assert_array_equal(np.delete(outputs, kept, axis=-1), 0.0)
    assert np.all(np.any(outputs[..., kept] != 0, axis=(0, 1, 2)))


def test_n_of_m_hard_projection_keeps_n_of_every_m_inputs_through_retraining():
    rules = [
        {"name": "fc1", "structure": "n_of_m", "n": 2, "m": 4},
        {"name": "fc2", "structure": "n_of_m", "n": 1, "m": 2, "bits": 3},
    ]
    admm = _wrap(_spec(rules, quant_admm_rounds=1, quant_fractions=[1.0]))
    _fit(admm, epochs=4)  # Then quantization ADMM and locking for fc2.
    assert admm.phase is Phase.QUANT_RETRAIN
    stripped, masks = _stripped(admm), _masks(admm)
    for layer, n, m in [("fc1", 2, 4), ("fc2", 1, 2)]:
        kernel = stripped[layer][0]
        runs = masks[layer].reshape(-1, m, masks[layer].shape[-1])
        assert np.all(runs.sum(axis=1) == n), layer
        nonzero = (kernel != 0).reshape(runs.shape)
        assert np.all(nonzero.sum(axis=1) == n) and np.all(nonzero <= runs), layer
        assert np.count_nonzero(kernel) == kernel.size * n // m, layer
    fc2 = stripped["fc2"][0]
    assert len(np.unique(fc2[fc2 != 0])) <= 2**3


def test_z_step_is_the_structured_projection_of_w_plus_u():
    admm = _wrap(_spec([{"name": "fc1", "structure": "block", "block": [4, 2], "keep": 30}]))
    x, y = _data(admm, 16)
    admm.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=tf_admm.callbacks())
    (slot,) = wrappers(admm)[0].slots
    assert admm.phase is Phase.ADMM and int(_host(admm.admm_round)) == 1
    # Before the update U was 0, so U = W - Z and Z = P(W) with W the weight at the update.
    weight, z = _host(slot.variable), _host(slot.auxiliary)
    np.testing.assert_array_equal(z, projections.project_blocks(weight, 30, (4, 2)).numpy())
    np.testing.assert_allclose(_host(slot.dual), weight - z, atol=1e-7)
    assert _groups(z, "block", "dense", (4, 2)) == 30


def test_progressive_stages_count_groups_towards_the_final_filters():
    spec = _spec(
        [{"name": "conv", "structure": "filter", "keep": 2}],
        admm_rounds=1,
        retrain_rounds=1,
        prune_stages=[0.5, 1.0],
    )
    admm = _wrap(spec)
    _fit(admm)  # Round 1: stage 1 projects to 4 filters (half of 6 / 2 = 3x); round 2: stage 2.
    (slot,) = wrappers(admm)[0].slots
    assert admm.phase is Phase.ADMM
    assert _groups(_host(slot.variable), "filter") == 4
    assert _host(slot.mask).min() == 1.0  # Stage 2 reopens the mask.
    _fit(admm, epochs=2, initial_epoch=1)
    assert _groups(_stripped(admm)["conv"][0], "filter") == 2


def test_conv3d_depthwise_with_multiplier_and_separable_kernels_keep_exact_groups():
    model = _other_layers()
    rules = [
        {"name": "conv3d", "structure": "filter", "keep": 2},
        {"name": "depthwise1d", "structure": "filter", "keep": 5},
        {"name": "separable", "structure": "column", "keep": 4, "weights": ["pointwise_kernel"]},
    ]
    spec = _spec(rules)
    layouts = {
        row.layer: [w.target.layout for w in row.weights]
        for row in tf_admm.plan(model, spec).compressed
    }
    assert layouts == {"conv3d": ["dense"], "depthwise1d": ["depthwise"], "separable": ["dense"]}
    admm = _wrap(spec, model)
    _fit(admm)
    assert admm.phase is Phase.RETRAIN
    stripped = _stripped(admm)
    conv3d, conv3d_bias = stripped["conv3d"]
    filters = _filters(conv3d)
    assert filters.sum() == 2 and np.all(conv3d_bias[~filters] == 0)
    depthwise, depthwise_bias = stripped["depthwise1d"]
    filters = _filters(depthwise, "depthwise")  # Output c * 2 + m: 12 of them.
    trained = _host(admm.get_layer("admm_depthwise1d").layer.bias)
    assert filters.sum() == 5
    np.testing.assert_array_equal(depthwise_bias, np.where(filters, trained, 0.0))
    _, pointwise, separable_bias = stripped["separable"]
    assert _groups(pointwise, "column") == 4
    # The separable bias follows no rule's filters: the trained one.
    trained = _host(admm.get_layer("admm_separable").layer.bias)
    np.testing.assert_array_equal(separable_bias, trained)
    x, _ = _data(admm, 8)
    plain = tf_admm.strip(admm)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), admm.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_save_and_load_mid_admm_keep_the_structure_and_continue_alike(tmp_path):
    rules = [
        {"name": "conv", "structure": "filter", "keep": 3},
        {"name": "fc1", "structure": "column", "keep": 20},
        {"name": "fc2", "structure": "n_of_m", "n": 1, "m": 2},
    ]
    spec = _spec(rules)
    admm = _wrap(spec)
    x, y = _data(admm, 16)
    admm.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is Phase.ADMM
    path = str(tmp_path / "mid_admm.keras")
    admm.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.spec == spec
    targets = {w.layer.name: w.targets for w in wrappers(loaded)}
    assert targets == {w.layer.name: w.targets for w in wrappers(admm)}
    assert targets["conv"][0].structure == "filter" and targets["fc2"][0].n == 1
    for model in (admm, loaded):
        _fit(model, epochs=2, initial_epoch=1)
    stripped, restored = _stripped(admm), _stripped(loaded)
    for layer, weights in stripped.items():
        for before, after in zip(weights, restored[layer], strict=True):
            np.testing.assert_allclose(after, before, atol=1e-5, err_msg=layer)
    conv, conv_bias = restored["conv"]
    assert _groups(conv, "filter") == 3 and np.count_nonzero(conv_bias) == 3
    assert _groups(restored["fc1"][0], "column") == 20


@pytest.mark.parametrize(
    "rule, message",
    [
        (
            {"name": "fc1", "structure": "block", "block": [5, 4], "sparsity": 0.5},
            r"Spec rules\[0\] \(name='fc1'\), layer 'fc1' \(Dense\), weight 'kernel': Expected a "
            r"block shape dividing the GEMM view 16x96 \(outputs x fan_in\) of the kernel of "
            r"shape \(96, 16\); received: block=5x4",
        ),
        (
            {"name": "depthwise", "structure": "n_of_m", "n": 1, "m": 3},
            r"layer 'depthwise' \(DepthwiseConv2D\), weight 'kernel': Expected a dense-layout "
            r"kernel for n_of_m",
        ),
        (
            {"name": "conv", "structure": "filter", "keep": 7},
            r"layer 'conv', weight 'kernel': Expected keep <= the weight's 6 filter groups; "
            r"received: keep=7",
        ),
        (
            {"name": "up", "structure": "filter", "keep": 1, "weights": ["kernel"]},
            r"Spec rules\[0\] \(name='up'\), layer 'up' \(Conv2DTranspose\), weight 'kernel': "
            r"Expected a weight with filters, input channels and a GEMM view \(Dense, .*\); "
            r"received: structure='filter'",
        ),
    ],
    ids=["block_not_dividing", "n_of_m_depthwise", "keep_above_groups", "transposed_conv"],
)
def test_structure_the_weight_cannot_have_is_refused_naming_rule_and_layer(rule, message):
    inputs = keras.Input((8, 8, 1), name="image")
    up = keras.layers.Conv2DTranspose(2, 3, name="up")(inputs)
    model = keras.Model(inputs, [_convnet()(inputs), up])
    with pytest.raises(ValueError, match=message):
        tf_admm.plan(model, {"rules": [rule]})
