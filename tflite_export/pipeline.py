"""The export pipeline, one for every target, and the interface its targets plug into.

:func:`run` is the skeleton of :func:`tflite_export.export` for each :class:`Target`:

1. check the names in the ``encoding`` argument (:meth:`TargetPlugin.check_encoding`), before
   any slow conversion;
2. prepare the verification inputs (:mod:`tflite_export.inputs`) and the Keras outputs;
3. convert the model (:meth:`TargetPlugin.convert`: the converter's file, its weight tensors,
   the *builder* that writes and checks files, see :mod:`tflite_export.candidates`) and verify
   the converted file as it is (:meth:`TargetPlugin.check_baseline`);
4. per weight tensor, the encoding the ``encoding`` argument asks for
   (:func:`requested_encodings`), the candidates the target offers
   (:meth:`TargetPlugin.candidates`), those worth trying (:func:`~tflite_export.candidates.
   keep_options`);
5. the smallest combination that passes verification (:meth:`TargetPlugin.select`);
6. with ``tensor_names="io"``, that file re-encoded without its internal tensor names
   (:func:`tflite_export.names.drop_names`) and verified again, as the combination was;
7. write the file and return its report (:meth:`TargetPlugin.report`), whose bytes are those
   of the file written.

The targets: :mod:`tflite_export.float_target` (LiteRT, float32 activations),
:mod:`tflite_export.integer_target` (LiteRT, full-integer) and
:mod:`tflite_export.tflm_target` (TFLite Micro, float32 or full-integer, LUT weights).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tf_admm.compat import keras
from tflite_export import flatbuffer, verify
from tflite_export.candidates import Candidate, failure_reason, keep_options, select_or_keep
from tflite_export.encodings import Encoding
from tflite_export.errors import ExportError, VerificationError
from tflite_export.inputs import batch_size_of, keras_outputs, prepare_inputs
from tflite_export.keras_weights import keras_layers, kernel_weights
from tflite_export.names import TensorNames, drop_names
from tflite_export.report import ExportReport, FileBytes, WeightChoice, account, gzip_size
from tflite_export.weights import WeightTensor

__all__ = [
    "Activations",
    "Target",
    "TargetPlugin",
    "as_encoding",
    "check_each_encoding",
    "litert_report",
    "requested_encodings",
    "run",
    "write",
]

_OPS = flatbuffer.schema.BuiltinOperator
Key = tuple[int, int]  # (subgraph, tensor)


class Target(str, enum.Enum):
    """Where the file runs.

    ``LITERT``: the LiteRT (TFLite) interpreter; float32 compute with compact weight
    encodings, or full-integer (int8 weights and activations) when representative data is
    given (see :mod:`tflite_export.integer_target`).
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


def as_encoding(value: Any, where: str) -> Encoding | None:
    """``None`` for "auto", else the :class:`Encoding`."""
    if isinstance(value, str) and value == "auto":
        return None
    try:
        return Encoding(value)
    except ValueError:
        names = ["auto", *(e.value for e in Encoding)]
        raise ExportError(f"Expected {where} in {names}; received: {where}={value!r}") from None


def check_each_encoding(encoding: Any, check: Callable[[Any, str], Any] = as_encoding) -> None:
    """Calls ``check(value, where)`` on the ``encoding`` argument, or on each value of a mapping
    of them; ``where`` names the value as error messages do (``encoding['conv1']``)."""
    if isinstance(encoding, Mapping):
        for name, value in encoding.items():
            check(value, f"encoding[{name!r}]")
    else:
        check(encoding, "encoding")


def requested_encodings(
    encoding: Any, weights: Sequence[WeightTensor], model: keras.Model
) -> dict[tuple[int, int], Encoding | None]:
    """Per weight tensor, the forced encoding or ``None`` (auto)."""
    keys = {(w.subgraph, w.tensor): w for w in weights}
    if not isinstance(encoding, Mapping):
        forced = as_encoding(encoding, "encoding")
        return {key: forced for key in keys}
    requested: dict[tuple[int, int], Encoding | None] = {key: None for key in keys}
    layers = {layer.name: layer for layer in keras_layers(model)}
    for name, value in encoding.items():
        forced = as_encoding(value, f"encoding[{name!r}]")
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


def write(path: str, data: bytes) -> None:
    """Writes the file; :class:`ExportError` naming the path when that fails."""
    try:
        with open(path, "wb") as handle:
            handle.write(data)
    except OSError as error:
        raise ExportError(f"Expected a writable path; received: path={path!r} ({error})") from None


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


