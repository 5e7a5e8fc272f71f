"""What verifying a ``.tflite`` file finds (:mod:`tflite_export.verify` runs it): the runtime it
ran in, each output's largest difference from the reference against what was allowed, and the
tolerance of full-integer files."""

from __future__ import annotations

import dataclasses
import enum

__all__ = ["LITERT_RUNTIMES", "Int8Tolerance", "OutputCheck", "Runtime", "RuntimeCheck"]


class Runtime(str, enum.Enum):
    """How the interpreter runs the model."""

    DEFAULT_DELEGATE = "xnnpack"
    BUILTIN = "builtin"
    TFLM = "tflm"


LITERT_RUNTIMES = (Runtime.DEFAULT_DELEGATE, Runtime.BUILTIN)


@dataclasses.dataclass(frozen=True)
class Int8Tolerance:
    """How far a full-integer (int8 activations) file's outputs may be from the Keras model's.

    An output passes when ``max|tflite - keras| <= output_steps * step``, where ``step`` is
    the output's int8 quantization scale (one int8 code of the output), and, for an output
    shaped like class scores (rank 2 or more, last dimension 2 or more), when its argmax over
    the last axis equals Keras' on at least ``top1_agreement`` of the verification samples.
    Samples whose two best Keras scores are less than one step apart are ties at int8
    resolution and are not counted.

    Measured max|diff| on the calibration samples (the verification batch of an export): the
    two-layer test models at most 2.4 steps, their only argmax flips on samples whose best two
    scores were under one step apart; LeNet-5 on MNIST (500 training images), dense 1.4
    steps, pruned 71x and quantized 4.5 steps (99th percentile 3.8), top-1 agreement 100%.
    Samples outside the calibrated range saturate: on 2,000 test images the same LeNet-5s
    reached 24 and 38 steps on a few samples (99th percentile under 4, top-1 agreement 99.9%),
    so check other data with a looser ``output_steps``. Set ``top1_agreement=0`` for outputs
    that are not class scores.

    Example:
      >>> Int8Tolerance(output_steps=6).output_steps
      6.0

    Attributes:
      output_steps: allowed difference in output quantization steps.
      top1_agreement: smallest fraction of samples with the same argmax.
    """

    output_steps: float = 8.0
    top1_agreement: float = 0.9

    def __post_init__(self):
        steps = self.output_steps
        if isinstance(steps, bool) or not isinstance(steps, (int, float)) or not steps > 0:
            raise ValueError(f"Expected output_steps > 0; received: output_steps={steps!r}")
        agreement = self.top1_agreement
        if (
            isinstance(agreement, bool)
            or not isinstance(agreement, (int, float))
            or not 0 <= agreement <= 1
        ):
            raise ValueError(
                f"Expected 0 <= top1_agreement <= 1; received: top1_agreement={agreement!r}"
            )
        object.__setattr__(self, "output_steps", float(steps))
        object.__setattr__(self, "top1_agreement", float(agreement))


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output compared: largest absolute difference and what was allowed.

    ``top1`` is the fraction of samples whose argmax (last axis) agrees with the reference,
    when that was checked, ``min_top1`` the fraction required and ``top1_samples`` the
    samples counted (see :func:`top1_agreement`).
    """

    output: str
    max_abs_diff: float
    allowed: float
    top1: float | None = None
    min_top1: float | None = None
    top1_samples: int | None = None

    @property
    def passed(self) -> bool:
        """Whether ``max_abs_diff <= allowed`` and, if ``min_top1`` is set, ``top1 >= min_top1``."""
        within = bool(self.max_abs_diff <= self.allowed)
        if self.min_top1 is None:
            return within
        return within and self.top1 is not None and self.top1 >= self.min_top1

    def describe(self) -> str:
        """One line: the difference, what was allowed and the top-1 agreement if checked."""
        text = f"{self.output}: max|diff|={self.max_abs_diff:.3g} (allowed {self.allowed:.3g})"
        if self.top1 is not None:
            text += f", top-1 agreement {100 * self.top1:.1f}%"
            if self.top1_samples is not None:
                text += f" of {self.top1_samples}"
            if self.min_top1 is not None:
                text += f" (min {100 * self.min_top1:.1f}%)"
        return text


@dataclasses.dataclass(frozen=True)
class RuntimeCheck:
    """A file run in one runtime: per-output checks, or the error that stopped it.

    ``reference`` says what the outputs were compared with: the Keras model, or for TFLite
    Micro files also the same file before LUT compression (which must match exactly).
    """

    runtime: Runtime
    outputs: tuple[OutputCheck, ...] = ()
    error: str | None = None
    reference: str = "keras"

    @property
    def passed(self) -> bool:
        """Whether the file ran and every output passed."""
        return self.error is None and all(check.passed for check in self.outputs)

    def describe(self) -> str:
        """One line: the runtime and reference, then each output's check or the error."""
        where = self.runtime.value
        if self.reference != "keras":
            where = f"{where} vs {self.reference}"
        if self.error is not None:
            return f"{where}: failed to run: {self.error}"
        parts = ", ".join(c.describe() for c in self.outputs)
        return f"{where}: {parts}"

    def to_dict(self) -> dict:
        """The check as a JSON-ready dict, ``passed`` included for it and each output."""
        return {
            "runtime": self.runtime.value,
            "reference": self.reference,
            "passed": self.passed,
            "error": self.error,
            "outputs": [{**dataclasses.asdict(c), "passed": c.passed} for c in self.outputs],
        }
