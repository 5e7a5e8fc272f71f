"""Knowledge distillation from the dense model while it is compressed (Hinton et al. 2015).

The compressed network learns from the labels and from the dense network it started as: the
loss is ``(1 - weight) * CE(label, student) + weight * T^2 * KL(teacher_T || student_T)``,
where ``x_T`` is ``softmax(logits / T)``. The ``T^2`` keeps the soft term's gradients on the
scale of the hard term's whatever the temperature.

The teacher's logits are computed once, before compression, for every training example, and
travel through the input pipeline with the labels: a target row is
``[label, teacher logit 0, ..., teacher logit C-1]``. The training loop, the ADMM train step
and the data order are untouched; only the loss and the accuracy metric read the rows.
"""

from __future__ import annotations

import types
from types import ModuleType
from typing import Any

from tf_admm.compat import keras, keras3, tf

__all__ = [
    "DistillationLoss",
    "Keras3DistillationLoss",
    "Keras3LabelAccuracy",
    "LabelAccuracy",
    "check_settings",
    "loss_and_metrics",
    "targets",
]


def check_settings(weight: float, temperature: float) -> None:
    """Raises ValueError unless 0 <= weight <= 1 and temperature > 0."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distillation weight: expected a number in [0, 1], got {weight!r}")
    if not temperature > 0.0:
        raise ValueError(f"distillation temperature: expected a number > 0, got {temperature!r}")


def targets(
    teacher: keras.Model,
    images: tf.Tensor,
    labels: tf.Tensor,
    batch_size: int = 1024,
    divisor: float = 255.0,
) -> tf.Tensor:
    """Rows ``[label, teacher logits...]`` (float32) for ``images`` divided by ``divisor``.

    Args:
      teacher: a model that maps images in [0, 1] to logits.
      images: all training images (uint8 by default), first axis the examples.
      labels: their integer labels.
      batch_size: examples per forward pass.
      divisor: what brings ``images`` to [0, 1] (255 for uint8; 1 for images that are
        floats in [0, 1] already).

    Returns:
      A ``[examples, 1 + classes]`` float32 tensor.
    """
    logits = teacher.predict(
        tf.data.Dataset.from_tensor_slices(images)
        .batch(batch_size)
        .map(lambda x: tf.cast(x, tf.float32) / divisor),
        verbose=0,
    )
    labels = tf.cast(tf.reshape(labels, [-1, 1]), tf.float32)
    return tf.concat([labels, tf.convert_to_tensor(logits, tf.float32)], axis=1)


# What the loss needs of each stack's ops, under one set of names.
_TF_OPS = types.SimpleNamespace(
    cast=tf.cast,
    log_softmax=lambda x, axis: tf.nn.log_softmax(x, axis=axis),
    exp=tf.exp,
    sum=lambda x, axis: tf.reduce_sum(x, axis=axis),
)


class _Distillation:
    """The loss, written once; a subclass names its stack's ``ops``, ``losses`` and base."""

    ops: Any
    losses: Any

    def __init__(self, weight: float = 0.5, temperature: float = 4.0, name="distillation", **kw):
        check_settings(weight, temperature)
        super().__init__(name=name, **kw)
        self.weight = float(weight)
        self.temperature = float(temperature)

    def call(self, y_true, y_pred):
        ops = self.ops
        labels, teacher = ops.cast(y_true[:, 0], "int32"), y_true[:, 1:]
        hard = self.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        t = self.temperature
        teacher_log_p = ops.log_softmax(teacher / t, axis=-1)
        student_log_p = ops.log_softmax(y_pred / t, axis=-1)
        kl = ops.sum(ops.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)
        return (1.0 - self.weight) * hard + self.weight * t * t * kl

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "temperature": self.temperature}


class _LabelColumn:
    """Accuracy on the label column of the target rows; the base is the stack's metric."""

    def __init__(self, name="accuracy", **kw):
        super().__init__(name=name, **kw)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true[:, :1], y_pred, sample_weight)


@keras.utils.register_keras_serializable(package="recipes")
class DistillationLoss(_Distillation, keras.losses.Loss):
    """Hard cross-entropy plus the teacher's tempered soft targets, on rows from :func:`targets`.

    Args:
      weight: share of the soft term, in [0, 1]; 0 is plain cross-entropy on the labels.
      temperature: T > 0, softening both distributions in the soft term.
    """

    ops = _TF_OPS
    losses = keras.losses


@keras.utils.register_keras_serializable(package="recipes")
class LabelAccuracy(_LabelColumn, keras.metrics.SparseCategoricalAccuracy):
    """Top-1 accuracy against the label column of rows from :func:`targets`."""


@keras3.saving.register_keras_serializable(package="recipes")
class Keras3DistillationLoss(_Distillation, keras3.losses.Loss):
    """:class:`DistillationLoss` for Keras 3 models, in ``keras.ops`` (TensorFlow, JAX, ...)."""

    ops = keras3.ops
    losses = keras3.losses


@keras3.saving.register_keras_serializable(package="recipes")
class Keras3LabelAccuracy(_LabelColumn, keras3.metrics.SparseCategoricalAccuracy):
    """:class:`LabelAccuracy` for Keras 3 models."""


def loss_and_metrics(api: ModuleType, weight: float, temperature: float):
    """``(loss, metrics)`` factories for ``recipes.training.compress`` in Keras ``api``
    (tf_keras or Keras 3): the distillation loss and the accuracy on the label column."""
    if api is keras3:
        return (lambda: Keras3DistillationLoss(weight, temperature)), (
            lambda: [Keras3LabelAccuracy()]
        )
    return (lambda: DistillationLoss(weight, temperature)), (lambda: [LabelAccuracy()])
