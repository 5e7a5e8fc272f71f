"""The image recipes' data: a TFDS dataset, or synthetic images, as standardized batches.

:class:`ImageData` gives one run its test batches and its training batches (a function of the
optimizer, whose step count keys the data order so that a resumed run sees the same batches).
The dataset comes through TFDS, prepared by :func:`prepare_tfds` or refused with
:class:`DatasetUnavailableError` saying how to get it; with ``synthetic_data`` it is
:func:`synthetic_images`: seeded random images of the model's input shape whose mean colour
depends on the class, generated in the process, so the whole pipeline runs in seconds on tiny
models with no dataset at hand.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from absl import logging

from recipes import data
from recipes.image_task import ImageSettings, ImageTask
from tf_admm.compat import keras, tf

__all__ = ["DatasetUnavailableError", "ImageData", "prepare_tfds", "synthetic_images"]


class DatasetUnavailableError(RuntimeError):
    """The dataset a recipe needs is not prepared and cannot be prepared here."""


def prepare_tfds(name: str, data_dir: str | None, *, download: bool, help_text: str) -> str:
    """Makes TFDS dataset ``name`` ready in ``data_dir`` (TFDS' default if None) or says why not.

    A prepared dataset is used as it is. Otherwise, with ``download``, TFDS' own
    ``download_and_prepare`` runs: it downloads (needs internet) or, for datasets with a manual
    download such as ``imagenet2012``, builds from the archives in ``<data_dir>/downloads/manual``.

    Returns:
      The data directory, for ``tfds.load``.

    Raises:
      DatasetUnavailableError: when the dataset is not prepared and cannot be; the message
        ends with ``help_text``.
    """
    import tensorflow_datasets as tfds

    data_dir = os.fspath(Path(data_dir).expanduser()) if data_dir else data.default_data_dir()
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return data_dir
    if not download:
        raise DatasetUnavailableError(
            f"Expected TFDS {name} prepared in {data_dir}; received: not prepared, and "
            f"downloading is off. {help_text}"
        )
    logging.info("Preparing TFDS %s in %s (a download needs internet)", name, data_dir)
    try:
        builder.download_and_prepare()
    except Exception as error:  # Network, missing manual files, disk: all end the same way.
        raise DatasetUnavailableError(
            f"Expected TFDS {name} prepared in {data_dir}; received: {type(error).__name__}: "
            f"{error}. {help_text}"
        ) from error
    return data_dir


def synthetic_images(
    count: int, image_size: int, num_classes: int, seed: int, *, salt: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random uint8 images whose mean colour depends on the class, and their labels.

    Every class has a colour drawn from ``seed``; an image is half its class colour, half
    uniform noise drawn from ``(seed, salt)``. Different ``salt`` values give different samples
    of the same classes (a training and a test set).

    Returns:
      ``images`` of shape ``(count, image_size, image_size, 3)`` and int64 ``labels``.
    """
    colours = np.random.default_rng(seed).integers(0, 256, size=(num_classes, 3))
    rng = np.random.default_rng([seed, salt + 1])
    labels = rng.integers(0, num_classes, size=count)
    noise = rng.integers(0, 256, size=(count, image_size, image_size, 3))
    images = (colours[labels][:, None, None, :] + noise) // 2
    return images.astype(np.uint8), labels.astype(np.int64)


def _standardizer(task: ImageTask):
    mean = tf.constant(task.mean, tf.float32)
    std = tf.constant(task.std, tf.float32)

    def standardize(images, labels):
        return (tf.cast(images, tf.float32) / 255.0 - mean) / std, labels

    return standardize


def _split(split: str, count: int | None) -> str:
    return f"{split}[:{count}]" if count else split


class ImageData:
    """Training batches (a function of the optimizer) and test batches for one run."""

    def __init__(self, task: ImageTask, settings: ImageSettings, image_size: int):
        self._task, self._settings, self._size = task, settings, image_size
        self._standardize = _standardizer(task)
        if settings.synthetic_data:
            count = settings.synthetic_examples
            self._arrays = tuple(
                tf.convert_to_tensor(a)
                for a in synthetic_images(count, image_size, task.num_classes, settings.seed)
            )
            test_images, test_labels = synthetic_images(
                max(1, count // 4), image_size, task.num_classes, settings.seed, salt=1
            )
            self.test = (
                tf.data.Dataset.from_tensor_slices((test_images, test_labels))
                .batch(settings.batch_size)
                .map(self._standardize)
                .cache()
            )
            self.source = "synthetic"
        else:
            import tensorflow_datasets as tfds

            self._data_dir = prepare_tfds(
                task.tfds_name,
                settings.data_dir,
                download=settings.download,
                help_text=task.help_text,
            )
            test = tfds.load(
                task.tfds_name,
                split=_split(task.test_split, settings.eval_examples),
                data_dir=self._data_dir,
                as_supervised=True,
                download=False,
            )
            self.test = (
                test.map(
                    lambda image, label: (task.preprocess_test(image, image_size), label),
                    num_parallel_calls=tf.data.AUTOTUNE,
                )
                .batch(settings.batch_size)
                .map(self._standardize)
                .prefetch(tf.data.AUTOTUNE)
            )
            self.source = f"tfds:{task.tfds_name}"

    def train(self, optimizer: keras.optimizers.Optimizer, salt: int) -> tf.data.Dataset:
        """Training batches; ``salt`` gives pretraining and ADMM different orders."""
        settings, task, size = self._settings, self._task, self._size
        seed = settings.seed * 2 + salt
        if settings.synthetic_data:
            images, labels = self._arrays
            steps = -(-int(images.shape[0]) // settings.batch_size)
            # Ordered by (seed, epoch) alone, so a resumed run sees the same batches.
            train = data.epoch_keyed_batches(
                images,
                labels,
                settings.batch_size,
                seed=seed,
                epoch=lambda: optimizer.iterations // (settings.steps_per_epoch or steps),
            )
            mean = tf.constant(task.mean, tf.float32)
            std = tf.constant(task.std, tf.float32)
            train = train.map(lambda x, y: ((x - mean) / std, y))
            if settings.steps_per_epoch:
                train = train.repeat()
        else:
            import tensorflow_datasets as tfds

            train = tfds.load(
                task.tfds_name,
                split=_split(task.train_split, settings.train_examples),
                data_dir=self._data_dir,
                as_supervised=True,
                download=False,
                shuffle_files=True,
                read_config=tfds.ReadConfig(shuffle_seed=seed),
            )
            train = train.shuffle(task.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
            if settings.steps_per_epoch:
                # Before batching, so that batches stay full across passes.
                train = train.repeat()
            train = train.map(
                lambda image, label: (task.preprocess_train(image, size, seed), label),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
            train = train.batch(settings.batch_size).map(self._standardize)
        return train.prefetch(tf.data.AUTOTUNE)
