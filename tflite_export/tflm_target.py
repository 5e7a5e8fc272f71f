"""The TFLite Micro targets (``tflm``, ``tflm_int8``): LUT options per weight, the plug-in.

For each weight tensor the options, smallest first: a LUT with one table, a LUT with one table
per output channel (first or last axis only), or the dense tensor. TFLite Micro's DECODE takes
the number of tables from the tensor's per-channel quantization, not from the header (observed
with the tested nightly), so one table is offered only for weights not quantized per channel,
and per-channel tables only for weights quantized per channel on that axis, or float weights,
which get a unit per-channel quantization (:func:`_table_rule`). Files are written and checked
by :mod:`tflite_export.tflm`; when the LUTs do not make the file smaller (small weights), the
uncompressed file is kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tflite_export import flatbuffer, lut, verify
from tflite_export.candidates import QUANTIZATION_BYTES_PER_CHANNEL, select
from tflite_export.conversion import convert_float
from tflite_export.encodings import Encoding
from tflite_export.errors import ExportError
from tflite_export.inputs import batch_size_of
from tflite_export.integer import convert_int8
from tflite_export.keras_weights import keras_kernels
from tflite_export.pipeline import Target, TargetPlugin, as_encoding
from tflite_export.report import ExportReport, LutBytes, WeightChoice, account, gzip_size
from tflite_export.tflm import (
    DEFAULT_FLOAT_TOLERANCE,
    DEFAULT_INT8_TOLERANCE,
    TFLM_WORDING,
    LutVerifier,
    compression_library,
    interpreter_name,
    read_luts,
    write_luts,
)
from tflite_export.weights import WeightTensor, find_weight_tensors, skipped_weights

__all__ = ["TflmPlugin"]

# Rough flatbuffer cost of the ancillary and decoded tensors and one DECODE operator, used only
# to rank options (the report counts the real bytes).
_LUT_OVERHEAD = 2 * 64 + 48 + 64


@dataclasses.dataclass(frozen=True, eq=False)
class _Option:
    """One way to store one weight tensor in a TFLite Micro file."""

    encoding: Encoding
    estimated_bytes: int
    detail: str
    fit: lut.LutFit | None = None
    max_error: float = 0.0  # LUTs store the values exactly

    @property
    def name(self) -> str:
        if self.fit is None:
            return self.encoding.value
        return "lut per tensor" if self.fit.axis is None else "lut per channel"

    @property
    def baseline(self) -> bool:
        """The dense tensor, as converted."""
        return self.fit is None


def _fits(plan: Mapping[tuple[int, int], _Option]) -> dict[tuple[int, int], lut.LutFit]:
    return {key: option.fit for key, option in plan.items() if option.fit is not None}


class _LutBuilder:
    """Writes the LUT file of a plan of options and checks it (for :func:`candidates.select`)."""

    def __init__(self, verifier: LutVerifier, weights: Mapping[tuple[int, int], WeightTensor]):
        self.verifier = verifier
        self.weights = dict(weights)
        self.labels = {key: weight.label for key, weight in weights.items()}
        self.baseline: dict[tuple[int, int], _Option] = {}  # the dense options

    def build(self, plan: Mapping[tuple[int, int], _Option]) -> bytes:
        return write_luts(self.verifier.uncompressed, _fits(plan))

    def check(self, data: bytes, plan) -> tuple[verify.RuntimeCheck, ...]:
        return self.verifier.check(data, sorted(_fits(plan)), self.labels)


def _lut_detail(fit: lut.LutFit, dtype: np.dtype) -> str:
    where = "1 table" if fit.axis is None else f"{fit.num_tables} tables on axis {fit.axis}"
    return f"{fit.bits}-bit indices, {where} x {fit.stride} {dtype.name}"


def _channel_quantization(model, weight: WeightTensor) -> int | None:
    """The quantized dimension of a per-channel quantized tensor, else ``None``."""
    tensor = model.subgraphs[weight.subgraph].tensors[weight.tensor]
    quantization = tensor.quantization
    if quantization is None or quantization.scale is None or len(quantization.scale) < 2:
        return None
    return int(quantization.quantizedDimension)


def _table_rule(axis: int | None, channel_quantization: int | None, floating: bool) -> str | None:
    """Why TFLite Micro cannot decode tables along ``axis`` for this tensor, or ``None``.

    TFLite Micro's DECODE takes the number of tables from the tensor's per-channel
    quantization, whatever the header says (observed: a float tensor's per-channel tables
    decode every channel with the first table; a per-channel int8 tensor's single table is read
    as one per channel). Float weights get a unit per-channel quantization (scale 1, zero
    point 0), which the float kernels ignore.
    """
    if axis is None and channel_quantization is not None:
        return "quantized per channel: TFLite Micro's DECODE reads one table per channel"
    if axis is not None and channel_quantization != axis and not floating:
        return (
            "not quantized per channel on this axis: TFLite Micro's DECODE would read the "
            "first table for every channel"
        )
    return None


def _options(
    weight: WeightTensor,
    values: np.ndarray,
    channel_quantization: int | None,
    allowed: Sequence[Encoding],
    dense_encoding: Encoding,
) -> tuple[list[_Option], list[tuple[str, str]]]:
    found: list[_Option] = []
    skipped: list[tuple[str, str]] = []
    floating = values.dtype.kind == "f"
    if Encoding.LUT in allowed:
        for axis in (None, weight.channel_axis):
            name = "lut per tensor" if axis is None else "lut per channel"
            why_not = _table_rule(axis, channel_quantization, floating)
            if why_not is not None:
                skipped.append((name, why_not))
                continue
            if axis is not None and axis not in (0, values.ndim - 1):
                skipped.append((name, "TFLite Micro takes tables on the first or last axis only"))
                continue
            fit = lut.fit_lut(values, axis)
            if not fit.fits:
                skipped.append(
                    (
                        name,
                        f"{fit.stride} distinct values per table, more than "
                        f"{2**lut.MAX_BITS} ({lut.MAX_BITS}-bit indices)",
                    )
                )
                continue
            # The ancillary and decoded tensors are named after the weight.
            estimate = (
                fit.index_bytes
                + lut.DCM_BYTES
                + fit.table_bytes
                + _LUT_OVERHEAD
                + 2 * len(weight.tensor_name)
            )
            if axis is not None and floating:
                estimate += QUANTIZATION_BYTES_PER_CHANNEL * fit.num_tables
            found.append(_Option(Encoding.LUT, estimate, _lut_detail(fit, values.dtype), fit))
    if dense_encoding in allowed:
        found.append(_Option(dense_encoding, int(values.nbytes), f"dense {values.dtype.name}"))
    found.sort(key=lambda option: option.estimated_bytes)
    return found, skipped


def _report(
    *,
    path,
    target,
    model,
    data,
    float_file,
    uncompressed,
    verifier,
    weights,
    plan,
    reasons,
    rejected,
    checks,
    batch_size,
) -> ExportReport:
    luts = read_luts(data)
    final = flatbuffer.read_model(data)
    labels: dict[tuple[int, int], tuple[str, str]] = {}
    owned: dict[tuple[int, int], set[int]] = {}
    storage: dict[tuple[int, int], str] = {}
    for key, option in plan.items():
        label = weights[key].label
        subgraph = key[0]
        if option.fit is None or key not in luts:
            owned[key] = {key[1]}
        else:
            entry = luts[key]
            owned[key] = {entry.encoded, entry.ancillary, entry.decoded}
            storage[(subgraph, entry.encoded)] = f"lut indices {entry.header.bits}-bit"
            storage[(subgraph, entry.ancillary)] = "lut header + tables"
            storage[(subgraph, entry.decoded)] = "decoded (no data)"
        for tensor in owned[key]:
            labels[(subgraph, tensor)] = (label, option.encoding.value)
    parts = account(data, labels)
    rows = tuple(
        dataclasses.replace(row, storage=storage[(row.subgraph, row.tensor)])
        if (row.subgraph, row.tensor) in storage
        else row
        for row in parts.tensors
    )
    parts = dataclasses.replace(parts, tensors=rows)
    row_of = {(row.subgraph, row.tensor): row for row in parts.tensors}

    def row_bytes(subgraph, tensor, field):
        row = row_of.get((subgraph, tensor))
        return 0 if row is None else getattr(row, field)

    kernels = keras_kernels(model)
    uncompressed_model = flatbuffer.read_model(uncompressed)
    lut_rows = []
    choices = []
    for key, option in plan.items():
        weight = weights[key]
        values = verifier.weights[key]
        stored = sum(row_bytes(key[0], t, "total_bytes") for t in owned[key])
        if option.fit is not None and key in luts:
            entry = luts[key]
            ancillary = row_bytes(key[0], entry.ancillary, "value_bytes")
            header = min(lut.DCM_BYTES, ancillary)
            output = final.subgraphs[key[0]].tensors[entry.decoded]
            lut_rows.append(
                LutBytes(
                    label=weight.label,
                    mode="per_tensor" if entry.header.axis is None else "per_channel",
                    axis=entry.header.axis,
                    index_bits=entry.header.bits,
                    num_tables=1 if entry.header.axis is None else option.fit.num_tables,
                    table_entries=entry.header.stride,
                    value_type=flatbuffer.type_name(output.type),
                    index_bytes=row_bytes(key[0], entry.encoded, "value_bytes"),
                    table_bytes=ancillary - header,
                    header_bytes=header,
                    quantization_bytes=row_bytes(key[0], entry.decoded, "quantization_bytes"),
                )
            )
        error = 0.0
        if weight.layer in kernels and kernels[weight.layer].shape == values.shape:
            real = values
            if verifier.integer:
                tensor = uncompressed_model.subgraphs[key[0]].tensors[key[1]]
                real = flatbuffer.dequantize(tensor, values)
            error = float(
                np.max(np.abs(real.astype(np.float64) - kernels[weight.layer]), initial=0.0)
            )
        choices.append(
            WeightChoice.for_weight(
                weight,
                values,
                encoding=option.encoding,
                detail=option.detail,
                stored_bytes=stored,
                max_weight_error=error,
                reason=reasons[key],
                rejected=rejected[key],
            )
        )
    integer_io = tuple(q for q in (*verifier.io_inputs, *verifier.io_outputs) if q is not None)
    return ExportReport(
        path=path,
        target=target.value,
        interpreter=interpreter_name(),
        file=parts,
        float_file_bytes=len(float_file),
        gzip_bytes=gzip_size(data),
        float_gzip_bytes=gzip_size(float_file),
        weights=tuple(choices),
        checks=tuple(checks),
        batch_size=batch_size,
        lut=tuple(lut_rows),
        uncompressed_file_bytes=len(uncompressed),
        io_quantization=integer_io,
        activations="int8" if verifier.integer else "float32",
        skipped_weights=tuple(
            skipped_weights(
                uncompressed_model, model, list(weights.values()), quantized=verifier.integer
            )
        ),
    )


class TflmPlugin(TargetPlugin):
    """The ``tflm`` (``integer=False``) and ``tflm_int8`` targets of
    :func:`~tflite_export.pipeline.run`.

    Args:
      integer: ``tflm_int8``: the full-integer file (int8 inputs and outputs).
      tolerance: as for :func:`tflite_export.export` (``None``: 1e-4, or 0.1 for
        ``tflm_int8``).

    Raises:
      ExportError: when the ``tflite-micro`` package is missing.
    """

    dense_name = "the dense tensor"

    def __init__(self, integer: bool, tolerance: float | None):
        compression_library()  # fail early, before the slow conversions
        self.integer = integer
        self.target = Target.TFLM_INT8 if integer else Target.TFLM
        self.dense_encoding = Encoding.INT8 if integer else Encoding.FLOAT32
        if tolerance is None:
            tolerance = DEFAULT_INT8_TOLERANCE if integer else DEFAULT_FLOAT_TOLERANCE
        self.tolerance = tolerance

    def check_encoding(self, value: Any, where: str) -> None:
        forced = as_encoding(value, where)
        if forced is not None and forced not in (Encoding.LUT, self.dense_encoding):
            accepted = ("auto", Encoding.LUT.value, self.dense_encoding.value)
            raise ExportError(
                f"Expected {where} in {list(accepted)} for target {self.target.value!r}; "
                f"received: {where}={value!r}"
            )

    def convert(self, model, inputs, expected) -> None:
        self.float_file = convert_float(model)
        self.reference = convert_int8(model, inputs) if self.integer else self.float_file
        self.verifier = LutVerifier(
            self.reference, inputs, expected, self.tolerance, model, self.integer
        )
        self.parsed = flatbuffer.read_model(self.reference)
        self.weights = find_weight_tensors(self.parsed, model, quantized=self.integer)
        self.builder = _LutBuilder(self.verifier, {(w.subgraph, w.tensor): w for w in self.weights})
        for key in self.builder.weights:
            values = self.verifier.weights[key]
            self.builder.baseline[key] = _Option(
                self.dense_encoding, int(values.nbytes), f"dense {values.dtype.name}"
            )

    def check_baseline(self) -> tuple[verify.RuntimeCheck, ...]:
        checks = self.verifier.baseline_checks
        if not all(c.passed for c in checks):
            if self.integer:
                what = (
                    "the converter's full-integer file (quantization error: pass "
                    "representative_data of real samples or a larger tolerance)"
                )
            else:
                what = "the converter's float32 file"
            TFLM_WORDING.fail(what, checks)
        return checks

    def candidates(self, weight, forced):
        allowed = [forced] if forced is not None else [Encoding.LUT, self.dense_encoding]
        return _options(
            weight,
            self.verifier.weights[(weight.subgraph, weight.tensor)],
            _channel_quantization(self.parsed, weight),
            allowed,
            self.dense_encoding,
        )

    def select(self, options, requested, rejected, baseline_checks):
        """:func:`~tflite_export.candidates.select` when a weight has a LUT option, and the
        uncompressed file when the LUTs do not make it smaller (nothing was requested)."""
        uncompressed = self.reference
        forced_keys = {key: requested[key] is not None for key in options}
        if any(option.fit is not None for candidates in options.values() for option in candidates):
            plan, reasons, data, checks = select(
                self.builder, options, forced_keys, rejected, TFLM_WORDING
            )
        else:
            plan = {key: candidates[0] for key, candidates in options.items()}
            reasons = {key: "only option" for key in options}
            data = uncompressed
            checks = self.verifier.check(data, [], {})
            if not all(c.passed for c in checks):  # pragma: no cover - the baseline passed
                TFLM_WORDING.fail("the uncompressed file", checks)

        if (
            data is not uncompressed
            and not any(forced_keys.values())
            and len(data) >= len(uncompressed)
        ):
            # Small weights: the DECODE operators and their tensors cost more than they save.
            for key, candidates in options.items():
                dense = next(option for option in candidates if option.fit is None)
                if plan[key] is not dense:
                    rejected[key].append(
                        (plan[key].name, "the file with LUTs is not smaller than without")
                    )
                    plan[key] = dense
                    reasons[key] = "LUTs do not make the file smaller"
            data = uncompressed
            checks = self.verifier.check(data, [], {})
        return plan, reasons, data, checks

    def report(self, path, data, checks, *, model, inputs, plan, reasons, rejected) -> ExportReport:
        return _report(
            path=path,
            target=self.target,
            model=model,
            data=data,
            float_file=self.float_file,
            uncompressed=self.reference,
            verifier=self.verifier,
            weights=self.builder.weights,
            plan=plan,
            reasons=reasons,
            rejected=rejected,
            checks=checks,
            batch_size=batch_size_of(inputs),
        )
