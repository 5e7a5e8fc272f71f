"""Structured ADMM pruning end to end: spec, plan, Z-step, hard projection, retraining, saving.

Every case trains the small Conv2D -> DepthwiseConv2D -> Dense -> Dense model of
``tf_admm.testing`` for a few steps: two ADMM rounds of two steps, the hard projection, then
masked retraining. Groups are counted on the stripped weights with the projections' own group
definitions (their property tests check those against index arithmetic).
"""

import numpy as np
import pytest

import tf_admm
from tf_admm import projections
from tf_admm.planning import Target
from tf_admm.testing import (
    compile_for_classification,
    small_convnet,
    small_data,
    text_classifier,
)

# Kernel shapes: conv 3x3x1x6 (GEMM 6x9), depthwise 3x3x6x1 (GEMM 6x9), fc1 96x24 (GEMM
# 24x96), fc2 24x3 (GEMM 3x24).
LAYOUTS = {"conv": "dense", "depthwise": "depthwise", "fc1": "dense", "fc2": "dense"}

# (id, rules, {layer: (structure, block, groups kept)}).
CASES = [
    (
        "filter",
        [
            {"name": "conv", "structure": "filter", "keep": 3},
            {"name": "fc1", "structure": "filter", "sparsity": 0.5},
        ],
        {"conv": ("filter", None, 3), "fc1": ("filter", None, 12)},
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
            {"name": "fc1", "structure": "column", "ratio": 4, "bits": 4},
        ],
        {"conv": ("column", None, 4), "fc1": ("column", None, 24)},
    ),
    (
        "block",
        [
            {"name": "conv", "structure": "block", "block": [2, 3], "keep": 2},
            {"name": "fc1", "structure": "block", "block": [1, 4], "sparsity": 0.75},
        ],
        {"conv": ("block", (2, 3), 2), "fc1": ("block", (1, 4), 144)},
    ),
]
N_OF_M = [
    {"name": "fc1", "structure": "n_of_m", "n": 2, "m": 4},
    {"name": "fc2", "structure": "n_of_m", "n": 1, "m": 2, "bits": 3},
]


def _spec(rules, **fields):
    return tf_admm.Spec.from_dict(
        {"rules": rules, "admm_rounds": 2, "update_every": 2, "update_unit": "step", **fields}
    )


def _fit(model, epochs=1, initial_epoch=0):
    x, y = small_data(32)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        verbose=0,
        callbacks=tf_admm.callbacks(),
    )


def _trained(spec, epochs=1):
    admm = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    _fit(admm, epochs)  # 4 steps: two ADMM rounds, then the hard projection.
    return admm


def _biases(model):
    return {la.name: la.get_weights()[1] for la in tf_admm.strip(model).layers if la.weights}


def _kernels(model):
    return {la.name: la.get_weights()[0] for la in tf_admm.strip(model).layers if la.weights}


def _masks(admm):
    return {w.layer.name: w.slots[0].mask.numpy() for w in tf_admm.wrappers(admm)}


def _nonzero_groups(kernel, structure, layout, block):
    norms = projections.group_norms(kernel, structure, layout, block).numpy()
    return int(np.count_nonzero(norms))


@pytest.mark.parametrize("rules, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hard_projection_keeps_exactly_the_specified_groups_and_retraining_keeps_the_rest_zero(
    rules, expected
):
    admm = _trained(_spec(rules))
    assert admm.phase is not tf_admm.Phase.ADMM  # Projected; the 4-bit case quantizes next.
    masks = _masks(admm)
    for layer, (structure, block, kept) in expected.items():
        layout = LAYOUTS[layer]
        kernel = _kernels(admm)[layer]
        assert _nonzero_groups(kernel, structure, layout, block) == kept, layer
        assert _nonzero_groups(masks[layer], structure, layout, block) == kept, layer
        size = projections.group_size(kernel.shape, structure, layout, block)
        assert masks[layer].sum() == kept * size
    _fit(admm, epochs=3, initial_epoch=1)
    after, biases = _kernels(admm), _biases(admm)
    for layer, (structure, block, kept) in expected.items():
        np.testing.assert_array_equal(_masks(admm)[layer], masks[layer])
        assert np.all(after[layer][masks[layer] == 0] == 0), layer
        assert _nonzero_groups(after[layer], structure, LAYOUTS[layer], block) == kept, layer
        # A removed filter takes its bias along; other structures leave biases alone.
        filters = projections.group_norms(masks[layer], "filter", LAYOUTS[layer]).numpy() > 0
        if structure == "filter":
            assert np.all(biases[layer][~filters] == 0) and np.all(biases[layer][filters] != 0)
        else:
            assert np.all(biases[layer] != 0), layer


