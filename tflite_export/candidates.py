"""Candidates and selection: the ways to store each weight tensor, and the choice among them.

Every target lists, per weight tensor, its candidates (:class:`Candidate` for LiteRT files; the
TFLite Micro target's options follow the same protocol: ``name``, ``estimated_bytes``,
``max_error``, ``baseline``), smallest first (:func:`rank`), keeps those worth trying
(:func:`keep_options`) and lets :func:`select` find the smallest combination whose file passes
verification. A target's *builder* writes and checks files:

* ``weights``: ``(subgraph, tensor) -> WeightTensor``;
* ``baseline``: ``(subgraph, tensor) ->`` the candidate that leaves the weight as converted;
* ``build(plan) -> bytes`` and ``check(data, plan) -> tuple[RuntimeCheck, ...]``; a check
  may include :func:`weight_checks`, the weights of the file against the intended ones.

:class:`Wording` holds how a target's reports and errors name its choices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

import numpy as np

from tflite_export import encodings, flatbuffer, verify
from tflite_export.encodings import Encoding
from tflite_export.errors import ExportError, VerificationError
from tflite_export.weights import WeightTensor

__all__ = [
    "LITERT_WORDING",
    "OPERATOR_OVERHEAD",
    "QUANTIZATION_BYTES_PER_CHANNEL",
    "TENSOR_OVERHEAD",
    "Candidate",
    "FileBuilder",
    "Wording",
    "build_file",
    "densify_weight",
    "distinct_detail",
    "failure_reason",
    "fit_levels",
    "keep_options",
    "layout_detail",
    "quantization",
    "rank",
    "select",
    "select_or_keep",
    "sparse_constant",
    "weight_checks",
]

# Rough flatbuffer cost of one added tensor and one added operator, used only to rank
# candidates (the report counts the real bytes).
TENSOR_OVERHEAD = 64
OPERATOR_OVERHEAD = 48
QUANTIZATION_BYTES_PER_CHANNEL = 4 + 8  # float32 scale + int64 zero point

Key = tuple[int, int]  # (subgraph, tensor)


@dataclasses.dataclass(frozen=True, eq=False)
class Candidate:
    """One way to store one weight tensor in a LiteRT file."""

    encoding: Encoding
    estimated_bytes: int
    detail: str
    decoded: np.ndarray  # the float32 values the file gives, TFLite layout
    apply: Callable[[flatbuffer.ModelEditor, WeightTensor], None]
    max_error: float = 0.0  # largest |decoded - original|
    baseline: bool = False  # the converter's tensor as it is (apply does nothing)
    # Full-integer files: the integer weights the kernel reads, and their scales.
    codes: np.ndarray | None = None
    scales: np.ndarray | None = None

    @property
    def name(self) -> str:
        """How reports name the candidate."""
        return self.encoding.value


@dataclasses.dataclass(frozen=True)
class Wording:
    """How a target's reports and errors name its choices.

    Attributes:
      expectation: what a written file must do, in "Expected ...; received: ..." errors.
      only, smallest_of, smallest, only_passing, smallest_passing: the reason given for a
        choice: the only one; the smallest of ``{count}``; the smallest, tried alone; the only
        one (the converter's) that passed alone; the smallest that passed alone.
      single_unforced: what fails when every weight has one choice, not all of them requested.
      combination: what fails when choices that pass one by one fail together.
    """

    expectation: str
    only: str = "only candidate"
    smallest_of: str = "smallest of {count} candidates"
    smallest: str = "smallest candidate"
    only_passing: str = "only candidate passing verification"
    smallest_passing: str = "smallest candidate passing verification"
    single_unforced: str = "the only candidates"
    combination: str = "the combination of encodings that pass one by one"

    def first_choice(self, forced: bool, count: int) -> str:
        """Why a weight's first choice was made: requested, the only one, the smallest."""
        if forced:
            return "requested"
        return self.only if count == 1 else self.smallest_of.format(count=count)

    def fail(self, what: str, checks: Sequence[verify.RuntimeCheck]) -> NoReturn:
        """Raises :class:`VerificationError`: ``what`` failed ``checks``."""
        raise VerificationError(
            f"Expected {self.expectation}; received: {what}: {failure_reason(checks)}"
        )


LITERT_WORDING = Wording("the written file to reproduce the Keras outputs in every runtime")


def layout_detail(layout: encodings.SparseLayout) -> str:
    """A sparse layout for the report: entries, level formats, index types."""
    formats = ",".join("d" if f is encodings.DimFormat.DENSE else "s" for f in layout.formats)
    types = sorted(
        {
            encodings.index_dtype(a).name
            for a in (*layout.segments, *layout.indices)
            if a is not None
        }
    )
    return f"{layout.num_entries:,} entries, levels {formats}, {'/'.join(types)} indices"


def distinct_detail(values: np.ndarray) -> str:
    """Why weights have no uniform levels, for the report."""
    distinct = np.unique(values[values != 0]).size
    return f"{distinct:,} distinct nonzero values, not on uniform levels (exact INT16 fit)"


def fit_levels(weight: WeightTensor, values: np.ndarray) -> encodings.UniformFit | None:
    """Exact uniform levels per tensor, else per output channel, else ``None``."""
    for axis in (None, weight.channel_axis):
        fit = encodings.fit_uniform_levels(values, axis)
        if fit is not None and fit.exact:
            return fit
    return None


def rank(candidate: Candidate) -> tuple:
    """Smallest first; on a tie exact before lossy, then the converter's own tensor."""
    return (candidate.estimated_bytes, candidate.max_error > 0, not candidate.baseline)


def keep_options(
    weight: WeightTensor,
    candidates: list[Any],
    skipped: list[tuple[str, str]],
    forced: Encoding | None,
    baseline: Any,
    dense_name: str,
) -> list[Any]:
    """The candidates worth trying: a forced encoding must apply; under "auto" a candidate
    must be smaller than the converter's tensor (``baseline``), or as small and more exact.

    Raises:
      ExportError: when the ``forced`` encoding has no candidate (the reason is the last of
        ``skipped``).
    """
    if forced is not None:
        if not candidates:
            raise ExportError(
                f"Weight {weight.label!r} ({weight.layer_type or weight.operator}): Expected "
                f"weights that encoding {forced.value!r} can store; received: {skipped[-1][1]}"
            )
        return candidates
    kept = []
    for candidate in candidates:
        size, limit = candidate.estimated_bytes, baseline.estimated_bytes
        if (
            candidate.baseline
            or size < limit
            or (size == limit and candidate.max_error < baseline.max_error)
        ):
            kept.append(candidate)
        else:
            skipped.append((candidate.name, f"not smaller than {dense_name}"))
    return kept


def failure_reason(checks: Sequence[verify.RuntimeCheck]) -> str:
    """The failing checks, described on one line."""
    return "; ".join(c.describe() for c in checks if not c.passed)


def build_file(
    data: bytes,
    weights: Mapping[Key, WeightTensor],
    plan: Mapping[Key, Candidate],
) -> bytes:
    """``data`` with every weight of ``plan`` written in its candidate's encoding."""
    model = flatbuffer.read_model(data)
    editor = flatbuffer.ModelEditor(model)
    for key, candidate in plan.items():
        if not candidate.baseline:
            candidate.apply(editor, weights[key])
    return flatbuffer.write_model(editor.finish())


class FileBuilder:
    """Writes a target's file for an assignment of candidates: the converter's file
    (``reference``) with every planned weight re-encoded. A target adds ``check``.

    Attributes:
      reference: the converter's file.
      weights: the weight tensors, by (subgraph, tensor).
      baseline: per weight, the candidate that leaves the converter's tensor as it is.
    """

    def __init__(self, reference: bytes, weights: Iterable[WeightTensor]):
        self.reference = reference
        self.weights = {(w.subgraph, w.tensor): w for w in weights}
        self.baseline: dict[Key, Candidate] = {}

    def build(self, plan: Mapping[Key, Candidate]) -> bytes:
        """The reference file with every weight written as ``plan`` says."""
        return build_file(self.reference, self.weights, plan)


def quantization(scales: Any, axis: int | None, zero_point: int = 0) -> Any:
    """TFLite quantization parameters: one scale per tensor, or per channel along ``axis``,
    each with ``zero_point``."""
    parameters = flatbuffer.schema.QuantizationParametersT()
    parameters.scale = np.asarray(scales, np.float32).reshape(-1)
    parameters.zeroPoint = np.full(parameters.scale.size, zero_point, np.int64)
    parameters.quantizedDimension = int(axis) if axis is not None else 0
    return parameters


def sparse_constant(
    editor: flatbuffer.ModelEditor,
    weight: WeightTensor,
    suffix: str,
    values: np.ndarray,
    tensor_type: int,
    dtype: Any,
    layout: encodings.SparseLayout,
) -> int:
    """Adds a constant tensor ``<weight>/<suffix>`` of ``values``' shape holding, in TFLite's
    sparse format, its values at ``layout``'s positions as ``dtype``; returns its index."""
    return editor.add_tensor(
        weight.subgraph,
        f"{weight.tensor_name}/{suffix}",
        values.shape,
        tensor_type,
        values.reshape(-1)[layout.positions].astype(dtype),
        sparsity=flatbuffer.sparsity_parameters(layout),
    )


def densify_weight(
    editor: flatbuffer.ModelEditor,
    weight: WeightTensor,
    suffix: str,
    values: np.ndarray,
    tensor_type: int,
    dtype: Any,
    layout: encodings.SparseLayout,
) -> None:
    """Makes the weight tensor the output of a DENSIFY reading :func:`sparse_constant`."""
    editor.release_constant(weight.subgraph, weight.tensor)
    source = sparse_constant(editor, weight, suffix, values, tensor_type, dtype, layout)
    editor.add_densify(weight.subgraph, source, weight.tensor)


def select(
    builder: Any,
    options: Mapping[Key, list[Any]],
    forced: Mapping[Key, bool],
    rejected: dict[Key, list[tuple[str, str]]],
    wording: Wording = LITERT_WORDING,
) -> tuple[dict[Key, Any], dict[Key, str], bytes, tuple]:
    """The smallest candidates whose file passes ``builder.check``, found as cheaply as may be.

    First every weight's first candidate together; if that file fails, each weight alone (the
    others as the converter wrote them, ``builder.baseline``), down its candidates until one
    passes, then the combination again. Candidates that fail alone go to ``rejected``.

    Returns:
      The plan (key -> candidate), the reason of each choice, the file and its checks.

    Raises:
      VerificationError: when a requested candidate fails, or the combination does.
    """
    plan = {key: candidates[0] for key, candidates in options.items()}
    reasons = {key: wording.first_choice(forced[key], len(options[key])) for key in options}
    data = builder.build(plan)
    checks = builder.check(data, plan)
    if all(c.passed for c in checks):
        return plan, reasons, data, checks
    if all(len(v) == 1 for v in options.values()):
        wording.fail(
            "requested encodings" if all(forced.values()) else wording.single_unforced, checks
        )
    # Find the culprits: each weight alone (others as converted), down its candidates.
    for key, candidates in options.items():
        for position, candidate in enumerate(candidates):
            if candidate.baseline:
                plan[key] = candidate
                reasons[key] = wording.smallest if position == 0 else wording.only_passing
                break
            trial = {**builder.baseline, key: candidate}
            trial_checks = builder.check(builder.build(trial), trial)
            if all(c.passed for c in trial_checks):
                plan[key] = candidate
                if position:
                    reasons[key] = wording.smallest_passing
                break
            rejected[key].append((candidate.name, failure_reason(trial_checks)))
            if forced[key] and position == len(candidates) - 1:
                wording.fail(
                    f"weight {builder.weights[key].label!r} as {candidate.name}", trial_checks
                )
        else:  # pragma: no cover - the baseline is always a candidate unless forced
            raise ExportError(f"no encoding of {builder.weights[key].label!r} passes")
    data = builder.build(plan)
    checks = builder.check(data, plan)
    if not all(c.passed for c in checks):
        wording.fail(wording.combination, checks)
    return plan, reasons, data, checks


def select_or_keep(
    builder: Any,
    options: Mapping[Key, list[Any]],
    requested: Mapping[Key, Encoding | None],
    rejected: dict[Key, list[tuple[str, str]]],
    baseline: bytes,
    baseline_checks: tuple[verify.RuntimeCheck, ...],
) -> tuple[dict[Key, Any], dict[Key, str], bytes, tuple]:
    """The plan, reasons, file and checks of :func:`select`, the encodings ``requested`` names
    forced; the converter's file ``baseline`` and its checks when no weight has options."""
    if not options:
        return {}, {}, baseline, baseline_checks
    forced = {key: requested[key] is not None for key in options}
    return select(builder, options, forced, rejected)


def weight_checks(
    runtime: verify.Runtime,
    decoded_here: Sequence[verify.OutputCheck],
    problems: Sequence[str],
    read_by_interpreter: Iterable[verify.OutputCheck],
    references: tuple[str, str],
) -> list[verify.RuntimeCheck]:
    """The two checks of a file's weights: as decoded here, and as ``runtime`` reads them.

    Args:
      runtime: the interpreter the weights are read from.
      decoded_here: one check per weight that decoding the file here gave.
      problems: what stopped decoding the others, joined into the first check's error.
      read_by_interpreter: the checks of the weights read from the interpreter, made lazily
        (a generator): whatever it raises is the second check's error, with the checks made
        before it.
      references: what each check compares with, decoded here and read by the interpreter.
    """
    read = []
    error = None
    try:
        for check in read_by_interpreter:
            read.append(check)
    except Exception as problem:  # noqa: BLE001 - any interpreter failure is a finding
        error = verify.error_message(problem)
    return [
        verify.RuntimeCheck(
            runtime,
            tuple(decoded_here),
            error="; ".join(problems) or None,
            reference=references[0],
        ),
        verify.RuntimeCheck(runtime, tuple(read), error=error, reference=references[1]),
    ]
