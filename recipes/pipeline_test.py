"""The shared recipe pieces that the recipe tests do not pin down on their own."""

import dataclasses
import json
import os

import numpy as np
import pytest
from absl import app, flags

import tf_admm
from recipes import alexnet_imagenet, pipeline, vgg16_cifar10
from tf_admm.compat import tf


def test_step_decay_is_constant_then_three_tenths_then_a_tenth():
    schedule = pipeline.step_decay(1.0, epochs=8, start=2)
    assert [schedule(epoch, None) for epoch in range(2, 10)] == [1, 1, 1, 1, 0.3, 0.3, 0.1, 0.1]


def test_learning_rate_schedule_decays_between_stages_and_in_the_final_phase():
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc1", sparsity=0.9)],
        admm_rounds=3,
        retrain_rounds=4,
        prune_stages=(0.5, 1.0),
    )
    schedule = pipeline.learning_rate_schedule(
        spec, learning_rate=1.0, retrain_learning_rate=2.0, retrain_epochs=4
    )
    rates = [schedule(epoch, None) for epoch in range(14)]
    # ADMM 0-2, stage retraining 3-6 (decays from 1.0), ADMM 7-9, final phase 10-13 (from 2.0).
    assert rates == [1, 1, 1, 1, 1, 0.3, 0.1, 1, 1, 1, 2, 2, 0.6, 0.2]
    one_shot = dataclasses.replace(spec, prune_stages=(1.0,))
    schedule = pipeline.learning_rate_schedule(one_shot, 1.0, 2.0, retrain_epochs=2)
    assert [schedule(epoch, None) for epoch in range(5)] == [1, 1, 1, 2, 0.2]


def test_synthetic_images_are_seeded_and_share_class_colours_across_salts():
    images, labels = pipeline.synthetic_images(400, 8, 4, seed=3)
    again, again_labels = pipeline.synthetic_images(400, 8, 4, seed=3)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    assert images.shape == (400, 8, 8, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(labels) == {0, 1, 2, 3}
    test_images, test_labels = pipeline.synthetic_images(400, 8, 4, seed=3, salt=1)
    assert not np.array_equal(test_images, images)
    # Same classes, same colours: per-class mean colours agree between the two samples
    # (noise averages to 127.5 / 2 over 8 x 8 pixels and ~100 images).
    for label in range(4):
        train_mean = images[labels == label].mean(axis=(0, 1, 2))
        test_mean = test_images[test_labels == label].mean(axis=(0, 1, 2))
        np.testing.assert_allclose(train_mean, test_mean, atol=3)
    other, _ = pipeline.synthetic_images(400, 8, 4, seed=4)
    assert not np.array_equal(other, images)


def test_unprepared_dataset_without_download_names_the_way_out(tmp_path):
    with pytest.raises(pipeline.DatasetUnavailableError, match="downloading is off.*HELP"):
        pipeline.prepare_tfds("mnist", str(tmp_path), download=False, help_text="HELP")


def test_backup_dirs_are_keyed_on_phase_and_settings():
    first = pipeline.backup_dir("run", "admm", {"a": 1, "b": 2})
    assert first == pipeline.backup_dir("run", "admm", {"b": 2, "a": 1})
    assert first.startswith(os.path.join("run", "backup", "admm_"))
    assert first != pipeline.backup_dir("run", "admm", {"a": 1, "b": 3})
    assert first != pipeline.backup_dir("run", "pretrain", {"a": 1, "b": 2})


def test_results_are_written_whole(tmp_path):
    path = str(tmp_path / "results.json")
    pipeline.write_json_atomically(path, {"nonzeros": 12})
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"nonzeros": 12}
    assert os.listdir(tmp_path) == ["results.json"]


def _parse(argv):
    flag_values = flags.FlagValues()
    values = vgg16_cifar10.define_flags(flag_values)
    flag_values(["recipe", *argv])
    return values


def test_every_image_setting_has_a_flag_with_the_recipes_default(tmp_path):
    settings = pipeline.image_settings_from_flags(_parse([f"--model_dir={tmp_path}"]))
    defaults = vgg16_cifar10.settings(model_dir=str(tmp_path))
    assert settings == defaults
    assert settings.image_size == 32 and settings.batch_norm
    assert settings.spec == tf_admm.Spec.from_file(vgg16_cifar10.DEFAULTS["config"])
    changed = pipeline.image_settings_from_flags(
        _parse(["--synthetic_data", "--width_multiplier=0.0625", "--nobatch_norm", "--verbose=0"])
    )
    assert changed.synthetic_data and not changed.batch_norm and changed.verbose == 0
    assert changed.width_multiplier == 0.0625


