"""Command line: ``python -m tflite_export --model saved.keras --out model.tflite``.

The flags and ``main`` live here; ``__main__`` only runs them.

Loads a saved Keras model, exports it with :func:`tflite_export.export`, prints the report's
tables and optionally writes the report as JSON::

    python -m tflite_export --model lenet5.keras --out lenet5.tflite \\
        --encoding=auto --layer_encoding=fc1=sparse_levels --json=lenet5.json

With ``--representative_data`` (a ``.npy`` or ``.npz`` file of real input samples) the LiteRT
file is full-integer: int8 weights and activations calibrated on those samples, float inputs
and outputs (``--int8_io`` for int8 ones)::

    python -m tflite_export --model lenet5.keras --out lenet5_int8.tflite \\
        --representative_data=mnist_train_500.npy

``--activations=float32`` keeps float32 compute and uses the samples only for verification.
``--tensor_names=io`` drops the names of internal tensors (the converter's fused operation
names), keeping those of the inputs and outputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags, logging

import tf_admm
from tflite_export import exporter
from tflite_export.encodings import Encoding
from tflite_export.keras_weights import SUPPORTED_LAYERS, keras_layers
from tflite_export.report import ExportReport

_ENCODINGS = ["auto", *(e.value for e in Encoding)]

_MODEL = flags.DEFINE_string("model", None, "Saved Keras model (.keras, .h5 or SavedModel dir).")
_OUT = flags.DEFINE_string("out", None, "Path of the .tflite file to write.")
_TARGET = flags.DEFINE_enum_class(
    "target", exporter.Target.LITERT, exporter.Target, "Where the file runs."
)
_ENCODING = flags.DEFINE_enum(
    "encoding", "auto", _ENCODINGS, "Encoding of every weight; 'auto' picks per weight."
)
_LAYER_ENCODING = flags.DEFINE_multi_string(
    "layer_encoding", [], "Per-layer encoding as LAYER=ENCODING; repeat for several layers."
)
_STRIP = flags.DEFINE_bool(
    "strip", False, "Call tf_admm.strip on a model that still holds ADMM wrappers."
)
_DATA = flags.DEFINE_string(
    "representative_data",
    None,
    "Real input samples: a .npy file (one input) or .npz file (arrays named by input). They "
    "verify the file and calibrate int8 activations: with them a LiteRT file is full-integer "
    "unless --activations=float32.",
)
_ACTIVATIONS = flags.DEFINE_enum_class(
    "activations",
    None,
    exporter.Activations,
    "LiteRT compute: float32, or int8 (full-integer, needs --representative_data). Default: "
    "int8 when --representative_data is given, else float32.",
)
_INT8_IO = flags.DEFINE_bool(
    "int8_io", False, "Full-integer LiteRT: int8 inputs and outputs instead of float32."
)
_ALLOW_FLOAT16 = flags.DEFINE_bool(
    "allow_float16",
    False,
    "Float32 LiteRT: let 'auto' store weights as float16 even where that rounds them.",
)
_TOLERANCE = flags.DEFINE_float(
    "tolerance",
    None,
    "Allowed max|tflite - keras| relative to max(1, max|keras|); default 1e-4, 0.1 for "
    "--target=tflm_int8, and for full-integer LiteRT a few output quantization steps plus "
    "top-1 agreement (tflite_export.verify.Int8Tolerance).",
    lower_bound=0,
)
_TENSOR_NAMES = flags.DEFINE_enum_class(
    "tensor_names",
    exporter.TensorNames.KEEP,
    exporter.TensorNames,
    "keep: the converter's tensor names; io: only the inputs' and outputs' names, the "
    "internal tensors unnamed (a smaller file).",
)
_BATCH_SIZE = flags.DEFINE_integer(
    "verify_batch_size", 8, "Random verification samples when no data is given.", lower_bound=1
)
_JSON = flags.DEFINE_string("json", None, "Also write the report as JSON to this path.")


def _parse_layer_encodings(items: Sequence[str]) -> dict[str, str]:
    parsed = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or value not in _ENCODINGS:
            raise app.UsageError(
                f"Expected --layer_encoding as LAYER=ENCODING with ENCODING in {_ENCODINGS}; "
                f"received: {item!r}"
            )
        parsed[name] = value
    return parsed


def _load_data(path: str | None):
    if path is None:
        return None
    try:
        loaded = np.load(path)
    except (OSError, ValueError) as error:
        raise app.UsageError(
            f"Expected --representative_data to be a .npy or .npz file; received: {path!r} "
            f"({error})"
        ) from None
    if isinstance(loaded, np.ndarray):
        return loaded
    return {name: loaded[name] for name in loaded.files}


def run(
    model_path: str,
    out: str,
    *,
    target: exporter.Target | str = exporter.Target.LITERT,
    encoding: str = "auto",
    layer_encodings: dict[str, str] | None = None,
    strip: bool = False,
    representative_data=None,
    activations: exporter.Activations | str | None = None,
    int8_io: bool = False,
    allow_float16: bool = False,
    tolerance: float | None = None,
    batch_size: int = 8,
    json_path: str | None = None,
    tensor_names: exporter.TensorNames | str = exporter.TensorNames.KEEP,
) -> ExportReport:
    """Loads ``model_path``, exports it to ``out`` and returns the report.

    Args:
      model_path: a saved Keras model.
      out: the ``.tflite`` path.
      target: export target: ``litert``, ``tflm`` or ``tflm_int8``.
      encoding: encoding of every weight, or ``"auto"``.
      layer_encodings: per-layer encodings that override ``encoding``.
      strip: strip ADMM wrappers first instead of refusing the model.
      representative_data: real input samples: verification inputs and, for a full-integer
        file, the calibration set (see :func:`tflite_export.export`).
      activations: ``float32``, ``int8`` or ``None`` (int8 when ``representative_data`` is
        given, LiteRT).
      int8_io: full-integer LiteRT: int8 inputs and outputs.
      allow_float16: float32 LiteRT: let ``auto`` choose lossy float16 weights.
      tolerance: verification tolerance (``None``: the target's default).
      batch_size: random verification samples when no data is given.
      json_path: where to write the report as JSON, if anywhere.
      tensor_names: ``keep`` or ``io`` (only input and output tensors named).
    """
    if not os.path.exists(model_path):
        raise exporter.ExportError(
            f"Expected a saved Keras model; received: model={model_path!r} does not exist"
        )
    model = tf_admm.load_model(model_path, compile=False)  # Keras 3 files too
    if strip:
        model = tf_admm.strip(model)
    chosen = encoding
    if layer_encodings:
        chosen = dict(layer_encodings)
        if encoding != "auto":
            # Weights not named keep the global encoding: spell them out.
            for layer in keras_layers(model):
                if type(layer) in SUPPORTED_LAYERS and layer.name not in chosen:
                    chosen[layer.name] = encoding
    report = exporter.export(
        model,
        out,
        target=target,
        representative_data=representative_data,
        activations=activations,
        int8_io=int8_io,
        encoding=chosen,
        tolerance=tolerance,
        allow_float16=allow_float16,
        batch_size=batch_size,
        tensor_names=tensor_names,
    )
    if json_path:
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump(json.loads(report.to_json()), handle, indent=2)
    return report


def main(argv: Sequence[str]) -> None:
    """Exports ``--model`` to ``--out`` as the flags say and prints the report.

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.

    Raises:
      app.UsageError: on positional arguments, or without ``--model`` or ``--out``.
      SystemExit: with the message, when the export fails.
    """
    if len(argv) > 1:
        raise app.UsageError(f"Expected no positional arguments; received: {list(argv[1:])}")
    if not _MODEL.value or not _OUT.value:
        raise app.UsageError("Expected --model and --out; received: one of them missing")
    if not flags.FLAGS["verbosity"].present:
        # The converter logs every SavedModel step at INFO; keep the tables readable.
        logging.set_verbosity(logging.WARNING)
    try:
        report = run(
            _MODEL.value,
            _OUT.value,
            target=_TARGET.value,
            encoding=_ENCODING.value,
            layer_encodings=_parse_layer_encodings(_LAYER_ENCODING.value),
            strip=_STRIP.value,
            representative_data=_load_data(_DATA.value),
            activations=_ACTIVATIONS.value,
            int8_io=_INT8_IO.value,
            allow_float16=_ALLOW_FLOAT16.value,
            tolerance=_TOLERANCE.value,
            batch_size=_BATCH_SIZE.value,
            json_path=_JSON.value,
            tensor_names=_TENSOR_NAMES.value,
        )
    except exporter.ExportError as error:
        raise SystemExit(f"tflite_export: {error}") from None
    print(report.format())


def entry_point() -> None:
    """Parses the flags and runs :func:`main` (``python -m tflite_export``)."""
    app.run(main)
