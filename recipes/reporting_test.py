"""Tests for recipes.reporting: summaries, the export with its LiteRT accuracy, the printout."""

import numpy as np
import pytest

import tf_admm
from recipes import reporting
from tf_admm.compat import keras, tf


@pytest.fixture
def compressed():
    """A wrapped model whose rule gives fc 5 weights on 2 bits, and its stripped copy with
    exactly that (set by hand: no training needed to test the accounting)."""
    keras.utils.set_random_seed(0)
    dense = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, name="fc"), keras.layers.Dense(3, name="head")]
    )
    admm = tf_admm.admm_wrap(dense, tf_admm.Spec(rules=[tf_admm.Rule(name="fc", keep=5, bits=2)]))
    pruned = tf_admm.strip(admm)
    kernel = np.zeros((6, 4), np.float32)
    kernel.flat[[0, 3, 7, 11, 20]] = [0.5, -0.5, 1.0, 0.5, -1.0]
    pruned.get_layer("fc").kernel.assign(kernel)
    return admm, pruned


def test_configured_bits_are_the_specs_bits_per_quantized_layer(compressed):
    admm, _ = compressed
    assert reporting.configured_bits(admm) == {"fc": 2}


def test_summary_counts_nonzeros_and_codes_values_with_the_configured_bits(compressed):
    admm, pruned = compressed
    table, storage, summary = reporting.summarize(pruned, admm)
    assert [(r.layer, r.weights, r.nonzeros) for r in table] == [("fc", 24, 5), ("head", 12, 12)]
    assert (summary["weights"], summary["nonzeros"]) == (36, 17)
    assert summary["pruning_ratio"] == pytest.approx(36 / 17)
    assert summary["layers"] == [r.to_dict() for r in table]
    assert summary["storage"] == storage.to_dict()
    bits = {layer["name"]: layer["bits_per_value"] for layer in summary["storage"]["layers"]}
    assert bits == {"fc": 2, "head": 32}


def test_export_measures_the_files_accuracy_in_litert(compressed, tmp_path):
    _, pruned = compressed
    rng = np.random.default_rng(1)
    images = rng.normal(size=(20, 6)).astype(np.float32)
    labels = rng.integers(0, 3, size=20)
    test_ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    path = str(tmp_path / "model.tflite")
    results = reporting.export_tflite(pruned, test_ds, path, top_k=2)
    logits = pruned.predict(images, verbose=0)
    assert results["accuracy"] == np.mean(np.argmax(logits, axis=-1) == labels)
    top_two = np.argsort(-logits, axis=-1)[:, :2]
    assert results["top2_accuracy"] == np.mean(np.any(top_two == labels[:, None], axis=-1))
    with open(path, "rb") as f:
        assert len(f.read()) == results["file_bytes"]
    assert results["path"] == path and results["activations"] == "float32"
    assert results["ratio_vs_float"] == results["report"]["compression_ratio"]


def test_report_prints_tables_accuracy_export_and_seconds(compressed, capsys):
    admm, pruned = compressed
    table, storage, _ = reporting.summarize(pruned, admm)
    lite = {
        "path": "m.tflite",
        "file_bytes": 1234,
        "ratio_vs_float": 2.5,
        "float_file_bytes": 3085,
        "gzip_bytes": 1000,
        "accuracy": 0.5,
    }
    results = {"tflite": lite, "seconds": {"pretrain": 1.5, "admm": 2.0}, "model": "m.keras"}
    reporting.print_report(table, storage, results, "Test accuracy: 50%")
    printed = capsys.readouterr().out
    assert "Storage (values coded as trained" in printed
    assert "\nTest accuracy: 50%\n" in printed
    assert (
        "TFLite: m.tflite: 1,234 B (2.5x smaller than the dense float file of 3,085 B; gzip "
        "1,000 B); test accuracy in LiteRT 50.00%"
    ) in printed
    assert "TFLite full-int8" not in printed
    assert "Seconds: pretrain 1.5, admm 2.0\n" in printed
    assert printed.endswith("Stripped model: m.keras\n")
