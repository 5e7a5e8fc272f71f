"""``export``: a stripped tf_admm model to a verified, compactly encoded ``.tflite`` file.

Flow for the LiteRT target:

1. Check the model (a plain ``tf_keras`` model, no ``tf_admm.AdmmWrapper``) and the path.
2. Convert it with the TFLite converter to a dense float32 file (the baseline), check that file
   against the Keras outputs.
3. Find the weight tensors (:mod:`tflite_export.weights`) and list, for each, the encodings that
   apply (:class:`~tflite_export.encodings.Encoding`) with their estimated bytes.
4. Write every weight in its smallest encoding and verify the file in the interpreter, with and
   without the default delegate. If it fails, try each weight alone, walking down its
   candidates until one passes (float32 always does), then verify the combination again.
5. Write the file, account for its bytes and return an :class:`ExportReport`.

Sparse and quantized weights are expanded once, when the interpreter prepares the model, by
DENSIFY and DEQUANTIZE operators inserted in front of the graph; the compute operators keep
their float kernels, so exact encodings give the Keras outputs up to float summation order.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import tf_admm
from tf_admm.compat import keras, tf
from tflite_export import encodings, flatbuffer, verify
from tflite_export.encodings import Encoding
from tflite_export.report import ExportReport, WeightChoice, account, gzip_size
from tflite_export.weights import SUPPORTED_LAYERS, WeightTensor, find_weight_tensors, keras_layers

__all__ = [
    "ExportError",
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

# Rough flatbuffer cost of one added tensor and one added operator, used only to rank
# candidates (the report counts the real bytes).
_TENSOR_OVERHEAD = 64
_OPERATOR_OVERHEAD = 48
_QUANTIZATION_BYTES_PER_CHANNEL = 4 + 8  # float32 scale + int64 zero point

_CODE_TENSOR_TYPES = {
    encodings.CodeType.INT4: _TYPES.INT4,
    encodings.CodeType.INT8: _TYPES.INT8,
    encodings.CodeType.INT16: _TYPES.INT16,
}


class ExportError(ValueError):
    """The model, the path or the requested encodings cannot be exported."""


class VerificationError(ExportError):
    """A written file does not reproduce the Keras model's outputs in the interpreter."""


