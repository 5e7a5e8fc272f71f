"""One image recipe end to end: pretrain, compress, report and export an :class:`ImageTask`.

:func:`run_image_recipe` composes :mod:`recipes.training` (the dense model, cached, then every
phase of the spec), :mod:`recipes.reporting` (tables, storage, the verified ``.tflite`` file)
and :mod:`recipes.run_files` (``results.json`` with its provenance) on the data of
:mod:`recipes.image_data`; the ImageNet and CIFAR-10 recipes differ only in their task and
their flag defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Any

from absl import logging

import tf_admm
from recipes import image_data, reporting, run_files, schedules, training
from recipes.image_task import ImageSettings, ImageTask
from tf_admm.compat import keras, tf

__all__ = ["run_image_recipe"]


def _shaping(settings: ImageSettings, *fields: str) -> dict[str, Any]:
    return {field: getattr(settings, field) for field in fields}


def run_image_recipe(task: ImageTask, settings: ImageSettings) -> dict[str, Any]:
    """Pretrains, compresses, reports and exports ``task``'s model; returns the results.

    The results (also written to ``<model_dir>/results.json``): dense and compressed test
    accuracy (and top-k), per-layer weights and nonzeros, storage report, seconds per phase,
    the spec, the stripped model's path and the ``.tflite`` export with its LiteRT accuracy.

    Raises:
      recipes.image_data.DatasetUnavailableError: without ``synthetic_data``, when the dataset
        is not there.
    """
    os.makedirs(settings.model_dir, exist_ok=True)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(settings.seed)
    image_size = settings.image_size or task.image_size
    timings: dict[str, float] = {}
    resumed: dict[str, int] = {}

    start = time.perf_counter()
    images = image_data.ImageData(task, settings, image_size)
    timings["data"] = time.perf_counter() - start

    start = time.perf_counter()
    keras.utils.set_random_seed(settings.seed)
    model_args: dict[str, Any] = {
        "num_classes": task.num_classes,
        "input_shape": (image_size, image_size, 3),
        "width_multiplier": settings.width_multiplier,
    }
    if settings.batch_norm is not None:
        model_args["batch_norm"] = settings.batch_norm
    dense = task.build_model(**model_args)
    if settings.dense_weights:
        logging.info("Loading the dense %s from %s", task.description, settings.dense_weights)
        dense.load_weights(settings.dense_weights)
        dense.compile(loss=training.loss(), metrics=task.metrics())
        dense_metrics = dense.evaluate(images.test, verbose=0, return_dict=True)
    else:
        # Everything that shapes the dense model, not where files go or how much is printed.
        shaping = _shaping(
            settings,
            "synthetic_data",
            "synthetic_examples",
            "width_multiplier",
            "batch_norm",
            "pretrain_epochs",
            "batch_size",
            "learning_rate",
            "steps_per_epoch",
            "train_examples",
            "seed",
            "deterministic",
        )
        shaping.update(task=task.name, image_size=image_size, source=images.source)
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]
        name = f"dense_{task.name}_{digest}"
        dense_metrics = training.pretrain(
            dense,
            lambda optimizer: images.train(optimizer, salt=0),
            images.test,
            checkpoint=os.path.join(settings.model_dir, f"{name}.weights.h5"),
            backup=run_files.backup_dir(settings.model_dir, name),
            learning_rate=settings.learning_rate,
            epochs=settings.pretrain_epochs,
            schedule=schedules.step_decay(settings.learning_rate, settings.pretrain_epochs),
            resumed=resumed,
            description=task.description,
            metrics=task.metrics,
            steps_per_epoch=settings.steps_per_epoch,
            verbose=settings.verbose,
        )
    timings["pretrain"] = time.perf_counter() - start
    logging.info("Dense test accuracy: %.4f", dense_metrics["accuracy"])

    shaping = dataclasses.asdict(dataclasses.replace(settings, spec=None))
    for field in ("model_dir", "data_dir", "verbose", "export", "eval_examples", "download"):
        del shaping[field]
    shaping.update(task=task.name, image_size=image_size)
    admm_backup = run_files.backup_dir(settings.model_dir, "admm", shaping, settings.spec.to_dict())
    model, phase_times = training.compress(
        dense,
        settings.spec,
        lambda optimizer: images.train(optimizer, salt=1),
        learning_rate=settings.admm_learning_rate or settings.learning_rate,
        retrain_learning_rate=settings.retrain_learning_rate,
        retrain_epochs=settings.retrain_epochs,
        log_dir=os.path.join(settings.model_dir, "logs"),
        backup=admm_backup,
        resumed=resumed,
        metrics=task.metrics,
        steps_per_epoch=settings.steps_per_epoch,
        verbose=settings.verbose,
    )
    timings.update(phase_times)

    pruned = tf_admm.strip(model)
    pruned.compile(loss=training.loss(), metrics=task.metrics())
    pruned_metrics = pruned.evaluate(images.test, verbose=0, return_dict=True)
    path = os.path.join(settings.model_dir, f"{task.name}_compressed.keras")
    pruned.save(path)
    table, storage, summary = reporting.summarize(pruned, model)
    results: dict[str, Any] = {
        "dense_accuracy": dense_metrics["accuracy"],
        "pruned_accuracy": pruned_metrics["accuracy"],
        "accuracy_drop_points": 100 * (dense_metrics["accuracy"] - pruned_metrics["accuracy"]),
    }
    top_k = f"top{task.top_k}_accuracy" if task.top_k else None
    if top_k:
        results[f"dense_{top_k}"] = dense_metrics[top_k]
        results[f"pruned_{top_k}"] = pruned_metrics[top_k]
    results.update(summary)
    results.update(
        {
            "run": run_files.provenance(f"recipes.{task.name}", settings.seed),
            "seconds": timings,
            "spec": settings.spec.to_dict(),
            "model": path,
            "resumed_after_epochs": resumed,
            "data": images.source,
            "image_size": image_size,
            "width_multiplier": settings.width_multiplier,
        }
    )
    if settings.export:
        start = time.perf_counter()
        results["tflite"] = reporting.export_tflite(
            pruned,
            images.test,
            os.path.join(settings.model_dir, f"{task.name}.tflite"),
            top_k=task.top_k,
        )
        timings["export"] = time.perf_counter() - start
    run_files.write_json_atomically(os.path.join(settings.model_dir, "results.json"), results)
    # Only now is nothing left to resume.
    shutil.rmtree(admm_backup, ignore_errors=True)

    line = (
        f"Test accuracy: dense {100 * results['dense_accuracy']:.2f}%, compressed "
        f"{100 * results['pruned_accuracy']:.2f}% ({results['accuracy_drop_points']:+.2f} "
        f"points drop)"
    )
    if top_k:
        line += (
            f"; top-{task.top_k} dense {100 * results[f'dense_{top_k}']:.2f}%, compressed "
            f"{100 * results[f'pruned_{top_k}']:.2f}%"
        )
    line += f"; pruning {results['pruning_ratio']:.1f}x"
    if images.source == "synthetic":
        line += " (synthetic data: accuracies say nothing about the task)"
    reporting.print_report(table, storage, results, line)
    return results
