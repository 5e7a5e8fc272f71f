"""Keras 3's own weight quantization after tf-admm's pruning (issue 16, interop).

``model.quantize("int8")`` stores each Dense kernel as int8 values with a scale per output
channel. Pruned weights are exact zeros, and a symmetric scale maps zero to zero, so every
pruned weight must stay zero and every kept one nonzero in the int8 kernel.
"""

import keras
import numpy as np

import tf_admm


def _pruned_model(x, y) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden))
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="hidden", sparsity=0.75), tf_admm.Rule(name="head", keep=24)],
        update_every=1,
        update_unit="epoch",
        admm_rounds=2,
    )
    admm = tf_admm.admm_wrap(model, spec)
    admm.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    admm.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=tf_admm.callbacks())
    return tf_admm.strip(admm)


def test_keras_int8_quantization_keeps_every_pruned_zero_and_every_kept_weight(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype("float32")
    y = (x[:, :3].argmax(axis=1)).astype("int64")
    pruned = _pruned_model(x, y)
    floats = {name: np.asarray(pruned.get_layer(name).kernel) for name in ("hidden", "head")}
    assert int(np.count_nonzero(floats["hidden"])) == 128  # 25% of 16 x 32
    assert int(np.count_nonzero(floats["head"])) == 24
    expected = np.asarray(pruned(x[:64]))

    pruned.quantize("int8")
    for name, values in floats.items():
        layer = pruned.get_layer(name)
        codes = np.asarray(layer._kernel)  # noqa: SLF001 (Keras keeps the int8 codes here)
        assert codes.dtype == np.int8
        np.testing.assert_array_equal(codes != 0, values != 0)
    # Still the same network, to int8 rounding.
    np.testing.assert_allclose(
        np.asarray(pruned(x[:64])), expected, atol=0.05 * np.abs(expected).max()
    )

    # The quantized model saves and loads in plain Keras 3 with the zeros in place.
    path = str(tmp_path / "pruned_int8.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    for name, values in floats.items():
        codes = np.asarray(loaded.get_layer(name)._kernel)  # noqa: SLF001
        np.testing.assert_array_equal(codes != 0, values != 0)
