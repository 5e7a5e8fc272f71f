"""Compress AlexNet on ImageNet with ADMM: pretrain, ADMM, hard prune, retrain, quantize, export.

Usage:
  # Zhang et al. 2018's per-layer pruning (21x), from a trained dense model:
  python -m recipes.alexnet_imagenet --dense_weights=alexnet.weights.h5
  # Pruning with Deep Compression's bits (8-bit convolutions, 5-bit fully connected layers):
  python -m recipes.alexnet_imagenet --config=recipes/configs/alexnet_admm_quant.json
  # The whole pipeline in seconds on generated images and a model 1/8 as wide:
  python -m recipes.alexnet_imagenet --synthetic_data --width_multiplier=0.125 \\
      --image_size=67 --pretrain_epochs=1 --retrain_epochs=1 --batch_size=32

The model is Caffe's ``bvlc_alexnet`` (:func:`recipes.models.alexnet`, 60.9M weights). ImageNet
comes through TFDS (``imagenet2012``), which needs the ILSVRC2012 archives downloaded by hand;
images are resized to 256x256 (scaled with ``--image_size``), randomly cropped to 227x227 and
flipped for training, centre-cropped for evaluation, as in Caffe. Without the dataset the recipe
says how to get it, or runs on synthetic data with ``--synthetic_data``.

Prints the per-layer table, the storage report, top-1 and top-5 accuracy of the dense and the
compressed model, the export report and the time of each phase; writes the stripped model,
``alexnet_imagenet.tflite`` and ``results.json`` to ``--model_dir``. A killed run resumes from
its backups like the LeNet-5 recipe (on ImageNet with a different data order).
"""

from __future__ import annotations

import os
from typing import Any

from absl import app

from recipes import image_flags, image_task, models
from tf_admm.compat import tf

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")

# Flag defaults. The learning rates are not tuned on ImageNet.
DEFAULTS: dict[str, Any] = {
    "config": os.path.join(CONFIG_DIR, "alexnet_admm.json"),
    "model_dir": "runs/alexnet_imagenet",
    "image_size": 227,
    "pretrain_epochs": 90,
    "batch_size": 256,
    "learning_rate": 1e-4,
    "batch_norm": False,
}

_HELP = (
    "ImageNet needs a manual download: register at https://image-net.org/download-images, put "
    "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in <data_dir>/downloads/manual and run "
    "again, and TFDS builds imagenet2012 (hours; "
    "https://www.tensorflow.org/datasets/catalog/imagenet2012). Or pass --synthetic_data to run "
    "the pipeline on generated images."
)


def _resized(image: tf.Tensor, size: int) -> tf.Tensor:
    """``image`` resized to a square of ``size * 256 / 227`` (Caffe: 256 for 227 crops)."""
    side = round(size * 256 / 227)
    return tf.image.resize(image, (side, side))


def preprocess_train(image: tf.Tensor, size: int, seed: int) -> tf.Tensor:
    """A random ``size`` x ``size`` crop of the resized image, flipped half of the time."""
    crop = tf.image.random_crop(_resized(image, size), (size, size, 3), seed=seed)
    return tf.image.random_flip_left_right(crop, seed=seed)


def preprocess_test(image: tf.Tensor, size: int) -> tf.Tensor:
    """The central ``size`` x ``size`` crop of the resized image."""
    resized = _resized(image, size)
    offset = (int(resized.shape[0]) - size) // 2
    return resized[offset : offset + size, offset : offset + size, :]


TASK = image_task.ImageTask(
    name="alexnet_imagenet",
    description="AlexNet",
    tfds_name="imagenet2012",
    train_split="train",
    test_split="validation",
    num_classes=1000,
    image_size=227,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    build_model=models.alexnet,
    preprocess_train=preprocess_train,
    preprocess_test=preprocess_test,
    help_text=_HELP,
    # Decoded 256x256 crops: 2,048 of them take about 400 MB.
    shuffle_buffer=2_048,
    top_k=5,
)

Settings = image_task.ImageSettings
RECIPE = image_flags.ImageRecipe(TASK, DEFAULTS, __name__)
settings = RECIPE.settings
run = RECIPE.run
define_flags = RECIPE.define_flags
settings_from_flags = RECIPE.settings_from_flags


if __name__ == "__main__":
    app.run(RECIPE.main())
