"""Subclassed models: wrap a copy, train, strip back to the user's class, save, and the errors."""

import collections
import json
import re
import types
import zipfile

import numpy as np
import pytest

import tf_admm
from tf_admm import cloning, keras, subclassed, tf
from tf_admm.testing import compile_for_classification, small_data


@keras.utils.register_keras_serializable(package="subclassed_test")
class Block(keras.layers.Layer):
    """A residual block of two Dense layers: a custom container layer."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = keras.layers.Dense(units, activation="relu", name="block_inner")
        self.outer = keras.layers.Dense(units, name="block_outer")

    def call(self, x):
        return x + self.outer(self.inner(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.utils.register_keras_serializable(package="subclassed_test")
class SmallCNN(keras.Model):
    """Layers as attributes, in a list, in a dict and in a nested block."""

    def __init__(self, classes=3, width=32, **kwargs):
        super().__init__(**kwargs)
        self.classes, self.width = classes, width
        self.conv = keras.layers.Conv2D(8, 3, activation="relu", name="conv")
        self.flat = keras.layers.Flatten(name="flatten")
        self.fc = keras.layers.Dense(64, activation="relu", name="fc")
        self.stack = [
            keras.layers.Dense(width, activation="relu", name=f"stack{i}") for i in range(2)
        ]
        self.block = Block(width, name="block")
        self.heads = {"logits": keras.layers.Dense(classes, name="logits")}

    def call(self, x, training=None):
        h = self.fc(self.flat(self.conv(x)))
        for layer in self.stack:
            h = layer(h)
        return self.heads["logits"](self.block(h))

    def get_config(self):
        return {"classes": self.classes, "width": self.width, "name": self.name}


class Scaled(keras.Model):
    """No config (a numpy argument), a nested Sequential and a tuple: the deep-copy path."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = np.asarray(scale, np.float32)
        self.features = keras.Sequential(
            [keras.layers.Dense(16, activation="relu", name="seq_fc")], name="features"
        )
        self.pair = (keras.layers.Dense(16, name="pair0"), keras.layers.Dense(8, name="pair1"))
        self.out = keras.layers.Dense(3, name="out")

    def call(self, x):
        h = self.features(x) * self.scale
        for layer in self.pair:
            h = tf.nn.relu(layer(h))
        return self.out(h)


Pair = collections.namedtuple("Pair", "first second")


