"""Tests for recipes.image_recipe: a whole run of a tiny image task on synthetic images."""

import json
import os

import numpy as np

import tf_admm
from recipes import image_recipe, image_task
from tf_admm.compat import keras, tf


def _tiny_model(num_classes, input_shape, width_multiplier):
    filters = max(1, round(8 * width_multiplier))
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(filters, 3, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, name="fc"),
        ]
    )


def _resized(image, size):
    return tf.image.resize(tf.cast(image, tf.float32), (size, size))


TASK = image_task.ImageTask(
    name="tiny_task",
    description="a tiny CNN",
    tfds_name="unused",
    train_split="train",
    test_split="test",
    num_classes=3,
    image_size=8,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    build_model=_tiny_model,
    preprocess_train=lambda image, size, seed: _resized(image, size),
    preprocess_test=_resized,
    help_text="unused",
    top_k=2,
)


def _settings(model_dir):
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="conv", keep=20), tf_admm.Rule(name="fc", keep=30)],
        update_every=1,
        admm_rounds=1,
        retrain_rounds=1,
    )
    return image_task.ImageSettings(
        spec=spec,
        model_dir=str(model_dir),
        synthetic_data=True,
        synthetic_examples=32,
        pretrain_epochs=1,
        retrain_epochs=1,
        batch_size=16,
        export=False,
        verbose=0,
    )


def test_run_writes_results_keeps_the_dense_checkpoint_and_no_backup(tmp_path, capsys):
    settings = _settings(tmp_path)
    results = image_recipe.run_image_recipe(TASK, settings)
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(results))
    assert {r["layer"]: r["nonzeros"] for r in results["layers"]} == {"conv": 20, "fc": 30}
    model = keras.models.load_model(results["model"])
    assert np.count_nonzero(model.get_layer("conv").kernel.numpy()) == 20
    assert results["data"] == "synthetic" and results["image_size"] == 8
    assert {"dense_top2_accuracy", "pruned_top2_accuracy"} <= set(results)
    assert "tflite" not in results and "export" not in results["seconds"]
    assert results["run"]["command"].startswith("python -m recipes.tiny_task")
    assert not os.listdir(tmp_path / "backup")
    cached = [name for name in os.listdir(tmp_path) if name.startswith("dense_tiny_task_")]
    assert len(cached) == 1 and cached[0].endswith(".weights.h5")
    printed = capsys.readouterr().out
    assert "(synthetic data: accuracies say nothing about the task)" in printed

    # The same settings again: the cached dense model is loaded, not trained anew.
    again = image_recipe.run_image_recipe(TASK, settings)
    assert again["dense_accuracy"] == results["dense_accuracy"]
    assert again["resumed_after_epochs"] == {}
