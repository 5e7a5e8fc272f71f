"""Runs a ``.tflite`` model in the interpreter and compares its outputs with the Keras model's.

Every file is run twice: with the interpreter's default delegate (XNNPACK on CPU) and with the
plain builtin kernels (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``), since the two take different code
paths for sparse and quantized weights. The interpreter is ``ai_edge_litert``'s when installed,
else TensorFlow's ``tf.lite.Interpreter``.

Inputs and outputs are matched by the names of the ``serving_default`` signature (the Keras input
and output names) when they agree, else by position: the converter may order outputs
alphabetically.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

import numpy as np

try:
    from ai_edge_litert import interpreter as _interpreter

    INTERPRETER = "ai_edge_litert"
except ImportError:  # pragma: no cover - depends on the installed packages
    from tensorflow.lite.python import interpreter as _interpreter

    INTERPRETER = "tensorflow.lite"

__all__ = [
    "INTERPRETER",
    "OutputCheck",
    "Runtime",
    "RuntimeCheck",
    "check_outputs",
    "run",
]


class Runtime(str, enum.Enum):
    """How the interpreter runs the model."""

    DEFAULT_DELEGATE = "xnnpack"
    BUILTIN = "builtin"


_RESOLVERS = {
    Runtime.DEFAULT_DELEGATE: _interpreter.OpResolverType.AUTO,
    Runtime.BUILTIN: _interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
}


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output compared: largest absolute difference and what was allowed."""

    output: str
    max_abs_diff: float
    allowed: float

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_diff <= self.allowed)


@dataclasses.dataclass(frozen=True)
class RuntimeCheck:
    """A file run in one runtime: per-output checks, or the error that stopped it."""

    runtime: Runtime
    outputs: tuple[OutputCheck, ...] = ()
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(check.passed for check in self.outputs)

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.runtime.value}: failed to run: {self.error}"
        parts = ", ".join(
            f"{c.output}: max|diff|={c.max_abs_diff:.3g} (allowed {c.allowed:.3g})"
            for c in self.outputs
        )
        return f"{self.runtime.value}: {parts}"

    def to_dict(self) -> dict:
        return {
            "runtime": self.runtime.value,
            "passed": self.passed,
            "error": self.error,
            "outputs": [{**dataclasses.asdict(c), "passed": c.passed} for c in self.outputs],
        }


def _names_match(given: Sequence[str], signature: Sequence[str]) -> bool:
    return len(given) == len(signature) and set(given) == set(signature)


def run(
    data: bytes,
    inputs: Sequence[np.ndarray],
    *,
    runtime: Runtime = Runtime.DEFAULT_DELEGATE,
    input_names: Sequence[str] = (),
    output_names: Sequence[str] = (),
) -> list[np.ndarray]:
    """Outputs of the ``.tflite`` model ``data`` for a batch of ``inputs``.

    Args:
      data: the model bytes.
      inputs: one array per model input, batch first.
      runtime: with the default delegate, or builtin kernels only.
      input_names: Keras input names, matched against the signature's.
      output_names: Keras output names; the result follows this order when they match.

    Returns:
      One array per output.
    """
    interpreter = _interpreter.Interpreter(
        model_content=bytes(data), experimental_op_resolver_type=_RESOLVERS[Runtime(runtime)]
    )
    signatures = interpreter.get_signature_list()
    if signatures:
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        runner = interpreter.get_signature_runner(key)
        signature_inputs = list(signatures[key]["inputs"])
        signature_outputs = list(signatures[key]["outputs"])
        if _names_match(input_names, signature_inputs):
            feed = dict(zip(input_names, inputs))
        elif len(signature_inputs) == len(inputs) == 1:
            feed = {signature_inputs[0]: inputs[0]}
        else:
            # The converter names signature inputs after the Keras inputs, in model order.
            feed = dict(zip(signature_inputs, inputs))
        results = runner(**{name: np.asarray(value) for name, value in feed.items()})
        if _names_match(output_names, signature_outputs):
            return [np.asarray(results[name]) for name in output_names]
        return [np.asarray(results[name]) for name in signature_outputs]
    details = interpreter.get_input_details()
    for detail, value in zip(details, inputs):
        interpreter.resize_tensor_input(detail["index"], np.shape(value))
    interpreter.allocate_tensors()
    for detail, value in zip(details, inputs):
        interpreter.set_tensor(detail["index"], np.asarray(value, detail["dtype"]))
    interpreter.invoke()
    return [
        np.asarray(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()
    ]


def check_outputs(
    data: bytes,
    inputs: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
    *,
    tolerance: float,
    input_names: Sequence[str] = (),
    output_names: Sequence[str] = (),
    runtimes: Sequence[Runtime] = tuple(Runtime),
) -> tuple[RuntimeCheck, ...]:
    """Runs ``data`` in each runtime and compares every output with ``expected``.

    An output passes when ``max|tflite - expected| <= tolerance * max(1, max|expected|)``.
    A runtime that fails to load, prepare or invoke the model yields a check with ``error`` set.

    Returns:
      One :class:`RuntimeCheck` per runtime.
    """
    names = list(output_names) or [f"output_{i}" for i in range(len(expected))]
    checks = []
    for runtime in runtimes:
        try:
            outputs = run(
                data,
                inputs,
                runtime=runtime,
                input_names=input_names,
                output_names=output_names,
            )
        except Exception as error:  # noqa: BLE001 - any interpreter failure is a finding
            message = " ".join(str(error).split())
            checks.append(RuntimeCheck(Runtime(runtime), error=message[:500]))
            continue
        if len(outputs) != len(expected):
            checks.append(
                RuntimeCheck(
                    Runtime(runtime),
                    error=f"expected {len(expected)} outputs, the file gave {len(outputs)}",
                )
            )
            continue
        results = []
        for name, got, want in zip(names, outputs, expected):
            want = np.asarray(want, np.float64)
            got = np.asarray(got, np.float64)
            allowed = tolerance * max(1.0, float(np.max(np.abs(want), initial=0.0)))
            if got.shape != want.shape:
                diff = float("inf")
            else:
                diff = float(np.max(np.abs(got - want), initial=0.0))
                if not np.isfinite(diff):
                    diff = float("inf")
            results.append(OutputCheck(name, diff, allowed))
        checks.append(RuntimeCheck(Runtime(runtime), tuple(results)))
    return tuple(checks)
