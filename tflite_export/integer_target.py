"""The full-integer LiteRT target: int8 weights and activations, re-encoded int8 weights.

Reached through :func:`tflite_export.export` with representative data: the file of
:func:`~tflite_export.integer.convert_int8`, whose int8 weights are then re-encoded:

* ``INT8``: the converter's dense codes, as written (the baseline). Each weight moves by up
  to half its channel's step ``max|w| / 127``; the report gives the largest move.
* ``LEVELS``: weights on uniform levels ``c * q`` (tf_admm's quantization) have codes
  ``round(c * 127 / max|c|)`` in the converter's file, which are not the levels unless
  ``127 / max|c|`` is an integer. The weight tensor is rewritten with the level indices ``c``
  as its codes (INT4 when they fit ``[-8, 7]``, else INT8 when they fit ``[-127, 127]``, the
  symmetric range TFLite's int8 kernels assume) and ``q`` as its scale (per output channel
  where the converter quantized per channel, zero point 0), so the kernel computes with the
  trained weights exactly. The kernels take ``input_scale * weight_scale`` as the int32
  bias scale, so each consumer's bias is re-quantized with the new scale, from the Keras bias
  when it is the same one (else from the converter's bias, rounding twice).
* ``SPARSE_INT8`` and ``SPARSE_LEVELS``: the same codes in TFLite's sparse format, expanded
  by a DENSIFY operator when the interpreter prepares the model. LiteRT's builtin kernels
  run them; XNNPACK (the default delegate) fails to prepare a FULLY_CONNECTED whose int8
  weights come from DENSIFY (measured with ai_edge_litert 2.3.0; convolutions pass), so
  "auto" tries them and keeps only what passes in both runtimes. The converter's own
  sparse int8 path (``EXPERIMENTAL_SPARSITY``) is not used: at 99% sparsity and more it
  writes 1x16 blocks and drops the last partial block when the input size is not a multiple
  of 16.

k-means (clustered) weights hold arbitrary centroids: int8 with one scale per channel cannot
store them exactly unless they lie on a uniform grid (then ``LEVELS`` applies); otherwise the
converter's codes stay and the report gives the rounding error.

Verification, for every candidate file, in LiteRT with and without the default delegate
(:class:`OutputChecker`): each output within :class:`~tflite_export.verify.Int8Tolerance` of
Keras (a few steps of the output's int8 scale, and the same top-1 class on most samples);
and each weight tensor, decoded from the file here and read back from the builtin
interpreter after a run, equal to the intended int8 codes and scales exactly (a file whose
outputs stay in tolerance despite a wrong weight is still refused).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tf_admm.compat import keras
from tflite_export import encodings, flatbuffer, verify
from tflite_export.candidates import (
    OPERATOR_OVERHEAD,
    QUANTIZATION_BYTES_PER_CHANNEL,
    TENSOR_OVERHEAD,
    Candidate,
    FileBuilder,
    densify_weight,
    distinct_detail,
    failure_reason,
    fit_levels,
    layout_detail,
    quantization,
    rank,
    weight_checks,
)
from tflite_export.conversion import convert_float
from tflite_export.encodings import Encoding
from tflite_export.errors import ExportError, VerificationError
from tflite_export.inputs import input_names, output_names
from tflite_export.integer import INTEGER_ENCODINGS, OutputChecker, convert_int8
from tflite_export.keras_weights import SUPPORTED_LAYERS, keras_kernels, keras_layers
from tflite_export.pipeline import Target, TargetPlugin, as_encoding, litert_report
from tflite_export.report import ExportReport
from tflite_export.weights import (
    WeightTensor,
    consumers,
    find_weight_tensors,
    skipped_weights,
)

__all__ = ["IntegerPlugin"]

_schema = flatbuffer.schema
_TYPES = _schema.TensorType

_INT8_LIMIT = 127  # symmetric int8 weights: codes in [-127, 127]
_HALF_STEP = 0.5 + 1e-3  # a rounded value's distance in steps, with float slack


def _tensor_scales(tensor) -> tuple[np.ndarray, int]:
    quantization = tensor.quantization
    return (
        np.asarray(quantization.scale, np.float32).reshape(-1),
        int(quantization.quantizedDimension),
    )


def _scales_detail(scales: np.ndarray, axis: int) -> str:
    if scales.size == 1:
        return f"step {float(scales[0]):.6g} per tensor"
    if np.all(scales == scales[0]):
        return f"step {float(scales[0]):.6g} on all {scales.size} channels (axis {axis})"
    return f"{scales.size} steps per channel (axis {axis})"


def _bias_values(model, subgraph_index: int, bias_index: int, keras_bias) -> np.ndarray:
    """The real bias: the Keras layer's when the converter's int32 bias is that one rounded,
    else the converter's bias dequantized."""
    tensor = model.subgraphs[subgraph_index].tensors[bias_index]
    codes = flatbuffer.decode_tensor(model, subgraph_index, bias_index).astype(np.float64)
    scale = np.asarray(tensor.quantization.scale, np.float64).reshape(-1)
    scale = scale if scale.size == codes.size else scale[0]
    real = codes * scale
    if keras_bias is not None and np.shape(keras_bias) == real.shape:
        keras_bias = np.asarray(keras_bias, np.float64)
        if np.all(np.abs(keras_bias - real) / scale <= _HALF_STEP):
            return keras_bias
    return real


