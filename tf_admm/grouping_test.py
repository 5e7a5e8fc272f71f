"""tf_admm.grouping: channel groups found in the graph, tied filters kept alike in training."""

import numpy as np
import pytest

import tf_admm
from tf_admm import grouping, keras
from tf_admm.testing import compile_for_classification, mobilenet_v2_like, small_data

_layers = keras.layers


def _filters_kept(kernel) -> tuple[int, ...]:
    kernel = np.asarray(kernel)
    return tuple(np.flatnonzero(np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)))


def test_mobilenet_v2_groups_name_members_joins_followers_and_consumers():
    groups = tf_admm.channel_groups(mobilenet_v2_like())
    assert [g.members for g in groups] == [
        ("stem", "project1", "project2"),
        ("project3", "project4"),
    ]
    first, second = groups
    assert first.joins == ("add1", "add2") and second.joins == ("add4",)
    assert set(first.consumers) == {"project1", "expand2", "expand3"}
    assert {"bn_stem", "depthwise1", "bn_project1", "bn_project2"} <= set(first.followers)
    assert first.branches == ("relu_stem", "add1")
    assert not first.fixed and not first.unsupported and first.tied
    assert str(second) == (
        "project3, project4 tied by add4; followers bn_project3, bn_project4; read by expand4, head"
    )


def test_partner_that_is_a_model_input_or_output_fixes_the_channels():
    inputs = keras.Input((4,))
    h = _layers.Dense(4, name="a")(inputs)
    outputs = _layers.Add(name="add")([h, inputs])
    (group,) = tf_admm.channel_groups(keras.Model(inputs, outputs))
    assert group.members == ("a",)
    assert set(group.fixed.values()) == {"is a model input", "is a model output"}


def test_plain_chain_is_no_group():
    inputs = keras.Input((6, 6, 2))
    h = _layers.Conv2D(4, 3, name="a")(inputs)
    h = _layers.BatchNormalization(name="bn")(h)
    outputs = _layers.Conv2D(2, 1, name="b")(h)
    assert tf_admm.channel_groups(keras.Model(inputs, outputs)) == []


def _spec(**rule):
    return tf_admm.Spec(
        rules=[tf_admm.Rule(layer_type="Conv2D", structure="filter", **rule)],
        update_every=2,
        admm_rounds=2,
        update_unit="step",
    )


def test_plan_lists_the_tied_groups():
    text = str(tf_admm.plan(mobilenet_v2_like(), _spec(sparsity=0.5)))
    assert "tied filters: stem, project1, project2 tied by add1, add2" in text
    assert "each keeps the same 4 channels" in text


def test_tied_members_keeping_different_filter_counts_are_refused():
    spec = tf_admm.Spec(
        rules=[
            tf_admm.Rule(name="project1", structure="filter", keep=2),
            tf_admm.Rule(layer_type="Conv2D", structure="filter", keep=4),
        ]
    )
    with pytest.raises(ValueError, match=r"meet at \['add1', 'add2'\] and must keep the same"):
        tf_admm.admm_wrap(mobilenet_v2_like(), spec)


def _slots(admm, names):
    wrappers = {w.layer.name: w for w in admm.admm_wrappers}
    return [wrappers[name].slots[0] for name in names]


def test_tied_layers_keep_one_filter_set_in_z_and_after_the_hard_projection():
    admm = compile_for_classification(tf_admm.admm_wrap(mobilenet_v2_like(), _spec(sparsity=0.5)))
    tied = ("stem", "project1", "project2")
    slots = _slots(admm, tied)
    # Z starts on the coupled set: the 4 channels of largest summed norm over the members.
    supports = {_filters_kept(s.auxiliary.numpy()) for s in slots}
    assert len(supports) == 1 and len(supports.pop()) == 4
    x, y = small_data(32)
    admm.fit(x, y, batch_size=8, epochs=1, callbacks=tf_admm.callbacks(), verbose=0)
    assert admm.phase is tf_admm.Phase.RETRAIN
    supports = {_filters_kept(s.variable.numpy()) for s in slots}
    assert len(supports) == 1 and len(supports.pop()) == 4
    # Masked retraining keeps them, and the BatchNorm after each pruned layer outputs 0 there.
    admm.fit(x, y, batch_size=8, epochs=1, callbacks=tf_admm.callbacks(), verbose=0)
    plain = tf_admm.strip(admm)
    kept = _filters_kept(plain.get_layer("stem").kernel.numpy())
    for name in tied:
        assert _filters_kept(plain.get_layer(name).kernel.numpy()) == kept
        gamma, beta = plain.get_layer(f"bn_{name}").get_weights()[:2]
        removed = [c for c in range(8) if c not in kept]
        assert not np.any(gamma[removed]) and not np.any(beta[removed])


def test_z_step_of_tied_layers_is_the_coupled_projection_of_w_plus_u():
    admm = compile_for_classification(tf_admm.admm_wrap(mobilenet_v2_like(), _spec(keep=3)))
    x, y = small_data(16)
    admm.fit(x, y, batch_size=8, epochs=1, callbacks=tf_admm.callbacks(), verbose=0)
    slots = _slots(admm, ("project3", "project4"))
    shifted = [((s.masked() + s.dual) * s.mask).numpy() for s in slots]
    for wrapper in admm.admm_wrappers:
        wrapper.admm_update()
    expected = tf_admm.projections.project_coupled_filters(shifted, 3)
    for slot, want in zip(slots, expected):
        np.testing.assert_array_equal(slot.auxiliary.numpy(), want.numpy())


def test_saved_model_keeps_the_ties_and_masks(tmp_path):
    admm = compile_for_classification(tf_admm.admm_wrap(mobilenet_v2_like(), _spec(sparsity=0.5)))
    path = str(tmp_path / "model.keras")
    admm.save(path)
    loaded = tf_admm.load_model(path)
    slots = _slots(loaded, ("project3", "project4"))
    assert slots[0].tie is not None and slots[0].tie is slots[1].tie
    assert len(_slots(loaded, ("stem",))[0].followers) == 2  # bn_stem's gamma and beta.
    for a, b in zip(_slots(admm, ("project3",)), slots[:1]):
        np.testing.assert_array_equal(a.auxiliary.numpy(), b.auxiliary.numpy())


def test_grouping_is_left_out_for_a_model_without_joins():
    model = tf_admm.testing.small_convnet()
    admm = tf_admm.admm_wrap(
        model, tf_admm.Spec(rules=[tf_admm.Rule(name="conv", structure="filter", keep=3)])
    )
    assert all(s.tie is None for w in admm.admm_wrappers for s in w.slots)
    assert grouping.channel_groups(model) == []
