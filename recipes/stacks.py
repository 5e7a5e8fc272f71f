"""Which Keras a recipe builds on: tf_keras (Keras 2), or Keras 3 on TensorFlow or JAX.

A recipe takes ``--keras=2|3`` and ``--backend=tensorflow|jax`` (:func:`from_flags` checks the
pair) and works with the Keras module :attr:`Stack.api` gives. Keras 3 fixes its backend when it
is first imported (``KERAS_BACKEND``), and ``tf_admm`` imports it, so a recipe process has its
backend before its flags are parsed. :func:`ensure_backend` therefore starts the same command
again with ``KERAS_BACKEND`` set when the backend in use is not the one asked for (once: it
refuses to loop). A command run with ``KERAS_BACKEND=jax`` already set starts only once.

Example:

    stack = stacks.from_flags(3, "jax")  # Stack.KERAS3_JAX
    stacks.ensure_backend(stack, "recipes.lenet5_mnist")  # re-runs the command on JAX if need be
    model = models.lenet5(api=stack.api)
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from tf_admm.compat import keras, keras3

__all__ = ["BACKENDS", "KERAS_VERSIONS", "Stack", "api_of", "ensure_backend", "from_flags"]

KERAS_VERSIONS = ("2", "3")
BACKENDS = ("tensorflow", "jax")
# Set in the environment of a command restarted on another backend, so it is restarted once.
_RESTARTED = "TF_ADMM_RECIPE_RESTARTED"


class Stack(str, enum.Enum):
    """A Keras generation and its backend; the value names it in tables and file names."""

    TF_KERAS = "tf_keras"
    KERAS3_TENSORFLOW = "keras3_tensorflow"
    KERAS3_JAX = "keras3_jax"

    @property
    def keras3(self) -> bool:
        """Whether the models are Keras 3 (``import keras``) models."""
        return self is not Stack.TF_KERAS

    @property
    def backend(self) -> str:
        """The Keras backend: ``tensorflow`` for tf_keras and Keras 3 on TensorFlow, or ``jax``."""
        return "jax" if self is Stack.KERAS3_JAX else "tensorflow"

    @property
    def api(self) -> ModuleType:
        """The Keras module to build models, losses, optimizers and callbacks with."""
        return keras3 if self.keras3 else keras

    def available(self) -> bool:
        """Whether this process can run the stack (Keras 3 has the backend it needs)."""
        return not self.keras3 or keras3.backend.backend() == self.backend


def from_flags(keras_version: str | int, backend: str | None) -> Stack:
    """The stack of ``--keras`` and ``--backend`` (None: the default, TensorFlow).

    Raises:
      ValueError: for an unknown version or backend, or a backend given with ``--keras=2``
        (tf_keras runs on TensorFlow only).
    """
    version = str(keras_version)
    if version not in KERAS_VERSIONS:
        raise ValueError(f"Expected --keras in {list(KERAS_VERSIONS)}; received: --keras={version}")
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"Expected --backend in {list(BACKENDS)}; received: --backend={backend}")
    if version == "2":
        if backend is not None:
            raise ValueError(
                "Expected --backend only with --keras=3 (tf_keras runs on TensorFlow); "
                f"received: --keras=2 --backend={backend}"
            )
        return Stack.TF_KERAS
    return Stack.KERAS3_JAX if backend == "jax" else Stack.KERAS3_TENSORFLOW


def api_of(model) -> ModuleType:
    """The Keras module ``model`` belongs to: Keras 3 (``keras``) or tf_keras."""
    return keras3 if isinstance(model, keras3.Model) else keras


def ensure_backend(
    stack: Stack, module: str | None = None, argv: Sequence[str] | None = None
) -> None:
    """Returns if this process runs ``stack``; else runs ``python -m module argv[1:]`` again
    with ``KERAS_BACKEND`` set, in place of this process (``os.execve``: it never returns).

    Args:
      stack: the stack asked for.
      module: the module to run; None: the one this process runs as ``python -m``.
      argv: the command line (default ``sys.argv``).

    Raises:
      RuntimeError: if this process is itself such a restart and still has another backend
        (something in the environment overrides ``KERAS_BACKEND``), or if it was not started
        with ``python -m`` and no module is given.
    """
    if stack.available():
        return
    if module is None:
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise RuntimeError(
                f"Expected KERAS_BACKEND={stack.backend} to be set before Keras is imported, or "
                "a command started with python -m (to restart with it); received neither"
            )
        module = spec.name
    if os.environ.get(_RESTARTED):
        raise RuntimeError(
            f"Expected Keras 3 on the {stack.backend} backend after setting "
            f"KERAS_BACKEND={stack.backend}; received: {keras3.backend.backend()} (is a "
            "~/.keras/keras.json or another import of Keras overriding it?)"
        )
    argv = sys.argv if argv is None else argv
    env = {**os.environ, "KERAS_BACKEND": stack.backend, _RESTARTED: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *argv[1:]], env)
