"""The float32 LiteRT target: compact weight encodings, float32 compute.

The converter's float32 file (with the batch fixed to 1 when recurrent layers need a static
one, :func:`~tflite_export.conversion.convert_float_any_batch`), each weight tensor stored in
the smallest :class:`~tflite_export.encodings.Encoding` that applies to its values and passes
verification against Keras, with and without the default delegate.

Sparse and quantized weights are expanded once, when the interpreter prepares the model, by
DENSIFY and DEQUANTIZE operators inserted in front of the graph; the compute operators keep
their float kernels, so exact encodings give the Keras outputs up to float summation order.
Lossy weights (``int8``, inexact ``float16``) are checked against the float file holding the
decoded weights.

k-means (clustered) weights: LiteRT has no lookup-table weights, so a tensor whose centroids
lie on a uniform grid is stored as integer codes (``LEVELS``, exact); otherwise as float32
(dense or sparse, exact), or as float16 where every centroid is a float16 value, or where
``allow_float16=True`` accepts the rounding (the report gives the error).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tf_admm.compat import keras
from tflite_export import encodings, flatbuffer, verify
from tflite_export.blocks import AUTO_PROBLEM, DEFAULT_DELEGATE_PROBLEM, block_candidate
from tflite_export.candidates import (
    LITERT_WORDING,
    OPERATOR_OVERHEAD,
    QUANTIZATION_BYTES_PER_CHANNEL,
    TENSOR_OVERHEAD,
    Candidate,
    FileBuilder,
    densify_weight,
    distinct_detail,
    fit_levels,
    layout_detail,
    quantization,
    rank,
    sparse_constant,
)
from tflite_export.conversion import convert_float_any_batch
from tflite_export.encodings import Encoding
from tflite_export.inputs import input_names, input_specs, output_names
from tflite_export.pipeline import Target, TargetPlugin, litert_report
from tflite_export.report import ExportReport
from tflite_export.weights import WeightTensor, find_weight_tensors, skipped_weights

__all__ = ["DEFAULT_TOLERANCE", "FloatPlugin"]

DEFAULT_TOLERANCE = 1e-4

_schema = flatbuffer.schema
_TYPES = _schema.TensorType

_CODE_TENSOR_TYPES = {
    encodings.CodeType.INT4: _TYPES.INT4,
    encodings.CodeType.INT8: _TYPES.INT8,
    encodings.CodeType.INT16: _TYPES.INT16,
}


# What "auto" may choose for a float32 LiteRT file (float16 only where exact, unless allowed).
# Not SPARSE_BLOCKS: the default delegate (XNNPACK) reads its filters as dense (blocks.py).
_AUTO_FLOAT = (
    Encoding.FLOAT32,
    Encoding.SPARSE_FLOAT32,
    Encoding.LEVELS,
    Encoding.SPARSE_LEVELS,
    Encoding.FLOAT16,
    Encoding.SPARSE_FLOAT16,
)


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

    def apply(editor: flatbuffer.ModelEditor, weight: WeightTensor) -> None:
        densify_weight(editor, weight, "sparse", values, _TYPES.FLOAT32, np.float32, layout)

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
            quantization=quantization(fit.scale, fit.axis, fit.zero_point),
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

    def apply(editor: flatbuffer.ModelEditor, weight: WeightTensor) -> None:
        editor.release_constant(weight.subgraph, weight.tensor)
        source = sparse_constant(
            editor, weight, "sparse_int8", fit.codes, _TYPES.INT8, np.int8, layout
        )
        codes = editor.add_tensor(
            weight.subgraph,
            f"{weight.tensor_name}/int8",
            fit.codes.shape,
            _TYPES.INT8,
            quantization=quantization(fit.scale, fit.axis),
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
            stored = sparse_constant(
                editor, weight, "sparse_float16", halves, _TYPES.FLOAT16, np.float16, layout
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
        elif encoding is Encoding.SPARSE_BLOCKS:
            blocks = block_candidate(weight, values)
            if isinstance(blocks, str):
                skipped.append((encoding.value, blocks))
            else:
                found.append(blocks)
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


class _Builder(FileBuilder):
    """Writes a file for an assignment of candidates and verifies it."""

    def __init__(self, float_file, weights, inputs, expected, tolerance, model):
        super().__init__(float_file, weights)
        self.inputs = inputs
        self.expected = expected
        self.tolerance = tolerance
        self.input_names = input_names(model)
        self.output_names = output_names(model)
        self._lossy_reference: dict[tuple, list[np.ndarray]] = {}

    def _expected(self, plan: Mapping[tuple[int, int], Candidate]) -> list[np.ndarray]:
        lossy = tuple(sorted(k for k, c in plan.items() if c.max_error > 0))
        if not lossy:
            return self.expected
        if lossy not in self._lossy_reference:
            # Lossy weights: the reference is the float file holding the decoded weights,
            # run with builtin kernels; the float file itself was checked against Keras.
            model = flatbuffer.read_model(self.reference)
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
        # XNNPACK reads block-sparse filters as dense and may crash this process: not run.
        blocks = any(c.encoding is Encoding.SPARSE_BLOCKS for c in plan.values())
        checks = verify.check_outputs(
            data,
            self.inputs,
            self._expected(plan),
            tolerance=self.tolerance,
            input_names=self.input_names,
            output_names=self.output_names,
            runtimes=(verify.Runtime.BUILTIN,) if blocks else verify.LITERT_RUNTIMES,
        )
        if blocks:
            skipped = verify.RuntimeCheck(
                verify.Runtime.DEFAULT_DELEGATE, error=DEFAULT_DELEGATE_PROBLEM
            )
            checks = (skipped, *checks)
        return checks


def _file_notes(
    parsed, weights: Sequence[WeightTensor], file_batch: int | None, model: keras.Model
) -> tuple[str, ...]:
    """What a user of the converted file should know beyond its weights: a batch the
    exporter fixed, recurrent state kept between invocations, layers run as WHILE loops."""
    notes = []
    if file_batch is not None and not any(
        t.shape.rank and t.shape[0] == file_batch for t in input_specs(model)
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


class FloatPlugin(TargetPlugin):
    """The float32 LiteRT target of :func:`~tflite_export.pipeline.run`.

    Args:
      tolerance: as for :func:`tflite_export.export` (``None``: :data:`DEFAULT_TOLERANCE`).
      allow_float16: let "auto" store weights as float16 where that rounds them.
    """

    target = Target.LITERT
    dense_name = "float32"

    def __init__(self, tolerance: float | None, allow_float16: bool):
        self.tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
        self.allow_float16 = allow_float16

    def convert(self, model, inputs, expected) -> None:
        self.reference, self.file_batch = convert_float_any_batch(model)
        self.parsed = flatbuffer.read_model(self.reference)
        self.weights = find_weight_tensors(self.parsed, model, any_operator=True)
        self.builder = _Builder(
            self.reference, self.weights, inputs, expected, self.tolerance, model
        )
        self.values = {}
        for weight in self.weights:
            key = (weight.subgraph, weight.tensor)
            self.values[key] = flatbuffer.decode_tensor(self.parsed, weight.subgraph, weight.tensor)
            self.builder.baseline[key] = _dense_candidate(self.values[key])

    def check_baseline(self) -> tuple[verify.RuntimeCheck, ...]:
        checks = self.builder.check(self.reference, {})
        if not all(c.passed for c in checks):
            LITERT_WORDING.fail("the converter's float32 file", checks)
        return checks

    def candidates(self, weight, forced):
        allowed = [forced] if forced is not None else list(_AUTO_FLOAT)
        values = self.values[(weight.subgraph, weight.tensor)]
        found, skipped = _candidates(
            weight, values, allowed, lossy_float16=self.allow_float16 or forced is not None
        )
        if forced is None and not isinstance(block_candidate(weight, values), str):
            skipped.append((Encoding.SPARSE_BLOCKS.value, AUTO_PROBLEM))
        return found, skipped

    def report(self, path, data, checks, *, model, inputs, plan, reasons, rejected) -> ExportReport:
        return litert_report(
            path,
            data,
            checks,
            target=self.target,
            float_file=self.reference,
            inputs=inputs,
            builder=self.builder,
            plan=plan,
            stored_values=self.values,
            reasons=reasons,
            rejected=rejected,
            skipped_weights=tuple(skipped_weights(self.parsed, model, self.weights)),
            file_batch_size=self.file_batch,
            notes=_file_notes(self.parsed, self.weights, self.file_batch, model),
        )
