"""bench.combined_measure: kernels read back from TFLite's layout and the storage of a converted
int8 file."""

import numpy as np
import pytest

from bench import combined_measure
from tf_admm.compat import keras, tf
from tflite_export.keras_weights import SUPPORTED_LAYERS


def _dense_with(kernel: np.ndarray) -> tuple[keras.Model, keras.layers.Layer]:
    inputs = keras.Input((kernel.shape[0],))
    layer = keras.layers.Dense(kernel.shape[1], name="fc")
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([kernel, np.zeros(kernel.shape[1], np.float32)])
    return model, layer


@pytest.mark.parametrize(
    "layer",
    [keras.layers.Dense(7), keras.layers.Conv2D(6, (3, 2))],
    ids=["dense", "conv2d"],
)
def test_keras_layout_inverts_the_tflite_layout(layer):
    layer.build((None, 5, 4, 3) if isinstance(layer, keras.layers.Conv2D) else (None, 5))
    kernel = np.arange(layer.kernel.shape.num_elements()).reshape(layer.kernel.shape)
    _, to_tflite = SUPPORTED_LAYERS[type(layer)]
    np.testing.assert_array_equal(combined_measure._keras_layout(layer, to_tflite(kernel)), kernel)
    assert combined_measure._keras_layout(layer, np.zeros((2, 2))) is None


def test_storage_from_tflite_counts_the_int8_codes_of_the_file():
    rng = np.random.default_rng(0)
    # 64 x 32 (enough weights for the converter to quantize them), 90% zeros, values on
    # {+-0.5, +-1}, every output channel reaching 1.0 so that all channels share their codes.
    kernel = rng.choice([-1.0, -0.5, 0.5, 1.0], size=(64, 32)).astype(np.float32)
    kernel[rng.random((64, 32)) < 0.9] = 0.0
    kernel[0, :] = 1.0
    model, _ = _dense_with(kernel)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    report, distinct = combined_measure.storage_from_tflite(converter.convert(), model, ["fc"])
    (layer,) = report.layers
    assert layer.num_nonzeros == np.count_nonzero(kernel)
    assert distinct == {"fc": len(np.unique(kernel[kernel != 0]))} == {"fc": 4}
    assert layer.bits_per_value == 2
    # The 4 codes at 8 bits, and one 32-bit scale per tensor or per channel.
    assert (layer.codebook_bits - 4 * 8) in (32, 32 * 32)
    with pytest.raises(ValueError, match="Expected one weight tensor"):
        other, _ = _dense_with(np.ones((8, 3), np.float32))
        combined_measure.storage_from_tflite(converter.convert(), other, ["fc"])
