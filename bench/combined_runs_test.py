"""bench.combined_runs: tfmot's centroid initialisation, tried on a copy of each layer."""

import numpy as np

from bench import combined_runs
from tf_admm.compat import keras


def _built_dense(kernel: np.ndarray) -> keras.layers.Layer:
    layer = keras.layers.Dense(kernel.shape[1], name="fc")
    layer(keras.Input((kernel.shape[0],)))  # Connected: the probe reads its input shape.
    layer.set_weights([kernel, np.zeros(kernel.shape[1], np.float32)])
    return layer


def test_kmeans_plus_plus_failure_on_few_nonzeros_falls_back_to_linear():
    kernel = np.zeros((20, 10), np.float32)
    kernel[0, 0], kernel[3, 4] = 0.5, -0.2  # One weight on each side of the zero centroid.
    layer = _built_dense(kernel)
    used, failed = combined_runs._working_init(layer, 9, "kmeans_plus_plus")
    assert used == "linear" and failed.startswith("kmeans_plus_plus: ")
    # Enough nonzeros on both sides: k-means++ works and nothing is recorded as failed.
    kernel = np.random.default_rng(0).normal(size=(20, 10)).astype(np.float32)
    layer = _built_dense(kernel)
    assert combined_runs._working_init(layer, 9, "kmeans_plus_plus") == ("kmeans_plus_plus", "")
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel)  # Probed on a copy.
