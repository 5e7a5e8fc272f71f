"""Full-integer files: int8 weights and activations, for LiteRT and TFLite Micro.

:func:`convert_int8` is the one int8 conversion of the package (the LiteRT target with int8
activations, :mod:`tflite_export.integer_target`, and the ``tflm_int8`` target use it): the
TFLite converter with ``optimizations=[DEFAULT]``, the representative data as calibration set,
one sample per step, and int8 builtins only (``TFLITE_BUILTINS_INT8``). Its int8 weights are
symmetric (zero point 0), one scale per output channel for Dense, Conv and DepthwiseConv
kernels, so a pruned weight (exactly 0) stays exactly 0.

The file's integer inputs and outputs: :func:`io_quantization` (scale and zero point of each),
:func:`quantize` and :func:`dequantize`. :class:`OutputChecker` runs full-integer files in
LiteRT, with and without the default delegate, and compares each output with Keras within
:class:`~tflite_export.verify.Int8Tolerance` (a few steps of the output's int8 scale, and the
same top-1 class on most samples).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tf_admm.compat import keras, tf
from tflite_export import flatbuffer, verify
from tflite_export.conversion import converter_for
from tflite_export.encodings import Encoding
from tflite_export.errors import ExportError
from tflite_export.report import IoQuantization

__all__ = [
    "DEFAULT_RELATIVE_TOLERANCE",
    "INTEGER_ENCODINGS",
    "OutputChecker",
    "convert_int8",
    "dequantize",
    "io_quantization",
    "output_scales",
    "quantize",
]

_schema = flatbuffer.schema
_OPS = _schema.BuiltinOperator
_TYPES = _schema.TensorType

# What a full-integer LiteRT file can store; "auto" tries them all.
INTEGER_ENCODINGS = (
    Encoding.INT8,
    Encoding.SPARSE_INT8,
    Encoding.LEVELS,
    Encoding.SPARSE_LEVELS,
)
# For an output with no int8 scale (not expected from the converter): relative, as tflm_int8.
DEFAULT_RELATIVE_TOLERANCE = 0.1


def convert_int8(
    model: keras.Model, calibration: Sequence[np.ndarray], *, int8_io: bool = True
) -> bytes:
    """A full-integer file of ``model``: int8 weights and activations, int32 biases.

    Args:
      model: a plain ``tf_keras`` model.
      calibration: one array per model input, batch first; each sample is one step of the
        converter's representative dataset.
      int8_io: int8 inputs and outputs; otherwise float32 ones, quantized and dequantized
        inside the file.

    Raises:
      ExportError: when the converter cannot quantize every operator to int8.
    """
    converter = converter_for(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    count = int(np.shape(calibration[0])[0])

    def representative():
        for index in range(count):
            yield [np.asarray(array[index : index + 1]) for array in calibration]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as error:  # noqa: BLE001 - the converter raises many types
        message = verify.error_message(error)
        raise ExportError(
            f"Expected a model the converter quantizes fully to int8 (TFLITE_BUILTINS_INT8); "
            f"received: {type(error).__name__}: {message}"
        ) from None


# --------------------------------------------------------------------------- inputs, outputs


def _io_tensors(model, names: Sequence[str], outputs: bool) -> list[int]:
    """Tensor indices of the file's inputs (or outputs), in the order of the Keras ``names``
    when the signature names agree, else in the file's order."""
    subgraph = model.subgraphs[0]
    inputs_by_tensor, outputs_by_tensor = verify.signature_names(model)
    by_tensor = outputs_by_tensor if outputs else inputs_by_tensor
    index_of = {name: index for index, name in by_tensor.items()}
    if set(names) == set(index_of) and len(names) == len(index_of):
        return [index_of[name] for name in names]
    return [int(i) for i in (subgraph.outputs if outputs else subgraph.inputs)]


def io_quantization(
    data: bytes, input_names: Sequence[str], output_names: Sequence[str]
) -> tuple[list[IoQuantization | None], list[IoQuantization | None]]:
    """Per Keras input and output (in Keras order), its integer quantization or ``None``."""
    model = flatbuffer.read_model(data)
    subgraph = model.subgraphs[0]

    def collect(names, outputs, kind):
        found = []
        for name, index in zip(names, _io_tensors(model, names, outputs)):
            tensor = subgraph.tensors[index]
            quantization = tensor.quantization
            integer = tensor.type in (_TYPES.INT8, _TYPES.UINT8, _TYPES.INT16)
            if not integer or quantization is None or quantization.scale is None:
                found.append(None)
                continue
            found.append(
                IoQuantization(
                    name=name,
                    kind=kind,
                    dtype=flatbuffer.type_name(tensor.type),
                    scale=float(quantization.scale[0]),
                    zero_point=int(quantization.zeroPoint[0]),
                )
            )
        return found

    return collect(input_names, False, "input"), collect(output_names, True, "output")


