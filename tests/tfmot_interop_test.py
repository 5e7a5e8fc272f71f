"""tf-admm and the TensorFlow Model Optimization Toolkit hand models to each other."""

import numpy as np
import tensorflow_model_optimization as tfmot

import tf_admm
from tf_admm import keras
from tf_admm.testing import compile_for_classification, small_data


def _dense_only(name="mlp"):
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(32, activation="relu", name="fc1")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc2")(h), name=name)


def test_admm_pruned_model_keeps_every_zero_through_tfmot_prune_preserving_qat():
    x, y = small_data(64)
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc1", sparsity=0.9), tf_admm.Rule(name="fc2", sparsity=0.5)],
        admm_rounds=2,
        update_every=2,
        update_unit="step",
    )
    admm = compile_for_classification(tf_admm.admm_wrap(_dense_only(), spec))
    admm.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=tf_admm.callbacks())
    pruned = tf_admm.strip(admm)
    zeros = {n: pruned.get_layer(n).kernel.numpy() == 0 for n in ("fc1", "fc2")}
    assert (~zeros["fc1"]).sum() == tf_admm.projections.keep_count(zeros["fc1"].size, 0.9)
    annotated = tfmot.quantization.keras.quantize_annotate_model(pruned)
    qat = tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    )
    compile_for_classification(qat, learning_rate=1e-2)
    qat.fit(x, y, batch_size=16, epochs=2, verbose=0)
    for name, was_zero in zeros.items():
        # QuantizeWrapper swaps the layer's kernel attribute for a tensor; read the variable.
        kernel = next(w for w in qat.weights if w.name == f"{name}/kernel:0").numpy()
        np.testing.assert_array_equal(kernel[was_zero], 0.0)
        assert np.any(kernel[~was_zero] != pruned.get_layer(name).kernel.numpy()[~was_zero])


def test_tfmot_pruned_model_is_quantized_by_admm_keeping_its_zeros():
    x, y = small_data(64)
    model = compile_for_classification(_dense_only())
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.8, begin_step=0, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    compile_for_classification(pruned)
    pruned.fit(
        x,
        y,
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    start = tfmot.sparsity.keras.strip_pruning(pruned)
    zeros = start.get_layer("fc1").kernel.numpy() == 0
    assert 0.75 < zeros.mean() < 0.85
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc1", bits=2)],
        update_every=2,
        update_unit="step",
        quant_admm_rounds=2,
        quant_fractions=(0.5, 1.0),
    )
    admm = compile_for_classification(tf_admm.admm_wrap(start, spec))
    assert admm.phase is tf_admm.Phase.QUANT_ADMM
    admm.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.QUANT_RETRAIN
    kernel = tf_admm.strip(admm).get_layer("fc1").kernel.numpy()
    np.testing.assert_array_equal(kernel == 0, zeros)
    assert len(np.unique(kernel[kernel != 0])) <= 4
