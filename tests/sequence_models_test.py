"""End to end beyond functional CNNs: an Embedding+LSTM text classifier, a Conv1D+GRU keyword
spotter, a Bidirectional LSTM, a two-block transformer encoder and a subclassed CNN, each
compressed >= 10x by ADMM on synthetic data, stripped, saved and loaded without custom objects
and exported to LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

import tf_admm
import tflite_export
from tf_admm import keras, registry, testing

SPARSITY = 0.92  # keep 8% of every compressed weight: 12.5x


@keras.utils.register_keras_serializable(package="sequence_models_test")
class SubclassedCNN(keras.Model):
    """A subclassed CNN: layers as attributes; registered, so it loads without custom objects."""

    def __init__(self, classes=3, **kwargs):
        super().__init__(**kwargs)
        self.classes = classes
        self.conv = keras.layers.Conv2D(8, 3, activation="relu", name="conv")
        self.pool = keras.layers.MaxPooling2D(name="pool")
        self.flat = keras.layers.Flatten(name="flatten")
        self.hidden = keras.layers.Dense(32, activation="relu", name="hidden")
        self.logits = keras.layers.Dense(classes, name="logits")

    def call(self, x):
        return self.logits(self.hidden(self.flat(self.pool(self.conv(x)))))

    def get_config(self):
        return {"classes": self.classes, "name": self.name}


def _image_data(count=96, size=12, seed=0):
    """3 classes: which third of the image's rows is brighter."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=count)
    x = rng.normal(0.0, 0.5, size=(count, size, size, 1)).astype(np.float32)
    third = size // 3
    for i, label in enumerate(labels):
        x[i, label * third : (label + 1) * third] += 1.0
    return x, labels.astype(np.int64)


def _subclassed_cnn():
    model = SubclassedCNN(name="sub_cnn")
    model(_image_data(count=2)[0])  # built by its first call: its only input signature
    return model


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
    "subclassed_cnn": (
        _subclassed_cnn,
        {"conv": ["kernel"], "hidden": ["kernel"], "logits": ["kernel"]},
    ),
}


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_compress_strip_save_and_export(name, tmp_path):
    factory, expected_weights = MODELS[name]
    keras.utils.set_random_seed(0)
    model = factory()
    x, y = _image_data() if name == "subclassed_cnn" else testing.sequence_data(model)
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
    loaded = keras.models.load_model(path)  # no custom objects: plain Keras or registered
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded(x[:8]).numpy(), plain(x[:8]).numpy(), atol=1e-6)

    report = tflite_export.export(plain, str(tmp_path / f"{name}.tflite"), batch_size=4)
    assert report.checks and all(check.passed for check in report.checks), str(report)
    assert report.skipped_weights == (), report.skipped_weights
    # Every tensor holding a compressed weight (8% nonzero) is stored in at most a third of its
    # float32 bytes (sparse or as codes), whichever operator reads it (LSTM gates, GATHER, ...).
    sparse = [w for w in report.weights if w.nonzeros <= 0.1 * w.num_weights]
    for layer_name in expected_weights:  # labels read "layer", "layer/kernel[:, 0:24]", ...
        assert any(w.label.split("/")[0].split(".")[0] == layer_name for w in sparse), layer_name
    for weight in sparse:
        assert weight.stored_bytes <= 4 * weight.num_weights / 3, (weight.label, weight.detail)
