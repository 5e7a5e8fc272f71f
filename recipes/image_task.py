"""What an image classification recipe is made of: its task and the settings of one run.

An :class:`ImageTask` (dataset, model, preprocessing) is all that the ImageNet and CIFAR-10
recipes differ in; :class:`ImageSettings` holds everything a run of one takes (flags give them,
tests build them directly). Both are plain frozen dataclasses, read by
:mod:`recipes.image_data` and :mod:`recipes.image_recipe`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tf_admm
from tf_admm.compat import keras, tf

__all__ = ["ImageSettings", "ImageTask"]


@dataclasses.dataclass(frozen=True)
class ImageTask:
    """What one image classification recipe brings: dataset, model and preprocessing.

    Attributes:
      name: the recipe's name (``alexnet_imagenet``); names the files it writes.
      description: the model in log messages.
      tfds_name: the TFDS dataset.
      train_split: its training split.
      test_split: its evaluation split.
      num_classes: classes of the dataset.
      image_size: default square input size.
      mean: per-channel mean of the images in [0, 1], subtracted after scaling.
      std: per-channel standard deviation the images are divided by.
      build_model: ``(num_classes, input_shape, width_multiplier, batch_norm) -> model``.
      preprocess_train: ``(uint8 image, size, seed) -> image of size x size`` with augmentation.
      preprocess_test: ``(uint8 image, size) -> image of size x size``.
      help_text: how to get the dataset, ending errors about it.
      shuffle_buffer: examples in the training shuffle buffer.
      top_k: also report top-``k`` accuracy (ImageNet's top-5).
    """

    name: str
    description: str
    tfds_name: str
    train_split: str
    test_split: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build_model: Callable[..., keras.Model]
    preprocess_train: Callable[[tf.Tensor, int, int], tf.Tensor]
    preprocess_test: Callable[[tf.Tensor, int], tf.Tensor]
    help_text: str
    shuffle_buffer: int = 10_000
    top_k: int | None = None

    def metrics(self) -> list[Any]:
        """Top-1 accuracy, and top-``k`` when the task reports it (new objects every call)."""
        result: list[Any] = ["accuracy"]
        if self.top_k:
            result.append(
                keras.metrics.SparseTopKCategoricalAccuracy(
                    self.top_k, name=f"top{self.top_k}_accuracy"
                )
            )
        return result


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """What :func:`recipes.image_recipe.run_image_recipe` needs; tests build it without flags.

    Attributes:
      spec: the compression spec (update unit ``"epoch"``).
      model_dir: where checkpoints, models, logs and ``results.json`` go.
      data_dir: TFDS data directory (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      download: let TFDS download (or build from manual archives) a dataset not yet prepared.
      synthetic_data: train and test on :func:`recipes.image_data.synthetic_images` instead of
        the dataset.
      synthetic_examples: synthetic training examples (the test set gets a quarter, >= 1).
      image_size: square input size; None: the task's.
      width_multiplier: scales the model's filters and units.
      batch_norm: batch normalization in the model; None: the model's default.
      dense_weights: a ``.weights.h5`` (or TF checkpoint) of the dense model to start from
        instead of pretraining.
      pretrain_epochs: epochs of dense pretraining (skipped if cached or ``dense_weights``).
      retrain_epochs: epochs of the final phase after the scheduled rounds.
      batch_size: training and test batch size.
      learning_rate: Adam's learning rate in pretraining (and ADMM unless overridden).
      admm_learning_rate: Adam's learning rate during the scheduled rounds.
      retrain_learning_rate: Adam's learning rate at the start of the final phase.
      steps_per_epoch: an epoch (and so an ADMM round) of this many steps on repeated data
        instead of one pass over the training set.
      train_examples: train on the first this many examples of the training split.
      eval_examples: evaluate on the first this many examples of the test split.
      export: export to a verified ``.tflite`` file and measure its accuracy there.
      seed: seed of weights, data order and synthetic data.
      verbose: Keras fit verbosity.
      deterministic: TensorFlow op determinism.
    """

    spec: tf_admm.Spec
    model_dir: str
    data_dir: str | None = None
    download: bool = True
    synthetic_data: bool = False
    synthetic_examples: int = 256
    image_size: int | None = None
    width_multiplier: float = 1.0
    batch_norm: bool | None = None
    dense_weights: str | None = None
    pretrain_epochs: int = 30
    retrain_epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 1e-3
    admm_learning_rate: float | None = None
    retrain_learning_rate: float = 1e-3
    steps_per_epoch: int | None = None
    train_examples: int | None = None
    eval_examples: int | None = None
    export: bool = True
    seed: int = 0
    verbose: int = 1
    deterministic: bool = False
