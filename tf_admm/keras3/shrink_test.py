"""tf_admm.shrink on Keras 3 models, on the backend this process runs.

The checks of ``tf_admm/shrink_test.py`` on Keras 3: after structured ADMM training and strip,
the shrunk model has exactly the expected smaller kernels and the stripped model's outputs; a
Sequential model stays Sequential; residual joins lose only the channels zero in every member;
the same errors as on tf_keras. pytest runs this file on Keras 3's default backend (TensorFlow);
``backends_test.py`` runs it again on JAX. ``tflite_export/keras3_test.py`` exports a shrunk
model.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tf_admm
from tf_admm.testing import randomize_weights, zero_filters

_layers = keras.layers


pytestmark = pytest.mark.usefixtures("keras3_session")
KERAS3_SEED = 5


def _host(value) -> np.ndarray:
    return keras.ops.convert_to_numpy(value)


def _inputs(model, count=4, seed=1):
    shape = model.inputs[0].shape[1:]
    return np.random.default_rng(seed).normal(size=(count, *shape)).astype(np.float32)


def _assert_same_outputs(small, model):
    x = _inputs(model)
    got, want = small(x), model(x)
    if not isinstance(want, (list, tuple)):
        got, want = [got], [want]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(_host(a), _host(b), rtol=0, atol=1e-5)


def _kernels(model) -> dict[str, tuple[int, ...]]:
    return {la.name: tuple(la.kernel.shape) for la in model.layers if hasattr(la, "kernel")}


def _lenet5_like() -> keras.Model:
    """LeNet-5 on 16x16x1 inputs: two conv/pool stages, three Dense layers."""
    inputs = keras.Input((16, 16, 1), name="image")
    h = _layers.Conv2D(6, 5, activation="relu", name="conv1")(inputs)  # 12x12x6
    h = _layers.MaxPooling2D(name="pool1")(h)  # 6x6x6
    h = _layers.Conv2D(16, 3, activation="relu", name="conv2")(h)  # 4x4x16
    h = _layers.MaxPooling2D(name="pool2")(h)  # 2x2x16
    h = _layers.Flatten(name="flatten")(h)
    h = _layers.Dense(32, activation="relu", name="fc1")(h)
    h = _layers.Dense(16, activation="relu", name="fc2")(h)
    return keras.Model(inputs, _layers.Dense(3, name="out")(h), name="lenet5")


def _trained(model: keras.Model, rules) -> keras.Model:
    """``model`` ADMM-pruned with ``rules`` (2 rounds of 2 steps, then masked retraining) and
    stripped."""
    spec = tf_admm.Spec.from_dict(
        {"rules": rules, "admm_rounds": 2, "update_every": 2, "update_unit": "step"}
    )
    admm = tf_admm.admm_wrap(model, spec)
    admm.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = _inputs(model, 32, seed=0)
    y = np.arange(32) % 3
    admm.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.RETRAIN
    return tf_admm.strip(admm)


LENET_RULES = [
    {"name": "conv1", "structure": "filter", "keep": 4},
    {"name": "conv2", "structure": "filter", "keep": 8},
    # Column pruning of fc2 leaves 10 of its 32 input rows: fc1's other units leave.
    {"name": "fc2", "structure": "column", "keep": 10},
]


def test_structured_admm_lenet5_shrinks_to_the_kept_filters_with_the_stripped_outputs(tmp_path):
    stripped = _trained(_lenet5_like(), LENET_RULES)
    plans = {p.layer: p for p in tf_admm.shrink_plan(stripped)}
    assert len(plans["conv1"].removed) == 2 and plans["conv1"].consumer == "conv2"
    assert plans["conv2"].chain == ("pool2", "flatten") and plans["conv2"].consumer == "fc1"
    assert len(plans["fc1"].unused) == 22 and plans["fc1"].consumer == "fc2"
    small = tf_admm.shrink(stripped)
    assert _kernels(small) == {
        "conv1": (5, 5, 1, 4),
        "conv2": (3, 3, 4, 8),
        "fc1": (2 * 2 * 8, 10),
        "fc2": (10, 16),
        "out": (16, 3),
    }
    assert [la.name for la in small.layers] == [la.name for la in stripped.layers]
    assert small.count_params() < stripped.count_params() / 2
    _assert_same_outputs(small, stripped)

    # The shrunk model holds no tf_admm class: plain Keras 3 loads it, without tf_admm.
    path = str(tmp_path / "small.keras")
    small.save(path)
    x = _inputs(stripped, 5)
    np.save(str(tmp_path / "x.npy"), x)
    np.save(str(tmp_path / "y.npy"), _host(stripped(x)))
    script = textwrap.dedent(
        f"""
        import sys
        import keras
        import numpy as np
        model = keras.models.load_model({path!r})
        x, y = np.load({str(tmp_path / "x.npy")!r}), np.load({str(tmp_path / "y.npy")!r})
        np.testing.assert_allclose(model.predict(x, verbose=0), y, rtol=0, atol=1e-5)
        assert model.get_layer("conv2").kernel.shape == (3, 3, 4, 8)
        assert not [m for m in sys.modules if m.startswith("tf_admm")], "tf_admm was imported"
        print("loaded", type(model).__name__)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["KERAS_BACKEND"] = keras.backend.backend()
    loaded = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stdout[-4000:] + loaded.stderr[-4000:]
    assert "loaded Functional" in loaded.stdout


