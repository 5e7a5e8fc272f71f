"""Tests for copying subclassed models: input signatures, config copies and deep copies."""

import numpy as np
import pytest

from tf_admm import keras, subclassed_copy, tf


@keras.utils.register_keras_serializable(package="subclassed_copy_test")
class Configured(keras.Model):
    """A class with a config: copied by from_config."""

    def __init__(self, width=8, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.hidden = keras.layers.Dense(width, activation="relu", name="hidden")
        self.head = [keras.layers.Dense(3, name="head")]

    def call(self, x):
        return self.head[0](self.hidden(x))

    def get_config(self):
        return {"width": self.width, "name": self.name}


class Unconfigured(keras.Model):
    """No config (a NumPy argument) and a nested Sequential: deep-copied."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = np.asarray(scale, np.float32)
        self.features = keras.Sequential([keras.layers.Dense(4, name="seq_fc")], name="features")

    def call(self, x):
        return self.features(x) * self.scale


class BadConfig(Configured):
    """Its config forgets the width: from_config builds other layers."""

    def get_config(self):
        return {"name": self.name}


X = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)


def _variable_ids(model):
    return {id(v) for v in model.variables}


def test_signature_comes_from_the_first_call_else_from_build():
    called = Configured(name="called")
    called(X)
    spec = subclassed_copy.input_signature(called)
    assert spec.shape.as_list() == [None, 6] and spec.dtype == tf.float32
    built = Configured(name="built")
    built.build((None, 6))
    assert subclassed_copy.input_signature(built).shape.as_list() == [None, 6]
    (symbolic,) = [subclassed_copy.symbolic_inputs(spec)]
    assert symbolic.shape.as_list() == [None, 6]
    with pytest.raises(ValueError, match="never called or built"):
        subclassed_copy.input_signature(Configured(name="fresh"))


def test_config_copy_keeps_names_weights_and_outputs_and_shares_nothing():
    model = Configured(width=8, name="original")
    model(X)
    assert subclassed_copy.implements_config(model)
    copy = subclassed_copy.copy_model(model, subclassed_copy.input_signature(model))
    assert type(copy) is Configured and copy.name == "original"
    assert [layer.name for layer in copy.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(copy(X).numpy(), model(X).numpy(), atol=1e-6)
    assert not _variable_ids(copy) & _variable_ids(model)


def test_class_without_config_is_deep_copied_without_shared_variables():
    model = Unconfigured(np.full(4, 2.0), name="scaled")
    model(X)
    assert not subclassed_copy.implements_config(model)
    copy = subclassed_copy.copy_model(model, subclassed_copy.input_signature(model))
    np.testing.assert_allclose(copy(X).numpy(), model(X).numpy(), atol=1e-6)
    assert not _variable_ids(copy) & _variable_ids(model)
    copy.features.layers[0].kernel.assign_add(tf.ones_like(copy.features.layers[0].kernel))
    assert not np.allclose(copy(X).numpy(), model(X).numpy())


def test_config_that_rebuilds_other_layers_is_refused_naming_the_fix():
    model = BadConfig(width=5, name="bad")
    model(X)
    with pytest.raises(ValueError, match=r"Model 'bad' \(BadConfig\): Expected .*get_config\(\)"):
        subclassed_copy.copy_model(model, subclassed_copy.input_signature(model))
