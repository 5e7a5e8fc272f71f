"""Tests for per-layer compression tables and the model-level storage report."""

import numpy as np
import pytest

import tf_admm
from tf_admm import keras, report, storage
from tf_admm.compat import keras3


def _model():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc2")(hidden))


def test_compression_table_counts_nonzeros_of_each_kernel():
    model = _model()
    kernel = np.zeros((8, 16), np.float32)
    kernel[0, :5] = 1.0
    model.get_layer("fc1").kernel.assign(kernel)
    rows = {r.layer: r for r in report.compression_table(model)}
    assert (rows["fc1"].weights, rows["fc1"].nonzeros) == (128, 5)
    assert rows["fc1"].ratio == pytest.approx(128 / 5)
    assert rows["fc2"].nonzeros == 64
    text = report.format_compression_table(list(rows.values()))
    assert "total" in text and "192" in text and "69" in text


@pytest.mark.parametrize(
    "values,expected",
    [
        (np.array([0.0, 0.5, -1.0, 1.5, 2.0, -2.0]), (3, 32)),  # Uniform: one 32-bit step.
        (np.array([0.0, 0.25, -0.5, 1.0, 2.0]), (2, 32)),  # Power-of-two are multiples too.
        (np.array([0.1234567, 0.3711, -0.9137, 0.1234567]), (2, 96)),  # Free: a float table.
        (np.array([2.0, -3.0, 5.0, 0.0]) * np.float32(0.013), (2, 32)),  # {2q, -3q, 5q}: step q.
        (np.random.default_rng(0).normal(size=300), (32, 0)),  # Plain floats.
    ],
)
def test_value_coding_reads_levels_off_the_values(values, expected):
    assert report.value_coding(values) == expected


def test_storage_report_picks_dense_or_sparse_per_layer_and_configured_bits():
    model = _model()
    sparse = np.zeros((8, 16), np.float32)
    sparse[::4, ::4] = 0.5  # 8 of 128, all on one level.
    model.get_layer("fc1").kernel.assign(sparse)
    result = report.storage_report(model, bits={"fc1": 2})
    fc1, fc2 = result.layers
    assert fc1.sparse and fc1.bits_per_value == 2 and fc1.num_nonzeros == 8
    assert not fc2.sparse and fc2.bits_per_value == 32
    expected = storage.layer_storage("fc1", weights=sparse, bits_per_value=2, codebook_bits=32)
    assert fc1.total_bits == expected.total_bits


def test_storage_report_reads_a_wrapped_model_through_its_effective_weights():
    wrapped = tf_admm.admm_wrap(_model(), tf_admm.Spec(rules=[tf_admm.Rule(name="fc1", ratio=8)]))
    wrapped.admm_wrappers[0].hard_project()
    rows = {r.layer: r for r in report.compression_table(wrapped)}
    assert rows["fc1"].nonzeros == 16


def test_keras3_models_wrapped_or_stripped_are_read_through_the_keras3_registry():
    inputs = keras3.Input((8,))
    hidden = keras3.layers.Dense(16, name="fc1")(inputs)
    model = keras3.Model(inputs, keras3.layers.Dense(4, name="fc2")(hidden))
    spec = tf_admm.Spec(rules=[tf_admm.Rule(name="fc1", sparsity=0.75)], admm_rounds=1)
    admm = tf_admm.admm_wrap(model, spec)
    for wrapper in admm.admm_wrappers:
        wrapper.hard_project()
    expected = {"fc1": (128, 32), "fc2": (64, 64)}
    for found in (admm, tf_admm.strip(admm)):
        rows = {r.layer: (r.weights, r.nonzeros) for r in report.compression_table(found)}
        assert rows == expected
    layers = {la.name: la for la in report.storage_report(tf_admm.strip(admm)).layers}
    assert layers["fc1"].num_nonzeros == 32 and layers["fc2"].num_nonzeros == 64
