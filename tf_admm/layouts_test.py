"""The structured-pruning layout table answers alike for tf_keras and Keras 3 layers."""

import keras as keras3
import pytest

from tf_admm import layouts
from tf_admm.compat import keras as tf_keras

# (class name, constructor arguments, input shape, {weight name: layout} on tf_keras, on Keras 3).
LAYERS = [
    ("Dense", (4,), (None, 3), {"kernel": "dense"}, {"kernel": "dense"}),
    ("Conv1D", (4, 3), (None, 8, 2), {"kernel": "dense"}, {"kernel": "dense"}),
    ("Conv2D", (4, 3), (None, 8, 8, 2), {"kernel": "dense"}, {"kernel": "dense"}),
    ("Conv3D", (4, 2), (None, 4, 4, 4, 2), {"kernel": "dense"}, {"kernel": "dense"}),
    (
        "DepthwiseConv1D",
        (3,),
        (None, 8, 2),
        {"depthwise_kernel": "depthwise"},
        {"kernel": "depthwise"},
    ),
    (
        "DepthwiseConv2D",
        (3,),
        (None, 8, 8, 2),
        {"depthwise_kernel": "depthwise"},
        {"kernel": "depthwise"},
    ),
    (
        "SeparableConv2D",
        (4, 3),
        (None, 8, 8, 2),
        {"depthwise_kernel": "depthwise", "pointwise_kernel": "dense"},
        {"depthwise_kernel": "depthwise", "pointwise_kernel": "dense"},
    ),
    ("Conv2DTranspose", (4, 3), (None, 8, 8, 2), {}, {}),
    ("Embedding", (10, 4), (None, 5), {}, {}),
]


def _layouts(keras, name, args, shape) -> dict[str, str]:
    layer = getattr(keras.layers, name)(*args)
    layer.build(shape)
    found = {}
    for variable in layer.weights:
        weight = variable.name.split("/")[-1].split(":")[0]
        layout = layouts.structure_layout(layer, weight)
        if layout is not None:
            found[weight] = layout
    return found


@pytest.mark.parametrize(
    "name, args, shape, on_tf_keras, on_keras3", LAYERS, ids=[row[0] for row in LAYERS]
)
def test_each_keras_gives_the_layouts_of_its_own_weight_names(
    name, args, shape, on_tf_keras, on_keras3
):
    assert _layouts(tf_keras, name, args, shape) == on_tf_keras
    assert _layouts(keras3, name, args, shape) == on_keras3


def test_subclasses_inherit_and_classes_outside_keras_are_not_taken_by_name():
    class ScaledDense(keras3.layers.Dense):
        pass

    class Dense(keras3.layers.Layer):  # A user's layer that only shares the name.
        pass

    assert layouts.structure_layout(ScaledDense(2), "kernel") == "dense"
    assert layouts.structure_layout(Dense(), "kernel") is None


@pytest.mark.parametrize("keras", [tf_keras, keras3], ids=["tf_keras", "keras3"])
def test_the_bias_follows_the_filters_of_dense_and_depthwise_kernels_not_separable_ones(keras):
    depthwise = "kernel" if keras is keras3 else "depthwise_kernel"
    assert layouts.filter_bias_follows(keras.layers.Conv2D(2, 3), "kernel")
    assert layouts.filter_bias_follows(keras.layers.DepthwiseConv2D(3), depthwise)
    assert not layouts.filter_bias_follows(keras.layers.SeparableConv2D(2, 3), "pointwise_kernel")
    assert not layouts.filter_bias_follows(keras.layers.Embedding(4, 2), "embeddings")
