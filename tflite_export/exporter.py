"""``export``: a stripped tf_admm model to a verified, compactly encoded ``.tflite`` file.

1. Check the arguments: the model (a plain ``tf_keras`` model, no ``tf_admm.AdmmWrapper``; a
   subclassed model is called on ``keras.Input`` tensors of its known signature; or a plain
   Keras 3 model on the TensorFlow backend, :mod:`tflite_export.inputs`), the path and the
   options of the target.
2. Run the export pipeline (:func:`tflite_export.pipeline.run`) with the target's plug-in:
   :mod:`tflite_export.float_target` (LiteRT, float32 activations: no representative data, or
   ``activations="float32"``), :mod:`tflite_export.integer_target` (LiteRT, full-integer: int8
   weights and activations, with representative data) or :mod:`tflite_export.tflm_target`
   (TFLite Micro, LUT weights). The pipeline converts the model with the TFLite converter
   (:mod:`tflite_export.conversion`) and checks that file against the Keras outputs; finds the
   weight tensors (:mod:`tflite_export.weights`: the weight operands of every operator that
   has them, FULLY_CONNECTED, the convolutions, GATHER, BATCH_MATMUL, the LSTM and RNN
   sequence operators, and any other constant holding a Keras weight, each matched to its
   Keras layer and weight by content, :mod:`tflite_export.layouts`) and, for each, the
   encodings that apply with their estimated bytes; writes every weight in its smallest
   encoding and verifies the file, with and without the default delegate. If it fails, each
   weight is tried alone, walking down its candidates until one passes (the converter's own
   tensor always does), then the combination again (:mod:`tflite_export.candidates`).
3. With ``tensor_names="io"`` the file is re-encoded without the names of its internal
   tensors (:mod:`tflite_export.names`) and verified again.
4. The file is written, its bytes accounted for, and an :class:`ExportReport` returned. Keras
   weights found in no weight tensor go to the report with the reason
   (:func:`tflite_export.weights.skipped_weights`).

:func:`verify_file` checks an existing LiteRT file against a Keras model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from tf_admm.compat import keras
from tflite_export import flatbuffer, pipeline, verify
from tflite_export.candidates import LITERT_WORDING
from tflite_export.conversion import ConversionError, convert_float, converter_for
from tflite_export.encodings import Encoding
from tflite_export.errors import ExportError, VerificationError
from tflite_export.float_target import FloatPlugin
from tflite_export.inputs import (
    MAX_REPRESENTATIVE_SAMPLES,
    check_model,
    check_path,
    input_names,
    keras_outputs,
    output_names,
    prepare_inputs,
)
from tflite_export.integer import OutputChecker
from tflite_export.integer_target import IntegerPlugin
from tflite_export.names import TensorNames, as_tensor_names
from tflite_export.pipeline import Activations, Target
from tflite_export.report import ExportReport
from tflite_export.tflm_target import TflmPlugin
from tflite_export.weights import is_full_integer

__all__ = [
    "Activations",
    "ConversionError",
    "ExportError",
    "MAX_REPRESENTATIVE_SAMPLES",
    "Target",
    "TensorNames",
    "VerificationError",
    "convert_float",
    "converter_for",
    "export",
    "verify_file",
]


def export(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    target: str | Target = Target.LITERT,
    representative_data: Any = None,
    activations: str | Activations | None = None,
    int8_io: bool = False,
    encoding: str | Encoding | Mapping[str, str | Encoding] = "auto",
    tolerance: float | verify.Int8Tolerance | None = None,
    allow_float16: bool = False,
    batch_size: int = 8,
    seed: int = 0,
    tensor_names: str | TensorNames = TensorNames.KEEP,
) -> ExportReport:
    """Writes ``model`` as a ``.tflite`` file with compact, verified weight encodings.

    Every weight tensor (the kernels of Dense, convolution, transposed-convolution,
    LocallyConnected, EinsumDense and attention layers, embeddings, LSTM/GRU/SimpleRNN/ConvLSTM
    kernels and recurrent kernels per gate, and any other constant in a weight slot or holding
    a Keras weight) is stored in the smallest :class:`Encoding` that applies to its values and
    that the interpreter runs correctly; the file is then run with and without the default
    delegate on a batch of inputs and must reproduce the Keras outputs. Models with recurrent
    layers get a file with the batch fixed to 1 (the report's ``file_batch_size`` and
    ``notes`` say so); it is verified one sample at a time, its state reset in between.

    With representative data, the LiteRT file is full-integer (int8 weights and activations,
    float inputs and outputs unless ``int8_io``): see :mod:`tflite_export.integer_target`.

    Example:
      >>> plain = tf_admm.strip(admm_model)                               # doctest: +SKIP
      >>> report = tflite_export.export(plain, "lenet5.tflite")           # doctest: +SKIP
      >>> report = tflite_export.export(                                  # doctest: +SKIP
      ...     plain, "lenet5_int8.tflite", representative_data=train_images[:200])
      >>> print(report)                                                   # doctest: +SKIP

    Args:
      model: a plain (stripped) ``tf_keras`` model: functional, Sequential with an input
        shape, or subclassed and built (called on a batch, or ``model.build(input_shape)``;
        its file's inputs are then named ``input``, ``input_<i>`` or by dict key). Or a
        plain Keras 3 model (``import keras``; e.g. from :func:`tf_admm.strip`), functional or
        Sequential with known inputs, on the TensorFlow backend (a model trained on another
        backend is saved as ``.keras`` and loaded in a TensorFlow-backend process).
      path: where to write the file.
      target: a :class:`Target`: ``"litert"`` (LiteRT), ``"tflm"`` (TFLite Micro, float32
        model, LUT weights) or ``"tflm_int8"`` (TFLite Micro, full-integer model with int8
        inputs and outputs, LUT weights); see :mod:`tflite_export.tflm`. The TFLite Micro
        targets need the ``tflite-micro`` package.
      representative_data: real input samples. They are the verification batch, and the
        calibration set of int8 activations (LiteRT with int8 activations, ``tflm_int8``).
        Accepted forms: an array (batch first; one-input models), a list or tuple of arrays
        (one per input), a dict of arrays by input name, or an iterable of samples or batches
        (a ``tf.data.Dataset``, a generator, a list of more elements than the model has
        inputs), or a callable returning such an iterable (e.g. the generator function given
        to the TFLite converter's ``representative_dataset``). Each element of an iterable is
        a sample or a batch of one input, a list or tuple of one per input, a dict by input
        name, or a Keras-style ``(inputs, labels)`` or ``(inputs, labels, weights)`` tuple
        (labels are ignored). At most 1,000 samples are read from an iterable. By default
        ``batch_size`` standard-normal samples (integer inputs: zeros and ones).
      activations: ``"float32"`` or ``"int8"`` (full-integer: the TFLite converter's
        ``optimizations=[DEFAULT]`` with the representative data as calibration set and int8
        builtins only). LiteRT only; ``None`` means int8 when ``representative_data`` is given
        and float32 otherwise. Pass ``"float32"`` to use real samples only for verification.
      int8_io: full-integer LiteRT: int8 inputs and outputs instead of float32 ones (the
        report's ``io_quantization`` says how to quantize and dequantize them).
        ``tflm_int8`` files always have int8 inputs and outputs.
      encoding: ``"auto"`` (smallest passing exact encoding per weight), one
        :class:`Encoding` for every weight, or a dict from layer name (or ``layer.weight``, or
        tensor name) to an encoding or ``"auto"``. A requested encoding that does not apply or
        fails verification raises; ``"auto"`` falls back and says why in the report. The
        TFLite Micro targets take ``"lut"`` and the dense ``"float32"`` (``tflm``) or
        ``"int8"`` (``tflm_int8``); full-integer LiteRT takes ``"int8"``,
        ``"sparse_int8"``, ``"levels"`` and ``"sparse_levels"``. ``"sparse_blocks"`` (1x4
        block-sparse FULLY_CONNECTED filters read by the kernel, :mod:`tflite_export.blocks`)
        is never chosen by ``"auto"`` and fails verification when asked for: XNNPACK, the
        default delegate, reads such filters as dense.
      tolerance: an output passes when ``max|tflite - keras| <= tolerance * max(1, max|keras|)``.
        Lossy weights (``int8``, inexact ``float16``) are checked against the float file
        holding the decoded weights. By default 1e-4, and 0.1 for ``tflm_int8`` (the int8
        quantization error; its LUTs must still reproduce the uncompressed int8 file
        exactly). Full-integer LiteRT also takes a :class:`~tflite_export.verify.Int8Tolerance`
        (output quantization steps and top-1 agreement), its default.
      allow_float16: float32 LiteRT: let ``"auto"`` store weights as float16 even where that
        rounds them (k-means centroids that are not float16 values); without it float16 is
        chosen only where it is exact.
      batch_size: samples in the default verification batch.
      seed: seed of the default verification batch.
      tensor_names: ``"keep"`` (the converter's tensor names) or ``"io"``: only the inputs and
        outputs of each subgraph and the tensors of its signatures keep their names (what
        ``get_input_details()``, ``get_output_details()`` and signature runners use); the
        others, the converter's fused operation names, are dropped, which on small models
        saves a tenth of the file (:mod:`tflite_export.names`). Every target; the report's
        ``notes`` give the bytes saved, ``file.name_bytes`` the bytes of the names left.

    Returns:
      An :class:`ExportReport`: per-weight encodings and reasons, per-tensor bytes that sum to
      the file size with the flatbuffer overhead, dense float and gzip sizes, checks, the
      Keras weights left as the converter wrote them and why (``skipped_weights``).

    Raises:
      ExportError: for a wrapped (unstripped) model, a model whose inputs are unknown, a Keras
        3 model on a backend other than TensorFlow, an
        unwritable path, an unknown target, encoding or ``tensor_names``, or a requested
        encoding that does not apply to a weight;
        :class:`~tflite_export.conversion.ConversionError` when the converter cannot lower the
        model to LiteRT builtin operators (naming the operators and layers).
      VerificationError: when a written file does not reproduce the Keras outputs (the file is
        not written).
    """
    try:
        target = Target(target)
    except ValueError:
        raise ExportError(
            f"Expected target in {[t.value for t in Target]}; received: target={target!r}"
        ) from None
    tensor_names = as_tensor_names(tensor_names)
    model = check_model(model)
    path = check_path(path)
    integer = _check_options(
        target, representative_data, activations, int8_io, tolerance, allow_float16
    )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExportError(f"Expected batch_size >= 1; received: batch_size={batch_size!r}")
    if target.micro:
        plugin = TflmPlugin(target is Target.TFLM_INT8, tolerance)
    elif integer:
        plugin = IntegerPlugin(tolerance, int8_io)
    else:
        plugin = FloatPlugin(tolerance, allow_float16)
    return pipeline.run(
        plugin,
        model,
        path,
        representative_data=representative_data,
        encoding=encoding,
        batch_size=batch_size,
        seed=seed,
        tensor_names=tensor_names,
    )


def _check_options(
    target: Target,
    representative_data: Any,
    activations: Any,
    int8_io: Any,
    tolerance: Any,
    allow_float16: Any,
) -> bool:
    """Checks the options that depend on the target; whether the LiteRT file is full-integer."""
    if activations is not None:
        try:
            activations = Activations(activations)
        except ValueError:
            raise ExportError(
                f"Expected activations in {[a.value for a in Activations]} or None; received: "
                f"activations={activations!r}"
            ) from None
    for name, value in (("int8_io", int8_io), ("allow_float16", allow_float16)):
        if not isinstance(value, (bool, np.bool_)):
            raise ExportError(f"Expected {name} to be a bool; received: {name}={value!r}")
    if target.micro:
        implied = Activations.INT8 if target is Target.TFLM_INT8 else Activations.FLOAT32
        if activations not in (None, implied):
            raise ExportError(
                f"Expected activations={implied.value!r} (or None) for target "
                f"{target.value!r}; received: activations={activations.value!r} (use target "
                f"{'tflm_int8' if activations is Activations.INT8 else 'tflm'})"
            )
        integer = False
    elif activations is None:
        integer = representative_data is not None
    else:
        integer = activations is Activations.INT8
        if integer and representative_data is None:
            raise ExportError(
                "Expected representative_data (real input samples to calibrate the int8 "
                "activations) with activations='int8'; received: representative_data=None"
            )
    if int8_io and not integer:
        raise ExportError(
            f"Expected int8_io only for a full-integer LiteRT file (target 'litert' with "
            f"representative_data); received: int8_io=True, target={target.value!r}, "
            f"activations={'int8' if target is Target.TFLM_INT8 else 'float32'!r}"
        )
    if allow_float16 and (integer or target.micro):
        raise ExportError(
            f"Expected allow_float16 only for a float32 LiteRT file; received: "
            f"allow_float16=True, target={target.value!r}, int8 activations={integer}"
        )
    if isinstance(tolerance, verify.Int8Tolerance):
        if not integer:
            raise ExportError(
                "Expected an Int8Tolerance only for a full-integer LiteRT file; received: "
                f"tolerance={tolerance!r}, target={target.value!r}"
            )
    elif tolerance is not None and (
        isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance <= 0
    ):
        raise ExportError(f"Expected tolerance > 0; received: tolerance={tolerance!r}")
    return integer


def verify_file(
    file: str | os.PathLike | bytes,
    model: keras.Model,
    *,
    representative_data: Any = None,
    tolerance: float | verify.Int8Tolerance | None = None,
    batch_size: int = 8,
    seed: int = 0,
) -> tuple[verify.RuntimeCheck, ...]:
    """Checks a LiteRT ``.tflite`` file (path or bytes) against a Keras model in every runtime.

    A full-integer file (int8 weights) is checked within its quantization tolerance, its
    integer inputs quantized and outputs dequantized (see :mod:`tflite_export.integer`).

    Args:
      file: path of the file, or its bytes.
      model: the Keras model it should reproduce.
      representative_data: verification inputs, as for :func:`export`.
      tolerance: as for :func:`export`; by default 1e-4 for a float file and
        :class:`~tflite_export.verify.Int8Tolerance` for a full-integer one.
      batch_size: samples in the default verification batch.
      seed: seed of the default verification batch.

    Returns:
      The passing :class:`~tflite_export.verify.RuntimeCheck` of each runtime.

    Raises:
      VerificationError: naming each runtime and output that differs, or the load error.
    """
    model = check_model(model)
    if isinstance(file, (bytes, bytearray)):
        data = bytes(file)
    else:
        with open(os.fspath(file), "rb") as handle:
            data = handle.read()
    inputs = prepare_inputs(model, representative_data, batch_size, seed)
    expected = keras_outputs(model, inputs)
    try:
        parsed = flatbuffer.read_model(data)
    except ValueError as error:
        raise VerificationError(f"Expected a LiteRT file; received: {error}") from None
    if is_full_integer(parsed) or isinstance(tolerance, verify.Int8Tolerance):
        checker = OutputChecker(
            data, inputs, expected, tolerance, input_names(model), output_names(model)
        )
        checks = checker.check(data)
    else:
        checks = verify.check_outputs(
            data,
            inputs,
            expected,
            tolerance=1e-4 if tolerance is None else tolerance,
            input_names=input_names(model),
            output_names=output_names(model),
        )
    if not all(c.passed for c in checks):
        LITERT_WORDING.fail("the file", checks)
    return checks