def test_bad_config_flag_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"name": "fc1", "ratio": 0.5}]}))
    with pytest.raises(app.UsageError, match="--config:.*ratio"):
        pipeline.image_settings_from_flags(_parse([f"--config={bad}"]))


def test_spec_counting_steps_sets_the_learning_rate_per_step_and_retrains_after_its_rounds(
    tmp_path, monkeypatch
):
    keras = tf_admm.compat.keras
    keras.utils.set_random_seed(0)
    dense = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="fc")])
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc", keep=5)],
        update_every=3,
        update_unit="step",
        admm_rounds=2,
        retrain_rounds=0,
    )
    images = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    labels = np.arange(16) % 4
    seen = []  # (step, learning rate, phase) before every batch.

    class Recording(pipeline.StepLearningRate):
        def on_train_batch_begin(self, batch, logs=None):
            super().on_train_batch_begin(batch, logs)
            optimizer = self.model.optimizer
            seen.append(
                (
                    int(optimizer.iterations.numpy()),
                    round(float(optimizer.learning_rate), 6),
                    self.model.phase.name,
                )
            )

    monkeypatch.setattr(pipeline, "StepLearningRate", Recording)
    model, _ = pipeline.compress(
        dense,
        spec,
        lambda optimizer: tf.data.Dataset.from_tensor_slices((images, labels)).batch(4),
        learning_rate=1.0,
        retrain_learning_rate=2.0,
        retrain_epochs=1,
        log_dir=str(tmp_path / "logs"),
        backup=str(tmp_path / "backup"),
        resumed={},
        metrics=lambda: [],
        objective=lambda: tf_admm.compat.keras.losses.SparseCategoricalCrossentropy(True),
        verbose=0,
    )
    # 4 steps per epoch: 2 rounds of 3 steps end in the second epoch, so fit runs 2 + 1 epochs
    # and the final phase gets the last 2 steps of the second epoch and the third epoch: 6
    # steps from 2.0 by step_decay (3 at 2.0, 1 at 0.6, 2 at 0.2).
    assert [step for step, _, _ in seen] == list(range(12))
    assert [rate for _, rate, _ in seen] == [1.0] * 6 + [2.0] * 3 + [0.6] + [0.2] * 2
    assert [phase for _, _, phase in seen] == ["ADMM"] * 6 + ["RETRAIN"] * 6
    assert np.count_nonzero(tf_admm.strip(model).get_layer("fc").kernel.numpy()) == 5


@pytest.mark.parametrize(
    "recipe, size",
    [(vgg16_cifar10, 32), (vgg16_cifar10, 40), (alexnet_imagenet, 67)],
)
def test_tfds_pipelines_give_standardized_batches_of_the_model_input(monkeypatch, recipe, size):
    import tensorflow_datasets as tfds

    monkeypatch.setattr(pipeline, "prepare_tfds", lambda name, data_dir, **kwargs: "unused")
    settings = recipe.settings(model_dir="unused", batch_size=4, steps_per_epoch=2)
    with tfds.testing.mock_data(num_examples=6):  # random examples with the dataset's features
        images = pipeline._ImageData(recipe.TASK, settings, size)
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


def test_provenance_names_the_command_commit_seed_and_time(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lenet5_mnist.py", "--seed=2", "--config=a b.json"])
    run = pipeline.provenance("recipes.lenet5_mnist", seed=2)
    assert run["command"] == "python -m recipes.lenet5_mnist --seed=2 '--config=a b.json'"
    assert run["seed"] == 2
    # The checkout the module really lives in (under Bazel, behind the runfiles symlinks).
    root = os.path.dirname(os.path.realpath(pipeline.__file__))
    head = os.popen(f"git -C {root} rev-parse HEAD 2>/dev/null").read().strip()
    if head:
        assert run["commit"].rstrip("+") == head
    else:  # Not a git checkout.
        assert run["commit"] is None
    assert run["finished_utc"].endswith("+00:00")
