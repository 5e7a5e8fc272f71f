"""What a recipe reports: nonzeros and storage per layer, the verified ``.tflite`` file, tables.

:func:`summarize` gives the per-layer table, the storage report and the ``results.json``
entries of a stripped model; :func:`export_tflite` writes the verified file and measures its
test accuracy in LiteRT; :func:`print_report` prints it all once a run is done.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tf_admm
from tf_admm import report
from tf_admm.compat import keras, tf

__all__ = [
    "configured_bits",
    "export_tflite",
    "litert_accuracy",
    "print_report",
    "summarize",
]


def configured_bits(model: tf_admm.AdmmModel) -> dict[str, int]:
    """Bits per kept weight that the spec gives each quantized layer, by layer name."""
    bits = {}
    for wrapper in model.admm_wrappers:
        for slot in wrapper.slots:
            if slot.target.bits is not None:
                bits[wrapper.layer.name] = slot.target.bits
    return bits


def summarize(
    pruned: keras.Model, admm_model: tf_admm.AdmmModel
) -> tuple[list[report.LayerCompression], tf_admm.storage.StorageReport, dict[str, Any]]:
    """Per-layer nonzeros and storage of the stripped ``pruned`` model.

    Returns:
      The compression table, the storage report (values coded with the configured bits) and
      the results entries ``weights``, ``nonzeros``, ``pruning_ratio``, ``layers``, ``storage``.
    """
    table = report.compression_table(pruned)
    storage = report.storage_report(pruned, bits=configured_bits(admm_model))
    total_weights = sum(r.weights for r in table)
    total_nonzeros = sum(r.nonzeros for r in table)
    return (
        table,
        storage,
        {
            "weights": total_weights,
            "nonzeros": total_nonzeros,
            "pruning_ratio": total_weights / total_nonzeros,
            "layers": [r.to_dict() for r in table],
            "storage": storage.to_dict(),
        },
    )


def export_tflite(
    model: keras.Model,
    test_ds: tf.data.Dataset,
    path: str,
    *,
    top_k: int | None = None,
    representative_data: Any = None,
) -> dict[str, Any]:
    """Writes the verified .tflite file and measures its test accuracy in LiteRT.

    Args:
      model: the stripped model.
      test_ds: test batches of ``(images, labels)``.
      path: the ``.tflite`` file to write.
      top_k: also measure top-``k`` accuracy (``top{k}_accuracy``).
      representative_data: calibration inputs (training images, not test images): a
        full-integer file (int8 activations, float inputs and outputs) instead of float compute.

    Returns:
      Sizes, ratio, the LiteRT accuracy and the whole export report as a dict.
    """
    import tflite_export

    export_report = tflite_export.export(model, path, representative_data=representative_data)
    print(export_report.format())
    with open(path, "rb") as f:
        contents = f.read()
    accuracy, top_k_accuracy = litert_accuracy(contents, test_ds, top_k)
    results = {
        "path": path,
        "file_bytes": export_report.file_bytes,
        "float_file_bytes": export_report.float_file_bytes,
        "gzip_bytes": export_report.gzip_bytes,
        "float_gzip_bytes": export_report.float_gzip_bytes,
        "ratio_vs_float": export_report.compression_ratio,
        "accuracy": accuracy,
        "activations": "float32" if representative_data is None else "int8",
        "report": export_report.to_dict(),
    }
    if top_k:
        results[f"top{top_k}_accuracy"] = top_k_accuracy
    return results


def litert_accuracy(contents: bytes, test_ds, top_k: int = 0) -> tuple[float, float | None]:
    """Top-1 accuracy of the ``.tflite`` file ``contents`` on ``test_ds`` (batches of images and
    integer labels), run in LiteRT, and the top-``top_k`` accuracy (None when ``top_k`` is 0)."""
    from tflite_export import verify

    correct = correct_top_k = total = 0
    for images, labels in test_ds:
        (logits,) = verify.run(contents, [images.numpy()])
        labels = labels.numpy()
        correct += int(np.sum(np.argmax(logits, axis=-1) == labels))
        if top_k:
            best = np.argsort(-logits, axis=-1)[:, :top_k]
            correct_top_k += int(np.sum(np.any(best == labels[:, None], axis=-1)))
        total += int(labels.shape[0])
    return correct / total, (correct_top_k / total if top_k else None)


def print_report(
    table: list[report.LayerCompression],
    storage: tf_admm.storage.StorageReport,
    results: dict[str, Any],
    accuracy_line: str,
) -> None:
    """Prints the per-layer table, the storage report, accuracies, the file and the timings."""
    print(report.format_compression_table(table))
    print()
    print("Storage (values coded as trained, sparse layers with relative indices):")
    print(tf_admm.storage.format_report(storage))
    print()
    print(accuracy_line)
    for key, label in (("tflite", "TFLite"), ("tflite_int8", "TFLite full-int8")):
        if key not in results:
            continue
        lite = results[key]
        print(
            f"{label}: {lite['path']}: {lite['file_bytes']:,} B ({lite['ratio_vs_float']:.1f}x "
            f"smaller than the dense float file of {lite['float_file_bytes']:,} B; gzip "
            f"{lite['gzip_bytes']:,} B); test accuracy in LiteRT {100 * lite['accuracy']:.2f}%"
        )
    print("Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in results["seconds"].items()))
    print(f"Stripped model: {results['model']}")
