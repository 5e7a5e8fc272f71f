"""The TFLite Micro targets of :func:`tflite_export.export`: LUT weights, verified in TFLite Micro.

Weights with few distinct values (k-means clusters, uniform levels, with or without pruning) are
stored as ``ceil(log2 k)``-bit indices into value tables, in TFLite Micro's DECODE format
(:mod:`tflite_export.lut`), written by the ``tflite-micro`` package's compression library and
expanded at run time by its ``TFLM_DECODE`` operator.

Two targets:

* ``tflm``: the converter's float32 model. TFLite Micro runs float32 models (reference
  kernels) and decodes float32 tables, so the file computes with exactly the Keras weights.
* ``tflm_int8``: a full-integer model, as most microcontrollers need: int8 weights (per
  channel) and activations, int32 biases, and **int8 inputs and outputs** (the report gives
  each one's scale and zero point), calibrated on the representative data, which should
  therefore be real samples. Quantization moves each weight to its channel's int8 grid; a
  channel that held ``k`` values still holds at most ``k`` codes, so the LUT stays as small.

Flow:

1. Convert (float32, or int8 with the representative data as calibration set). Run that
   *uncompressed* file in TFLite Micro and in LiteRT (builtin kernels); both must match Keras
   within ``tolerance`` (for int8: the quantization error).
2. For each weight tensor list the options, smallest first: a LUT with one table, a LUT with
   one table per output channel (first or last axis only), or the dense tensor. TFLite
   Micro's DECODE takes the number of tables from the tensor's per-channel quantization, not
   from the header (observed with the tested nightly), so one table is offered only for
   weights not quantized per channel, and per-channel tables only for weights quantized per
   channel on that axis, or float weights, which get a unit per-channel quantization (scale
   1, zero point 0; float kernels ignore it); :mod:`tflite_export.tflm_target` lists them.
3. Write the LUTs with ``tflite_micro``'s ``compress`` and verify the file: every LUT, decoded
   here from the file (:func:`tflite_export.lut.decode`) and read back from TFLite Micro's
   arena after a run, must equal the uncompressed weights exactly; the file's TFLite Micro
   outputs must equal the uncompressed file's TFLite Micro outputs exactly, and stay within
   ``tolerance`` of LiteRT's run of the uncompressed file and of Keras. Under ``"auto"`` a
   failing option falls back to the next one; a requested one raises
   :class:`VerificationError`. The file is written only when it passes.
4. Write the file and account for every byte (indices, value tables, DCM headers, metadata,
   flatbuffer overhead).

The compressed file holds a custom operator, so it runs in TFLite Micro only (an interpreter
built with the DECODE kernel), not in LiteRT.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tf_admm.compat import keras
from tflite_export import flatbuffer, lut, verify
from tflite_export.candidates import Wording, weight_checks
from tflite_export.errors import ExportError
from tflite_export.inputs import input_names, keras_outputs, output_names, prepare_inputs
from tflite_export.integer import convert_int8, dequantize, io_quantization, quantize
from tflite_export.weights import (
    find_weight_tensors,
)

__all__ = [
    "DECODE_OPERATOR",
    "DEFAULT_INT8_TOLERANCE",
    "LutTensor",
    "LutVerifier",
    "TFLM_WORDING",
    "check_lut_file",
    "compression_library",
    "convert_int8",
    "interpreter_name",
    "lut_spec_yaml",
    "read_luts",
    "write_luts",
]

DECODE_OPERATOR = "TFLM_DECODE"
DEFAULT_FLOAT_TOLERANCE = 1e-4
# Relative to max(1, max|keras|): the small test models' int8 files stay within ~5%.
DEFAULT_INT8_TOLERANCE = 0.1

_schema = flatbuffer.schema
_INSTALL = "pip install tflite-micro (or tf-admm[tflm])"
TFLM_WORDING = Wording(
    "the TFLite Micro file to reproduce the uncompressed file and the Keras outputs",
    only="only option",
    smallest_of="smallest of {count}",
    smallest="smallest option",
    only_passing="only option passing",
    smallest_passing="smallest option passing verification",
    single_unforced="requested encodings",
    combination="the combination of options that pass one by one",
)


def compression_library():
    """The ``tflite_micro`` compression library; :class:`ExportError` saying how to install it
    when it is missing."""
    try:
        from tflite_micro.tensorflow.lite.micro import compression
    except ImportError as error:
        raise ExportError(
            f"Expected the tflite-micro package for the TFLite Micro targets ({_INSTALL}); "
            f"received: import failed: {error}"
        ) from None
    return compression


def interpreter_name() -> str:
    """The TFLite Micro runtime, for reports."""
    try:
        return f"tflite_micro {importlib.metadata.version('tflite-micro')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed otherwise
        return "tflite_micro"


# --------------------------------------------------------------------------- LUT files


@dataclasses.dataclass(frozen=True, eq=False)
class LutTensor:
    """One LUT-compressed tensor found in a file.

    Attributes:
      subgraph: subgraph index.
      encoded: index of the packed-indices tensor (the original weight's index).
      ancillary: index of the header-and-tables tensor.
      decoded: index of the DECODE output the consumers read.
      header: the parsed LUT header.
      values: the decoded tensor, or ``None`` when it could not be decoded.
      error: why it could not be decoded.
    """

    subgraph: int
    encoded: int
    ancillary: int
    decoded: int
    header: lut.LutHeader | None
    values: np.ndarray | None
    error: str | None = None


def _custom_code(model, operator) -> str | None:
    code = model.operatorCodes[operator.opcodeIndex]
    name = code.customCode
    if name is None:
        return None
    return name.decode() if isinstance(name, bytes) else name


def _buffer_bytes(model, tensor) -> bytes:
    data = model.buffers[tensor.buffer].data
    return b"" if data is None else np.asarray(data, np.uint8).tobytes()


def read_luts(data: bytes) -> dict[tuple[int, int], LutTensor]:
    """Every LUT tensor of a TFLite Micro file, decoded independently of ``tflite_micro``.

    Returns:
      ``(subgraph, encoded tensor index) -> LutTensor``; a tensor decoded by several DECODE
      operators appears once.
    """
    model = flatbuffer.read_model(data)
    found: dict[tuple[int, int], LutTensor] = {}
    for subgraph_index, subgraph in enumerate(model.subgraphs or []):
        for operator in subgraph.operators or []:
            if _custom_code(model, operator) != DECODE_OPERATOR:
                continue
            inputs = [int(i) for i in operator.inputs]
            outputs = [int(i) for i in operator.outputs]
            for position, decoded in enumerate(outputs):
                encoded, ancillary = inputs[2 * position], inputs[2 * position + 1]
                key = (subgraph_index, encoded)
                if key in found:
                    continue
                output = subgraph.tensors[decoded]
                header = values = error = None
                try:
                    raw = _buffer_bytes(model, subgraph.tensors[ancillary])
                    header, _ = lut.parse_ancillary(raw)
                    values = lut.decode(
                        _buffer_bytes(model, subgraph.tensors[encoded]),
                        raw,
                        tuple(int(d) for d in output.shape),
                        flatbuffer.numpy_dtype(output.type),
                    )
                except ValueError as problem:
                    error = str(problem)
                found[key] = LutTensor(
                    subgraph_index, encoded, ancillary, decoded, header, values, error
                )
    return found


def lut_spec_yaml(fits: Mapping[tuple[int, int], lut.LutFit]) -> str:
    """The ``tflite_micro`` compression spec (YAML) writing ``fits`` as LUTs.

    Example:
      >>> fit = lut.fit_lut(np.array([[1.0, 2.0], [2.0, 3.0]], np.float32), axis=0)
      >>> print(lut_spec_yaml({(0, 4): fit}), end="")
      tensors:
        - subgraph: 0
          tensor: 4
          compression:
            - lut:
                index_bitwidth: 1
                per_channel:
                  axis: 0
    """
    lines = ["tensors:"]
    for (subgraph, tensor), fit in sorted(fits.items()):
        lines += [
            f"  - subgraph: {subgraph}",
            f"    tensor: {tensor}",
            "    compression:",
            "      - lut:",
            f"          index_bitwidth: {fit.bits}",
        ]
        if fit.axis is None:
            lines.append("          per_tensor:")
        else:
            lines += ["          per_channel:", f"            axis: {fit.axis}"]
    return "\n".join(lines) + "\n"


def write_luts(uncompressed: bytes, fits: Mapping[tuple[int, int], lut.LutFit]) -> bytes:
    """``uncompressed`` with the tensors of ``fits`` LUT-compressed by ``tflite_micro``.

    The library builds the same tables as :func:`tflite_export.lut.fit_lut`; the fit gives
    the index width and the table axis. A float tensor with per-channel tables gets a unit
    per-channel quantization first (see :func:`_annotate_float_channels`). Nothing is verified
    here (see :func:`check_lut_file`).

    Raises:
      ExportError: when ``tflite_micro`` is missing or refuses the spec.
    """
    if not fits:
        return bytes(uncompressed)
    compression = compression_library()
    uncompressed = _annotate_float_channels(uncompressed, fits)
    specs = compression.parse_yaml(lut_spec_yaml(fits))
    try:
        # The library warns on stderr about sizes; the report has the real numbers.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            compressed = bytes(compression.compress(bytes(uncompressed), specs))
    except Exception as error:  # noqa: BLE001 - the library raises its own and others
        raise ExportError(
            f"Expected tflite_micro to compress the LUT tensors {sorted(fits)}; received: "
            f"{type(error).__name__}: {error}"
        ) from None
    return _drop_encoded_quantization(compressed)


def _annotate_float_channels(data: bytes, fits: Mapping[tuple[int, int], lut.LutFit]) -> bytes:
    """Gives float tensors with per-channel tables a unit per-channel quantization.

    TFLite Micro's DECODE reads one table per channel only for a tensor quantized per channel;
    scale 1 and zero point 0 on a float tensor change nothing else (float kernels ignore them).
    """
    model = flatbuffer.read_model(data)
    changed = False
    for (subgraph, index), fit in fits.items():
        tensor = model.subgraphs[subgraph].tensors[index]
        quantization = tensor.quantization
        has_scale = quantization is not None and quantization.scale is not None
        if fit.axis is None or tensor.type != _schema.TensorType.FLOAT32 or has_scale:
            continue
        unit = _schema.QuantizationParametersT()
        unit.scale = np.ones(fit.num_tables, np.float32)
        unit.zeroPoint = np.zeros(fit.num_tables, np.int64)
        unit.quantizedDimension = int(fit.axis)
        tensor.quantization = unit
        changed = True
    return flatbuffer.write_model(model) if changed else data


def _drop_encoded_quantization(data: bytes) -> bytes:
    """The file without the quantization parameters left on the packed-indices tensors.

    The library copies them to the decoded tensor, where the kernels read them, and (in the
    tested nightly) also leaves them on the UINT8 indices, where nothing reads them: 12 bytes
    per channel twice.
    """
    model = flatbuffer.read_model(data)
    changed = False
    for subgraph in model.subgraphs or []:
        for operator in subgraph.operators or []:
            if _custom_code(model, operator) != DECODE_OPERATOR:
                continue
            for encoded in [int(i) for i in operator.inputs][0::2]:
                tensor = subgraph.tensors[encoded]
                if tensor.quantization is not None:
                    tensor.quantization = None
                    changed = True
    return flatbuffer.write_model(model) if changed else data


# --------------------------------------------------------------------------- verification


class LutVerifier:
    """Runs files in TFLite Micro and compares them with the uncompressed file and Keras.

    Built on the uncompressed file, it runs that file in TFLite Micro and in LiteRT (builtin
    kernels) against Keras (``baseline_checks``); :meth:`check` then checks a LUT file.
    """

    def __init__(
        self,
        uncompressed: bytes,
        inputs: list[np.ndarray],
        expected: list[np.ndarray],
        tolerance: float,
        model: keras.Model,
        integer: bool,
    ):
        self.uncompressed = uncompressed
        self.expected = expected
        self.tolerance = tolerance
        self.integer = integer
        self.input_names = input_names(model)
        self.output_names = output_names(model)
        self.io_inputs, self.io_outputs = io_quantization(
            uncompressed, self.input_names, self.output_names
        )
        self.inputs = [quantize(x, q) for x, q in zip(inputs, self.io_inputs)]
        parsed = flatbuffer.read_model(uncompressed)
        self.weights = {
            (w.subgraph, w.tensor): flatbuffer.decode_tensor(parsed, w.subgraph, w.tensor)
            for w in find_weight_tensors(parsed, quantized=integer)
        }
        self.baseline_checks: tuple[verify.RuntimeCheck, ...] = ()
        self.reference_tflm: list[np.ndarray] | None = None
        self.reference_litert: list[np.ndarray] | None = None
        checks = []
        for runtime in (verify.Runtime.TFLM, verify.Runtime.BUILTIN):
            outputs, check = self._run_and_compare(uncompressed, runtime, "keras")
            checks.append(check)
            if runtime is verify.Runtime.TFLM:
                self.reference_tflm = outputs
            else:
                self.reference_litert = outputs
        self.baseline_checks = tuple(checks)

    def _run(self, data: bytes, runtime: verify.Runtime) -> list[np.ndarray]:
        return verify.run(
            data,
            self.inputs,
            runtime=runtime,
            input_names=self.input_names,
            output_names=self.output_names,
        )

    def _to_real(self, outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [dequantize(o, q) for o, q in zip(outputs, self.io_outputs)]

    def _run_and_compare(self, data: bytes, runtime: verify.Runtime, reference: str):
        try:
            outputs = self._run(data, runtime)
        except Exception as error:  # noqa: BLE001 - any interpreter failure is a finding
            message = verify.error_message(error)
            return None, verify.RuntimeCheck(runtime, error=message, reference=reference)
        check = verify.compare_outputs(
            runtime,
            self._to_real(outputs),
            self.expected,
            tolerance=self.tolerance,
            output_names=self.output_names,
            reference=reference,
        )
        return outputs, check

    def weight_checks(self, data: bytes, keys: Sequence[tuple[int, int]], labels):
        """Each LUT decoded by :func:`read_luts` and by TFLite Micro against the uncompressed
        weights, exactly."""
        found = read_luts(data)
        problems = []
        decoded_by_us = []
        wanted = {}
        for key in keys:
            name = f"{labels.get(key, key)} weights"
            entry = found.get(key)
            if entry is None or entry.values is None:
                why = "no DECODE operator reads it" if entry is None else entry.error
                problems.append(f"{name}: {why}")
                continue
            decoded_by_us.append(
                verify.OutputCheck(name, _max_diff(entry.values, self.weights[key]), 0.0)
            )
            wanted.setdefault(key[0], {})[entry.decoded] = (name, key)

        def decoded_by_tflm():
            for subgraph, tensors in wanted.items():
                values = verify.tflm_tensors(
                    data,
                    self.inputs,
                    sorted(tensors),
                    subgraph=subgraph,
                    input_names=self.input_names,
                )
                for tensor, (name, key) in sorted(tensors.items()):
                    yield verify.OutputCheck(
                        name, _max_diff(values[tensor], self.weights[key]), 0.0
                    )

        return weight_checks(
            verify.Runtime.TFLM,
            decoded_by_us,
            problems,
            decoded_by_tflm(),
            references=(
                "uncompressed weights (file format decoded here)",
                "uncompressed weights (decoded by TFLite Micro)",
            ),
        )

    def check(self, data: bytes, keys, labels) -> tuple[verify.RuntimeCheck, ...]:
        """Checks of a compressed file: weights, then TFLite Micro outputs vs three references."""
        checks = self.weight_checks(data, keys, labels) if keys else []
        outputs, keras_check = self._run_and_compare(data, verify.Runtime.TFLM, "keras")
        checks.append(keras_check)
        if outputs is None:
            return tuple(checks)
        checks.append(
            verify.compare_outputs(
                verify.Runtime.TFLM,
                outputs,
                self.reference_tflm,
                tolerance=0.0,
                absolute=True,
                output_names=self.output_names,
                reference="uncompressed file",
            )
        )
        # The two runtimes' kernels may round differently (int8: by an output step or so).
        litert = verify.compare_outputs(
            verify.Runtime.TFLM,
            self._to_real(outputs),
            self._to_real(self.reference_litert),
            tolerance=self.tolerance,
            output_names=self.output_names,
            reference="litert (uncompressed file)",
        )
        checks.append(litert)
        return tuple(checks)


def _max_diff(got: np.ndarray, want: np.ndarray) -> float:
    if got.shape != want.shape:
        return float("inf")
    diff = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0))
    return diff if np.isfinite(diff) else float("inf")


def check_lut_file(
    data: bytes | str,
    uncompressed: bytes,
    model: keras.Model,
    *,
    representative_data: Any = None,
    tolerance: float | None = None,
    batch_size: int = 8,
    seed: int = 0,
) -> tuple[verify.RuntimeCheck, ...]:
    """Checks a LUT-compressed TFLite Micro file against the file it was made from and Keras.

    Every LUT must decode to the uncompressed file's weights exactly, and the file's TFLite
    Micro outputs must equal the uncompressed file's, as :func:`tflite_export.export` does.

    Args:
      data: the compressed file (bytes or path).
      uncompressed: the file before LUT compression (float32 or full-integer).
      model: the Keras model both come from.
      representative_data: verification inputs, as for :func:`tflite_export.export`.
      tolerance: allowed distance from Keras, relative to ``max(1, max|keras|)``; by default
        1e-4 for a float file, 0.1 for an integer one.
      batch_size: samples in the default verification batch.
      seed: seed of the default verification batch.

    Returns:
      The passing checks.

    Raises:
      VerificationError: naming each check that failed.
    """
    if not isinstance(data, (bytes, bytearray)):
        with open(data, "rb") as handle:
            data = handle.read()
    parsed = flatbuffer.read_model(uncompressed)
    integer = bool(find_weight_tensors(parsed, quantized=True))
    if tolerance is None:
        tolerance = DEFAULT_INT8_TOLERANCE if integer else DEFAULT_FLOAT_TOLERANCE
    inputs = prepare_inputs(model, representative_data, batch_size, seed)
    expected = keras_outputs(model, inputs)
    verifier = LutVerifier(bytes(uncompressed), inputs, expected, tolerance, model, integer)
    keys = sorted(read_luts(data))
    labels = {
        (w.subgraph, w.tensor): w.label
        for w in find_weight_tensors(parsed, model, quantized=integer)
    }
    checks = verifier.check(bytes(data), keys, labels)
    if not all(c.passed for c in checks):
        TFLM_WORDING.fail("the file", checks)
    return checks
