"""The files and comparisons of :mod:`recipes.mobilenet_fashion_mnist`: tfmot's 2:4 arm, the
exported ``.tflite`` files with their LiteRT accuracy, the interleaved latency of all of them in
one run (:mod:`bench.latency_measure`) and the printed table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from absl import logging

import tflite_export
from bench import latency_measure, latency_setup
from bench.common import format_table, tfmot
from bench.latency_files import macs
from recipes import reporting, schedules, training
from tf_admm.compat import keras, tf
from tflite_export import verify

__all__ = [
    "export_file",
    "measure_latency",
    "format_results",
    "tfmot_2of4",
    "TFMOT_LAYER_TYPES",
]

# The layers tfmot's 2:4 arm wraps: plain convolutions and Dense, as in bench.latency (depthwise
# kernels stay dense; so does a layer prune_low_magnitude refuses).
TFMOT_LAYER_TYPES = (keras.layers.Conv2D, keras.layers.Dense)


def _two_of_four_candidate(layer) -> bool:
    return isinstance(layer, TFMOT_LAYER_TYPES) and not isinstance(
        layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    )


def tfmot_2of4(
    dense: keras.Model,
    train_data: Callable[[keras.optimizers.Optimizer], tf.data.Dataset],
    *,
    epochs: int,
    learning_rate: float,
    verbose: int = 1,
) -> tuple[keras.Model, list[str]]:
    """tfmot's best structured option, ``prune_low_magnitude(..., sparsity_m_by_n=(2, 4))``,
    trained from ``dense`` for ``epochs`` (learning rate ``learning_rate`` with
    :func:`recipes.schedules.step_decay`), stripped.

    Returns:
      The stripped model and the names of the layers it pruned.
    """
    sparsity = tfmot.sparsity.keras
    pruned_layers: list[str] = []

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        if not _two_of_four_candidate(layer):
            return copy
        try:
            wrapped = sparsity.prune_low_magnitude(
                copy,
                pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=100),
                sparsity_m_by_n=(2, 4),
            )
        except ValueError as error:  # e.g. the stem's single input channel.
            logging.info("tfmot 2:4 leaves %s dense: %s", layer.name, error)
            return copy
        pruned_layers.append(layer.name)
        return wrapped

    model = keras.models.clone_model(dense, clone_function=clone)
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # The layer a PruneLowMagnitude wraps.
        inner.set_weights(dense.get_layer(inner.name).get_weights())
    model.compile(
        keras.optimizers.Adam(learning_rate), training.loss(), training.accuracy_metrics()
    )
    model.fit(
        train_data(model.optimizer),
        epochs=epochs,
        verbose=verbose,
        callbacks=[
            sparsity.UpdatePruningStep(),
            keras.callbacks.LearningRateScheduler(schedules.step_decay(learning_rate, epochs)),
        ],
    )
    stripped = sparsity.strip_pruning(model)
    stripped.compile(loss=training.loss(), metrics=training.accuracy_metrics())
    return stripped, pruned_layers


def _nonzeros(model: keras.Model) -> int:
    return sum(int(np.count_nonzero(w)) for w in model.get_weights())


def export_file(
    name: str,
    model: keras.Model,
    path: str,
    test_ds: tf.data.Dataset,
    *,
    representative_data: np.ndarray | None = None,
    sparse_converter: bool = False,
    tolerance: verify.Int8Tolerance | None = None,
) -> dict[str, Any]:
    """Exports ``model`` to ``path`` and describes the file: bytes, MACs, parameters, LiteRT
    test accuracy.

    tf-admm's models (the dense one too, so that sizes compare like with like) go through
    :func:`tflite_export.export` (verified against Keras; with ``representative_data`` a
    full-integer file) with ``tensor_names="io"``: the internal tensors' names (the converter's
    fused operation names, about 5 KB of the shrunk float file) are dropped, the inputs' and
    outputs' kept. ``sparse_converter`` converts with TFLite's ``EXPERIMENTAL_SPARSITY``
    instead, as tfmot users do for its 2:4 files, names and all. ``tolerance`` is the
    full-integer file's (None: :class:`tflite_export.verify.Int8Tolerance`'s default).
    """
    if sparse_converter:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        contents = converter.convert()
        with open(path, "wb") as f:
            f.write(contents)
        exporter = "TFLiteConverter (EXPERIMENTAL_SPARSITY)"
    else:
        report = tflite_export.export(
            model,
            path,
            representative_data=representative_data,
            tolerance=tolerance,
            tensor_names="io",
        )
        with open(path, "rb") as f:
            contents = f.read()
        exporter = "tflite_export" + (" (full int8)" if representative_data is not None else "")
        logging.debug("%s", report.format())
    return {
        "name": name,
        "path": path,
        "exporter": exporter,
        "file_bytes": len(contents),
        "macs": macs(model),
        "params": int(model.count_params()),
        "nonzero_params": _nonzeros(model),
        "litert_test_accuracy": reporting.litert_accuracy(contents, test_ds)[0],
    }


def measure_latency(
    files: list[dict[str, Any]],
    *,
    threads: tuple[int, ...],
    rounds: int,
    invokes_per_round: int,
    warmup: int,
    seed: int,
) -> None:
    """Interleaved LiteRT invoke timing of ``files`` in one run (XNNPACK on, batch 1), and each
    file's ratios against the first (``x_smaller``, ``x_fewer_macs``, per thread count
    ``x_faster``); per-invoke samples are dropped, the medians and percentiles kept."""
    settings = latency_setup.Settings(
        files=tuple(entry["path"] for entry in files),
        threads=threads,
        xnnpack=(True,),
        warmup=warmup,
        rounds=rounds,
        invokes_per_round=invokes_per_round,
        memory=False,
        seed=seed,
    )
    latency_measure.time_files(files, settings)
    latency_measure.add_ratios(files)
    for entry in files:
        for row in entry["latency"]:
            row.pop("samples_us", None)


def _latency(entry: dict[str, Any], threads: int) -> dict[str, Any]:
    return next(row for row in entry["latency"] if row["threads"] == threads)


def format_results(results: dict[str, Any]) -> str:
    """The table of accuracies, file sizes, MACs and latencies, and the acceptance lines."""
    threads = sorted({row["threads"] for row in results["files"][0]["latency"]})
    header = ["file", "Keras test %", "LiteRT test %", "KiB", "x smaller", "MACs", "x fewer"]
    for count in threads:
        header += [f"{count} thr µs", f"{count} thr x faster"]
    rows = []
    for entry in results["files"]:
        row = [
            entry["name"],
            f"{100 * entry['keras_test_accuracy']:.2f}",
            f"{100 * entry['litert_test_accuracy']:.2f}",
            f"{entry['file_bytes'] / 1024:,.1f}",
            f"{entry['x_smaller']:.2f}",
            f"{entry['macs']:,}",
            f"{entry['x_fewer_macs']:.2f}",
        ]
        for count in threads:
            latency = _latency(entry, count)
            row += [f"{latency['median_us']:,.1f}", f"{latency['x_faster']:.2f}"]
        rows.append(row)
    lines = [format_table(header, rows), ""]
    accuracy = results["accuracy"]
    lines.append(
        "Accuracy (validation / test): dense {:.2f} / {:.2f}, filter-pruned {:.2f} / {:.2f}, "
        "tfmot 2:4 {} (same epochs after the same dense model)".format(
            100 * accuracy["dense"]["validation"],
            100 * accuracy["dense"]["test"],
            100 * accuracy["pruned"]["validation"],
            100 * accuracy["pruned"]["test"],
            (
                "{:.2f} / {:.2f}".format(
                    100 * accuracy["tfmot_2of4"]["validation"], 100 * accuracy["tfmot_2of4"]["test"]
                )
                if "tfmot_2of4" in accuracy
                else "not run"
            ),
        )
    )
    for verdict in results["acceptance"]:
        lines.append(
            "{file}: {x_faster_1_thread:.2f}x faster on 1 thread (needs 2), {x_smaller:.2f}x "
            "smaller (needs 4), {test_points_below_dense:+.2f} test points below dense (at most "
            "1.0): {status}".format(**verdict, status="met" if verdict["met"] else "NOT met")
        )
    return "\n".join(lines)