def test_shrink_of_the_admm_model_strips_it_first():
    model = keras.Sequential(
        [
            keras.Input((12,)),
            _layers.Dense(16, activation="relu", name="hidden"),
            _layers.Dense(3, name="out"),
        ],
        name="mlp",
    )
    spec = tf_admm.Spec.from_dict(
        {
            "rules": [{"name": "hidden", "structure": "filter", "keep": 5}],
            "admm_rounds": 1,
            "update_every": 2,
            "update_unit": "step",
        }
    )
    admm = tf_admm.admm_wrap(model, spec)
    admm.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = _inputs(model, 16, seed=0)
    admm.fit(x, np.arange(16) % 3, batch_size=8, epochs=2, verbose=0, callbacks=tf_admm.callbacks())
    small = tf_admm.shrink(admm)
    assert isinstance(small, keras.Sequential)
    assert _kernels(small) == {"hidden": (12, 5), "out": (5, 3)}
    _assert_same_outputs(small, tf_admm.strip(admm))


def test_sequential_with_batch_norm_and_dropout_folds_the_shift_and_stays_sequential():
    model = keras.Sequential(
        [
            keras.Input((9, 9, 2)),
            _layers.Conv2D(6, 3, activation="relu", name="conv1"),
            _layers.Conv2D(7, 3, name="conv2"),
            _layers.BatchNormalization(name="bn"),  # A removed filter outputs its shift.
            _layers.ReLU(name="relu"),
            _layers.GlobalAveragePooling2D(name="gap"),
            _layers.Dropout(0.3, name="dropout"),
            _layers.Dense(4, name="head"),
        ],
        name="seq",
    )
    model = zero_filters(randomize_weights(model), {"conv1": [0, 2, 3], "conv2": [1, 6]})
    plans = {p.layer: p for p in tf_admm.shrink_plan(model)}
    # conv1's zero filters output relu(bias), constant: conv2 is valid, so it folds them.
    assert plans["conv1"].removed == (0, 2, 3) and plans["conv1"].consumer == "conv2"
    assert plans["conv2"].chain == ("bn", "relu", "gap", "dropout")
    small = tf_admm.shrink(model)
    assert isinstance(small, keras.Sequential)
    assert _kernels(small) == {"conv1": (3, 3, 2, 3), "conv2": (3, 3, 3, 5), "head": (5, 4)}
    assert [tuple(w.shape) for w in small.get_layer("bn").weights] == [(5,)] * 4
    _assert_same_outputs(small, model)


def test_depthwise_and_padding_follow_the_plan_of_tf_keras():
    inputs = keras.Input((10, 10, 3))
    h = _layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    h = _layers.BatchNormalization(name="bn1")(h)
    h = _layers.ReLU(name="relu1")(h)
    h = _layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(h)
    h = _layers.BatchNormalization(name="bn2")(h)
    h = _layers.Conv2D(6, 1, activation="relu", name="pointwise")(h)
    h = _layers.MaxPooling2D(name="pool")(h)
    h = _layers.Conv2D(5, 3, padding="same", activation="tanh", name="conv3")(h)
    h = _layers.Flatten(name="flatten")(h)
    h = _layers.Dense(12, activation="relu", name="fc1")(h)
    model = randomize_weights(keras.Model(inputs, _layers.Dense(3, name="fc2")(h)))
    model = zero_filters(model, {"conv1": [1, 4], "pointwise": [0, 5], "conv3": [2]})
    plans = {p.layer: p for p in tf_admm.shrink_plan(model)}
    assert plans["conv1"].chain == ("bn1", "relu1", "depthwise", "bn2")
    # pointwise's zero filters output relu(bias) > 0 or 0: only those at 0 meet conv3's zero
    # padding without changing it.
    kept = plans["pointwise"].kept_zero
    assert all("zero padding of 'conv3'" in why for why in kept.values())
    small = tf_admm.shrink(model)
    assert small.get_layer("depthwise").kernel.shape == (3, 3, 6, 2)
    assert [tuple(w.shape) for w in small.get_layer("bn2").weights] == [(12,)] * 4
    assert small.get_layer("pointwise").kernel.shape == (
        1,
        1,
        12,
        6 - len(plans["pointwise"].removed),
    )
    assert small.get_layer("fc1").kernel.shape == (4 * 4 * 4, 12)
    _assert_same_outputs(small, model)


