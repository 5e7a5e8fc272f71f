"""Compress VGG-16 on CIFAR-10 with ADMM: pretrain, ADMM, hard prune, retrain, export.

Usage:
  python -m recipes.vgg16_cifar10           # 23.4x pruning, per-layer split in the config
  # The whole pipeline in seconds on generated images and a model 1/16 as wide:
  python -m recipes.vgg16_cifar10 --synthetic_data --width_multiplier=0.0625 \\
      --pretrain_epochs=1 --retrain_epochs=1 --batch_size=32

The model is the CIFAR-10 variant of VGG-16 (:func:`recipes.models.vgg16`: VGG's 13
convolutions with batch normalization, fc 512-512-10). Ye et al. 2018 report 23.4x pruning of
VGG-16 on ImageNet without per-layer figures; ``configs/vgg16_admm.json`` reaches the same
overall ratio on this model with a per-layer split of its own (see ``recipes/README.md``).
CIFAR-10 comes through TFDS (``cifar10``), which downloads it (needs internet) unless it is
already prepared in ``--data_dir``; without it the recipe says so, or runs on synthetic data with
``--synthetic_data``. Training images are padded by 4 pixels, randomly cropped and flipped.

Prints the per-layer table, the storage report, test accuracy of the dense and the compressed
model, the export report and the time of each phase; writes the stripped model,
``vgg16_cifar10.tflite`` and ``results.json`` to ``--model_dir``.
"""

from __future__ import annotations

import os
from typing import Any

from absl import app

from recipes import image_flags, image_task, models
from tf_admm.compat import tf

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")

# Flag defaults. The learning rate and epochs are not tuned.
DEFAULTS: dict[str, Any] = {
    "config": os.path.join(CONFIG_DIR, "vgg16_admm.json"),
    "model_dir": "runs/vgg16_cifar10",
    "image_size": 32,
    "pretrain_epochs": 60,
    "batch_size": 128,
    "learning_rate": 1e-3,
    "batch_norm": True,
}

_HELP = (
    "TFDS downloads CIFAR-10 from www.cs.toronto.edu, which needs internet. Without it, run "
    "`tfds build cifar10 --data_dir=DIR` on a machine with internet, copy DIR here and pass "
    "--data_dir=DIR; or pass --synthetic_data to run the pipeline on generated images."
)


def preprocess_train(image: tf.Tensor, size: int, seed: int) -> tf.Tensor:
    """Pads by ``size / 8`` pixels (4 at 32x32), crops ``size`` x ``size`` at random, flips."""
    image = preprocess_test(image, size)
    pad = size // 8
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.random_crop(image, (size, size, 3), seed=seed)
    return tf.image.random_flip_left_right(image, seed=seed)


def preprocess_test(image: tf.Tensor, size: int) -> tf.Tensor:
    """The image as float32, resized if ``size`` is not CIFAR's 32."""
    image = tf.cast(image, tf.float32)
    return image if size == 32 else tf.image.resize(image, (size, size))


TASK = image_task.ImageTask(
    name="vgg16_cifar10",
    description="VGG-16",
    tfds_name="cifar10",
    train_split="train",
    test_split="test",
    num_classes=10,
    image_size=32,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    build_model=models.vgg16,
    preprocess_train=preprocess_train,
    preprocess_test=preprocess_test,
    help_text=_HELP,
)

Settings = image_task.ImageSettings
RECIPE = image_flags.ImageRecipe(TASK, DEFAULTS, __name__)
settings = RECIPE.settings
run = RECIPE.run
define_flags = RECIPE.define_flags
settings_from_flags = RECIPE.settings_from_flags


if __name__ == "__main__":
    app.run(RECIPE.main())
