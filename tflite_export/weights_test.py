"""Matching Keras weights to the tensors of the converted file."""

import numpy as np
import pytest

from tf_admm.compat import keras
from tflite_export import exporter, flatbuffer, keras_weights, weights
from tflite_export.testing import LAYER_KINDS, small_model


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_each_supported_kernel_is_found_in_its_tflite_layout(kind):
    model = small_model(kind)
    parsed = flatbuffer.read_model(exporter.convert_float(model))
    found = {w.layer: w for w in weights.find_weight_tensors(parsed, model)}
    assert set(found) == {"target", "head"}
    for name, weight in found.items():
        layer = model.get_layer(name)
        attribute, to_tflite = keras_weights.SUPPORTED_LAYERS[type(layer)]
        assert weight.weight == attribute and weight.layer_type == type(layer).__name__
        np.testing.assert_array_equal(
            flatbuffer.decode_tensor(parsed, weight.subgraph, weight.tensor),
            to_tflite(getattr(layer, attribute).numpy()),
        )
    expected_axis = {"dense": 0, "conv2d": 0, "depthwise": 3}[kind]
    assert found["target"].channel_axis == expected_axis


def test_identical_kernels_are_told_apart_by_name():
    inputs = keras.Input((4,))
    left = keras.layers.Dense(3, kernel_initializer="ones", name="left")(inputs)
    right = keras.layers.Dense(3, kernel_initializer="ones", name="right")(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()([left, right]))
    parsed = flatbuffer.read_model(exporter.convert_float(model))
    found = weights.find_weight_tensors(parsed, model)
    for weight in found:
        if weight.layer is not None:
            assert f"/{weight.layer}/" in weight.tensor_name
    assert {w.layer for w in found} <= {"left", "right", None}


def test_a_kernel_changed_after_conversion_is_left_unmatched():
    model = small_model("dense")
    parsed = flatbuffer.read_model(exporter.convert_float(model))
    kernel = model.get_layer("target").kernel
    kernel.assign(kernel.numpy() + 1.0)
    found = {w.tensor_name: w for w in weights.find_weight_tensors(parsed, model)}
    unmatched = [w for w in found.values() if w.layer is None]
    assert len(unmatched) == 1 and unmatched[0].label == unmatched[0].tensor_name


def test_nested_models_are_flattened():
    inner = small_model("dense")
    inputs = keras.Input((24,))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="top")(inner(inputs)))
    assert [layer.name for layer in keras_weights.keras_layers(outer)][-3:] == [
        "target",
        "head",
        "top",
    ]
