"""Helpers shared by the benchmarks: machine facts, tables, JSON, step timing, tfmot pruning.

Importing this module sets up legacy Keras (through :mod:`tf_admm.compat`) before tfmot is
imported, which tfmot needs with TensorFlow 2.16+.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import flags

import tf_admm
from bench import tables
from tf_admm.compat import keras, tf

# isort: split
# tfmot needs TF_USE_LEGACY_KERAS=1, which tf_admm.compat sets, before TensorFlow loads Keras.
import tensorflow_model_optimization as tfmot

__all__ = [
    "SHARED_MACHINE_NOTE",
    "BatchTimer",
    "EpochLog",
    "classification_loss",
    "command_line",
    "cpu_model",
    "format_table",
    "load_average",
    "machine_info",
    "nonzero_counts",
    "snapshot",
    "tfmot",
    "tfmot_prune",
    "tfmot_strip",
    "wrapper_state_bytes",
    "write_json",
]

SHARED_MACHINE_NOTE = (
    "The machine may be shared with other jobs: compare the load average with the number of "
    "cores before trusting absolute times; ratios within one interleaved run are more robust."
)


# ----------------------------------------------------------------------------------------------
# Where and when a benchmark ran
# ----------------------------------------------------------------------------------------------


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces this run: ``python -m <module> <args>``."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join([shlex.quote(sys.executable), "-m", module, *map(shlex.quote, args)])


def settings_from_flags(holders, settings_class, module: str, convert=None):
    """``settings_class`` built from absl flag ``holders`` (which include a ``smoke`` flag).

    With ``--smoke`` only the flags given on the command line override the smoke defaults
    (``settings_class.smoke``); otherwise every flag's value is used. ``convert`` maps flag
    names to functions applied to their values. ``command`` is set to the command line.
    """
    convert = convert or {}
    smoke = holders["smoke"].value
    values = {
        name: convert.get(name, lambda v: v)(holder.value)
        for name, holder in holders.items()
        if name != "smoke" and (holder.present or not smoke)
    }
    values["command"] = command_line(module)
    return settings_class.smoke(**values) if smoke else settings_class(**values)


def define_run_flags(defaults: Any, libraries: Sequence[str]) -> dict[str, Any]:
    """The absl flags that the accuracy benchmarks share, with defaults from the ``defaults``
    settings: data, libraries, pretraining, batch size, seed, smoke-size cuts, outputs and
    verbosity. Returns ``{name: FlagHolder}`` for :func:`settings_from_flags`."""
    return {
        "data_dir": flags.DEFINE_string("data_dir", None, "TFDS data directory."),
        "libraries": flags.DEFINE_list("libraries", list(libraries), "Libraries to compare."),
        "pretrain_epochs": flags.DEFINE_integer(
            "pretrain_epochs", defaults.pretrain_epochs, "Dense pretraining epochs.", lower_bound=0
        ),
        "batch_size": flags.DEFINE_integer(
            "batch_size", defaults.batch_size, "Batch size.", lower_bound=1
        ),
        "seed": flags.DEFINE_integer("seed", defaults.seed, "Seed."),
        "train_batches": flags.DEFINE_integer(
            "train_batches", None, "Training batches per epoch.", lower_bound=1
        ),
        "test_batches": flags.DEFINE_integer(
            "test_batches", None, "Test batches evaluated.", lower_bound=1
        ),
        "out": flags.DEFINE_string("out", None, "JSON path ('' for none)."),
        "plot": flags.DEFINE_string("plot", None, "PNG path ('' for none)."),
        "verbose": flags.DEFINE_enum("verbose", "0", ["0", "1", "2"], "Keras fit verbosity."),
    }


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or what ``platform`` knows elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def snapshot() -> dict[str, Any]:
    """UTC time and load average, taken at the start and at the end of a benchmark."""
    return {
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average": load_average(),
    }


def machine_info() -> dict[str, Any]:
    """Cores, CPU model and library versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "tfmot": getattr(tfmot, "__version__", "unknown"),
        "tf_admm": tf_admm.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "note": SHARED_MACHINE_NOTE,
    }


def format_header(title: str, command: str, machine: Mapping[str, Any], start: Mapping) -> str:
    """The lines every benchmark prints first: what ran, where, and how busy the machine was."""
    return "\n".join(
        [
            f"== {title}",
            f"command: {command}",
            f"date: {start['time_utc']}",
            f"machine: {machine['nproc']} cores ({machine['cpu_model']}), "
            f"TF {machine['tensorflow']}, tfmot {machine['tfmot']}",
            f"load average at start (1/5/15 min): {start['load_average']}",
            f"note: {SHARED_MACHINE_NOTE}",
        ]
    )


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def format_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    return tables.text_table(header, rows)


