"""The errors of :mod:`tflite_export`, in one module every other one can import."""

from __future__ import annotations

__all__ = ["ExportError", "VerificationError"]


class ExportError(ValueError):
    """The model, the path or the requested encodings cannot be exported."""


class VerificationError(ExportError):
    """A written file does not reproduce the Keras model's outputs in the interpreter."""
