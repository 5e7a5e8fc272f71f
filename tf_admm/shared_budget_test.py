"""Spec.target_ratio: one budget split among layers by admm_wrap, exact after projection."""

import numpy as np
import pytest

import tf_admm
from tf_admm import allocation, keras
from tf_admm.testing import compile_for_classification, small_convnet, small_data

# small_convnet's compressible weights: conv 54, depthwise 54, fc1 16*6*24 = 2,304, fc2 72.
SIZES = {"conv/kernel": 54, "depthwise/depthwise_kernel": 54, "fc1/kernel": 2304, "fc2/kernel": 72}


def _fit(model, epochs=2):
    x, y = small_data()
    compile_for_classification(model)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=tf_admm.callbacks())
    return model


def _spec(**fields):
    return tf_admm.Spec(admm_rounds=3, update_every=4, update_unit="step", rho=0.05, **fields)


def _kept(model):
    return {
        f"{w.layer.name}/{s.target.weight}": int(np.count_nonzero(s.effective().numpy()))
        for w in model.admm_wrappers
        for s in w.slots
    }


@pytest.mark.parametrize("method", ["lamp", "global_magnitude", "uniform"])
def test_target_ratio_alone_splits_the_budget_exactly(method):
    dense = small_convnet()
    model = tf_admm.admm_wrap(dense, _spec(target_ratio=20, allocation=method))
    counts = dict(model.spec.allocated)
    assert list(counts) == list(SIZES)
    # 2,484 weights / 20 = 124.2: 124 kept.
    assert sum(counts.values()) == 124
    weights = {k: dense.get_layer(k.split("/")[0]).weights[0].numpy() for k in SIZES}
    assert counts == allocation.allocate(weights, 124, method)
    _fit(model)
    assert model.phase is tf_admm.Phase.RETRAIN
    assert _kept(model) == counts


def test_allocation_is_saved_and_reused_not_recomputed(tmp_path):
    model = _fit(tf_admm.admm_wrap(small_convnet(), _spec(target_ratio=20)), epochs=1)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.spec == model.spec
    assert dict(loaded.spec.allocated) == dict(model.spec.allocated)
    # The same spec on other weights (say the model after training) keeps the saved split.
    again = tf_admm.admm_wrap(tf_admm.strip(loaded), loaded.spec)
    assert dict(again.spec.allocated) == dict(model.spec.allocated)
    assert tf_admm.Spec.from_json(model.spec.to_json()) == model.spec


def test_rules_with_their_own_target_stay_out_of_the_budget():
    spec = _spec(
        target_ratio=10,
        rules=[
            tf_admm.Rule(name="conv", keep=7),
            tf_admm.Rule(name="depthwise", sparsity=0.0),
            tf_admm.Rule(pattern="fc.*", bits=3),
        ],
    )
    model = tf_admm.admm_wrap(small_convnet(), spec)
    counts = dict(model.spec.allocated)
    assert set(counts) == {"fc1/kernel", "fc2/kernel"}
    assert sum(counts.values()) == round((2304 + 72) / 10)
    slots = {w.layer.name: w.slots[0] for w in model.admm_wrappers}
    assert slots["conv"].keep == 7
    assert slots["depthwise"].keep == 54
    assert slots["fc1"].target.bits == 3


def test_keep_is_an_exact_count():
    spec = _spec(rules=[tf_admm.Rule(name="fc1", keep=37), tf_admm.Rule(name="fc2", keep=72)])
    model = _fit(tf_admm.admm_wrap(small_convnet(), spec))
    assert _kept(model) == {"fc1/kernel": 37, "fc2/kernel": 72}


@pytest.mark.parametrize(
    "spec,message",
    [
        (
            _spec(target_ratio=20, allocated={"fc1/kernel": 10}),
            r"Expected counts for exactly the weights sharing target_ratio \['conv/kernel'",
        ),
        (
            _spec(target_ratio=20, allocation="sensitivity"),
            "tf_admm.sensitivity_allocation",
        ),
        (
            _spec(target_ratio=20, rules=[tf_admm.Rule(layer_type="Dense", sparsity=0.5)]),
            "target_ratio=20: Expected layers to share it",
        ),
        (
            _spec(rules=[tf_admm.Rule(name="fc2", keep=73)]),
            r"rules\[0\] \(name='fc2'\), layer 'fc2', weight 'kernel': Expected keep <= the "
            r"weight's 72 entries; received: keep=73",
        ),
        (
            _spec(target_ratio=20, allocated={**dict.fromkeys(SIZES, 1), "fc2/kernel": 99}),
            r"allocated\['fc2/kernel'\]: Expected at most the weight's 72 entries",
        ),
    ],
)
def test_bad_budgets_name_the_field(spec, message):
    with pytest.raises(ValueError, match=message):
        tf_admm.admm_wrap(small_convnet(), spec)


def test_sensitivity_allocation_measures_on_a_copy_and_wrap_uses_it():
    x, y = small_data()
    dense = compile_for_classification(small_convnet())
    dense.fit(x, y, batch_size=16, epochs=3, verbose=0)
    before = [w.copy() for w in dense.get_weights()]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    calls = []

    def evaluate(model):
        calls.append(model)
        return float(loss(y, model(x)))

    spec = tf_admm.sensitivity_allocation(dense, _spec(target_ratio=20), evaluate, points=5)
    for old, new in zip(before, dense.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert all(m is calls[0] and m is not dense for m in calls)
    # The dense loss once, then 4 pruned counts (the 5th keeps all) for each of 4 weights.
    assert len(calls) == 1 + 4 * 4
    assert spec.allocation is tf_admm.Allocation.SENSITIVITY
    assert sum(spec.allocated.values()) == 124
    curves = tf_admm.sensitivity_curves(dense, _spec(target_ratio=20), evaluate, points=5)
    sizes = {k: max(c[0] for c in curve) for k, curve in curves.items()}
    assert sizes == SIZES
    assert dict(spec.allocated) == allocation.allocate_by_sensitivity(sizes, curves, 124)
    model = tf_admm.admm_wrap(dense, spec)
    assert dict(model.spec.allocated) == dict(spec.allocated)


def test_sensitivity_allocation_warns_when_the_one_layer_curves_have_flattened(monkeypatch):
    from absl import logging as absl_logging

    from tf_admm import sensitivity

    curves = {  # Loss increase of each layer pruned alone to so many weights.
        "small/kernel": [(1, 2.0), (10, 1.0), (50, 0.1), (100, 0.0)],
        "large/kernel": [(1, 2.3), (1000, 2.2), (5000, 0.5), (10_000, 0.0)],  # Flat below 1,000.
    }
    monkeypatch.setattr(sensitivity, "sensitivity_curves", lambda *args: curves)
    warnings = []
    monkeypatch.setattr(absl_logging, "warning", lambda text, *args: warnings.append(text % args))
    spec = tf_admm.sensitivity_allocation(None, tf_admm.Spec(target_ratio=2), None)
    assert sum(spec.allocated.values()) == 5_050 and warnings == []
    spec = tf_admm.sensitivity_allocation(None, tf_admm.Spec(target_ratio=100), None)
    assert spec.allocated == {"small/kernel": 91, "large/kernel": 10}
    assert len(warnings) == 1
    assert warnings[0].startswith("Sensitivity allocation at 100x: large/kernel keeps ")
    assert "of its largest (+2.3)" in warnings[0] and "small/kernel" not in warnings[0]
    assert "allocation='lamp'" in warnings[0]
