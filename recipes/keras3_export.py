"""The export of a Keras 3 model trained on another backend (JAX), on TensorFlow.

The TFLite converter needs a TensorFlow model, and Keras 3 fixes its backend for the life of a
process. :func:`export_on_tensorflow` therefore runs ``python -m recipes.keras3_export
REQUEST.json`` with ``KERAS_BACKEND=tensorflow``: the subprocess loads the stripped ``.keras``
file, checks that it computes what the trained model computed (the outputs on a batch of test
images, recorded here), then exports, verifies and measures the ``.tflite`` file exactly as an
in-process export does (:func:`recipes.reporting.export_tflite`), and writes the results as
JSON for this process to read. Its output (the export report) goes to this process's stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np
from absl import app

from recipes import data, reporting
from tf_admm.compat import keras3

__all__ = ["OUTPUT_TOLERANCE", "export_on_tensorflow", "main"]

# Largest difference of a logit between the trained model and the file loaded on TensorFlow
# (float32 convolutions in another order: differences of about 1e-6 on LeNet-5's logits).
OUTPUT_TOLERANCE = 1e-4
_CHECK_EXAMPLES = 64


def export_on_tensorflow(
    model: keras3.Model,
    model_path: str,
    tflite_path: str,
    data_dir: str | None,
    batch_size: int,
    representative_data: np.ndarray | None = None,
) -> dict[str, Any]:
    """Exports ``model_path`` (``model`` saved) on TensorFlow in a subprocess; its results.

    Args:
      model: the stripped Keras 3 model, on this process's backend.
      model_path: where ``model`` is saved (``.keras``).
      tflite_path: the ``.tflite`` file to write.
      data_dir: the TFDS data directory of MNIST (the test set measures the file).
      batch_size: test batch size.
      representative_data: calibration inputs: a full-integer file instead of a float one.

    Returns:
      What :func:`recipes.reporting.export_tflite` returns, plus ``keras_backend_max_diff``:
      the largest logit difference between ``model`` and the file loaded on TensorFlow.

    Raises:
      RuntimeError: if the subprocess fails (its output says why), e.g. when the loaded
        model's outputs differ from ``model``'s by more than :data:`OUTPUT_TOLERANCE`.
    """
    _, test_ds = data.load_mnist(data_dir, batch_size=_CHECK_EXAMPLES)
    images = next(iter(test_ds))[0].numpy()
    with tempfile.TemporaryDirectory(prefix="keras3_export_") as folder:
        files = {name: os.path.join(folder, f"{name}.npy") for name in ("images", "logits")}
        np.save(files["images"], images)
        np.save(files["logits"], keras3.ops.convert_to_numpy(model(images, training=False)))
        if representative_data is not None:
            files["representative"] = os.path.join(folder, "representative.npy")
            np.save(files["representative"], representative_data)
        request = {
            "model": model_path,
            "tflite": tflite_path,
            "data_dir": data_dir,
            "batch_size": batch_size,
            "files": files,
            "results": os.path.join(folder, "results.json"),
        }
        request_path = os.path.join(folder, "request.json")
        with open(request_path, "w", encoding="utf-8") as f:
            json.dump(request, f)
        env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
        sys.stdout.flush()
        done = subprocess.run(
            [sys.executable, "-m", "recipes.keras3_export", request_path],
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            check=False,
        )
        if done.returncode != 0 or not os.path.exists(request["results"]):
            raise RuntimeError(
                f"Exporting {model_path} on TensorFlow failed in a subprocess (exit status "
                f"{done.returncode}; its output is above)"
            )
        with open(request["results"], encoding="utf-8") as f:
            return json.load(f)


def _export(request: dict[str, Any]) -> dict[str, Any]:
    if keras3.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"Expected Keras 3 on TensorFlow (KERAS_BACKEND=tensorflow); received: "
            f"{keras3.backend.backend()}"
        )
    model = keras3.models.load_model(request["model"])
    files = request["files"]
    expected = np.load(files["logits"])
    found = keras3.ops.convert_to_numpy(model(np.load(files["images"]), training=False))
    difference = float(np.max(np.abs(found - expected)))
    if not difference <= OUTPUT_TOLERANCE:
        raise RuntimeError(
            f"{request['model']}: Expected the model loaded on TensorFlow to compute the trained "
            f"model's logits within {OUTPUT_TOLERANCE}; received a difference of {difference}"
        )
    representative = files.get("representative")
    _, test_ds = data.load_mnist(request["data_dir"], batch_size=request["batch_size"])
    results = reporting.export_tflite(
        model,
        test_ds,
        request["tflite"],
        representative_data=None if representative is None else np.load(representative),
    )
    return {**results, "keras_backend_max_diff": difference, "exported_on": "tensorflow"}


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("Expected one argument, the request file of export_on_tensorflow")
    with open(argv[1], encoding="utf-8") as f:
        request = json.load(f)
    results = _export(request)
    with open(request["results"], "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    app.run(main)