def test_residual_add_removes_the_channels_zero_in_every_member():
    inputs = keras.Input((6, 6, 3))
    a = _layers.Conv2D(5, 1, activation="relu", name="a")(inputs)
    b = _layers.Conv2D(5, 3, padding="same", name="b")(inputs)
    h = _layers.Add(name="add")([a, b])
    h = _layers.BatchNormalization(name="bn")(h)
    outputs = [_layers.Conv2D(3, 1, name="c")(h), _layers.Dense(2, name="d")(h)]
    model = zero_filters(randomize_weights(keras.Model(inputs, outputs)), {"a": [1, 4], "b": [1]})
    plans = {p.layer: p for p in tf_admm.shrink_plan(model)}
    assert plans["a"].group == plans["b"].group == ("a", "b") and plans["a"].joins == ("add",)
    assert plans["a"].removed == plans["b"].removed == (1,)
    assert "filter 4 of tied ['b'] is not zero" in plans["a"].kept_zero[4]
    small = tf_admm.shrink(model)
    assert _kernels(small) == {"a": (1, 1, 3, 4), "b": (3, 3, 3, 4), "c": (1, 1, 4, 3), "d": (4, 2)}
    _assert_same_outputs(small, model)


def test_model_without_zero_filters_is_copied_unchanged():
    model = randomize_weights(_lenet5_like())
    small = tf_admm.shrink(model)
    assert small is not model and small.count_params() == model.count_params()
    assert tf_admm.shrink_plan(model) == []
    _assert_same_outputs(small, model)


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subclassed")
        self.fc = _layers.Dense(2, name="fc")

    def call(self, x):
        return self.fc(x)


def _operator_join():
    inputs = keras.Input((4, 4, 2))
    a = _layers.Conv2D(3, 1, name="a")(inputs)
    b = _layers.Conv2D(3, 1, name="b")(inputs)
    return keras.Model(inputs, _layers.Conv2D(2, 1, name="head")(a + b), name="operator")


def _concatenated_on_rows():
    inputs = keras.Input((6, 6, 4))
    a = _layers.Conv2D(3, 1, name="left")(inputs)
    b = _layers.Conv2D(3, 1, name="right")(inputs)
    h = _layers.Concatenate(axis=1, name="concat")([a, b])
    return keras.Model(inputs, _layers.Conv2D(2, 1, name="head")(h))


def _residual_reshaped():
    inputs = keras.Input((6, 6, 4))
    a = _layers.Conv2D(4, 1, name="expand")(inputs)
    b = _layers.Conv2D(4, 1, name="other")(inputs)
    h = _layers.Add(name="add")([a, b])
    h = _layers.Reshape((36, 4), name="reshape")(h)
    return keras.Model(inputs, _layers.Conv1D(2, 1, name="head")(h))


def _nested():
    inner = keras.Sequential([keras.Input((4,)), _layers.Dense(3, name="inner_fc")], name="inner")
    inputs = keras.Input((4,))
    return keras.Model(inputs, _layers.Dense(2, name="head")(inner(inputs)))


def _subclassed():
    model = _Subclassed()
    model(np.zeros((1, 4), np.float32))
    return model


@pytest.mark.parametrize(
    "make, zero, message",
    [
        (
            _concatenated_on_rows,
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
        (
            _operator_join,
            {"a": [0]},
            r"Operation 'add' \(Add\) in model 'operator': Expected layers only in a Keras 3 "
            r"model to shrink; received a keras.ops operation on Keras tensors \(write it as a "
            r"layer, e.g. keras.layers.Add\(\)\(\[x, h\]\) for x \+ h\)",
        ),
        (
            _nested,
            {},
            r"Layer 'inner' \(Sequential\): Expected a flat Sequential or functional model; "
            r"received a nested model \(shrink it on its own\)",
        ),
        (
            _subclassed,
            {},
            r"Model 'subclassed': Expected a Sequential or functional model; received a "
            r"subclassed model",
        ),
    ],
    ids=["concatenate_rows", "tied_then_reshaped", "operator_join", "nested", "subclassed"],
)
def test_structures_shrink_cannot_rebuild_are_refused_naming_the_layer(make, zero, message):
    model = zero_filters(make(), zero)
    with pytest.raises(tf_admm.ShrinkError, match=message):
        tf_admm.shrink(model)
    with pytest.raises(tf_admm.ShrinkError, match=message):
        tf_admm.shrink_plan(model)