class Target(str, enum.Enum):
    """Where the file runs.

    ``LITERT``: the LiteRT (TFLite) interpreter; float32 compute, compact weight encodings.
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


@dataclasses.dataclass(frozen=True, eq=False)
class _Candidate:
    """One way to store one weight tensor."""

    encoding: Encoding
    estimated_bytes: int
    detail: str
    decoded: np.ndarray  # the float32 values the file gives, TFLite layout
    apply: Callable[[flatbuffer.ModelEditor, WeightTensor], None]
    max_error: float = 0.0  # largest |decoded - original|


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


def _layout_detail(layout: encodings.SparseLayout) -> str:
    formats = ",".join("d" if f is encodings.DimFormat.DENSE else "s" for f in layout.formats)
    types = sorted(
        {
            encodings.index_dtype(a).name
            for a in (*layout.segments, *layout.indices)
            if a is not None
        }
    )
    return f"{layout.num_entries:,} entries, levels {formats}, {'/'.join(types)} indices"


def _dense_candidate(values: np.ndarray) -> _Candidate:
    return _Candidate(
        Encoding.FLOAT32,
        4 * values.size,
        "float32",
        values,
        lambda editor, w: None,
    )


def _sparse_float_candidate(values: np.ndarray) -> _Candidate:
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
        editor.add_operator(
            weight.subgraph,
            _OPS.DENSIFY,
            1,
            [source],
            [weight.tensor],
            (_schema.BuiltinOptions.DensifyOptions, _schema.DensifyOptionsT()),
        )

    estimate = layout.stored_bytes(4) + _TENSOR_OVERHEAD + _OPERATOR_OVERHEAD
    return _Candidate(
        Encoding.SPARSE_FLOAT32, estimate, f"float32, {_layout_detail(layout)}", values, apply
    )


def _levels_candidate(encoding: Encoding, fit: encodings.UniformFit) -> _Candidate:
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
        editor.add_operator(
            weight.subgraph,
            _OPS.DEQUANTIZE,
            _dequantize_version(fit),
            [source],
            [weight.tensor],
            (_schema.BuiltinOptions.DequantizeOptions, _schema.DequantizeOptionsT()),
        )

    estimate = (
        fit.code_type.stored_bytes(fit.codes.size)
        + _QUANTIZATION_BYTES_PER_CHANNEL * fit.scale.size
        + _TENSOR_OVERHEAD
        + _OPERATOR_OVERHEAD
    )
    return _Candidate(
        encoding, estimate, _scale_detail(fit), fit.decode(), apply, max_error=fit.max_error
    )


def _sparse_levels_candidate(fit: encodings.UniformFit) -> _Candidate:
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
        editor.add_operator(
            weight.subgraph,
            _OPS.DENSIFY,
            1,
            [source],
            [codes],
            (_schema.BuiltinOptions.DensifyOptions, _schema.DensifyOptionsT()),
        )
        editor.add_operator(
            weight.subgraph,
            _OPS.DEQUANTIZE,
            5 if fit.axis is not None else 2,
            [codes],
            [weight.tensor],
            (_schema.BuiltinOptions.DequantizeOptions, _schema.DequantizeOptionsT()),
        )

    estimate = (
        layout.stored_bytes(1)
        + _QUANTIZATION_BYTES_PER_CHANNEL * fit.scale.size
        + 2 * (_TENSOR_OVERHEAD + _OPERATOR_OVERHEAD)
    )
    detail = f"int8 codes, {_layout_detail(layout)}, " + _scale_detail(fit).split(", ", 1)[1]
    return _Candidate(Encoding.SPARSE_LEVELS, estimate, detail, fit.decode(), apply)


def _fit_levels(weight: WeightTensor, values: np.ndarray) -> encodings.UniformFit | None:
    """Exact uniform levels per tensor, else per output channel, else ``None``."""
    for axis in (None, weight.channel_axis):
        fit = encodings.fit_uniform_levels(values, axis)
        if fit is not None and fit.exact:
            return fit
    return None


def _candidates(
    weight: WeightTensor, values: np.ndarray, allowed: Sequence[Encoding]
) -> tuple[list[_Candidate], list[tuple[str, str]]]:
    """Applicable candidates among ``allowed``, smallest first, and why the others are not."""
    found: list[_Candidate] = []
    skipped: list[tuple[str, str]] = []
    nonzeros = int(np.count_nonzero(values))
    fit = None
    if Encoding.LEVELS in allowed or Encoding.SPARSE_LEVELS in allowed:
        fit = _fit_levels(weight, values)
    for encoding in allowed:
        if encoding is Encoding.FLOAT32:
            found.append(_dense_candidate(values))
        elif encoding is Encoding.SPARSE_FLOAT32:
            if nonzeros == values.size:
                skipped.append((encoding.value, "no zero weights"))
            else:
                found.append(_sparse_float_candidate(values))
        elif encoding is Encoding.LEVELS:
            if fit is None:
                skipped.append((encoding.value, "weights not on uniform levels (exact INT16 fit)"))
            else:
                found.append(_levels_candidate(Encoding.LEVELS, fit))
        elif encoding is Encoding.SPARSE_LEVELS:
            if fit is None:
                skipped.append((encoding.value, "weights not on uniform levels (exact INT16 fit)"))
            elif encodings.code_type(fit.codes) not in (
                encodings.CodeType.INT4,
                encodings.CodeType.INT8,
            ):
                # DENSIFY fills stored zeros, which a nonzero zero point would shift.
                skipped.append(
                    (encoding.value, "codes do not fit INT8 with zero point 0 (sparse codes do)")
                )
            elif nonzeros == values.size:
                skipped.append((encoding.value, "no zero weights"))
            else:
                found.append(_sparse_levels_candidate(fit))
        elif encoding is Encoding.INT8:
            lossy = encodings.quantize_symmetric_int8(values, weight.channel_axis)
            found.append(_levels_candidate(Encoding.INT8, lossy))
        elif not encoding.litert:
            skipped.append(
                (encoding.value, "runs only in TFLite Micro (target 'tflm' or 'tflm_int8')")
            )
    found.sort(key=lambda c: c.estimated_bytes)
    return found, skipped


def converter_for(model: keras.Model) -> Any:
    """A ``tf.lite.TFLiteConverter`` for ``model``'s serving function (no options set).

    Converts a concrete function rather than ``from_keras_model``: the same file, without
    saving a SavedModel of every function the model has traced so far (which grows with each
    call). The signature's inputs and outputs carry the Keras input and output names.
    """
    specs = [
        tf.TensorSpec(tensor.shape, tensor.dtype, name=name)
        for tensor, name in zip(model.inputs, model.input_names)
    ]

    @tf.function(input_signature=specs)
    def serving_default(*args):
        outputs = model(list(args) if len(args) > 1 else args[0], training=False)
        if isinstance(outputs, Mapping):
            outputs = [outputs[name] for name in model.output_names]
        elif not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return dict(zip(model.output_names, outputs))

    concrete = serving_default.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)


def convert_float(model: keras.Model) -> bytes:
    """The TFLite converter's dense float32 file of ``model`` (no optimizations)."""
    return converter_for(model).convert()