def test_n_of_m_hard_projection_keeps_n_of_every_m_inputs_through_retraining():
    admm = _trained(_spec(N_OF_M, quant_admm_rounds=1, quant_fractions=[1.0]))
    _fit(admm, epochs=3, initial_epoch=1)
    kernels, masks = _kernels(admm), _masks(admm)
    for layer, n, m in [("fc1", 2, 4), ("fc2", 1, 2)]:
        runs = masks[layer].reshape(-1, m, masks[layer].shape[-1])
        assert np.all(runs.sum(axis=1) == n), layer
        nonzero = (kernels[layer] != 0).reshape(runs.shape)
        assert np.all(nonzero.sum(axis=1) <= n) and np.all(nonzero <= runs), layer
        assert np.count_nonzero(kernels[layer]) == kernels[layer].size * n // m
    assert admm.phase is tf_admm.Phase.QUANT_RETRAIN  # fc2's 3 bits: quantized, then locked.
    assert len(np.unique(kernels["fc2"][kernels["fc2"] != 0])) <= 2**3


def test_z_step_is_the_structured_projection_of_w_plus_u():
    spec = _spec([{"name": "fc1", "structure": "block", "block": [4, 2], "keep": 30}])
    admm = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    x, y = small_data(16)
    admm.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=tf_admm.callbacks())
    (wrapper,) = tf_admm.wrappers(admm)
    slot = wrapper.slots[0]
    assert admm.phase is tf_admm.Phase.ADMM and int(admm.admm_round.numpy()) == 1
    # Before the update U was 0, so U = W - Z and Z = P(W) with W the weight at the update.
    weight = slot.variable.numpy()
    z = slot.auxiliary.numpy()
    np.testing.assert_allclose(
        z, projections.project_blocks(weight, 30, (4, 2)).numpy(), rtol=0, atol=0
    )
    np.testing.assert_allclose(slot.dual.numpy(), weight - z, atol=1e-7)
    assert _nonzero_groups(z, "block", "dense", (4, 2)) == 30


def test_save_and_load_mid_admm_keep_the_structure_and_continue_alike(tmp_path):
    rules = [CASES[3][1][0], {"name": "fc1", "structure": "column", "keep": 20}, N_OF_M[1]]
    spec = _spec(rules)
    admm = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    x, y = small_data(16)
    admm.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.ADMM
    path = str(tmp_path / "mid_admm.keras")
    admm.save(path)
    loaded = tf_admm.load_model(path)
    assert loaded.spec == spec
    assert loaded.spec.rules[0].block == (2, 3) and loaded.spec.rules[2].n == 1
    targets = {w.layer.name: w.targets for w in tf_admm.wrappers(loaded)}
    assert targets == {w.layer.name: w.targets for w in tf_admm.wrappers(admm)}
    assert targets["conv"][0].block == (2, 3) and targets["conv"][0].layout == "dense"
    assert targets["fc1"][0].structure == "column"
    for model in (admm, loaded):
        _fit(model, epochs=2, initial_epoch=1)
    for layer, kernel in _kernels(loaded).items():
        np.testing.assert_allclose(kernel, _kernels(admm)[layer], atol=1e-5)
    kernels = _kernels(loaded)
    assert _nonzero_groups(kernels["conv"], "block", "dense", (2, 3)) == 2
    assert _nonzero_groups(kernels["fc1"], "column", "dense", None) == 20


