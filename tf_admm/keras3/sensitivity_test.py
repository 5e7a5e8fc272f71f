"""``tf_admm.sensitivity_allocation`` and ``tf_admm.shared_weights`` on Keras 3 models.

pytest runs this file on Keras 3's default backend (TensorFlow); ``backends_test.py`` runs it
again on JAX. The tf_keras twin of each model holds the same weights, so both Kerases must
measure the same curves and choose the same split.
"""

import keras
import numpy as np
import pytest

import tf_admm
from tf_admm import allocation
from tf_admm.compat import keras as tf_keras
from tf_admm.testing import compile_for_classification, small_convnet, small_data

# small_convnet's compressible weights; tf_keras calls the depthwise one depthwise_kernel.
SIZES = {"conv/kernel": 54, "depthwise/kernel": 54, "fc1/kernel": 2304, "fc2/kernel": 72}
TF_KERAS_KEYS = {"depthwise/depthwise_kernel": "depthwise/kernel"}


pytestmark = pytest.mark.usefixtures("keras3_session")


def _spec(**fields):
    return tf_admm.Spec(admm_rounds=3, update_every=4, update_unit="step", **fields)


def _layers():
    return [
        keras.layers.Conv2D(6, 3, activation="relu", name="conv"),
        keras.layers.DepthwiseConv2D(3, name="depthwise"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(24, activation="relu", name="fc1"),
        keras.layers.Dense(3, name="fc2"),
    ]


def _twins():
    """A trained tf_keras ``small_convnet`` and its Keras 3 twin holding the same weights."""
    x, y = small_data()
    tf_keras.utils.set_random_seed(3)
    trained = compile_for_classification(small_convnet())
    trained.fit(x, y, batch_size=16, epochs=3, verbose=0)
    inputs = keras.Input((8, 8, 1), name="image")
    h = inputs
    for layer in _layers():
        h = layer(h)
    twin = keras.Model(inputs, h, name="small")
    twin.set_weights(trained.get_weights())
    return trained, twin


def _nested():
    """The same layers with the convolutions in a nested Sequential."""
    layers = _layers()
    features = keras.Sequential([keras.Input((8, 8, 1)), *layers[:2]], name="features")
    inputs = keras.Input((8, 8, 1))
    h = inputs
    for layer in [features, *layers[2:]]:
        h = layer(h)
    return keras.Model(inputs, h, name="nested")


def _cross_entropy(logits, labels) -> float:
    """Mean cross-entropy of logits on the host (float64), the same arithmetic for both."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(len(labels)), labels].mean())


def _validation_loss(model) -> float:
    x, y = small_data(64, seed=1)
    if isinstance(model, keras.Model):
        return _cross_entropy(keras.ops.convert_to_numpy(model(x, training=False)), y)
    return _cross_entropy(model(x, training=False).numpy(), y)


def _host(model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]


def test_same_weights_give_the_same_curves_and_split_as_tf_keras():
    trained, twin = _twins()
    spec = _spec(target_ratio=20)
    curves = tf_admm.sensitivity_curves(twin, spec, _validation_loss, points=6)
    expected = tf_admm.sensitivity_curves(trained, spec, _validation_loss, points=6)
    expected = {TF_KERAS_KEYS.get(k, k): curve for k, curve in expected.items()}
    assert list(curves) == list(expected) == list(SIZES)
    for key, curve in curves.items():
        assert [k for k, _ in curve] == [k for k, _ in expected[key]], key
        # The outputs differ only by float32 rounding between the two Kerases (and backends).
        np.testing.assert_allclose(
            [v for _, v in curve], [v for _, v in expected[key]], rtol=1e-4, atol=1e-6
        )
    assert any(v > 0.01 for curve in curves.values() for _, v in curve)  # Pruning hurts.

    measured = tf_admm.sensitivity_allocation(twin, spec, _validation_loss, points=6)
    reference = tf_admm.sensitivity_allocation(trained, spec, _validation_loss, points=6)
    assert measured.allocation is tf_admm.Allocation.SENSITIVITY
    # 2,484 weights / 20 = 124.2: 124 kept.
    assert sum(measured.allocated.values()) == 124
    allocated = dict(measured.allocated)
    assert allocated == {TF_KERAS_KEYS.get(k, k): v for k, v in reference.allocated.items()}
    sizes = {key: max(k for k, _ in curve) for key, curve in curves.items()}
    assert sizes == SIZES
    assert allocated == allocation.allocate_by_sensitivity(sizes, curves, 124)
    # admm_wrap takes the measured split as given.
    planned = {
        f"{row.layer}/{w.target.weight}": w.kept
        for row in tf_admm.plan(twin, measured).compressed
        for w in row.weights
    }
    assert planned == allocated


def test_the_probe_prunes_one_weight_of_a_copy_at_a_time_and_restores_it_exactly():
    _, model = _twins()
    before = _host(model)
    spec = _spec(target_ratio=20)
    seen = []

    def evaluate(copy):
        nonzeros = {
            key: int(np.count_nonzero(keras.ops.convert_to_numpy(variable)))
            for key, variable in tf_admm.shared_weights(copy, spec).items()
        }
        seen.append((copy, nonzeros))
        return _validation_loss(copy)

    curves = tf_admm.sensitivity_curves(model, spec, evaluate, points=4)
    copy = seen[0][0]
    assert copy is not model and all(m is copy for m, _ in seen)
    # The user's model never changed; the copy holds its weights again, to the last bit.
    for old, new, probed in zip(before, _host(model), _host(copy)):
        np.testing.assert_array_equal(old, new)
        np.testing.assert_array_equal(old, probed)
    # The dense loss first, then each weight alone at each kept count, the others dense.
    dense = {key: int(np.count_nonzero(v)) for key, v in zip(SIZES, before[::2])}
    assert seen[0][1] == dense
    probes = [(key, kept) for key, curve in curves.items() for kept, _ in curve[:-1]]
    assert len(seen) == 1 + len(probes)
    for (key, kept), (_, nonzeros) in zip(probes, seen[1:]):
        assert nonzeros == {**dense, key: kept}


def test_a_nested_sequential_is_copied_and_probed_like_the_rest():
    model = _nested()
    before = _host(model)
    copies = []

    def evaluate(copy):
        copies.append(copy)
        return _validation_loss(copy)

    spec = tf_admm.sensitivity_allocation(model, _spec(target_ratio=20), evaluate, points=3)
    assert set(spec.allocated) == set(SIZES) and sum(spec.allocated.values()) == 124
    features = copies[0].get_layer("features")
    assert features is not model.get_layer("features")
    assert {id(v) for v in copies[0].weights}.isdisjoint(id(v) for v in model.weights)
    for old, new in zip(before, _host(model)):
        np.testing.assert_array_equal(old, new)


def test_shared_weights_are_the_models_own_variables_and_keys_match_tf_keras():
    trained, model = _twins()
    spec = _spec(
        target_ratio=10,
        rules=[
            tf_admm.Rule(name="conv", keep=7),
            tf_admm.Rule(name="depthwise", sparsity=0.0),
            tf_admm.Rule(pattern="fc.*", bits=3),
        ],
    )
    shared = tf_admm.shared_weights(model, spec)
    assert list(shared) == ["fc1/kernel", "fc2/kernel"]
    assert list(tf_admm.shared_weights(trained, spec)) == list(shared)
    assert shared["fc1/kernel"] is model.get_layer("fc1").kernel
    assert shared["fc2/kernel"] is model.get_layer("fc2").kernel
    # Assigning to one changes the model (what sensitivity_curves does on its copy).
    x, _ = small_data(4)
    shared["fc2/kernel"].assign(np.zeros(shared["fc2/kernel"].shape, "float32"))
    logits = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(
        logits, np.broadcast_to(model.get_layer("fc2").get_weights()[1], logits.shape)
    )
    # A spec as a dict, and a nested model.
    nested = tf_admm.shared_weights(_nested(), {"target_ratio": 20})
    assert list(nested) == list(SIZES)


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            _spec(target_ratio=20, rules=[tf_admm.Rule(name="missing", sparsity=0.5)]),
            r"Spec rules\[0\] \(name='missing'\) matches no layer of model 'small'",
        ),
    ],
)
def test_specs_that_do_not_fit_raise_the_tf_keras_error(spec, message):
    trained, model = _twins()
    for candidate in (model, trained):
        with pytest.raises(ValueError, match=message):
            tf_admm.shared_weights(candidate, spec)
        with pytest.raises(ValueError, match=message):
            tf_admm.sensitivity_allocation(candidate, spec, _validation_loss)


def test_no_shared_weight_is_refused_before_any_evaluation():
    _, model = _twins()
    spec = _spec(target_ratio=20, default=tf_admm.Rule(sparsity=0.5))
    calls = []
    with pytest.raises(ValueError, match="Expected weights that share target_ratio; received none"):
        tf_admm.sensitivity_allocation(model, spec, calls.append)
    assert not calls