def _bias_updates(
    model,
    weight: WeightTensor,
    scales: np.ndarray,
    keras_bias: np.ndarray | None,
) -> list[tuple[int, np.ndarray, np.ndarray]] | str:
    """Per consumer with a bias: (bias tensor, int32 codes, scales) for weight scales
    ``scales``, or why the biases cannot follow."""
    subgraph = model.subgraphs[weight.subgraph]
    readers: dict[int, int] = {}
    for operator in subgraph.operators or []:
        for index in operator.inputs if operator.inputs is not None else []:
            readers[int(index)] = readers.get(int(index), 0) + 1
    updates = []
    for consumer in consumers(model, weight.subgraph, weight.tensor):
        activation = subgraph.tensors[consumer.input].quantization
        if activation is None or activation.scale is None or len(activation.scale) != 1:
            return "the operator's input is not quantized per tensor"
        if consumer.bias is None:
            continue
        bias = subgraph.tensors[consumer.bias]
        if bias.type != _TYPES.INT32 or bias.quantization is None:
            return f"bias of type {flatbuffer.type_name(bias.type)}, not quantized int32"
        if readers.get(consumer.bias, 0) > 1:
            return "its bias tensor is shared with another operator"
        real = _bias_values(model, weight.subgraph, consumer.bias, keras_bias)
        bias_scales = (np.float64(activation.scale[0]) * scales.astype(np.float64)).astype(
            np.float32
        )
        codes = np.rint(real / bias_scales.astype(np.float64))
        if np.max(np.abs(codes), initial=0) >= 2**31 - 1:
            return "the rescaled bias does not fit int32"
        updates.append((consumer.bias, codes.astype(np.int32), bias_scales))
    return updates


def _apply_levels(
    codes: np.ndarray,
    code_type: encodings.CodeType,
    scales: np.ndarray,
    axis: int,
    biases: list[tuple[int, np.ndarray, np.ndarray]],
    layout: encodings.SparseLayout | None,
):
    def apply(editor: flatbuffer.ModelEditor, weight: WeightTensor) -> None:
        subgraph = editor.model.subgraphs[weight.subgraph]
        tensor = subgraph.tensors[weight.tensor]
        if layout is None:
            if code_type is encodings.CodeType.INT4:
                tensor.type = _TYPES.INT4
                tensor.buffer = editor.add_buffer(encodings.pack_int4(codes))
            else:
                tensor.buffer = editor.add_buffer(codes.astype(np.int8))
        else:
            densify_weight(editor, weight, "sparse_int8", codes, _TYPES.INT8, np.int8, layout)
        tensor.quantization = quantization(scales, axis)
        for bias_index, bias_codes, bias_scales in biases:
            bias = subgraph.tensors[bias_index]
            bias.buffer = editor.add_buffer(bias_codes.astype(np.int32))
            bias.quantization = quantization(bias_scales, 0)

    return apply