def _check_model(model: Any) -> None:
    if not isinstance(model, keras.Model):
        raise ExportError(
            f"Expected a tf_keras Model (tf_admm.compat.keras); received: "
            f"model={type(model).__module__}.{type(model).__name__}"
        )
    wrapped = [m.name for m in model.submodules if isinstance(m, tf_admm.AdmmWrapper)]
    if isinstance(model, tf_admm.AdmmWrapper):
        wrapped.insert(0, model.name)
    if wrapped:
        raise ExportError(
            "Expected a stripped model without tf_admm wrappers: call tf_admm.strip(model) "
            f"before exporting; received: AdmmWrapper layers={wrapped}"
        )
    if not model.built or not model.inputs:
        raise ExportError(
            f"Expected a built model with known inputs (functional or Sequential with an input "
            f"shape); received: model {model.name!r} with inputs={model.inputs}"
        )


def _check_path(path: Any) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ExportError(f"Expected path to be a str or os.PathLike; received: path={path!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise ExportError(f"Expected a file path; received: path={path!r} is a directory")
    if not os.path.isdir(directory):
        raise ExportError(
            f"Expected a path in an existing directory; received: path={path!r} "
            f"(no directory {directory!r})"
        )
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ExportError(f"Expected a writable path; received: path={path!r} (permission denied)")
    return path


def _as_encoding(value: Any, where: str) -> Encoding | None:
    """``None`` for "auto", else the :class:`Encoding`."""
    if isinstance(value, str) and value == "auto":
        return None
    try:
        return Encoding(value)
    except ValueError:
        names = ["auto", *(e.value for e in Encoding)]
        raise ExportError(f"Expected {where} in {names}; received: {where}={value!r}") from None


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
        hits = [key for key, w in keys.items() if name in (w.label, w.layer, w.tensor_name)]
        if hits:
            for key in hits:
                requested[key] = forced
            continue
        if name in layers:
            layer = layers[name]
            supported = ", ".join(cls.__name__ for cls in SUPPORTED_LAYERS)
            if type(layer) not in SUPPORTED_LAYERS:
                raise ExportError(
                    f"Layer {name!r}: Expected a layer type whose weights encoding "
                    f"{value!r} can store ({supported}); received: {type(layer).__name__}"
                )
            raise ExportError(
                f"Layer {name!r}: Expected its weights in the converted file; received: no "
                f"weight tensor equal to its {SUPPORTED_LAYERS[type(layer)][0]} (the converter "
                f"changed it, e.g. folded a normalization into it)"
            )
        known = sorted({w.label for w in weights})
        raise ExportError(
            f"Expected encoding keys among the model's weights {known}; received: {name!r}"
        )
    return requested


def _prepare_inputs(
    model: keras.Model, representative_data: Any, batch_size: int, seed: int
) -> list[np.ndarray]:
    if representative_data is not None:
        if isinstance(representative_data, Mapping):
            data = [representative_data[name] for name in model.input_names]
        elif isinstance(representative_data, (list, tuple)):
            data = list(representative_data)
        else:
            data = [representative_data]
        if len(data) != len(model.inputs):
            raise ExportError(
                f"Expected representative_data with one array per model input "
                f"({len(model.inputs)}); received: {len(data)} arrays"
            )
        arrays = []
        for tensor, array in zip(model.inputs, data):
            array = np.asarray(array, dtype=tensor.dtype.as_numpy_dtype)
            wanted = tensor.shape.as_list()
            if array.ndim != len(wanted) or any(
                w is not None and w != d for w, d in zip(wanted[1:], array.shape[1:])
            ):
                raise ExportError(
                    f"Expected representative_data for input {tensor.name!r} with shape "
                    f"{tensor.shape.as_list()}; received: shape={list(array.shape)}"
                )
            arrays.append(array)
        return arrays
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = [batch_size if d is None else d for d in tensor.shape.as_list()]
        if None in shape[1:]:
            raise ExportError(
                f"Expected representative_data for input {tensor.name!r} of unknown shape "
                f"{tensor.shape.as_list()}; received: representative_data=None"
            )
        dtype = tensor.dtype.as_numpy_dtype
        if np.issubdtype(dtype, np.integer):
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def _keras_outputs(model: keras.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    if not isinstance(outputs, (list, tuple)):
        if isinstance(outputs, Mapping):
            outputs = [outputs[name] for name in model.output_names]
        else:
            outputs = [outputs]
    return [np.asarray(o) for o in outputs]


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

    def build(self, plan: Mapping[tuple[int, int], _Candidate]) -> bytes:
        model = flatbuffer.read_model(self.float_file)
        editor = flatbuffer.ModelEditor(model)
        for key, candidate in plan.items():
            if candidate.encoding is not Encoding.FLOAT32:
                candidate.apply(editor, self.weights[key])
        return flatbuffer.write_model(editor.finish())

    def _expected(self, plan: Mapping[tuple[int, int], _Candidate]) -> list[np.ndarray]:
        lossy = tuple(sorted(k for k, c in plan.items() if not c.encoding.exact))
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


def _failure_reason(checks: Sequence[verify.RuntimeCheck]) -> str:
    return "; ".join(c.describe() for c in checks if not c.passed)


def _raise_verification(what: str, checks: Sequence[verify.RuntimeCheck]) -> None:
    raise VerificationError(
        f"Expected the written file to reproduce the Keras outputs in every runtime; "
        f"received: {what}: {_failure_reason(checks)}"
    )


def _first_choice_reason(forced: bool, count: int) -> str:
    if forced:
        return "requested"
    return "only candidate" if count == 1 else f"smallest of {count} candidates"


def _select(
    builder: _Builder,
    options: Mapping[tuple[int, int], list[_Candidate]],
    forced: Mapping[tuple[int, int], bool],
    rejected: dict[tuple[int, int], list[tuple[str, str]]],
) -> tuple[dict[tuple[int, int], _Candidate], dict[tuple[int, int], str], bytes, tuple]:
    plan = {key: candidates[0] for key, candidates in options.items()}
    reasons = {key: _first_choice_reason(forced[key], len(options[key])) for key in options}
    data = builder.build(plan)
    checks = builder.check(data, plan)
    if all(c.passed for c in checks):
        return plan, reasons, data, checks
    if all(forced.values()) or all(len(v) == 1 for v in options.values()):
        _raise_verification("requested encodings", checks)
    # Find the culprits: each weight alone (others float32), down its candidates.
    float_plan = {key: _dense_candidate(plan[key].decoded) for key in plan}
    for key, candidates in options.items():
        for rank, candidate in enumerate(candidates):
            if candidate.encoding is Encoding.FLOAT32:
                plan[key] = candidate
                reasons[key] = (
                    "smallest candidate" if rank == 0 else "only candidate passing verification"
                )
                break
            trial = {**float_plan, key: candidate}
            trial_checks = builder.check(builder.build(trial), trial)
            if all(c.passed for c in trial_checks):
                plan[key] = candidate
                if rank:
                    reasons[key] = "smallest candidate passing verification"
                break
            rejected[key].append((candidate.encoding.value, _failure_reason(trial_checks)))
            if forced[key]:
                _raise_verification(
                    f"weight {builder.weights[key].label!r} as {candidate.encoding.value}",
                    trial_checks,
                )
        else:  # pragma: no cover - float32 is always a candidate unless forced
            raise ExportError(f"no encoding of {builder.weights[key].label!r} passes")
    data = builder.build(plan)
    checks = builder.check(data, plan)
    if not all(c.passed for c in checks):
        _raise_verification("the combination of encodings that pass one by one", checks)
    return plan, reasons, data, checks


def export(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    target: str | Target = Target.LITERT,
    representative_data: Any = None,
    encoding: str | Encoding | Mapping[str, str | Encoding] = "auto",
    tolerance: float | None = None,
    batch_size: int = 8,
    seed: int = 0,
) -> ExportReport:
    """Writes ``model`` as a ``.tflite`` file with compact, verified weight encodings.

    Every weight tensor (Dense, Conv and DepthwiseConv kernels and any other constant in a
    weight slot) is stored in the smallest :class:`Encoding` that applies to its values and
    that the interpreter runs correctly; the file is then run with and without the default
    delegate on a batch of inputs and must reproduce the Keras outputs.

    Example:
      >>> plain = tf_admm.strip(admm_model)                               # doctest: +SKIP
      >>> report = tflite_export.export(plain, "lenet5.tflite")           # doctest: +SKIP
      >>> print(report)                                                   # doctest: +SKIP

    Args:
      model: a plain (stripped) ``tf_keras`` model.
      path: where to write the file.
      target: a :class:`Target`: ``"litert"`` (LiteRT), ``"tflm"`` (TFLite Micro, float32
        model, LUT weights) or ``"tflm_int8"`` (TFLite Micro, full-integer model with int8
        inputs and outputs, LUT weights); see :mod:`tflite_export.tflm`. The TFLite Micro
        targets need the ``tflite-micro`` package.
      representative_data: the verification batch: an array, a list of arrays (one per input)
        or a dict by input name. By default ``batch_size`` standard-normal samples (integer
        inputs: zeros and ones). For ``tflm_int8`` it is also the calibration set of the
        int8 quantization: pass real samples.
      encoding: ``"auto"`` (smallest passing exact encoding per weight), one
        :class:`Encoding` for every weight, or a dict from layer name (or ``layer.weight``, or
        tensor name) to an encoding or ``"auto"``. A requested encoding that does not apply or
        fails verification raises; ``"auto"`` falls back and says why in the report. The
        TFLite Micro targets take ``"lut"`` and the dense ``"float32"`` (``tflm``) or
        ``"int8"`` (``tflm_int8``).
      tolerance: an output passes when ``max|tflite - keras| <= tolerance * max(1, max|keras|)``.
        Lossy (``int8``) weights are checked against the float file holding the decoded weights.
        By default 1e-4, and 0.1 for ``tflm_int8`` (the int8 quantization error; its LUTs
        must still reproduce the uncompressed int8 file exactly).
      batch_size: samples in the default verification batch.
      seed: seed of the default verification batch.

    Returns:
      An :class:`ExportReport`: per-weight encodings and reasons, per-tensor bytes that sum to
      the file size with the flatbuffer overhead, dense float and gzip sizes, checks.

    Raises:
      ExportError: for a wrapped (unstripped) model, an unwritable path, an unknown target or
        encoding, or a requested encoding that does not apply to a weight.
      VerificationError: when a written file does not reproduce the Keras outputs (the file is
        not written).
    """
    try:
        target = Target(target)
    except ValueError:
        raise ExportError(
            f"Expected target in {[t.value for t in Target]}; received: target={target!r}"
        ) from None
    _check_model(model)
    path = _check_path(path)
    if tolerance is not None and not (isinstance(tolerance, (int, float)) and tolerance > 0):
        raise ExportError(f"Expected tolerance > 0; received: tolerance={tolerance!r}")
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
    if tolerance is None:
        tolerance = 1e-4
    # Encoding names are checked before the (slow) conversion; keys need the converted file.
    if isinstance(encoding, Mapping):
        for name, value in encoding.items():
            _as_encoding(value, f"encoding[{name!r}]")
    else:
        _as_encoding(encoding, "encoding")

    inputs = _prepare_inputs(model, representative_data, batch_size, seed)
    expected = _keras_outputs(model, inputs)
    float_file = convert_float(model)
    baseline_model = flatbuffer.read_model(float_file)
    weights = find_weight_tensors(baseline_model, model)
    builder = _Builder(float_file, weights, inputs, expected, tolerance, model)
    baseline_checks = builder.check(float_file, {})
    if not all(c.passed for c in baseline_checks):
        _raise_verification("the converter's float32 file", baseline_checks)

    requested = _requested_encodings(encoding, weights, model)
    options: dict[tuple[int, int], list[_Candidate]] = {}
    rejected: dict[tuple[int, int], list[tuple[str, str]]] = {}
    values_by_key: dict[tuple[int, int], np.ndarray] = {}
    for weight in weights:
        key = (weight.subgraph, weight.tensor)
        values = flatbuffer.decode_tensor(baseline_model, weight.subgraph, weight.tensor)
        values_by_key[key] = values
        forced = requested[key]
        allowed = [forced] if forced is not None else [e for e in Encoding if e.exact and e.litert]
        candidates, skipped = _candidates(weight, values, allowed)
        if forced is not None and not candidates:
            raise ExportError(
                f"Weight {weight.label!r} ({weight.layer_type or weight.operator}): Expected "
                f"weights that encoding {forced.value!r} can store; received: {skipped[0][1]}"
            )
        if forced is None:
            # Bigger than float32 is never worth it.
            dense_bytes = 4 * values.size
            kept = []
            for candidate in candidates:
                if (
                    candidate.encoding is Encoding.FLOAT32
                    or candidate.estimated_bytes < dense_bytes
                ):
                    kept.append(candidate)
                else:
                    skipped.append((candidate.encoding.value, "not smaller than float32"))
            candidates = kept
        options[key] = candidates
        rejected[key] = list(skipped)

    forced_keys = {key: requested[key] is not None for key in options}
    if options:
        plan, reasons, data, checks = _select(builder, options, forced_keys, rejected)
    else:
        plan, reasons, data, checks = {}, {}, float_file, baseline_checks

    try:
        with open(path, "wb") as handle:
            handle.write(data)
    except OSError as error:
        raise ExportError(f"Expected a writable path; received: path={path!r} ({error})") from None

    labels = {
        key: (builder.weights[key].label, candidate.encoding.value)
        for key, candidate in plan.items()
    }
    final = flatbuffer.read_model(data)
    file_bytes = account(data, labels)
    stored = {}
    for key in plan:
        weight = builder.weights[key]
        owned = _tensors_behind(final, weight.subgraph, weight.tensor)
        stored[key] = sum(
            t.total_bytes
            for t in file_bytes.tensors
            if t.subgraph == weight.subgraph and t.tensor in owned
        )
        labels.update({(weight.subgraph, t): labels[key] for t in owned})
    file_bytes = account(data, labels)
    choices = []
    for key, candidate in plan.items():
        weight = builder.weights[key]
        values = values_by_key[key]
        choices.append(
            WeightChoice(
                label=weight.label,
                layer_type=weight.layer_type,
                tensor_name=weight.tensor_name,
                shape=weight.shape,
                num_weights=int(values.size),
                nonzeros=int(np.count_nonzero(values)),
                encoding=candidate.encoding,
                detail=candidate.detail,
                stored_bytes=stored[key],
                max_weight_error=float(candidate.max_error),
                reason=reasons[key],
                rejected=tuple(rejected[key]),
            )
        )
    return ExportReport(
        path=path,
        target=target.value,
        interpreter=verify.INTERPRETER,
        file=file_bytes,
        float_file_bytes=len(float_file),
        gzip_bytes=gzip_size(data),
        float_gzip_bytes=gzip_size(float_file),
        weights=tuple(choices),
        checks=checks,
        batch_size=int(inputs[0].shape[0]) if inputs and inputs[0].ndim else 0,
    )


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
    tolerance: float = 1e-4,
    batch_size: int = 8,
    seed: int = 0,
) -> tuple[verify.RuntimeCheck, ...]:
    """Checks a ``.tflite`` file (path or bytes) against a Keras model in every runtime.

    Args:
      file: path of the file, or its bytes.
      model: the Keras model it should reproduce.
      representative_data: verification inputs, as for :func:`export`.
      tolerance: as for :func:`export`.
      batch_size: samples in the default verification batch.
      seed: seed of the default verification batch.

    Returns:
      The passing :class:`~tflite_export.verify.RuntimeCheck` of each runtime.

    Raises:
      VerificationError: naming each runtime and output that differs, or the load error.
    """
    _check_model(model)
    if isinstance(file, (bytes, bytearray)):
        data = bytes(file)
    else:
        with open(os.fspath(file), "rb") as handle:
            data = handle.read()
    inputs = _prepare_inputs(model, representative_data, batch_size, seed)
    checks = verify.check_outputs(
        data,
        inputs,
        _keras_outputs(model, inputs),
        tolerance=tolerance,
        input_names=list(model.input_names),
        output_names=list(model.output_names),
    )
    if not all(c.passed for c in checks):
        _raise_verification("the file", checks)
    return checks
