"""Tests for tf_admm.saving."""

import os
import re
import zipfile

import numpy as np
import pytest

import tf_admm
from tf_admm import saving
from tf_admm.compat import keras


def _model():
    inputs = keras.Input((6,))
    outputs = keras.layers.Dense(3, name="fc")(keras.layers.Dense(8, name="hidden")(inputs))
    return keras.Model(inputs, outputs)


def _saved(tmp_path, model, name="model.keras"):
    path = str(tmp_path / name)
    model.save(path)
    return path


def _write(tmp_path, name, data):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_loads_a_wrapped_model_without_custom_objects(tmp_path):
    spec = tf_admm.Spec(rules=(tf_admm.Rule(name="hidden", sparsity=0.5),))
    model = tf_admm.admm_wrap(_model(), spec)
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    loaded = saving.load_model(_saved(tmp_path, model))
    assert isinstance(loaded, tf_admm.AdmmModel)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_a_keras3_file_loads_as_a_keras3_model_mid_admm(tmp_path):
    import keras as keras3  # noqa: PLC0415 (Keras 3 beside this file's tf_keras)

    inputs = keras3.Input((6,))
    hidden = keras3.layers.Dense(8, name="hidden")(inputs)
    model = keras3.Model(inputs, keras3.layers.Dense(3, name="fc")(hidden))
    spec = tf_admm.Spec(rules=(tf_admm.Rule(name="hidden", sparsity=0.5),))
    wrapped = tf_admm.admm_wrap(model, spec)
    wrapped.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    path = _saved(tmp_path, wrapped)
    assert saving.keras_generation(path) == 3
    loaded = saving.load_model(path)
    assert isinstance(loaded, tf_admm.keras3.AdmmModel)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(wrapped(x)))
    # tf_keras files, .keras or .h5, stay tf_keras.
    assert saving.keras_generation(_saved(tmp_path, _model(), "two.keras")) == 2
    assert saving.keras_generation(_saved(tmp_path, _model(), "two.h5")) == 2
    assert isinstance(saving.load_model(str(tmp_path / "two.keras")), keras.Model)


def test_truncated_keras_file_is_named_with_its_size(tmp_path):
    data = open(_saved(tmp_path, _model()), "rb").read()
    cut = _write(tmp_path, "cut.keras", data[: len(data) // 2])
    message = f"{cut}.*{len(data) // 2:,} bytes without a zip central directory.*truncated"
    with pytest.raises(saving.ModelFileError, match=message):
        saving.load_model(cut)


def test_damaged_member_is_named(tmp_path):
    path = _saved(tmp_path, _model())
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("config.json")
    start = member.header_offset + 30 + len(member.filename) + len(member.extra)
    data[start + 10 : start + 30] = b"#" * 20
    corrupt = _write(tmp_path, "corrupt.keras", bytes(data))
    with pytest.raises(saving.ModelFileError, match="member 'config.json' fails its CRC check"):
        saving.load_model(corrupt)


def test_zip_without_keras_members_is_refused(tmp_path):
    path = str(tmp_path / "other.keras")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    with pytest.raises(saving.ModelFileError, match=re.escape("missing: ['config.json'")):
        saving.load_model(path)


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("model.h5", b"PK\x03\x04 not hdf5", "Expected an HDF5 file"),
        ("model.pt", b"whatever", "Expected a .keras or .h5 file or a SavedModel directory"),
    ],
)
def test_wrong_kind_of_file(tmp_path, name, data, message):
    with pytest.raises(saving.ModelFileError, match=message):
        saving.load_model(_write(tmp_path, name, data))


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(saving.ModelFileError, match="not found"):
        saving.load_model(str(tmp_path / "nope.keras"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(saving.ModelFileError, match="saved_model.pb; none found"):
        saving.load_model(str(tmp_path / "empty"))


def test_safe_mode_refuses_lambda_layers(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    path = _saved(tmp_path, model)
    with pytest.raises(ValueError, match="(?i)lambda"):
        saving.load_model(path)
    assert saving.load_model(path, safe_mode=False)(np.ones((1, 2))).numpy().tolist() == [
        [2.0, 2.0]
    ]
