"""``export``: a stripped tf_admm model to a verified, compactly encoded ``.tflite`` file.

Flow for the LiteRT target with float32 activations (no representative data, or
``activations="float32"``):

1. Check the model (a plain ``tf_keras`` model, no ``tf_admm.AdmmWrapper``; a subclassed model
   is called on ``keras.Input`` tensors of its known signature) and the path.
2. Convert it with the TFLite converter to a dense float32 file (the baseline), with the batch
   fixed to 1 when recurrent layers need a static one (:mod:`tflite_export.conversion`), check
   that file against the Keras outputs.
3. Find the weight tensors (:mod:`tflite_export.weights`): the weight operands of every
   operator that has them (FULLY_CONNECTED, the convolutions, GATHER, BATCH_MATMUL, the LSTM
   and RNN sequence operators) and any other constant holding a Keras weight, each matched to
   its Keras layer and weight by content (:mod:`tflite_export.layouts`), whatever the layer
   type; list, for each, the encodings that apply (:class:`~tflite_export.encodings.Encoding`)
   with their estimated bytes. Keras weights found in no weight tensor go to the report with
   the reason (:func:`tflite_export.weights.skipped_weights`).
4. Write every weight in its smallest encoding and verify the file in the interpreter, with and
   without the default delegate. If it fails, try each weight alone, walking down its
   candidates until one passes (the converter's own tensor always does), then verify the
   combination again (:func:`_select`).
5. Write the file, account for its bytes and return an :class:`ExportReport`.

Sparse and quantized weights are expanded once, when the interpreter prepares the model, by
DENSIFY and DEQUANTIZE operators inserted in front of the graph; the compute operators keep
their float kernels, so exact encodings give the Keras outputs up to float summation order.

k-means (clustered) weights: LiteRT has no lookup-table weights, so a tensor whose centroids
lie on a uniform grid is stored as integer codes (``LEVELS``, exact); otherwise as float32
(dense or sparse, exact), or as float16 where every centroid is a float16 value, or where
``allow_float16=True`` accepts the rounding (the report gives the error).

With representative data the LiteRT file is full-integer instead (int8 activations): the same
steps on the converter's int8 file, with the candidates of :mod:`tflite_export.integer`.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tf_admm.compat import keras
from tflite_export import encodings, flatbuffer, verify
from tflite_export.candidates import (
    LITERT_WORDING,
    OPERATOR_OVERHEAD,
    QUANTIZATION_BYTES_PER_CHANNEL,
    TENSOR_OVERHEAD,
    Candidate,
    build_file,
    distinct_detail,
    fit_levels,
    keep_options,
    layout_detail,
    rank,
    select_or_keep,
)
from tflite_export.conversion import (
    ConversionError,
    convert_float,
    convert_float_any_batch,
    converter_for,
)
from tflite_export.encodings import Encoding
from tflite_export.errors import ExportError, VerificationError
from tflite_export.inputs import (
    MAX_REPRESENTATIVE_SAMPLES,
    batch_size_of,
    check_model,
    check_path,
    keras_outputs,
    prepare_inputs,
)
from tflite_export.report import ExportReport, FileBytes, WeightChoice, account, gzip_size
from tflite_export.weights import (
    WeightTensor,
    find_weight_tensors,
    is_full_integer,
    keras_layers,
    kernel_weights,
    skipped_weights,
)

__all__ = [
    "Activations",
    "ConversionError",
    "ExportError",
    "MAX_REPRESENTATIVE_SAMPLES",
    "Target",
    "VerificationError",
    "convert_float",
    "converter_for",
    "export",
    "verify_file",
]

_schema = flatbuffer.schema
_OPS = _schema.BuiltinOperator
_TYPES = _schema.TensorType


_CODE_TENSOR_TYPES = {
    encodings.CodeType.INT4: _TYPES.INT4,
    encodings.CodeType.INT8: _TYPES.INT8,
    encodings.CodeType.INT16: _TYPES.INT16,
}


class Target(str, enum.Enum):
    """Where the file runs.

    ``LITERT``: the LiteRT (TFLite) interpreter; float32 compute with compact weight
    encodings, or full-integer (int8 weights and activations) when representative data is
    given (see :mod:`tflite_export.integer`).
    ``TFLM``: TFLite Micro; the converter's float32 model with LUT-compressed float32 weights
    (exact: outputs equal the uncompressed file's in TFLite Micro). Needs an FPU-capable MCU.
    ``TFLM_INT8``: TFLite Micro; a full-integer model (int8 weights and activations, int8
    inputs and outputs, calibrated on the representative data) with LUT-compressed int8
    weights. Outputs are within quantization error of Keras and equal to the uncompressed int8
    file's. See :mod:`tflite_export.tflm`.
    """

    LITERT = "litert"
    TFLM = "tflm"
    TFLM_INT8 = "tflm_int8"

    @property
    def micro(self) -> bool:
        """Whether the file runs in TFLite Micro."""
        return self is not Target.LITERT


class Activations(str, enum.Enum):
    """What a LiteRT file computes with: ``FLOAT32`` (weight-only encodings) or ``INT8``
    (full-integer: int8 weights and activations, calibrated on the representative data)."""

    FLOAT32 = "float32"
    INT8 = "int8"


# What "auto" may choose for a float32 LiteRT file (float16 only where exact, unless allowed).
_AUTO_FLOAT = (
    Encoding.FLOAT32,
    Encoding.SPARSE_FLOAT32,
    Encoding.LEVELS,
    Encoding.SPARSE_LEVELS,
    Encoding.FLOAT16,
    Encoding.SPARSE_FLOAT16,
)


def _quantization(scale: np.ndarray, axis: int | None, zero_point: int = 0) -> Any:
    parameters = _schema.QuantizationParametersT()
    parameters.scale = np.atleast_1d(np.asarray(scale, np.float32))
    parameters.zeroPoint = np.full(parameters.scale.size, zero_point, np.int64)
    parameters.quantizedDimension = int(axis) if axis is not None else 0
    return parameters


def _stored_codes(fit: encodings.UniformFit) -> np.ndarray | bytes:
    if fit.code_type is encodings.CodeType.INT4:
        return encodings.pack_int4(fit.stored)
    return fit.stored.astype(np.int16 if fit.code_type is encodings.CodeType.INT16 else np.int8)


def _dequantize_version(fit: encodings.UniformFit) -> int:
    # Versions as TFLite's op_version.cc assigns them for DEQUANTIZE.
    if fit.code_type is encodings.CodeType.INT4:
        return 6
    if fit.code_type is encodings.CodeType.INT16:
        return 3
    return 5 if fit.axis is not None else 2


def _scale_detail(fit: encodings.UniformFit) -> str:
    shift = f" + {fit.zero_point}" if fit.zero_point else ""
    if fit.axis is None:
        return f"{fit.code_type.value} codes{shift}, step {float(fit.scale):.6g} per tensor"
    return (
        f"{fit.code_type.value} codes{shift}, {fit.scale.size} steps per channel (axis {fit.axis})"
    )


def _dense_candidate(values: np.ndarray) -> Candidate:
    return Candidate(
        Encoding.FLOAT32,
        4 * values.size,
        "float32",
        values,
        lambda editor, w: None,
        baseline=True,
    )


def _sparse_float_candidate(values: np.ndarray) -> Candidate:
    layout = encodings.best_sparse_layout(values != 0, 4)
    stored = values.reshape(-1)[layout.positions].astype(np.float32)

    def apply(editor: flatbuffer.ModelEditor, weight: WeightTensor) -> None:
        editor.release_constant(weight.subgraph, weight.tensor)
        source = editor.add_tensor(
            weight.subgraph,
            f"{weight.tensor_name}/sparse",
            values.shape,
            _TYPES.FLOAT32,
            stored,
            sparsity=flatbuffer.sparsity_parameters(layout),
        )
        editor.add_densify(weight.subgraph, source, weight.tensor)

    estimate = layout.stored_bytes(4) + TENSOR_OVERHEAD + OPERATOR_OVERHEAD
    return Candidate(
        Encoding.SPARSE_FLOAT32, estimate, f"float32, {layout_detail(layout)}", values, apply
    )


def _levels_candidate(encoding: Encoding, fit: encodings.UniformFit) -> Candidate:
    def apply(editor: flatbuffer.ModelEditor, weight: WeightTensor) -> None:
        editor.release_constant(weight.subgraph, weight.tensor)
        source = editor.add_tensor(
            weight.subgraph,
            f"{weight.tensor_name}/{fit.code_type.value}",
            fit.codes.shape,
            _CODE_TENSOR_TYPES[fit.code_type],
            _stored_codes(fit),
            quantization=_quantization(fit.scale, fit.axis, fit.zero_point),
        )
        editor.add_dequantize(weight.subgraph, _dequantize_version(fit), source, weight.tensor)

    estimate = (
        fit.code_type.stored_bytes(fit.codes.size)
        + QUANTIZATION_BYTES_PER_CHANNEL * fit.scale.size
        + TENSOR_OVERHEAD
        + OPERATOR_OVERHEAD
    )
    return Candidate(
        encoding, estimate, _scale_detail(fit), fit.decode(), apply, max_error=fit.max_error
    )


def _sparse_levels_candidate(
    fit: encodings.UniformFit, encoding: Encoding = Encoding.SPARSE_LEVELS
) -> Candidate:
    layout = encodings.best_sparse_layout(fit.codes != 0, 1)
    stored = fit.codes.reshape(-1)[layout.positions].astype(np.int8)

    def apply(editor: flatbuffer.ModelEditor, weight: WeightTensor) -> None:
        editor.release_constant(weight.subgraph, weight.tensor)
        source = editor.add_tensor(
            weight.subgraph,
            f"{weight.tensor_name}/sparse_int8",
            fit.codes.shape,
            _TYPES.INT8,
            stored,
            sparsity=flatbuffer.sparsity_parameters(layout),
        )
        codes = editor.add_tensor(
            weight.subgraph,
            f"{weight.tensor_name}/int8",
            fit.codes.shape,
            _TYPES.INT8,
            quantization=_quantization(fit.scale, fit.axis),
        )
        editor.add_densify(weight.subgraph, source, codes)
        editor.add_dequantize(
            weight.subgraph, 5 if fit.axis is not None else 2, codes, weight.tensor
        )

    estimate = (
        layout.stored_bytes(1)
        + QUANTIZATION_BYTES_PER_CHANNEL * fit.scale.size
        + 2 * (TENSOR_OVERHEAD + OPERATOR_OVERHEAD)
    )
    detail = f"int8 codes, {layout_detail(layout)}, " + _scale_detail(fit).split(", ", 1)[1]
    return Candidate(encoding, estimate, detail, fit.decode(), apply, max_error=fit.max_error)


def _float16_candidate(values: np.ndarray, sparse: bool) -> Candidate:
    """float16 weights (dense, or sparse then DENSIFY) expanded to float32 by DEQUANTIZE."""
    halves = values.astype(np.float16)
    decoded = halves.astype(np.float32)
    layout = encodings.best_sparse_layout(halves != 0, 2) if sparse else None

    def apply(editor: flatbuffer.ModelEditor, weight: WeightTensor) -> None:
        editor.release_constant(weight.subgraph, weight.tensor)
        if layout is None:
            source = editor.add_tensor(
                weight.subgraph,
                f"{weight.tensor_name}/float16",
                values.shape,
                _TYPES.FLOAT16,
                halves,
            )
        else:
            stored = editor.add_tensor(
                weight.subgraph,
                f"{weight.tensor_name}/sparse_float16",
                values.shape,
                _TYPES.FLOAT16,
                halves.reshape(-1)[layout.positions],
                sparsity=flatbuffer.sparsity_parameters(layout),
            )
            source = editor.add_tensor(
                weight.subgraph, f"{weight.tensor_name}/float16", values.shape, _TYPES.FLOAT16
            )
            editor.add_densify(weight.subgraph, stored, source)
        # DEQUANTIZE version 3 reads float16 (TFLite's op_version.cc).
        editor.add_dequantize(weight.subgraph, 3, source, weight.tensor)

    error = encodings.float16_error(values)
    if layout is None:
        estimate = 2 * values.size + TENSOR_OVERHEAD + OPERATOR_OVERHEAD
        return Candidate(Encoding.FLOAT16, estimate, "float16", decoded, apply, max_error=error)
    estimate = layout.stored_bytes(2) + 2 * (TENSOR_OVERHEAD + OPERATOR_OVERHEAD)
    detail = f"float16, {layout_detail(layout)}"
    return Candidate(Encoding.SPARSE_FLOAT16, estimate, detail, decoded, apply, max_error=error)


def _candidates(
    weight: WeightTensor,
    values: np.ndarray,
    allowed: Sequence[Encoding],
    *,
    lossy_float16: bool = False,
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Applicable candidates among ``allowed``, smallest first, and why the others are not.

    float16 candidates are offered when they store the values exactly, or when
    ``lossy_float16`` (asked for, or ``allow_float16``).
    """
    found: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    nonzeros = int(np.count_nonzero(values))
    fit = None
    if Encoding.LEVELS in allowed or Encoding.SPARSE_LEVELS in allowed:
        fit = fit_levels(weight, values)
    float16_error = None
    if Encoding.FLOAT16 in allowed or Encoding.SPARSE_FLOAT16 in allowed:
        float16_error = encodings.float16_error(values)
    for encoding in allowed:
        if encoding.sparse and nonzeros == values.size:
            skipped.append((encoding.value, "no zero weights"))
        elif encoding is Encoding.FLOAT32:
            found.append(_dense_candidate(values))
        elif encoding is Encoding.SPARSE_FLOAT32:
            found.append(_sparse_float_candidate(values))
        elif encoding is Encoding.LEVELS:
            if fit is None:
                skipped.append((encoding.value, distinct_detail(values)))
            else:
                found.append(_levels_candidate(Encoding.LEVELS, fit))
        elif encoding is Encoding.SPARSE_LEVELS:
            if fit is None:
                skipped.append((encoding.value, distinct_detail(values)))
            elif encodings.code_type(fit.codes) not in (
                encodings.CodeType.INT4,
                encodings.CodeType.INT8,
            ):
                # DENSIFY fills stored zeros, which a nonzero zero point would shift.
                skipped.append(
                    (encoding.value, "codes do not fit INT8 with zero point 0 (sparse codes do)")
                )
            else:
                found.append(_sparse_levels_candidate(fit))
        elif encoding in (Encoding.FLOAT16, Encoding.SPARSE_FLOAT16):
            if float16_error and not lossy_float16:
                skipped.append(
                    (
                        encoding.value,
                        f"not exact: float16 moves weights by up to {float16_error:.3g} "
                        f"(allow_float16=True or encoding={encoding.value!r} accepts that)",
                    )
                )
            else:
                found.append(_float16_candidate(values, sparse=encoding.sparse))
        elif encoding in (Encoding.INT8, Encoding.SPARSE_INT8):
            lossy = encodings.quantize_symmetric_int8(values, weight.channel_axis)
            if encoding is Encoding.INT8:
                found.append(_levels_candidate(Encoding.INT8, lossy))
            else:
                found.append(_sparse_levels_candidate(lossy, Encoding.SPARSE_INT8))
        elif not encoding.litert:
            skipped.append(
                (encoding.value, "runs only in TFLite Micro (target 'tflm' or 'tflm_int8')")
            )
    found.sort(key=rank)
    return found, skipped


def _as_encoding(value: Any, where: str) -> Encoding | None:
    """``None`` for "auto", else the :class:`Encoding`."""
    if isinstance(value, str) and value == "auto":
        return None
    try:
        return Encoding(value)
    except ValueError:
        names = ["auto", *(e.value for e in Encoding)]
        raise ExportError(f"Expected {where} in {names}; received: {where}={value!r}") from None


def _check_each_encoding(encoding: Any, check: Callable[[Any, str], Any] = _as_encoding) -> None:
    """Calls ``check(value, where)`` on the ``encoding`` argument, or on each value of a mapping
    of them; ``where`` names the value as error messages do (``encoding['conv1']``)."""
    if isinstance(encoding, Mapping):
        for name, value in encoding.items():
            check(value, f"encoding[{name!r}]")
    else:
        check(encoding, "encoding")


def _requested_encodings(
    encoding: Any, weights: Sequence[WeightTensor], model: keras.Model
) -> dict[tuple[int, int], Encoding | None]:
    """Per weight tensor, the forced encoding or ``None`` (auto)."""
    keys = {(w.subgraph, w.tensor): w for w in weights}
    if not isinstance(encoding, Mapping):
        forced = _as_encoding(encoding, "encoding")
        return {key: forced for key in keys}
    requested: dict[tuple[int, int], Encoding | None] = {key: None for key in keys}
    layers = {layer.name: layer for layer in keras_layers(model)}
    for name, value in encoding.items():
        forced = _as_encoding(value, f"encoding[{name!r}]")
        hits = [
            key
            for key, w in keys.items()
            if name in (w.label, w.layer, w.tensor_name, f"{w.layer}.{w.weight}")
        ]
        if hits:
            for key in hits:
                requested[key] = forced
            continue
        if name in layers:
            layer = layers[name]
            kernels = [weight for weight, _ in kernel_weights(layer)]
            if not kernels:
                raise ExportError(
                    f"Layer {name!r}: Expected a layer with weights encoding {value!r} can "
                    f"store (kernels, embeddings, recurrent kernels); received: "
                    f"{type(layer).__name__} without such weights"
                )
            raise ExportError(
                f"Layer {name!r}: Expected its weights {kernels} in weight tensors of the "
                f"converted file; received: none holds them (the converter changed them, e.g. "
                f"folded a normalization into them, or an operator this target does not "
                f"re-encode reads them)"
            )
        known = sorted({w.label for w in weights})
        raise ExportError(
            f"Expected encoding keys among the model's weights {known}; received: {name!r}"
        )
    return requested


class _Builder:
    """Writes a file for an assignment of candidates and verifies it."""

    def __init__(self, float_file, weights, inputs, expected, tolerance, model):
        self.float_file = float_file
        self.weights = {(w.subgraph, w.tensor): w for w in weights}
        self.inputs = inputs
        self.expected = expected
        self.tolerance = tolerance
        self.input_names = list(model.input_names)
        self.output_names = list(model.output_names)
        self._lossy_reference: dict[tuple, list[np.ndarray]] = {}
        # Per weight, the candidate that leaves the converter's tensor as it is.
        self.baseline: dict[tuple[int, int], Candidate] = {}

    def build(self, plan: Mapping[tuple[int, int], Candidate]) -> bytes:
        return build_file(self.float_file, self.weights, plan)

    def _expected(self, plan: Mapping[tuple[int, int], Candidate]) -> list[np.ndarray]:
        lossy = tuple(sorted(k for k, c in plan.items() if c.max_error > 0))
        if not lossy:
            return self.expected
        if lossy not in self._lossy_reference:
            # Lossy weights: the reference is the float file holding the decoded weights,
            # run with builtin kernels; the float file itself was checked against Keras.
            model = flatbuffer.read_model(self.float_file)
            editor = flatbuffer.ModelEditor(model)
            for key in lossy:
                weight = self.weights[key]
                tensor = model.subgraphs[weight.subgraph].tensors[weight.tensor]
                tensor.buffer = editor.add_buffer(plan[key].decoded.astype(np.float32))
            reference = flatbuffer.write_model(editor.finish())
            self._lossy_reference[lossy] = verify.run(
                reference,
                self.inputs,
                runtime=verify.Runtime.BUILTIN,
                input_names=self.input_names,
                output_names=self.output_names,
            )
        return self._lossy_reference[lossy]

    def check(self, data: bytes, plan) -> tuple[verify.RuntimeCheck, ...]:
        return verify.check_outputs(
            data,
            self.inputs,
            self._expected(plan),
            tolerance=self.tolerance,
            input_names=self.input_names,
            output_names=self.output_names,
        )


def _write(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as handle:
            handle.write(data)
    except OSError as error:
        raise ExportError(f"Expected a writable path; received: path={path!r} ({error})") from None


def _choices(
    data: bytes,
    weights: Mapping[tuple[int, int], WeightTensor],
    plan: Mapping[tuple[int, int], Candidate],
    stored_values: Mapping[tuple[int, int], np.ndarray],
    reasons: Mapping[tuple[int, int], str],
    rejected: Mapping[tuple[int, int], list[tuple[str, str]]],
) -> tuple[FileBytes, tuple[WeightChoice, ...]]:
    """The file's byte accounting (weight tensors and their decode chains labelled) and one
    :class:`WeightChoice` per weight, its stored bytes those of its chain."""
    final = flatbuffer.read_model(data)
    labels = {}
    owned = {}
    for key, candidate in plan.items():
        weight = weights[key]
        owned[key] = _tensors_behind(final, weight.subgraph, weight.tensor)
        for tensor in owned[key]:
            labels[(weight.subgraph, tensor)] = (weight.label, candidate.encoding.value)
    file_bytes = account(data, labels)
    choices = []
    for key, candidate in plan.items():
        weight = weights[key]
        stored = sum(
            t.total_bytes
            for t in file_bytes.tensors
            if t.subgraph == weight.subgraph and t.tensor in owned[key]
        )
        choices.append(
            WeightChoice.for_weight(
                weight,
                stored_values[key],
                encoding=candidate.encoding,
                detail=candidate.detail,
                stored_bytes=stored,
                max_weight_error=candidate.max_error,
                reason=reasons[key],
                rejected=rejected[key],
            )
        )
    return file_bytes, tuple(choices)


def _write_report(
    path: str,
    data: bytes,
    checks: tuple[verify.RuntimeCheck, ...],
    *,
    target: Target,
    float_file: bytes,
    inputs: Sequence[np.ndarray],
    builder: Any,
    plan: Mapping[tuple[int, int], Candidate],
    stored_values: Mapping[tuple[int, int], np.ndarray],
    reasons: Mapping[tuple[int, int], str],
    rejected: Mapping[tuple[int, int], list[tuple[str, str]]],
    **fields: Any,
) -> ExportReport:
    """Writes the LiteRT file ``data`` to ``path`` and returns its report.

    Args:
      path: where the file goes.
      data: the file, verified by ``checks``.
      checks: the verification of ``data``.
      target: the target the file was made for.
      float_file: the converter's float32 file, the size to compare with.
      inputs: the verification inputs.
      builder: what wrote ``data``; its ``weights`` by ``(subgraph, tensor)``.
      plan, stored_values, reasons, rejected: each weight's candidate, the values it stores,
        why it was chosen and what was rejected (as for :func:`_choices`).
      **fields: the :class:`ExportReport` fields of a full-integer file.
    """
    _write(path, data)
    file_bytes, choices = _choices(data, builder.weights, plan, stored_values, reasons, rejected)
    return ExportReport(
        path=path,
        target=target.value,
        interpreter=verify.INTERPRETER,
        file=file_bytes,
        float_file_bytes=len(float_file),
        gzip_bytes=gzip_size(data),
        float_gzip_bytes=gzip_size(float_file),
        weights=choices,
        checks=checks,
        batch_size=batch_size_of(inputs),
        **fields,
    )


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
    float inputs and outputs unless ``int8_io``): see :mod:`tflite_export.integer`.

    Example:
      >>> plain = tf_admm.strip(admm_model)                               # doctest: +SKIP
      >>> report = tflite_export.export(plain, "lenet5.tflite")           # doctest: +SKIP
      >>> report = tflite_export.export(                                  # doctest: +SKIP
      ...     plain, "lenet5_int8.tflite", representative_data=train_images[:200])
      >>> print(report)                                                   # doctest: +SKIP

    Args:
      model: a plain (stripped) ``tf_keras`` model: functional, Sequential with an input
        shape, or subclassed and built (called on a batch, or ``model.build(input_shape)``;
        its file's inputs are then named ``input``, ``input_<i>`` or by dict key).
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
        ``"sparse_int8"``, ``"levels"`` and ``"sparse_levels"``.
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

    Returns:
      An :class:`ExportReport`: per-weight encodings and reasons, per-tensor bytes that sum to
      the file size with the flatbuffer overhead, dense float and gzip sizes, checks, the
      Keras weights left as the converter wrote them and why (``skipped_weights``).

    Raises:
      ExportError: for a wrapped (unstripped) model, a model whose inputs are unknown, an
        unwritable path, an unknown target or encoding, or a requested encoding that does not
        apply to a weight;
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
    model = check_model(model)
    path = check_path(path)
    integer = _check_options(
        target, representative_data, activations, int8_io, tolerance, allow_float16
    )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExportError(f"Expected batch_size >= 1; received: batch_size={batch_size!r}")
    if target.micro:
        from tflite_export import tflm  # imports tflite_micro only for these targets

        return tflm.export_tflm(
            model,
            path,
            integer=target is Target.TFLM_INT8,
            representative_data=representative_data,
            encoding=encoding,
            tolerance=tolerance,
            batch_size=batch_size,
            seed=seed,
        )
    if integer:
        from tflite_export import integer as full_integer

        return full_integer.export_integer(
            model,
            path,
            representative_data=representative_data,
            int8_io=int8_io,
            encoding=encoding,
            tolerance=tolerance,
            seed=seed,
        )
    if tolerance is None:
        tolerance = 1e-4
    # Encoding names are checked before the (slow) conversion; keys need the converted file.
    _check_each_encoding(encoding)

    inputs = prepare_inputs(model, representative_data, batch_size, seed)
    expected = keras_outputs(model, inputs)
    float_file, file_batch = convert_float_any_batch(model)
    baseline_model = flatbuffer.read_model(float_file)
    weights = find_weight_tensors(baseline_model, model, any_operator=True)
    builder = _Builder(float_file, weights, inputs, expected, tolerance, model)
    baseline_checks = builder.check(float_file, {})
    if not all(c.passed for c in baseline_checks):
        LITERT_WORDING.fail("the converter's float32 file", baseline_checks)

    requested = _requested_encodings(encoding, weights, model)
    options: dict[tuple[int, int], list[Candidate]] = {}
    rejected: dict[tuple[int, int], list[tuple[str, str]]] = {}
    values_by_key: dict[tuple[int, int], np.ndarray] = {}
    for weight in weights:
        key = (weight.subgraph, weight.tensor)
        values = flatbuffer.decode_tensor(baseline_model, weight.subgraph, weight.tensor)
        values_by_key[key] = values
        builder.baseline[key] = _dense_candidate(values)
        forced = requested[key]
        allowed = [forced] if forced is not None else list(_AUTO_FLOAT)
        candidates, skipped = _candidates(
            weight, values, allowed, lossy_float16=allow_float16 or forced is not None
        )
        options[key] = keep_options(
            weight, candidates, skipped, forced, builder.baseline[key], "float32"
        )
        rejected[key] = list(skipped)

    plan, reasons, data, checks = select_or_keep(
        builder, options, requested, rejected, float_file, baseline_checks
    )
    return _write_report(
        path,
        data,
        checks,
        target=target,
        float_file=float_file,
        inputs=inputs,
        builder=builder,
        plan=plan,
        stored_values=values_by_key,
        reasons=reasons,
        rejected=rejected,
        skipped_weights=tuple(skipped_weights(baseline_model, model, weights)),
        file_batch_size=file_batch,
        notes=_file_notes(baseline_model, weights, file_batch, model),
    )


def _file_notes(
    parsed, weights: Sequence[WeightTensor], file_batch: int | None, model: keras.Model
) -> tuple[str, ...]:
    """What a user of the converted file should know beyond its weights: a batch the
    exporter fixed, recurrent state kept between invocations, layers run as WHILE loops."""
    notes = []
    if file_batch is not None and not any(
        t.shape.rank and t.shape[0] == file_batch for t in model.inputs
    ):
        notes.append(
            f"inputs fixed to batch {file_batch}: the converter needs a static batch for the "
            "loops of recurrent layers (run batches of that size, or give keras.Input a "
            "batch_size)"
        )
    if any(t.isVariable for g in parsed.subgraphs or [] for t in g.tensors or []):
        notes.append(
            "recurrent state is kept in variable tensors between invocations: call the "
            "interpreter's reset_all_variables() after each batch of independent sequences "
            "(verification does)"
        )
    looped = []
    for weight in weights:
        if weight.subgraph > 0 and weight.layer is not None and weight.layer not in looped:
            looped.append(weight.layer)
    if looped:
        notes.append(
            f"layers {looped} run in a WHILE loop (LiteRT has no fused operator for them as "
            "converted); their weights' decode operators sit in the loop body"
        )
    return tuple(notes)


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


def _tensors_behind(model, subgraph_index: int, tensor_index: int) -> set[int]:
    """The tensor and every tensor its DENSIFY/DEQUANTIZE chain reads, in one subgraph."""
    subgraph = model.subgraphs[subgraph_index]
    written = flatbuffer.producers(subgraph)
    found = {tensor_index}
    frontier = [tensor_index]
    while frontier:
        current = frontier.pop()
        if current not in written:
            continue
        operator = subgraph.operators[written[current]]
        if flatbuffer.builtin_code(model, operator) not in (_OPS.DENSIFY, _OPS.DEQUANTIZE):
            continue
        for source in operator.inputs:
            if source >= 0 and int(source) not in found:
                found.add(int(source))
                frontier.append(int(source))
    return found


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
        from tflite_export import integer as full_integer

        checker = full_integer.OutputChecker(
            data, inputs, expected, tolerance, list(model.input_names), list(model.output_names)
        )
        checks = checker.check(data)
    else:
        checks = verify.check_outputs(
            data,
            inputs,
            expected,
            tolerance=1e-4 if tolerance is None else tolerance,
            input_names=list(model.input_names),
            output_names=list(model.output_names),
        )
    if not all(c.passed for c in checks):
        LITERT_WORDING.fail("the file", checks)
    return checks