def _baseline(
    weight: WeightTensor, codes: np.ndarray, tensor, kernel, num_biases: int
) -> Candidate:
    scales, axis = _tensor_scales(tensor)
    decoded = flatbuffer.dequantize(tensor, codes)
    error = 0.0
    if kernel is not None and kernel.shape == decoded.shape:
        error = float(np.max(np.abs(decoded.astype(np.float64) - kernel), initial=0.0))
    return Candidate(
        Encoding.INT8,
        codes.size + QUANTIZATION_BYTES_PER_CHANNEL * scales.size * (1 + num_biases),
        f"int8 codes from the converter, {_scales_detail(scales, axis)}",
        decoded,
        lambda editor, w: None,
        max_error=error,
        baseline=True,
        codes=codes,
        scales=scales,
    )


def _sparse_int8(baseline: Candidate, axis: int, num_biases: int) -> Candidate:
    codes = baseline.codes
    layout = encodings.best_sparse_layout(codes != 0, 1)

    def apply(editor: flatbuffer.ModelEditor, weight: WeightTensor) -> None:
        densify_weight(editor, weight, "sparse_int8", codes, _TYPES.INT8, np.int8, layout)

    estimate = (
        layout.stored_bytes(1)
        + QUANTIZATION_BYTES_PER_CHANNEL * baseline.scales.size * (1 + num_biases)
        + TENSOR_OVERHEAD
        + OPERATOR_OVERHEAD
    )
    return Candidate(
        Encoding.SPARSE_INT8,
        estimate,
        f"int8 codes from the converter, {layout_detail(layout)}, "
        f"{_scales_detail(baseline.scales, axis)}",
        baseline.decoded,
        apply,
        max_error=baseline.max_error,
        codes=codes,
        scales=baseline.scales,
    )


def _level_candidates(
    model,
    weight: WeightTensor,
    tensor,
    kernel: np.ndarray | None,
    keras_bias: np.ndarray | None,
    allowed: Sequence[Encoding],
    skipped: list[tuple[str, str]],
    converter_error: float,
) -> list[Candidate]:
    """LEVELS (INT4 and INT8) and SPARSE_LEVELS candidates, or why not (in ``skipped``).

    ``converter_error`` is how far the converter's codes are from the levels, for the report.
    """
    wanted = [e for e in (Encoding.LEVELS, Encoding.SPARSE_LEVELS) if e in allowed]
    if not wanted:
        return []

    def skip(reason: str) -> list[Candidate]:
        skipped.extend((encoding.value, reason) for encoding in wanted)
        return []

    if kernel is None or kernel.shape != tuple(weight.shape):
        return skip("no Keras weight matched: its levels are unknown")
    fit = fit_levels(weight, kernel)
    if fit is None:
        return skip(distinct_detail(kernel))
    if np.max(np.abs(fit.codes), initial=0) > _INT8_LIMIT:
        return skip(f"level codes up to {int(np.max(np.abs(fit.codes)))}, beyond int8's ±127")
    old_scales, old_axis = _tensor_scales(tensor)
    # (scales, axis) to try: per channel for per-channel levels; for per-tensor levels one
    # scale (12 bytes per channel less on the weight and on each bias), then, when the
    # converter quantized per channel, q repeated on every channel as it did.
    if fit.axis is not None:
        variants = [(np.asarray(fit.scale, np.float32), fit.axis)]
    else:
        variants = [(np.asarray([fit.scale], np.float32), old_axis)]
        if old_scales.size > 1:
            variants.append((np.full(old_scales.size, fit.scale, np.float32), old_axis))
    codes = fit.codes.astype(np.int32)
    decoded = fit.decode()
    kinds = [encodings.CodeType.INT8]
    if encodings.code_type(codes) is encodings.CodeType.INT4:
        kinds.insert(0, encodings.CodeType.INT4)
    layout = None
    if Encoding.SPARSE_LEVELS in wanted:
        if np.all(codes != 0):
            skipped.append((Encoding.SPARSE_LEVELS.value, "no zero weights"))
        else:
            layout = encodings.best_sparse_layout(codes != 0, 1)
    found = []
    for scales, axis in variants:
        biases = _bias_updates(model, weight, scales, keras_bias)
        if isinstance(biases, str):
            return skip(biases)
        quantization_bytes = QUANTIZATION_BYTES_PER_CHANNEL * scales.size * (1 + len(biases))
        scale_text = f"{_scales_detail(scales, axis)}, bias rescaled"
        if converter_error > 0:
            scale_text += (
                f" (the converter's int8 codes miss the levels by up to {converter_error:.3g})"
            )
        if Encoding.LEVELS in wanted:
            for kind in kinds:
                found.append(
                    Candidate(
                        Encoding.LEVELS,
                        kind.stored_bytes(codes.size) + quantization_bytes,
                        f"{kind.value} codes = level indices, {scale_text}",
                        decoded,
                        _apply_levels(codes, kind, scales, axis, biases, None),
                        max_error=fit.max_error,
                        codes=codes,
                        scales=scales,
                    )
                )
        if layout is not None:
            found.append(
                Candidate(
                    Encoding.SPARSE_LEVELS,
                    layout.stored_bytes(1)
                    + quantization_bytes
                    + TENSOR_OVERHEAD
                    + OPERATOR_OVERHEAD,
                    f"int8 codes = level indices, {layout_detail(layout)}, {scale_text}",
                    decoded,
                    _apply_levels(codes, encodings.CodeType.INT8, scales, axis, biases, layout),
                    max_error=fit.max_error,
                    codes=codes,
                    scales=scales,
                )
            )
    return found


