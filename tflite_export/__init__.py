"""Export of tf_admm-compressed Keras models to verified, compactly encoded LiteRT files (float
weights-only, or full-integer with representative data, see :mod:`tflite_export.integer_target`),
and to TFLite Micro files with lookup-table (LUT) weights (``target="tflm"`` or
``"tflm_int8"``, see :mod:`tflite_export.tflm`).

Example:
  >>> import tf_admm, tflite_export                                       # doctest: +SKIP
  >>> report = tflite_export.export(tf_admm.strip(admm_model), "m.tflite")  # doctest: +SKIP
  >>> print(report)                                                       # doctest: +SKIP
"""

from tflite_export.encodings import Encoding
from tflite_export.exporter import (
    Activations,
    ConversionError,
    ExportError,
    Target,
    TensorNames,
    VerificationError,
    convert_float,
    export,
    verify_file,
)
from tflite_export.report import (
    ExportReport,
    FileBytes,
    IoQuantization,
    LutBytes,
    SkippedWeight,
    TensorBytes,
    WeightChoice,
    account,
)
from tflite_export.verify import Int8Tolerance, OutputCheck, Runtime, RuntimeCheck

__all__ = [
    "Activations",
    "ConversionError",
    "Encoding",
    "ExportError",
    "ExportReport",
    "FileBytes",
    "Int8Tolerance",
    "IoQuantization",
    "LutBytes",
    "OutputCheck",
    "Runtime",
    "RuntimeCheck",
    "SkippedWeight",
    "Target",
    "TensorBytes",
    "TensorNames",
    "VerificationError",
    "WeightChoice",
    "account",
    "convert_float",
    "export",
    "verify_file",
]