def finish(
    results: dict[str, Any],
    text: str,
    *,
    out: str | None,
    plot_path: str | None = None,
    draw: Callable[[Mapping[str, Any], str], str] | None = None,
) -> dict[str, Any]:
    """The end of a benchmark run: prints ``text`` (its table) and the load average at
    ``results["end"]``, draws ``draw(results, plot_path)`` into ``results["plot"]`` when both
    are given, writes ``results`` as JSON to ``out`` when given, and returns ``results``."""
    print()
    print(text)
    print(f"load average at end (1/5/15 min): {results['end']['load_average']}")
    if plot_path and draw is not None:
        results["plot"] = draw(results, plot_path)
        print(f"plot: {plot_path}")
    if out:
        write_json(out, results)
        print(f"results: {out}")
    return results


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no inf/nan.
    return value


def write_json(path: str, data: Mapping[str, Any]) -> None:
    """Writes ``data`` as indented JSON, creating the directory; non-finite floats become null."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_jsonable(data), f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# Training helpers
# ----------------------------------------------------------------------------------------------


def classification_loss() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class BatchTimer(keras.callbacks.Callback):
    """Records the wall time between consecutive ends of training batches.

    Keras converts the logs of a callback that does not support tensor logs to numpy, which
    waits for the step to finish; so each interval is one whole step as the user sees it
    (input, forward, backward, update and every callback's per-step work).
    """

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = False  # Forces the synchronisation described above.
        self.intervals: list[float] = []
        self._last: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._last is not None:
            self.intervals.append(now - self._last)
        self._last = now


class EpochLog(keras.callbacks.Callback):
    """Records every epoch's logs as floats, with the ADMM phase the epoch trained in.

    Put it after ``tf_admm.callbacks()`` in ``fit``: the ADMM update adds the residuals, rho,
    round, phase and per-layer sparsity of the epoch's end to the logs (``admm_logs``), and
    this callback keeps them. ``phase`` is the phase during the epoch; ``admm_phase`` the one
    after its Z/U update.

    Attributes:
      epochs: one dict per finished epoch: ``epoch`` (0-based), ``phase``, ``seconds`` (wall
        time from epoch begin to end, the Z/U update included) and the logs.
    """

    def __init__(self):
        super().__init__()
        self.epochs: list[dict[str, float]] = []
        self._phase: int | None = None
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        phase = getattr(self.model, "admm_phase", None)
        self._phase = None if phase is None else int(phase.numpy())
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        entry: dict[str, float] = {"epoch": epoch, "seconds": time.perf_counter() - self._start}
        if self._phase is not None:
            entry["phase"] = self._phase
        for key, value in (logs or {}).items():
            try:
                entry[key] = float(np.asarray(value))
            except (TypeError, ValueError):
                continue
        self.epochs.append(entry)


def nonzero_counts(model: keras.Model) -> dict[str, dict[str, int]]:
    """{layer: {"weights": n, "nonzeros": k}} over the compressible weights of a plain model.

    The same count serves both libraries: tfmot and tf-admm prune the same kernels.
    """
    return {
        row.layer if row.weight == "kernel" else f"{row.layer}.{row.weight}": {
            "weights": row.weights,
            "nonzeros": row.nonzeros,
        }
        for row in tf_admm.report.compression_table(model)
    }


def wrapper_state_bytes(model: keras.Model) -> int:
    """Bytes of the variables a pruning library adds to ``model``.

    Counts every variable of ``model`` that does not belong to an unwrapped layer: the state
    of each ``keras.layers.Wrapper`` (minus the wrapped layer's own weights) and variables that
    the model itself owns (such as tf-admm's step and phase counters). Optimizer slots are not
    included; they are the same with or without compression.
    """
    own: dict[int, tf.Variable] = {id(v): v for v in model.weights}
    for layer in model.submodules:
        if isinstance(layer, keras.layers.Layer) and not isinstance(
            layer, (keras.layers.Wrapper, keras.Model)
        ):
            for variable in layer.weights:
                own.pop(id(variable), None)
    return sum(v.shape.num_elements() * v.dtype.size for v in own.values())


# ----------------------------------------------------------------------------------------------
# tfmot
# ----------------------------------------------------------------------------------------------


def tfmot_prune(
    model: keras.Model,
    sparsities: Mapping[str, float],
    schedule: Callable[[float], Any],
) -> keras.Model:
    """tfmot ``prune_low_magnitude`` on the named layers, each with its own final sparsity.

    The pruned model shares the named layers (and so their weights) with ``model``, as tfmot's
    own per-layer recipe does; pass a copy you own.

    Args:
      model: a built functional or Sequential ``tf_keras`` model.
      sparsities: {layer name: final sparsity}.
      schedule: ``final_sparsity -> tfmot PruningSchedule``.

    Returns:
      The model with ``PruneLowMagnitude`` wrappers; train it with ``UpdatePruningStep``.

    Raises:
      ValueError: if a name in ``sparsities`` is no layer of ``model``.
    """
    names = {layer.name for layer in model.layers}
    missing = sorted(set(sparsities) - names)
    if missing:
        raise ValueError(
            f"Expected layer names of model '{model.name}' ({sorted(names)}); "
            f"received: sparsities for {missing}"
        )

    def clone(layer):
        if layer.name in sparsities:
            return tfmot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=schedule(float(sparsities[layer.name]))
            )
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def tfmot_strip(model: keras.Model) -> keras.Model:
    return tfmot.sparsity.keras.strip_pruning(model)