def _baseline_of(model, weight: WeightTensor, kernel: np.ndarray | None) -> Candidate:
    """The converter's int8 tensor as it is."""
    tensor = model.subgraphs[weight.subgraph].tensors[weight.tensor]
    codes = flatbuffer.decode_tensor(model, weight.subgraph, weight.tensor).astype(np.int32)
    return _baseline(weight, codes, tensor, kernel, _num_biases(model, weight))


def _num_biases(model, weight: WeightTensor) -> int:
    return sum(c.bias is not None for c in consumers(model, weight.subgraph, weight.tensor))


def _candidates(
    model,
    weight: WeightTensor,
    baseline: Candidate,
    kernel: np.ndarray | None,
    keras_bias: np.ndarray | None,
    allowed: Sequence[Encoding],
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """The candidates among ``allowed`` (smallest first), and why not the others."""
    tensor = model.subgraphs[weight.subgraph].tensors[weight.tensor]
    codes = baseline.codes
    num_biases = _num_biases(model, weight)
    _, axis = _tensor_scales(tensor)
    found: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    if Encoding.INT8 in allowed:
        found.append(baseline)
    if Encoding.SPARSE_INT8 in allowed:
        if np.all(codes != 0):
            skipped.append((Encoding.SPARSE_INT8.value, "no zero codes"))
        else:
            found.append(_sparse_int8(baseline, axis, num_biases))
    found += _level_candidates(
        model, weight, tensor, kernel, keras_bias, allowed, skipped, baseline.max_error
    )
    for encoding in allowed:
        if encoding not in INTEGER_ENCODINGS:
            skipped.append(
                (
                    encoding.value,
                    f"not for a full-integer file (takes {[e.value for e in INTEGER_ENCODINGS]})",
                )
            )
    found.sort(key=rank)
    return found, skipped


def _keras_biases(model: keras.Model) -> dict[str, np.ndarray]:
    biases = {}
    for layer in keras_layers(model):
        bias = getattr(layer, "bias", None)
        if type(layer) in SUPPORTED_LAYERS and bias is not None and layer.built:
            biases[layer.name] = np.asarray(bias.numpy(), np.float64)
    return biases


class _Builder(FileBuilder):
    """Writes a full-integer file for an assignment of candidates and verifies it."""

    def __init__(
        self,
        int8_file: bytes,
        weights: Sequence[WeightTensor],
        checker: OutputChecker,
        biases: Mapping[tuple[int, int], np.ndarray],
    ):
        super().__init__(int8_file, weights)
        self.checker = checker
        self.biases = biases  # (subgraph, bias tensor) -> the real bias it must hold

    def check(self, data: bytes, plan) -> tuple[verify.RuntimeCheck, ...]:
        checks = list(self.checker.check(data))
        if plan:
            checks += self.weight_checks(data, plan)
        return tuple(checks)

    def weight_checks(self, data: bytes, plan) -> list[verify.RuntimeCheck]:
        """Each weight, decoded here from the file and read from the builtin interpreter,
        against the intended codes and scales: 0 codes apart, or infinitely far when the
        scales differ. Each of their biases, decoded here: scale ``input_scale *
        weight_scale`` and within half a step of the real bias."""
        model = flatbuffer.read_model(data)
        from_file = []
        problems = []
        for key, candidate in sorted(plan.items()):
            name = f"{self.weights[key].label} weights"
            try:
                codes = flatbuffer.decode_tensor(model, *key)
                tensor = model.subgraphs[key[0]].tensors[key[1]]
                scales, _ = _tensor_scales(tensor)
                from_file.append(
                    verify.OutputCheck(name, _code_distance(codes, scales, candidate), 0.0)
                )
                for consumer in consumers(model, *key):
                    if consumer.bias is not None and (key[0], consumer.bias) in self.biases:
                        distance = _bias_distance(
                            model, key, consumer, self.biases[(key[0], consumer.bias)]
                        )
                        from_file.append(
                            verify.OutputCheck(
                                f"{self.weights[key].label} bias (steps)", distance, _HALF_STEP
                            )
                        )
            except (ValueError, TypeError, AttributeError, IndexError) as error:
                problems.append(f"{name}: {error}")

        def read_by_interpreter():
            held = verify.litert_tensors(
                data,
                self.checker.inputs,
                [key[1] for key in sorted(plan)],
                input_names=self.checker.input_names,
            )
            for key, candidate in sorted(plan.items()):
                codes, scales = held[key[1]]
                distance = _code_distance(codes, scales, candidate)
                yield verify.OutputCheck(f"{self.weights[key].label} weights", distance, 0)

        return weight_checks(
            verify.Runtime.BUILTIN,
            from_file,
            problems,
            read_by_interpreter(),
            references=(
                "intended int8 weights (file decoded here)",
                "intended int8 weights (read from the interpreter)",
            ),
        )


def _bias_distance(model, key: tuple[int, int], consumer, real: np.ndarray) -> float:
    """How many of its steps an int32 bias is from ``real`` (infinite when its scale is not
    the operator's ``input_scale * weight_scale``, which TFLite's int8 kernels assume)."""
    subgraph = model.subgraphs[key[0]]
    bias = subgraph.tensors[consumer.bias]
    activation = np.float64(subgraph.tensors[consumer.input].quantization.scale[0])
    weight_scales, _ = _tensor_scales(subgraph.tensors[key[1]])
    bias_scales = np.asarray(bias.quantization.scale, np.float64).reshape(-1)
    expected = activation * weight_scales.astype(np.float64)
    if bias_scales.shape != expected.shape or not np.allclose(
        bias_scales, expected, rtol=1e-6, atol=0
    ):
        return float("inf")
    codes = flatbuffer.decode_tensor(model, key[0], consumer.bias).astype(np.float64)
    if codes.shape != np.shape(real):
        return float("inf")
    scale = bias_scales if bias_scales.size == codes.size else bias_scales[0]
    return float(np.max(np.abs(codes * scale - real) / scale, initial=0.0))


def _code_distance(codes: np.ndarray, scales: np.ndarray, candidate: Candidate) -> float:
    want = candidate.codes
    codes = np.asarray(codes)
    if codes.shape != want.shape or not np.array_equal(
        np.asarray(scales, np.float32).reshape(-1), candidate.scales
    ):
        return float("inf")
    return float(np.max(np.abs(codes.astype(np.int64) - want), initial=0))


class IntegerPlugin(TargetPlugin):
    """The full-integer LiteRT target of :func:`~tflite_export.pipeline.run`.

    Args:
      tolerance: as for :func:`tflite_export.export` (``None``: the default
        :class:`~tflite_export.verify.Int8Tolerance`).
      int8_io: int8 inputs and outputs instead of float32 ones.
    """

    target = Target.LITERT
    dense_name = "the converter's int8 tensor"

    def __init__(self, tolerance: float | verify.Int8Tolerance | None, int8_io: bool):
        self.tolerance = tolerance
        self.int8_io = int8_io

    def check_encoding(self, value: Any, where: str) -> None:
        forced = as_encoding(value, where)
        if forced is not None and forced not in INTEGER_ENCODINGS:
            accepted = ["auto", *(e.value for e in INTEGER_ENCODINGS)]
            raise ExportError(
                f"Expected {where} in {accepted} for a full-integer LiteRT file (int8 "
                f"activations, chosen by passing representative_data); received: "
                f"{where}={value!r} (activations='float32' keeps float32 compute)"
            )

    def convert(self, model, inputs, expected) -> None:
        self.float_file = convert_float(model)
        self.reference = convert_int8(model, inputs, int8_io=self.int8_io)
        self.checker = OutputChecker(
            self.reference,
            inputs,
            expected,
            self.tolerance,
            input_names(model),
            output_names(model),
        )
        self.parsed = flatbuffer.read_model(self.reference)
        self.weights = find_weight_tensors(self.parsed, model, quantized=True)
        self.kernels = keras_kernels(model)
        self.biases = _keras_biases(model)
        real_biases = {}
        for weight in self.weights:
            for consumer in consumers(self.parsed, weight.subgraph, weight.tensor):
                if consumer.bias is not None:
                    real_biases[(weight.subgraph, consumer.bias)] = _bias_values(
                        self.parsed, weight.subgraph, consumer.bias, self.biases.get(weight.layer)
                    )
        self.builder = _Builder(self.reference, self.weights, self.checker, real_biases)
        for weight in self.weights:
            self.builder.baseline[(weight.subgraph, weight.tensor)] = _baseline_of(
                self.parsed, weight, self._kernel(weight)
            )

    def _kernel(self, weight: WeightTensor) -> np.ndarray | None:
        return self.kernels.get(weight.layer) if weight.layer is not None else None

    def check_baseline(self) -> tuple[verify.RuntimeCheck, ...]:
        checks = self.builder.check(self.reference, self.builder.baseline)
        if not all(c.passed for c in checks):
            raise VerificationError(
                "Expected the converter's full-integer file to reproduce the Keras outputs "
                f"within the int8 tolerance; received: {failure_reason(checks)} (calibrate on "
                "real samples of the input distribution, or pass a looser tolerance, e.g. "
                "tflite_export.verify.Int8Tolerance(output_steps=8))"
            )
        return checks

    def candidates(self, weight, forced):
        allowed = [forced] if forced is not None else list(INTEGER_ENCODINGS)
        bias = self.biases.get(weight.layer) if weight.layer is not None else None
        baseline = self.builder.baseline[(weight.subgraph, weight.tensor)]
        return _candidates(self.parsed, weight, baseline, self._kernel(weight), bias, allowed)

    def report(self, path, data, checks, *, model, inputs, plan, reasons, rejected) -> ExportReport:
        return litert_report(
            path,
            data,
            checks,
            target=self.target,
            float_file=self.float_file,
            inputs=inputs,
            builder=self.builder,
            plan=plan,
            stored_values={key: candidate.codes for key, candidate in plan.items()},
            reasons=reasons,
            rejected=rejected,
            uncompressed_file_bytes=len(self.reference),
            skipped_weights=tuple(
                skipped_weights(self.parsed, model, self.weights, quantized=True)
            ),
            io_quantization=tuple(
                q for q in (*self.checker.io_inputs, *self.checker.io_outputs) if q is not None
            ),
            activations="int8",
        )
