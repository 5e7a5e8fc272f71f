"""The one place that decides which Keras tf-admm builds on.

TensorFlow 2.16+ ships Keras 3 as ``tf.keras``; the model-optimization toolkit (tfmot) works only
with the legacy Keras 2 package ``tf_keras``. tf-admm builds on ``tf_keras`` so that models move
freely between tfmot and tf-admm. Setting ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported
also makes ``tf.keras`` resolve to ``tf_keras`` for code that still spells it that way.

Every module imports ``keras`` and ``tf`` from here, never directly.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
