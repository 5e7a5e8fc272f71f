"""Tests for recipes.image_data: synthetic images, TFDS preparation and the batches."""

import numpy as np
import pytest

from recipes import alexnet_imagenet, image_data, vgg16_cifar10
from tf_admm.compat import tf


def test_synthetic_images_are_seeded_and_share_class_colours_across_salts():
    images, labels = image_data.synthetic_images(400, 8, 4, seed=3)
    again, again_labels = image_data.synthetic_images(400, 8, 4, seed=3)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    assert images.shape == (400, 8, 8, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels) == {0, 1, 2, 3}
    test_images, test_labels = image_data.synthetic_images(400, 8, 4, seed=3, salt=1)
    assert not np.array_equal(test_images, images)
    # Same classes, same colours: per-class mean colours agree between the two samples
    # (noise averages to 127.5 / 2 over 8 x 8 pixels and ~100 images).
    for label in range(4):
        train_mean = images[labels == label].mean(axis=(0, 1, 2))
        test_mean = test_images[test_labels == label].mean(axis=(0, 1, 2))
        np.testing.assert_allclose(train_mean, test_mean, atol=3)
    other, _ = image_data.synthetic_images(400, 8, 4, seed=4)
    assert not np.array_equal(other, images)


def test_unprepared_dataset_without_download_names_the_way_out(tmp_path):
    with pytest.raises(image_data.DatasetUnavailableError, match="downloading is off.*HELP"):
        image_data.prepare_tfds("mnist", str(tmp_path), download=False, help_text="HELP")


class _Steps:
    """Stands in for an optimizer: only ``iterations`` is read, to key the data order."""

    def __init__(self, iterations):
        self.iterations = tf.Variable(iterations, dtype=tf.int64)


def test_synthetic_batches_are_standardized_and_ordered_by_seed_and_epoch():
    settings = vgg16_cifar10.settings(
        model_dir="unused", synthetic_data=True, synthetic_examples=10, batch_size=4
    )
    images = image_data.ImageData(vgg16_cifar10.TASK, settings, 8)
    assert images.source == "synthetic"
    test = list(images.test)
    assert [x.shape for x, _ in test] == [(2, 8, 8, 3)]  # a quarter of 10, at least 1
    optimizer = _Steps(0)
    first = [y.numpy().tolist() for _, y in images.train(optimizer, salt=0)]
    again = [y.numpy().tolist() for _, y in images.train(_Steps(0), salt=0)]
    assert [len(y) for y in first] == [4, 4, 2] and first == again
    optimizer.iterations.assign(3)  # the second epoch of 3 steps
    later = [y.numpy().tolist() for _, y in images.train(optimizer, salt=0)]
    assert sorted(sum(later, [])) == sorted(sum(first, [])) and later != first
    mean = np.array(vgg16_cifar10.TASK.mean)
    std = np.array(vgg16_cifar10.TASK.std)
    for x, _ in test:
        assert x.dtype == tf.float32
        assert float(tf.reduce_min(x)) >= np.min(-mean / std) - 1e-4
        assert float(tf.reduce_max(x)) <= np.max((1 - mean) / std) + 1e-4


@pytest.mark.parametrize(
    "recipe, size",
    [(vgg16_cifar10, 32), (vgg16_cifar10, 40), (alexnet_imagenet, 67)],
)
def test_tfds_pipelines_give_standardized_batches_of_the_model_input(monkeypatch, recipe, size):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(image_data, "prepare_tfds", lambda name, data_dir, **kwargs: "unused")
    settings = recipe.settings(model_dir="unused", batch_size=4, steps_per_epoch=2)
    with tfds.testing.mock_data(num_examples=6):  # random examples with the dataset's features
        images = image_data.ImageData(recipe.TASK, settings, size)
        # Repeated for steps_per_epoch: more batches than the 6 examples fill.
        train = list(images.train(optimizer=None, salt=0).take(4))
        test = list(images.test)
    assert images.source == f"tfds:{recipe.TASK.tfds_name}"
    assert [x.shape for x, _ in train] == [(4, size, size, 3)] * 4
    assert sum(int(x.shape[0]) for x, _ in test) == 6
    for x, y in train + test:
        assert x.dtype == tf.float32 and x.shape[1:] == (size, size, 3)
        assert np.all((y.numpy() >= 0) & (y.numpy() < recipe.TASK.num_classes))
        # (pixel / 255 - mean) / std for pixels in [0, 255]
        low = (0 - max(recipe.TASK.mean)) / min(recipe.TASK.std)
        high = (1 - min(recipe.TASK.mean)) / min(recipe.TASK.std)
        assert low - 1e-4 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= high + 1e-4