def litert_report(
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
    """The report of the LiteRT file ``data``, written at ``path``.

    Args:
      path: where the file was written.
      data: the file, verified by ``checks``.
      checks: the verification of ``data``.
      target: the target the file was made for.
      float_file: the converter's float32 file, the size to compare with.
      inputs: the verification inputs.
      builder: what wrote ``data``; its ``weights`` by ``(subgraph, tensor)``.
      plan, stored_values, reasons, rejected: each weight's candidate, the values it stores,
        why it was chosen and what was rejected.
      **fields: the other :class:`ExportReport` fields of the target.
    """
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


class TargetPlugin(abc.ABC):
    """What a target adds to the pipeline (:func:`run`); one instance per export.

    :meth:`convert` sets ``reference`` (the converted file the candidates rewrite),
    ``weights`` (its weight tensors) and ``builder`` (writes and checks files, with the
    ``baseline`` candidate of every weight: the tensor as converted).
    """

    target: Target
    # How reports name the converter's tensor ("not smaller than ...").
    dense_name: str
    reference: bytes
    weights: list[WeightTensor]
    builder: Any

    def check_encoding(self, value: Any, where: str) -> None:
        """Raises :class:`ExportError` if ``value`` (at ``where``) is no encoding name this
        target takes."""
        as_encoding(value, where)

    @abc.abstractmethod
    def convert(
        self, model: keras.Model, inputs: list[np.ndarray], expected: list[np.ndarray]
    ) -> None:
        """Converts ``model``; sets ``reference``, ``weights`` and ``builder``."""

    @abc.abstractmethod
    def check_baseline(self) -> tuple[verify.RuntimeCheck, ...]:
        """The checks of the converted file; raises :class:`VerificationError` if it fails."""

    @abc.abstractmethod
    def candidates(
        self, weight: WeightTensor, forced: Encoding | None
    ) -> tuple[list[Any], list[tuple[str, str]]]:
        """The weight's candidates (smallest first; only ``forced`` if given) and why the
        target's other encodings do not apply."""

    def select(
        self,
        options: Mapping[Key, list[Any]],
        requested: Mapping[Key, Encoding | None],
        rejected: dict[Key, list[tuple[str, str]]],
        baseline_checks: tuple[verify.RuntimeCheck, ...],
    ) -> tuple[dict[Key, Any], dict[Key, str], bytes, tuple]:
        """The plan, the reasons, the file and its checks (see
        :func:`~tflite_export.candidates.select_or_keep`)."""
        return select_or_keep(
            self.builder, options, requested, rejected, self.reference, baseline_checks
        )

    @abc.abstractmethod
    def report(
        self,
        path: str,
        data: bytes,
        checks: tuple[verify.RuntimeCheck, ...],
        *,
        model: keras.Model,
        inputs: list[np.ndarray],
        plan: Mapping[Key, Any],
        reasons: Mapping[Key, str],
        rejected: Mapping[Key, list[tuple[str, str]]],
    ) -> ExportReport:
        """The report of the written file ``data``."""


def run(
    plugin: TargetPlugin,
    model: keras.Model,
    path: str,
    *,
    representative_data: Any,
    encoding: Any,
    batch_size: int,
    seed: int,
    tensor_names: TensorNames = TensorNames.KEEP,
) -> ExportReport:
    """Exports ``model`` to ``path`` for ``plugin``'s target (the steps in the module doc).

    The arguments are checked (and documented) by :func:`tflite_export.export`.
    """
    # Encoding names are checked before the (slow) conversion; keys need the converted file.
    check_each_encoding(encoding, plugin.check_encoding)
    inputs = prepare_inputs(model, representative_data, batch_size, seed)
    expected = keras_outputs(model, inputs)
    plugin.convert(model, inputs, expected)
    baseline_checks = plugin.check_baseline()
    requested = requested_encodings(encoding, plugin.weights, model)
    options: dict[Key, list[Any]] = {}
    rejected: dict[Key, list[tuple[str, str]]] = {}
    for weight in plugin.weights:
        key = (weight.subgraph, weight.tensor)
        forced = requested[key]
        candidates, skipped = plugin.candidates(weight, forced)
        options[key] = keep_options(
            weight, candidates, skipped, forced, plugin.builder.baseline[key], plugin.dense_name
        )
        rejected[key] = list(skipped)
    plan, reasons, data, checks = plugin.select(options, requested, rejected, baseline_checks)
    dropped = None
    if tensor_names is TensorNames.IO:
        data, dropped = drop_names(data)
        checks = plugin.builder.check(data, plan)
        if not all(c.passed for c in checks):  # pragma: no cover - no kernel reads these names
            raise VerificationError(
                "Expected the file without its internal tensor names to pass as it did with "
                f"them; received: {failure_reason(checks)} (export with tensor_names='keep')"
            )
    write(path, data)
    report = plugin.report(
        path,
        data,
        checks,
        model=model,
        inputs=inputs,
        plan=plan,
        reasons=reasons,
        rejected=rejected,
    )
    if dropped is not None:
        report = dataclasses.replace(report, notes=(*report.notes, dropped.note()))
    return report
