"""Export of tf_admm-compressed Keras models to verified, compactly encoded LiteRT files,
and to TFLite Micro files with lookup-table (LUT) weights (``target="tflm"`` or
``"tflm_int8"``, see :mod:`tflite_export.tflm`).

Example:
  >>> import tf_admm, tflite_export                                       # doctest: +SKIP
  >>> report = tflite_export.export(tf_admm.strip(admm_model), "m.tflite")  # doctest: +SKIP
  >>> print(report)                                                       # doctest: +SKIP
"""

from tflite_export.encodings import Encoding
from tflite_export.exporter import (
    ExportError,
    Target,
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
    TensorBytes,
    WeightChoice,
    account,
)
from tflite_export.verify import OutputCheck, Runtime, RuntimeCheck

__all__ = [
    "Encoding",
    "ExportError",
    "ExportReport",
    "FileBytes",
    "IoQuantization",
    "LutBytes",
    "OutputCheck",
    "Runtime",
    "RuntimeCheck",
    "Target",
    "TensorBytes",
    "VerificationError",
    "WeightChoice",
    "account",
    "convert_float",
    "export",
    "verify_file",
]
