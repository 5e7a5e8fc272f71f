"""What ``bench.overhead`` needs to time the same work on each Keras stack.

The stacks are those of :mod:`recipes.stacks`: tf_keras, Keras 3 on TensorFlow, Keras 3 on
JAX. Keras 3 fixes its backend when first imported, so a stack this process cannot run (JAX in
a TensorFlow process, or the reverse) is timed by the same benchmark in a subprocess with
``KERAS_BACKEND`` set (:func:`time_elsewhere`), whose JSON results are read back. Here too: the
Keras 3 twins of the batch timer and of the count of the state a library adds, and the table
that puts the stacks side by side (:func:`format_stacks`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench import tables
from recipes.stacks import Stack
from tf_admm.compat import keras3

__all__ = [
    "STACKS",
    "STACK_TARGET_RATIO",
    "STACKS_HEADER",
    "Keras3BatchTimer",
    "format_stacks",
    "keras3_state_bytes",
    "stack_rows",
    "time_elsewhere",
]

STACKS = tuple(stack.value for stack in Stack)
# Issue 16: the ADMM step against a plain step, on every stack.
STACK_TARGET_RATIO = 1.10
# Set in the environment of the subprocess that times one stack, so it never starts another.
_CHILD = "TF_ADMM_OVERHEAD_STACK"

STACKS_HEADER = (
    "model",
    "stack",
    "plain ms/step",
    "admm ms/step",
    "admm vs plain",
    "retrain vs plain",
    "epoch s plain",
    "epoch s admm",
    "Z/U update ms",
)


class Keras3BatchTimer(keras3.callbacks.Callback):
    """The wall time between consecutive ends of training batches, for Keras 3 models.

    As ``bench.common.BatchTimer`` does on tf_keras, it waits for each step to finish (here by
    reading the loss back to the host: JAX and TensorFlow both dispatch asynchronously), so
    each interval is one whole step.
    """

    def __init__(self):
        super().__init__()
        self.intervals: list[float] = []
        self._last: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs:
            float(keras3.ops.convert_to_numpy(logs["loss"]))
        now = time.perf_counter()
        if self._last is not None:
            self.intervals.append(now - self._last)
        self._last = now


def keras3_state_bytes(model: keras3.Model) -> int:
    """Bytes of the variables a library adds to a Keras 3 ``model``: every variable but the
    weights of its plain layers (a wrapper's own state and the model's counters count)."""
    own = {id(v): v for v in model.weights}

    def leaves(container):
        for layer in container.layers:
            if isinstance(layer, keras3.Model):
                yield from leaves(layer)
            else:
                yield layer

    for layer in leaves(model):
        inner = layer.layer if isinstance(layer, keras3.layers.Wrapper) else layer
        for variable in inner.weights:
            own.pop(id(variable), None)
    return int(sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in own.values()))


def time_elsewhere(stack: str, argv: Sequence[str]) -> dict[str, Any]:
    """Times ``stack`` by running ``python -m bench.overhead argv --stacks=stack`` with
    ``KERAS_BACKEND`` set to its backend; returns that run's results of the stack.

    Raises:
      RuntimeError: with the subprocess's output, if it fails; or if this process is itself
        such a subprocess (the backend it was given did not take).
    """
    if os.environ.get(_CHILD):
        raise RuntimeError(
            f"Expected Keras 3 on the {Stack(stack).backend} backend in the subprocess that "
            f"times {stack}; received: {keras3.backend.backend()}"
        )
    with tempfile.TemporaryDirectory(prefix="overhead_stack_") as folder:
        out = os.path.join(folder, "results.json")
        command = [sys.executable, "-m", "bench.overhead", *argv, f"--stacks={stack}"]
        command.append(f"--out={out}")
        env = {**os.environ, "KERAS_BACKEND": Stack(stack).backend, _CHILD: "1"}
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        done = subprocess.run(
            command, env=env, cwd=root, capture_output=True, text=True, check=False
        )
        if done.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(
                f"Timing {stack} in a subprocess failed (exit status {done.returncode}): "
                f"{' '.join(command)}\n--- stdout\n{done.stdout[-8000:]}\n"
                f"--- stderr\n{done.stderr[-8000:]}"
            )
        with open(out, encoding="utf-8") as f:
            found = json.load(f)
    load = found["end"]["load_average"]
    return {**found["stacks"][stack], "process": "subprocess", "load_average": load}


def _ratio(variants: Mapping[str, Any], name: str) -> str:
    return f"{variants[name]['ratio']:.3f}x" if name in variants else "n/a"


def _field(variants: Mapping[str, Any], name: str, key: str, form: str) -> str:
    value = variants.get(name, {}).get(key)
    return format(value, form) if value is not None else "n/a"


def stack_rows(stacks: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """One row per model and stack (models first), as :data:`STACKS_HEADER`."""
    models: list[str] = []
    for entry in stacks.values():
        models += [name for name in entry["models"] if name not in models]
    rows = []
    for model in models:
        for stack, entry in stacks.items():
            variants = entry["models"].get(model, {}).get("variants", {})
            if not variants:
                continue
            rows.append(
                (
                    model,
                    stack,
                    _field(variants, "plain", "median_ms", ".2f"),
                    _field(variants, "admm", "median_ms", ".2f"),
                    _ratio(variants, "admm"),
                    _ratio(variants, "retrain"),
                    _field(variants, "plain", "epoch_s", ".2f"),
                    _field(variants, "admm", "epoch_s", ".2f"),
                    _field(variants, "admm", "zu_update_ms", ".1f"),
                )
            )
    return rows


def format_stacks(stacks: Mapping[str, Any], epoch_steps: int) -> str:
    """The stacks side by side, then whether each ADMM step meets :data:`STACK_TARGET_RATIO`."""
    lines = [
        f"Stacks side by side (each against its own plain fit; an epoch is {epoch_steps} steps, "
        "with the ADMM variant's epoch-end Z/U update):",
        tables.text_table(STACKS_HEADER, stack_rows(stacks)),
    ]
    for stack, entry in stacks.items():
        for model, found in entry["models"].items():
            admm = found["variants"].get("admm")
            if admm is None:
                continue
            verdict = "meets" if admm["ratio"] <= STACK_TARGET_RATIO else "misses"
            lines.append(
                f"{model} on {stack}: ADMM step {admm['ratio']:.2f}x plain: {verdict} the "
                f"{STACK_TARGET_RATIO:.2f}x target"
            )
        if entry.get("process") == "subprocess":
            lines.append(f"{stack}: timed in a subprocess (load average {entry['load_average']})")
    return "\n".join(lines)
