import numpy as np
import pytest

from recipes import distillation
from tf_admm.compat import keras, keras3, tf

# The loss and the metric of each stack: one math, checked on both.
STACKS = {
    "tf_keras": (distillation.DistillationLoss, distillation.LabelAccuracy, keras.losses),
    "keras3": (
        distillation.Keras3DistillationLoss,
        distillation.Keras3LabelAccuracy,
        keras3.losses,
    ),
}


@pytest.fixture(params=sorted(STACKS))
def stack(request):
    return STACKS[request.param]


def _rows(labels, teacher_logits):
    labels = np.asarray(labels, np.float32).reshape(-1, 1)
    return tf.constant(np.concatenate([labels, np.asarray(teacher_logits, np.float32)], axis=1))


def test_weight_zero_is_cross_entropy_on_the_labels(stack):
    loss_class, accuracy_class, losses = stack
    rng = np.random.default_rng(0)
    student = tf.constant(rng.normal(size=(6, 4)), tf.float32)
    labels = np.array([0, 1, 2, 3, 1, 0])
    rows = _rows(labels, rng.normal(size=(6, 4)))
    expected = losses.SparseCategoricalCrossentropy(from_logits=True)(labels, student)
    got = loss_class(weight=0.0)(rows, student)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)


def test_soft_term_is_tempered_kl_scaled_by_t_squared(stack):
    loss_class, accuracy_class, losses = stack
    teacher = np.array([[2.0, 0.0, -1.0]], np.float32)
    student = np.array([[0.5, 0.5, 0.0]], np.float32)
    t = 3.0
    p = np.exp(teacher / t) / np.exp(teacher / t).sum()
    q = np.exp(student / t) / np.exp(student / t).sum()
    kl = float(np.sum(p * np.log(p / q)))
    got = loss_class(weight=1.0, temperature=t)(_rows([1], teacher), tf.constant(student))
    assert got.numpy() == pytest.approx(t * t * kl, rel=1e-5)
    # The student that equals its teacher pays nothing for the soft term.
    same = loss_class(weight=1.0, temperature=t)(_rows([1], teacher), tf.constant(teacher))
    assert same.numpy() == pytest.approx(0.0, abs=1e-6)


def test_mixture_and_config_round_trip(stack):
    loss_class, accuracy_class, losses = stack
    rng = np.random.default_rng(1)
    student = tf.constant(rng.normal(size=(5, 3)), tf.float32)
    rows = _rows([0, 1, 2, 0, 1], rng.normal(size=(5, 3)))
    hard = loss_class(weight=0.0, temperature=2.0)(rows, student)
    soft = loss_class(weight=1.0, temperature=2.0)(rows, student)
    loss = loss_class(weight=0.25, temperature=2.0)
    np.testing.assert_allclose(
        loss(rows, student).numpy(), 0.75 * hard.numpy() + 0.25 * soft.numpy(), rtol=1e-6
    )
    again = losses.deserialize(losses.serialize(loss))
    assert isinstance(again, loss_class)
    assert (again.weight, again.temperature) == (0.25, 2.0)


@pytest.mark.parametrize(
    "weight, temperature, message",
    [(-0.1, 4.0, "weight.*\\[0, 1\\]"), (1.5, 4.0, "weight"), (0.5, 0.0, "temperature.*> 0")],
)
def test_bad_settings_are_named(weight, temperature, message, stack):
    loss_class = stack[0]
    with pytest.raises(ValueError, match=message):
        loss_class(weight, temperature)


def test_targets_carry_labels_and_the_teachers_logits():
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.layers.Flatten(input_shape=(4, 4)), keras.layers.Dense(3)])
    images = tf.constant(np.random.default_rng(2).integers(0, 256, (7, 4, 4)), tf.uint8)
    labels = tf.constant([2, 0, 1, 1, 0, 2, 2], tf.int64)
    rows = distillation.targets(teacher, images, labels, batch_size=3)
    assert rows.shape == (7, 4) and rows.dtype == tf.float32
    np.testing.assert_array_equal(rows[:, 0].numpy(), labels.numpy())
    expected = teacher(tf.cast(images, tf.float32) / 255.0).numpy()
    np.testing.assert_allclose(rows[:, 1:].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_label_accuracy_reads_the_label_column(stack):
    loss_class, accuracy_class, losses = stack
    rows = _rows([0, 1, 2], [[0.0, 9.0, 0.0]] * 3)  # The teacher says 1 every time.
    student = tf.constant([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [5.0, 0.0, 0.0]])
    metric = accuracy_class()
    metric.update_state(rows, student)
    assert metric.name == "accuracy"
    assert metric.result().numpy() == pytest.approx(2 / 3)
