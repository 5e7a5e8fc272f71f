"""End to end beyond CNNs: an Embedding+LSTM text classifier, a Conv1D+GRU keyword spotter, a
Bidirectional LSTM and a two-block transformer encoder, each compressed >= 10x by ADMM on
synthetic data, stripped, saved and loaded without custom objects and exported to LiteRT."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow.lite.python.convert_phase import ConverterError

import tf_admm
import tflite_export
from tf_admm import keras, registry, testing

SPARSITY = 0.92  # keep 8% of every compressed weight: 12.5x

MODELS = {
    "text_classifier": (
        testing.text_classifier,
        {
            "embedding": ["embeddings"],
            "lstm": ["cell.kernel", "cell.recurrent_kernel"],
            "head": ["kernel"],
        },
    ),
    "keyword_spotter": (
        testing.keyword_spotter,
        {"conv": ["kernel"], "gru": ["cell.kernel", "cell.recurrent_kernel"], "head": ["kernel"]},
    ),
    "bilstm_classifier": (
        testing.bilstm_classifier,
        {
            "bilstm": [
                "forward_layer.cell.kernel",
                "forward_layer.cell.recurrent_kernel",
                "backward_layer.cell.kernel",
                "backward_layer.cell.recurrent_kernel",
            ],
            "head": ["kernel"],
        },
    ),
    "transformer_encoder": (
        testing.transformer_encoder,
        {
            **{
                f"attention{b}": [
                    "_query_dense.kernel",
                    "_key_dense.kernel",
                    "_value_dense.kernel",
                    "_output_dense.kernel",
                ]
                for b in range(2)
            },
            "embed": ["kernel"],
            **{f"ffn{b}{part}": ["kernel"] for b in range(2) for part in "ab"},
            "head": ["kernel"],
        },
    ),
}


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# Until the exporter gives RNN models a static batch, the converter refuses their TensorList ops
# ('tf.TensorListReserve' op requires element_shape to be static): only that error is expected,
# and strictly, so the marks must go when the exporter handles them.
_CONVERTER_REFUSES_RNN = pytest.mark.xfail(
    strict=True,
    raises=ConverterError,
    reason="the converter's TensorList lowering needs a static batch (issue 14, item 4)",
)
_CASES = [
    pytest.param(name, marks=() if name == "transformer_encoder" else _CONVERTER_REFUSES_RNN)
    for name in sorted(MODELS)
]


@pytest.mark.parametrize("name", _CASES)
def test_compress_strip_save_and_export(name, tmp_path):
    factory, expected_weights = MODELS[name]
    keras.utils.set_random_seed(0)
    model = factory()
    x, y = testing.sequence_data(model)
    model.compile(keras.optimizers.Adam(1e-2), _loss())
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)

    spec = tf_admm.Spec(
        default=tf_admm.Rule(sparsity=SPARSITY, rho=0.01), admm_rounds=2, retrain_rounds=1
    )
    admm = tf_admm.admm_wrap(model, spec)
    planned = {w.layer.name: [s.target.weight for s in w.slots] for w in admm.admm_wrappers}
    assert planned == expected_weights
    admm.compile(keras.optimizers.Adam(1e-2), _loss())
    history = admm.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=tf_admm.callbacks())
    assert np.isfinite(history.history["loss"]).all()

    plain = tf_admm.strip(admm)
    np.testing.assert_allclose(plain(x[:8]).numpy(), admm(x[:8]).numpy(), atol=1e-5)
    total = kept = 0
    for layer_name, paths in expected_weights.items():
        for path in paths:
            value = registry.variable(plain.get_layer(layer_name), path).numpy()
            assert np.count_nonzero(value) == tf_admm.projections.keep_count(value.size, SPARSITY)
            total, kept = total + value.size, kept + np.count_nonzero(value)
    assert total / kept >= 10

    path = str(tmp_path / f"{name}.keras")
    plain.save(path)
    loaded = keras.models.load_model(path)  # no custom objects: a plain Keras model
    np.testing.assert_allclose(loaded(x[:8]).numpy(), plain(x[:8]).numpy(), atol=1e-6)

    report = tflite_export.export(plain, str(tmp_path / f"{name}.tflite"), batch_size=4)
    assert report.checks and all(check.passed for check in report.checks), str(report)