def test_plan_shows_structure_and_group_counts():
    spec = _spec(CASES[3][1] + [N_OF_M[1]])
    text = str(tf_admm.plan(small_convnet(), spec))
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert "structure" in text.splitlines()[1]
    assert "block 2x3 2/9" in lines["conv"] and "12/54" in lines["conv"]
    assert "block 1x4 144/576" in lines["fc1"] and "576/2,304" in lines["fc1"]
    assert "1:2" in lines["fc2"] and "36/72" in lines["fc2"] and "50.00%" in lines["fc2"]
    assert "depthwise" in lines and "not compressed" in lines["depthwise"]
    plain = str(tf_admm.plan(small_convnet(), _spec([{"name": "fc1", "sparsity": 0.5}])))
    assert "structure" not in plain


def test_target_config_round_trip_keeps_the_structure():
    target = Target("kernel", 0.5, 1e-3, structure="block", layout="dense", block=(1, 4))
    config = target.get_config()
    assert config["block"] == [1, 4]
    assert Target(**config) == target
    assert Target(**config).kept((8, 16)) == 64


def test_storage_report_counts_the_nonzeros_of_a_structured_layer():
    plain = tf_admm.strip(_trained(_spec(CASES[0][1])))
    rows = {row.layer: row for row in tf_admm.report.compression_table(plain)}
    assert rows["conv"].nonzeros == 3 * 9  # 3 filters of 3 * 3 * 1.
    assert rows["fc1"].nonzeros == 12 * 96
    layers = {layer.name: layer for layer in tf_admm.report.storage_report(plain).layers}
    assert layers["conv"].num_nonzeros == 27 and layers["fc1"].num_nonzeros == 12 * 96


@pytest.mark.parametrize(
    "rule, model, message",
    [
        (
            {"name": "embedding", "structure": "filter", "sparsity": 0.5},
            "text",
            r"Spec rules\[0\] \(name='embedding'\), layer 'embedding' \(Embedding\), weight "
            r"'embeddings': Expected a weight with filters, input channels and a GEMM view "
            r".*; received: structure='filter'",
        ),
        (
            {"name": "conv", "structure": "block", "block": [4, 1], "sparsity": 0.5},
            "convnet",
            r"layer 'conv' \(Conv2D\), weight 'kernel': Expected a block shape dividing the "
            r"GEMM view 6x9 .*; received: block=4x1",
        ),
        (
            {"name": "fc1", "structure": "n_of_m", "n": 2, "m": 5},
            "convnet",
            r"layer 'fc1' \(Dense\).*Expected m dividing the input dimension \(96\).*m=5",
        ),
        (
            {"name": "depthwise", "structure": "n_of_m", "n": 1, "m": 2},
            "convnet",
            r"layer 'depthwise' \(DepthwiseConv2D\).*dense-layout kernel for n_of_m",
        ),
        (
            {"name": "conv", "structure": "filter", "keep": 7},
            "convnet",
            r"layer 'conv', weight 'kernel': Expected keep <= the weight's 6 filter groups; "
            r"received: keep=7",
        ),
        (
            {"name": "fc2", "structure": "filter", "keep": 1, "clusters": 32},
            "convnet",
            r"layer 'fc2', weight 'kernel': Expected at most as many quantization levels as "
            r"kept weights \(24\); received: clusters=32 \(32 levels\)",
        ),
    ],
)
def test_structure_the_layer_cannot_have_is_refused_naming_rule_and_layer(rule, model, message):
    net = text_classifier() if model == "text" else small_convnet()
    with pytest.raises(ValueError, match=message):
        tf_admm.plan(net, {"rules": [rule]})


def test_progressive_stages_count_groups_towards_the_final_filters():
    spec = _spec(
        [{"name": "conv", "structure": "filter", "keep": 2}],
        admm_rounds=1,
        retrain_rounds=1,
        prune_stages=[0.5, 1.0],
    )
    admm = compile_for_classification(tf_admm.admm_wrap(small_convnet(), spec))
    _fit(admm)  # Round 1: stage 1 projects to 4 filters (half of 6 / 2 = 3x); round 2: stage 2.
    (slot,) = tf_admm.wrappers(admm)[0].slots
    assert admm.phase is tf_admm.Phase.ADMM
    assert _nonzero_groups(slot.variable.numpy(), "filter", "dense", None) == 4
    assert slot.mask.numpy().min() == 1.0  # Stage 2 reopens the mask.
    _fit(admm, epochs=2, initial_epoch=1)
    assert _nonzero_groups(_kernels(admm)["conv"], "filter", "dense", None) == 2