def quantize(values: np.ndarray, quantization: IoQuantization | None) -> np.ndarray:
    """Real ``values`` as an integer input's codes (unchanged for a float input)."""
    if quantization is None:
        return values
    dtype = np.dtype(quantization.dtype)
    limits = np.iinfo(dtype)
    codes = np.rint(np.asarray(values, np.float64) / quantization.scale) + quantization.zero_point
    return np.clip(codes, limits.min, limits.max).astype(dtype)


def dequantize(values: np.ndarray, quantization: IoQuantization | None) -> np.ndarray:
    """An integer output's codes as real values (unchanged for a float output)."""
    if quantization is None:
        return np.asarray(values)
    return (np.asarray(values, np.float64) - quantization.zero_point) * quantization.scale


def output_scales(data: bytes, output_names: Sequence[str]) -> list[float | None]:
    """Per output (Keras order), the scale of its int8 values: the output's own, or the one
    a final DEQUANTIZE reads; ``None`` for an output computed in float."""
    model = flatbuffer.read_model(data)
    subgraph = model.subgraphs[0]
    written = flatbuffer.producers(subgraph)
    scales = []
    for index in _io_tensors(model, output_names, True):
        tensor = subgraph.tensors[index]
        if tensor.type == _TYPES.FLOAT32 and index in written:
            operator = subgraph.operators[written[index]]
            if flatbuffer.builtin_code(model, operator) == _OPS.DEQUANTIZE:
                tensor = subgraph.tensors[int(operator.inputs[0])]
        quantization = tensor.quantization
        if (
            tensor.type in (_TYPES.INT8, _TYPES.UINT8, _TYPES.INT16)
            and quantization is not None
            and quantization.scale is not None
            and len(quantization.scale)
        ):
            scales.append(float(quantization.scale[0]))
        else:
            scales.append(None)
    return scales


class OutputChecker:
    """Runs full-integer files in LiteRT (both runtimes) and compares them with Keras.

    Args:
      reference: a file with the inputs, outputs and activation scales of the files checked
        (the converter's full-integer file).
      inputs: float inputs, one array per Keras input; quantized here for int8 inputs.
      expected: the Keras outputs.
      tolerance: an :class:`~tflite_export.verify.Int8Tolerance` (``None``: the default one),
        or a float relative to ``max(1, max|keras|)`` as for float files (no top-1 check).
      input_names: Keras input names.
      output_names: Keras output names.
    """

    def __init__(
        self,
        reference: bytes,
        inputs: Sequence[np.ndarray],
        expected: Sequence[np.ndarray],
        tolerance: float | verify.Int8Tolerance | None,
        input_names: Sequence[str],
        output_names: Sequence[str],
    ):
        self.expected = [np.asarray(e) for e in expected]
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.io_inputs, self.io_outputs = io_quantization(reference, input_names, output_names)
        self.inputs = [quantize(x, q) for x, q in zip(inputs, self.io_inputs)]
        if tolerance is None:
            tolerance = verify.Int8Tolerance()
        self.tolerance = tolerance
        magnitudes = [max(1.0, float(np.max(np.abs(e), initial=0.0))) for e in self.expected]
        scales = output_scales(reference, output_names)
        self.ties = [0.0 if scale is None else scale for scale in scales]
        if isinstance(tolerance, verify.Int8Tolerance):
            self.allowed = [
                tolerance.output_steps * scale
                if scale is not None
                else DEFAULT_RELATIVE_TOLERANCE * magnitude
                for scale, magnitude in zip(scales, magnitudes)
            ]
            self.min_top1 = tolerance.top1_agreement or None
        else:
            self.allowed = [float(tolerance) * magnitude for magnitude in magnitudes]
            self.min_top1 = None

    def check(self, data: bytes) -> tuple[verify.RuntimeCheck, ...]:
        """One check per LiteRT runtime: every output against Keras."""
        checks = []
        for runtime in verify.LITERT_RUNTIMES:
            try:
                outputs = verify.run(
                    data,
                    self.inputs,
                    runtime=runtime,
                    input_names=self.input_names,
                    output_names=self.output_names,
                )
            except Exception as error:  # noqa: BLE001 - any interpreter failure is a finding
                checks.append(verify.RuntimeCheck(runtime, error=verify.error_message(error)))
                continue
            real = [dequantize(o, q) for o, q in zip(outputs, self.io_outputs)]
            checks.append(
                verify.compare_outputs(
                    runtime,
                    real,
                    self.expected,
                    tolerance=self.allowed,
                    absolute=True,
                    output_names=self.output_names,
                    min_top1=self.min_top1,
                    ties=self.ties,
                )
            )
        return tuple(checks)