@keras.utils.register_keras_serializable(package="subclassed_test")
class Shared(keras.Model):
    """A layer at two attributes, a namedtuple, blocks in a list, a Sequential, a variable of
    the model's own."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.stack = [keras.layers.Dense(16, activation="relu", name="s0"), keras.layers.Dense(16)]
        self.entry = self.stack[0]
        self.blocks = [Block(16, name="b0")]
        self.pair = Pair(keras.layers.Dense(16, name="pa"), keras.layers.Dense(16, name="pb"))
        self.head = keras.Sequential(
            [keras.layers.Dense(8, activation="relu", name="q0"), keras.layers.Dense(3)],
            name="head",
        )
        self.scale = self.add_weight(name="scale", shape=(16,), initializer="ones")

    def call(self, x):
        h = self.stack[1](self.entry(x)) * self.scale
        for block in self.blocks:
            h = block(h)
        return self.head(self.pair.second(self.pair.first(h)))


SPARSITY = 0.92  # About 12.5x on the targeted weights.


def _spec(**kwargs):
    fields = dict(
        default=tf_admm.Rule(sparsity=SPARSITY),
        rho=tf_admm.RhoSchedule(5e-3, 1.5),
        admm_rounds=3,
        update_every=4,
        update_unit="step",
    )
    fields.update(kwargs)
    return tf_admm.Spec(**fields)


def _built_cnn():
    x, _ = small_data(4)
    model = SmallCNN(name="small_cnn")
    model(x)
    return model


def _snapshot(model):
    return {
        "weights": [w.numpy().copy() for w in model.weights],
        "variables": [id(w) for w in model.weights],
        "attributes": {k: v for k, v in vars(model).items() if not k.startswith("_")},
        "layers": list(model.layers),
        "leaves": [(id(layer), type(layer)) for layer in cloning.leaf_layers(model)],
    }


def _assert_untouched(model, before):
    after = _snapshot(model)
    for old, new in zip(before["weights"], after["weights"]):
        np.testing.assert_array_equal(old, new)
    assert after["variables"] == before["variables"]
    assert after["layers"] == before["layers"]
    assert after["leaves"] == before["leaves"]
    assert set(after["attributes"]) == set(before["attributes"])
    for key, value in before["attributes"].items():
        assert after["attributes"][key] is value, key
    assert not any(isinstance(layer, tf_admm.AdmmWrapper) for layer in cloning.leaf_layers(model))


def _kept_counts_exact(admm):
    size = kept = 0
    for wrapper in admm.admm_wrappers:
        for slot in wrapper.slots:
            assert np.count_nonzero(slot.effective().numpy()) == slot.keep, wrapper.layer.name
            size += slot.variable.shape.num_elements()
            kept += slot.keep
    return size / kept


def test_subclassed_cnn_compressed_stripped_to_its_class_saved_and_left_untouched(tmp_path):
    x, y = small_data(64)
    model = _built_cnn()
    before = _snapshot(model)
    reference = model(x).numpy()
    admm = compile_for_classification(tf_admm.admm_wrap(model, _spec()))
    assert isinstance(admm, tf_admm.AdmmModel) and admm.subclassed
    assert type(admm.wrapped_model) is SmallCNN
    names = [w.layer.name for w in admm.admm_wrappers]
    assert names == ["conv", "fc", "stack0", "stack1", "block_inner", "block_outer", "logits"]
    # Wrapping alone changes no output, and the copy shares no variable with the original.
    np.testing.assert_allclose(admm(x).numpy(), reference, atol=1e-6)
    assert not {id(v) for v in admm.variables} & set(before["variables"])
    # 3 rounds x 4 steps of ADMM (4 steps per epoch), then masked retraining.
    admm.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.RETRAIN
    assert _kept_counts_exact(admm) >= 10.0

    plain = tf_admm.strip(admm)
    assert type(plain) is SmallCNN
    assert [layer.name for layer in plain.layers] == [layer.name for layer in model.layers]
    assert [w.shape for w in plain.weights] == [w.shape for w in model.weights]
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), admm.predict(x, verbose=0), atol=1e-6, rtol=0
    )
    kernels = {w.layer.name: w.slots[0].keep for w in admm.admm_wrappers}
    for layer in cloning.leaf_layers(plain):
        if layer.name in kernels:
            assert np.count_nonzero(layer.kernel.numpy()) == kernels[layer.name]

    path = str(tmp_path / "stripped.keras")
    plain.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "tf_admm>" not in config and "Admm" not in config  # No tf_admm class in the file.
    loaded = keras.models.load_model(path, custom_objects={"SmallCNN": SmallCNN, "Block": Block})
    assert type(loaded) is SmallCNN
    np.testing.assert_allclose(loaded.predict(x, verbose=0), plain.predict(x, verbose=0), atol=0)
    _assert_untouched(model, before)
    np.testing.assert_array_equal(model(x).numpy(), reference)


def test_mid_admm_keras_file_of_registered_class_resumes_the_same(tmp_path):
    x, y = small_data(64)
    admm = compile_for_classification(tf_admm.admm_wrap(_built_cnn(), _spec()))
    admm.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.ADMM and int(admm.admm_round.numpy()) == 1
    path = str(tmp_path / "admm.keras")
    admm.save(path)
    loaded = tf_admm.load_model(path)  # The class is registered: no custom_objects.
    assert loaded.subclassed and type(loaded.wrapped_model) is SmallCNN
    assert [w.layer.name for w in loaded.admm_wrappers] == [
        w.layer.name for w in admm.admm_wrappers
    ]
    for old, new in zip(admm.admm_wrappers, loaded.admm_wrappers):
        for a, b in zip(old.slots, new.slots):
            for name in ("variable", "auxiliary", "dual", "mask", "rho"):
                np.testing.assert_array_equal(getattr(a, name).numpy(), getattr(b, name).numpy())
    assert int(loaded.admm_step.numpy()) == int(admm.admm_step.numpy())
    np.testing.assert_array_equal(loaded(x).numpy(), admm(x).numpy())
    _continue_identically(admm, loaded, x, y)


def _continue_identically(admm, loaded, x, y) -> None:
    """Three more epochs of the original and of its loaded copy reach retraining with exact
    counts in both and the same outputs: the file held the whole ADMM state."""
    for each in (admm, loaded):
        each.fit(
            x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=tf_admm.callbacks()
        )
        assert each.phase is tf_admm.Phase.RETRAIN
        _kept_counts_exact(each)
    np.testing.assert_allclose(loaded(x).numpy(), admm(x).numpy(), atol=1e-5)


def test_shared_layers_tuples_block_lists_and_sequential_survive_save_load_and_strip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    model = Shared(name="shared")
    model(x[:2])
    model.scale.assign(np.linspace(0.5, 1.5, 16))
    paths = [cloning.path_name(p) for e in cloning.walk(model) for p in e.paths]
    assert paths[:2] == ["stack[0]", "entry"] and "blocks[0].inner" in paths
    admm = compile_for_classification(
        tf_admm.admm_wrap(
            model, _spec(default=None, rules=[tf_admm.Rule(layer_type="Dense", sparsity=0.75)])
        )
    )
    auto = model.stack[1].name  # Unnamed layers keep their names in the copy too.
    assert [w.layer.name for w in admm.admm_wrappers] == [
        "s0",
        auto,
        "block_inner",
        "block_outer",
        "pa",
        "pb",
        "q0",
        model.head.layers[1].name,
    ]
    np.testing.assert_allclose(admm(x).numpy(), model(x).numpy(), atol=1e-6)  # scale too
    inner = admm.wrapped_model
    assert inner.entry is inner.stack[0] and isinstance(inner.entry, tf_admm.AdmmWrapper)
    admm.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0, callbacks=tf_admm.callbacks())
    path = str(tmp_path / "shared.keras")
    admm.save(path)
    loaded = tf_admm.load_model(path)
    np.testing.assert_array_equal(loaded(x).numpy(), admm(x).numpy())
    _continue_identically(admm, loaded, x, y)
    plain = tf_admm.strip(loaded)
    assert type(plain) is Shared and plain.entry is plain.stack[0]
    assert isinstance(plain.pair, Pair) and isinstance(plain.head, keras.Sequential)
    assert [w.shape for w in plain.weights] == [w.shape for w in model.weights]
    np.testing.assert_array_equal(plain.scale.numpy(), loaded.wrapped_model.scale.numpy())
    np.testing.assert_allclose(plain(x).numpy(), loaded(x).numpy(), atol=1e-6, rtol=0)


def test_class_without_config_is_deep_copied_and_saved_in_checkpoints_only(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    model = Scaled(np.linspace(0.5, 1.5, 16), name="scaled")
    compile_for_classification(model)
    model.fit(x, y, epochs=1, verbose=0)  # A compiled, trained model: its optimizer stays.
    assert not subclassed.implements_config(model)
    before = _snapshot(model)
    reference = model(x).numpy()
    spec = _spec(default=None, rules=[tf_admm.Rule(layer_type="Dense", sparsity=0.75)])
    admm = compile_for_classification(tf_admm.admm_wrap(model, spec))
    assert [w.layer.name for w in admm.admm_wrappers] == ["seq_fc", "pair0", "pair1", "out"]
    assert not {id(v) for v in admm.variables} & set(before["variables"])
    np.testing.assert_allclose(admm(x).numpy(), reference, atol=1e-6)
    admm.fit(x, y, batch_size=16, epochs=4, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.RETRAIN
    _kept_counts_exact(admm)

    plain = tf_admm.strip(admm)
    assert type(plain) is Scaled and isinstance(plain.features, keras.Sequential)
    assert isinstance(plain.pair, tuple) and plain.optimizer is None
    assert [w.shape for w in plain.weights] == [w.shape for w in model.weights]
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), admm.predict(x, verbose=0), atol=1e-6, rtol=0
    )
    _assert_untouched(model, before)
    assert model.optimizer is not None and model.compiled_loss is not None

    with pytest.raises(NotImplementedError, match="Scaled.*Expected a class with a config"):
        admm.save(str(tmp_path / "admm.keras"))
    # Checkpoints need no config: a fresh wrapping of the same model takes the state back.
    admm.save_weights(str(tmp_path / "ckpt"))
    fresh = compile_for_classification(tf_admm.admm_wrap(model, spec))
    fresh.load_weights(str(tmp_path / "ckpt"))
    assert fresh.phase is tf_admm.Phase.RETRAIN
    np.testing.assert_array_equal(fresh(x).numpy(), admm(x).numpy())


def test_plan_of_subclassed_model_reads_like_the_functional_one():
    spec = _spec(rules=[tf_admm.Rule(name="fc", sparsity=0.95)])
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Dense(64, activation="relu", name="fc")(keras.layers.Flatten()(h))
    for i in range(2):
        h = keras.layers.Dense(32, activation="relu", name=f"stack{i}")(h)
    inner = keras.layers.Dense(32, activation="relu", name="block_inner")(h)
    h = keras.layers.Add()([h, keras.layers.Dense(32, name="block_outer")(inner)])
    outputs = keras.layers.Dense(3, name="logits")(h)
    functional = keras.Model(inputs, outputs, name="small_cnn")
    expected = str(tf_admm.plan(functional, spec))
    assert str(tf_admm.plan(_built_cnn(), spec)) == expected
    assert re.search(r"^fc +Dense +kernel +288x64 .*rules\[0\] \(name='fc'\)$", expected, re.M)


class _Tiny(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = keras.layers.Dense(8, name="fc")

    def call(self, x):
        return self.fc(x)


class _CreatesInCall(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = keras.layers.Dense(8, name="fc")

    def call(self, x):
        return keras.layers.Dense(3, name="late")(self.fc(x))


class _AssignsInCall(_Tiny):
    def call(self, x):
        self.late = keras.layers.Dense(3, name="late")
        return self.late(self.fc(x))


class _Untracked(_Tiny):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.holder = types.SimpleNamespace(hidden=keras.layers.Dense(3, name="hidden"))

    def call(self, x):
        return self.holder.hidden(self.fc(x))


class _Bypasses(_Tiny):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        fc = self.fc
        self.run = lambda x: fc(x)

    def call(self, x):
        return self.run(x)


def _called(model):
    model(np.zeros((2, 6), np.float32))
    return model


def test_bad_subclassed_models_fail_naming_layer_rule_and_cause():
    spec = tf_admm.Spec(rules=[tf_admm.Rule(name="fc", sparsity=0.5)])
    with pytest.raises(ValueError, match=r"'tiny' \(_Tiny\).*never called.*model.build"):
        tf_admm.admm_wrap(_Tiny(name="tiny"), spec)
    with pytest.raises(ValueError, match="never called"):
        tf_admm.plan(_Tiny(name="tiny"), spec)
    late = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc", sparsity=0.5), tf_admm.Rule(name="late", sparsity=0.5)]
    )
    message = (
        r"_CreatesInCall.*variables \['.*late/kernel:0'.*layers 'late' \(spec rules\[1\] "
        r"\(name='late'\) would take it\).*created inside call\(\)"
    )
    with pytest.raises(ValueError, match=message):
        tf_admm.admm_wrap(_called(_CreatesInCall()), late)
    message = r"call\(\) assigned new layers 'late' \(Dense\) at 'late'.*create it in __init__"
    with pytest.raises(ValueError, match=message):
        tf_admm.admm_wrap(_called(_AssignsInCall()), late)
    with pytest.raises(ValueError, match=r"layers 'hidden'.*held where Keras does not track it"):
        tf_admm.admm_wrap(_called(_Untracked()), spec)
    message = r"layers 'fc' \(Dense, weights \['kernel'\]\) whose compressed weights do not reach"
    with pytest.raises(ValueError, match=message):
        tf_admm.admm_wrap(_called(_Bypasses()), spec)
    inputs = keras.Input((6,))
    nested = keras.Model(inputs, _called(_Tiny())(inputs))
    with pytest.raises(ValueError, match="not nested in a Sequential or Functional model"):
        tf_admm.admm_wrap(nested, spec)


def test_model_built_with_build_is_wrapped_from_its_build_shape():
    model = _Tiny(name="tiny")
    model.build((None, 6))
    admm = tf_admm.admm_wrap(model, tf_admm.Spec(rules=[tf_admm.Rule(name="fc", keep=5)]))
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(admm(x).numpy(), model(x).numpy(), atol=1e-6)
    assert json.loads(json.dumps(subclassed.wrapping_config(admm.wrapped_model)))["wrapped"]
