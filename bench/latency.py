"""LiteRT invoke latency, memory and file size of dense against compressed ``.tflite`` files.

Usage:
  python -m bench.latency --files=dense.tflite,pruned.tflite     # the first file is the reference
  python -m bench.latency --model=lenet5 --structure=filter --sparsity=0.5 --fc_structure=column
  python -m bench.latency --smoke                                # seconds: few invokes

With ``--model`` the files are built in the run from a model with **random weights** (latency
and memory do not depend on the values; accuracy is not measured):

  dense           the model as built.
  unstructured    magnitude pruning of the same layers to the same kept weight counts as the
                  structured variant (LiteRT densifies it: the file shrinks, the work does not).
  <s>_masked      the structured masks (``tf_admm.projections.structured_mask``; ``--structure``
                  on the convolutions, ``--fc_structure`` on the Dense layers but the output
                  layer for filters), zeros kept in place.
  <s>_shrunk      ``tf_admm.shrink`` of the masked model: zero filters leave the network.
  tfmot_2of4      tfmot's ``prune_low_magnitude(..., sparsity_m_by_n=(2, 4))`` on the layers
                  it accepts, stripped and converted with ``Optimize.EXPERIMENTAL_SPARSITY``
                  (the tfmot 2:4 guide's conversion).

Every tf-admm variant is written by ``tflite_export.export`` (verified against Keras).

Latency: one interpreter per (file, threads, XNNPACK on/off), all created first, each warmed
up, then ``--rounds`` rounds in which every interpreter runs ``--invokes_per_round`` timed
``invoke()`` calls on one batch-1 input, the order rotating between rounds: a change of machine
load hits every configuration alike. Median, p10 and p90 over all timed invokes.

Memory: the LiteRT Python interpreter does not expose its arena size. Two figures instead:
  rss_growth     peak RSS growth (``VmHWM`` after minus ``VmRSS`` before, with the peak reset
                 through ``/proc/self/clear_refs``) of a fresh subprocess that creates the
                 interpreter from the file's bytes, allocates its tensors and invokes it, with
                 XNNPACK on and off, 1 thread. It includes the weights an XNNPACK delegate
                 packs and the weights a DENSIFY operator expands.
  tensor_bytes   the sum of the sizes of the interpreter's non-constant tensors (activations,
                 densified weights) after ``allocate_tensors``: an upper bound of the arena,
                 which reuses memory between tensors.

Ratios are the reference's value divided by the file's (``x faster``, ``x smaller``, ``x less
memory``): above 1 is better than the reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging

import tf_admm
import tflite_export
from bench import common
from bench.common import tfmot
from recipes import models
from tf_admm.compat import keras, tf
from tflite_export import Encoding, flatbuffer
from tflite_export.verify import _interpreter as litert

__all__ = [
    "MODELS",
    "Settings",
    "build_files",
    "format_results",
    "macs",
    "measure_memory",
    "run",
    "small_cnn",
]

_RESOLVERS = {
    True: litert.OpResolverType.AUTO,  # XNNPACK, LiteRT's default delegate.
    False: litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
}


def small_cnn(num_classes: int = 10) -> keras.Model:
    """A small CIFAR-style convnet with BatchNorm: 32x32x3, conv 32-64-128 (3x3), FC 10."""
    inputs = keras.Input((32, 32, 3), name="image")
    h = inputs
    for index, channels in enumerate((32, 64, 128), start=1):
        h = keras.layers.Conv2D(channels, 3, use_bias=False, name=f"conv{index}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{index}")(h)
        h = keras.layers.ReLU(name=f"relu{index}")(h)
        h = keras.layers.MaxPool2D(2, name=f"pool{index}")(h) if index < 3 else h
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(num_classes, name="fc")(h)
    return keras.Model(inputs, outputs, name="small_cnn")


MODELS = {"lenet5": models.lenet5, "small_cnn": small_cnn}
STRUCTURES = ("filter", "channel", "column")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to measure; ``run`` takes it so tests need no flags.

    Attributes:
      files: ``.tflite`` paths, the first the reference; or empty to build from ``model``.
      model: a key of :data:`MODELS` (with random weights).
      structure: structure of the convolutions' groups, or ``""`` for none.
      sparsity: fraction of the convolutions' groups removed.
      fc_structure: structure of the Dense layers' groups (not the output layer's filters),
        or ``""`` for none.
      fc_sparsity: fraction of the Dense layers' groups removed (default ``sparsity``).
      tfmot_2of4: add tfmot's 2:4 variant.
      threads: thread counts.
      xnnpack: XNNPACK settings measured (True: on, the default delegate; False: off).
      warmup: invokes per interpreter before timing.
      rounds: interleaved rounds.
      invokes_per_round: timed invokes per interpreter and round.
      memory: measure peak RSS growth in subprocesses.
      work_dir: where built files go.
      seed: weights and input.
      out: JSON path, or None.
      command: the command line to report.
    """

    files: tuple[str, ...] = ()
    model: str = "lenet5"
    structure: str = "filter"
    sparsity: float = 0.5
    fc_structure: str = ""
    fc_sparsity: float | None = None
    tfmot_2of4: bool = True
    threads: tuple[int, ...] = (1, 2)
    xnnpack: tuple[bool, ...] = (True, False)
    warmup: int = 20
    rounds: int = 10
    invokes_per_round: int = 30
    memory: bool = True
    work_dir: str = "runs/bench/latency"
    seed: int = 0
    out: str | None = None
    command: str = "bench.latency.run()"

    def __post_init__(self):
        if not self.files and self.model not in MODELS:
            raise ValueError(
                f"Expected model among {sorted(MODELS)}; received: model={self.model!r}"
            )
        for field in ("structure", "fc_structure"):
            value = getattr(self, field)
            if value and value not in STRUCTURES:
                raise ValueError(
                    f"Expected {field} among {list(STRUCTURES)} or ''; received: {field}={value!r}"
                )
        for field in ("sparsity", "fc_sparsity"):
            value = getattr(self, field)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"Expected 0 <= {field} < 1; received: {field}={value}")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"Expected threads >= 1; received: threads={list(self.threads)}")
        if not self.xnnpack:
            raise ValueError("Expected at least one XNNPACK setting; received: xnnpack=[]")
        for field in ("rounds", "invokes_per_round"):
            if getattr(self, field) < 1:
                raise ValueError(f"Expected {field} >= 1; received: {field}={getattr(self, field)}")
        if self.warmup < 0:
            raise ValueError(f"Expected warmup >= 0; received: warmup={self.warmup}")

    @property
    def invokes(self) -> int:
        return self.rounds * self.invokes_per_round

    @classmethod
    def smoke(cls, **overrides) -> Settings:
        """Seconds: 3 warm-up and 2 x 10 timed invokes per interpreter."""
        values: dict[str, Any] = dict(warmup=3, rounds=2, invokes_per_round=10)
        values.update(overrides)
        return cls(**values)


# ----------------------------------------------------------------------------------------------
# Building the files
# ----------------------------------------------------------------------------------------------


def macs(model: keras.Model) -> int:
    """Multiply-adds of one sample through the Conv, DepthwiseConv and Dense layers."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += positions * int(np.prod(layer.depthwise_kernel.shape))
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += positions * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += max(positions, 1) * int(np.prod(layer.kernel.shape))
    return total


def _plain_conv(layer) -> bool:
    return isinstance(layer, keras.layers.Conv2D) and not isinstance(
        layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    )


def _targets(model: keras.Model, settings: Settings) -> dict[str, tuple[str, float]]:
    """{layer: (structure, sparsity)} of the layers the structured variant prunes."""
    fc_sparsity = settings.sparsity if settings.fc_sparsity is None else settings.fc_sparsity
    output_layers = set(model.output_names)
    targets = {}
    for layer in model.layers:
        if _plain_conv(layer) and settings.structure:
            targets[layer.name] = (settings.structure, settings.sparsity)
        elif isinstance(layer, keras.layers.Dense) and settings.fc_structure:
            if settings.fc_structure == "filter" and layer.name in output_layers:
                continue  # Its filters are the classes.
            targets[layer.name] = (settings.fc_structure, fc_sparsity)
    return targets


def _mask_structured(model, targets) -> tuple[keras.Model, dict[str, int]]:
    """A copy of ``model`` with the structured masks applied; {layer: kept weights}."""
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    kept = {}
    for name, (structure, sparsity) in targets.items():
        layer = masked.get_layer(name)
        kernel = layer.kernel
        groups = int(tf_admm.projections.group_count(kernel.shape, structure))
        keep = max(1, groups - int(round(sparsity * groups)))
        mask = tf_admm.projections.structured_mask(kernel, structure, keep)
        kernel.assign(kernel * mask)
        if structure == "filter" and layer.bias is not None:
            # Filter pruning masks the bias with its filters (as Rule(structure="filter") does).
            layer.bias.assign(layer.bias * tf.reduce_max(tf.reshape(mask, (-1, mask.shape[-1])), 0))
        kept[name] = int(np.count_nonzero(mask.numpy()))
    return masked, kept


def _mask_unstructured(model, kept) -> keras.Model:
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    for name, count in kept.items():
        kernel = masked.get_layer(name).kernel
        kernel.assign(tf_admm.projections.project_top_k(kernel, count))
    return masked


def _tfmot_2of4(model, seed: int) -> tuple[keras.Model, list[str]]:
    """tfmot's 2:4 pruning on the layers it accepts, masks computed once, stripped."""
    sparsity = tfmot.sparsity.keras
    pruned_layers = []

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.layers.Dense) or _plain_conv(layer):
            try:
                wrapped = sparsity.prune_low_magnitude(
                    copy,
                    pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1),
                    sparsity_m_by_n=(2, 4),
                )
            except ValueError as error:  # e.g. fewer than 4 input channels.
                logging.info("tfmot 2:4 skips %s: %s", layer.name, error)
                return copy
            pruned_layers.append(layer.name)
            return wrapped
        return copy

    pruned = keras.models.clone_model(model, clone_function=clone)
    for layer in pruned.layers:
        inner = getattr(layer, "layer", layer)  # The layer a PruneLowMagnitude wraps.
        inner.set_weights(model.get_layer(inner.name).get_weights())
    # One step at learning rate 0: UpdatePruningStep computes the masks, the weights stay.
    pruned.compile(keras.optimizers.SGD(0.0), common.classification_loss())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *model.input_shape[1:])).astype(np.float32)
    y = np.zeros((2,), np.int64)
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(pruned)
    return stripped, pruned_layers


def _convert_sparse(model, path: str) -> int:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    data = converter.convert()
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def _describe(model) -> dict[str, Any]:
    nonzeros = sum(int(np.count_nonzero(w)) for w in model.get_weights())
    return {"macs": macs(model), "params": int(model.count_params()), "nonzero_params": nonzeros}


def build_files(settings: Settings) -> list[dict[str, Any]]:
    """Builds and exports the variants of ``settings.model``; one entry per file, dense first."""
    keras.utils.set_random_seed(settings.seed)
    dense = MODELS[settings.model]()
    targets = _targets(dense, settings)
    os.makedirs(settings.work_dir, exist_ok=True)
    entries = []

    def export(name, model, note):
        path = os.path.join(settings.work_dir, f"{settings.model}_{name}.tflite")
        report = tflite_export.export(model, path)
        encodings = {w.label: Encoding(w.encoding).value for w in report.weights}
        entries.append(
            {"name": name, "path": path, "note": note, "exporter": "tflite_export"}
            | _describe(model)
            | {"encodings": encodings}
        )

    export("dense", dense, "random weights")
    if targets:
        label = "+".join(
            dict.fromkeys(f"{s}" for s in (settings.structure, settings.fc_structure) if s)
        )
        masked, kept = _mask_structured(dense, targets)
        unstructured = _mask_unstructured(dense, kept)
        export("unstructured", unstructured, f"magnitude, same kept counts as {label}")
        pruned = ", ".join(f"{name} {s} {p:.0%}" for name, (s, p) in targets.items())
        export(f"{label}_masked", masked, f"groups removed: {pruned}")
        try:
            smaller = tf_admm.shrink(masked)
        except tf_admm.ShrinkError as error:
            logging.warning("shrink refused the model: %s", error)
        else:
            np.testing.assert_allclose(
                smaller(_input(dense, settings.seed)),
                masked(_input(dense, settings.seed)),
                atol=1e-4,
            )
            export(f"{label}_shrunk", smaller, "tf_admm.shrink of the masked model")
    if settings.tfmot_2of4:
        stripped, pruned_layers = _tfmot_2of4(dense, settings.seed)
        path = os.path.join(settings.work_dir, f"{settings.model}_tfmot_2of4.tflite")
        _convert_sparse(stripped, path)
        entries.append(
            {
                "name": "tfmot_2of4",
                "path": path,
                "note": f"2:4 on {', '.join(pruned_layers)}; converter EXPERIMENTAL_SPARSITY",
                "exporter": "TFLiteConverter",
                **_describe(stripped),
            }
        )
    return entries


def _input(model, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, *model.input_shape[1:])).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------


def _interpreter(data: bytes, threads: int, xnnpack: bool, seed: int):
    interpreter = litert.Interpreter(
        model_content=data, num_threads=threads, experimental_op_resolver_type=_RESOLVERS[xnnpack]
    )
    details = interpreter.get_input_details()
    for detail in details:
        shape = [1, *detail["shape"][1:]] if len(detail["shape"]) else []
        interpreter.resize_tensor_input(detail["index"], shape)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        value = rng.standard_normal(detail["shape"]).astype(detail["dtype"])
        interpreter.set_tensor(detail["index"], value)
    return interpreter


def tensor_bytes(data: bytes) -> int:
    """Bytes of the non-constant tensors of subgraph 0 after ``allocate_tensors`` (batch 1)."""
    model = flatbuffer.read_model(data)
    constant = set()
    for index, tensor in enumerate(model.subgraphs[0].tensors):
        buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
        if buffer is not None and (
            (buffer.data is not None and len(buffer.data)) or getattr(buffer, "offset", 0)
        ):
            constant.add(index)
    interpreter = _interpreter(data, 1, False, 0)
    total = 0
    for detail in interpreter.get_tensor_details():
        if detail["index"] in constant or detail["index"] >= len(model.subgraphs[0].tensors):
            continue
        total += int(np.prod(detail["shape"])) * np.dtype(detail["dtype"]).itemsize
    return total


_MEMORY_PROBE = r"""
import json, sys
import numpy as np
from ai_edge_litert import interpreter as litert

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
path, threads, xnnpack = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
data = open(path, "rb").read()
resolver = litert.OpResolverType.AUTO if xnnpack else (
    litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Resets VmHWM to the current RSS.
    method = "VmHWM reset by clear_refs"
except OSError:
    method = "VmHWM not reset (peak may predate the interpreter)"
before = status("VmRSS")
interpreter = litert.Interpreter(
    model_content=data, num_threads=threads, experimental_op_resolver_type=resolver)
interpreter.allocate_tensors()
for detail in interpreter.get_input_details():
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
for _ in range(3):
    interpreter.invoke()
print(json.dumps({"before": before, "peak": status("VmHWM"), "after": status("VmRSS"),
                  "method": method}))
"""


def measure_memory(path: str, xnnpack: bool, threads: int = 1) -> dict[str, Any]:
    """Peak RSS growth of a fresh process that creates, allocates and invokes the interpreter."""
    output = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, path, str(threads), "1" if xnnpack else "0"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    probe = json.loads(output.strip().splitlines()[-1])
    probe["growth"] = probe["peak"] - probe["before"]
    return probe


def _configs(settings: Settings) -> list[tuple[int, bool]]:
    return [(t, x) for t in settings.threads for x in settings.xnnpack]


def _time(files: list[dict[str, Any]], settings: Settings) -> None:
    """Interleaved invoke timing; adds ``latency`` to every entry of ``files``."""
    runs = []
    for entry in files:
        with open(entry["path"], "rb") as f:
            data = f.read()
        for threads, xnnpack in _configs(settings):
            interpreter = _interpreter(data, threads, xnnpack, settings.seed)
            for _ in range(settings.warmup):
                interpreter.invoke()
            runs.append((entry, threads, xnnpack, interpreter, []))
    for round_index in range(settings.rounds):
        shift = round_index % len(runs)
        for _, _, _, interpreter, samples in runs[shift:] + runs[:shift]:
            for _ in range(settings.invokes_per_round):
                start = time.perf_counter_ns()
                interpreter.invoke()
                samples.append((time.perf_counter_ns() - start) / 1e3)
    for entry, threads, xnnpack, _, samples in runs:
        p10, p50, p90 = np.percentile(samples, [10, 50, 90])
        entry.setdefault("latency", []).append(
            {
                "threads": threads,
                "xnnpack": xnnpack,
                "median_us": float(p50),
                "p10_us": float(p10),
                "p90_us": float(p90),
                "invokes": len(samples),
                "samples_us": [round(s, 2) for s in samples],
            }
        )


def _ratio(reference, value) -> float | None:
    if reference is None or value is None or value == 0:
        return None
    return reference / value


def _ratios(files: list[dict[str, Any]]) -> None:
    """Reference ÷ file for size, latency (per configuration), memory, MACs and parameters."""
    reference = files[0]
    ref_latency = {(r["threads"], r["xnnpack"]): r["median_us"] for r in reference["latency"]}
    for entry in files:
        entry["x_smaller"] = _ratio(reference["file_bytes"], entry["file_bytes"])
        entry["x_fewer_macs"] = _ratio(reference.get("macs"), entry.get("macs"))
        entry["x_fewer_params"] = _ratio(reference.get("params"), entry.get("params"))
        for row in entry["latency"]:
            row["x_faster"] = _ratio(
                ref_latency[(row["threads"], row["xnnpack"])], row["median_us"]
            )
        for key, probe in entry.get("memory", {}).items():
            probe["x_less"] = _ratio(reference["memory"][key]["growth"], probe["growth"])


def run(settings: Settings) -> dict[str, Any]:
    """Builds (or reads) the files, measures them in one run and prints the tables."""
    machine = common.machine_info()
    start = common.snapshot()
    print(common.format_header("LiteRT latency and memory", settings.command, machine, start))
    print(
        f"batch 1; per interpreter {settings.warmup} warm-up invokes, then {settings.rounds} "
        f"interleaved rounds x {settings.invokes_per_round} timed invokes; threads "
        f"{list(settings.threads)}, XNNPACK {['on' if x else 'off' for x in settings.xnnpack]}; "
        f"interpreter {tflite_export.verify.INTERPRETER}"
    )
    if settings.files:
        files = [
            {"name": os.path.basename(path), "path": path, "note": "given"}
            for path in settings.files
        ]
    else:
        files = build_files(settings)
    for entry in files:
        with open(entry["path"], "rb") as f:
            data = f.read()
        entry["file_bytes"] = len(data)
        entry["tensor_bytes"] = tensor_bytes(data)
        if settings.memory:
            entry["memory"] = {
                ("xnnpack" if x else "builtin"): measure_memory(entry["path"], x)
                for x in settings.xnnpack
            }
    _time(files, settings)
    _ratios(files)
    results = {
        "benchmark": "latency",
        "command": settings.command,
        "settings": dataclasses.asdict(settings),
        "machine": machine,
        "start": start,
        "reference": files[0]["name"],
        "memory_method": (
            "peak RSS growth of a subprocess (VmHWM after invoke minus VmRSS before creating "
            "the interpreter); the LiteRT Python interpreter exposes no arena size"
        ),
        "files": files,
        "end": common.snapshot(),
    }
    return common.finish(results, format_results(results), out=settings.out)


def _kib(value) -> str:
    return "-" if value is None else f"{value / 1024:,.1f}"


def _x(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_results(results: dict[str, Any]) -> str:
    files = results["files"]
    reference = results["reference"]
    memory_keys = list(files[0].get("memory", {}))
    header = ["file", "KiB", "x smaller", "MACs", "x fewer", "params", "nonzero", "tensor KiB"]
    for key in memory_keys:
        header += [f"RSS+ KiB ({key})", "x less"]
    rows = []
    for entry in files:
        row = [
            entry["name"],
            _kib(entry["file_bytes"]),
            _x(entry["x_smaller"]),
            "-" if entry.get("macs") is None else f"{entry['macs']:,}",
            _x(entry["x_fewer_macs"]),
            "-" if entry.get("params") is None else f"{entry['params']:,}",
            "-" if entry.get("nonzero_params") is None else f"{entry['nonzero_params']:,}",
            _kib(entry["tensor_bytes"]),
        ]
        for key in memory_keys:
            probe = entry["memory"][key]
            row += [_kib(probe["growth"]), _x(probe["x_less"])]
        rows.append(row)
    lines = [
        f"Files (ratios: {reference} / file; RSS+ is peak RSS growth of a subprocess creating, "
        "allocating and invoking the interpreter with 1 thread)",
        common.format_table(header, rows),
        "",
        f"Invoke latency, batch 1, in microseconds (x faster: {reference}'s median / file's)",
    ]
    rows = []
    for entry in files:
        for row in entry["latency"]:
            rows.append(
                [
                    entry["name"],
                    row["threads"],
                    "on" if row["xnnpack"] else "off",
                    f"{row['median_us']:,.1f}",
                    f"{row['p10_us']:,.1f}",
                    f"{row['p90_us']:,.1f}",
                    _x(row["x_faster"]),
                    row["invokes"],
                ]
            )
    header = ["file", "threads", "XNNPACK", "median", "p10", "p90", "x faster", "invokes"]
    lines.append(common.format_table(header, rows))
    notes = [f"{e['name']}: {e['note']}" for e in files if e.get("note")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


# Flags are defined only when this module is the program (see bench.overhead).
def _define_flags() -> dict[str, flags.FlagHolder]:
    return {
        "smoke": flags.DEFINE_bool("smoke", False, "Few invokes (seconds) to check that it works."),
        "files": flags.DEFINE_list("files", [], "Files to measure; the first is the reference."),
        "model": flags.DEFINE_enum("model", "lenet5", list(MODELS), "Model to build files from."),
        "structure": flags.DEFINE_string("structure", "filter", "Convolutions' structure."),
        "sparsity": flags.DEFINE_float("sparsity", 0.5, "Fraction of conv groups removed."),
        "fc_structure": flags.DEFINE_string("fc_structure", "", "Dense layers' structure."),
        "fc_sparsity": flags.DEFINE_float("fc_sparsity", None, "Fraction of FC groups removed."),
        "tfmot_2of4": flags.DEFINE_bool("tfmot_2of4", True, "Add tfmot's 2:4 variant."),
        "threads": flags.DEFINE_list("threads", ["1", "2"], "Thread counts."),
        "xnnpack": flags.DEFINE_list("xnnpack", ["on", "off"], "XNNPACK settings (on, off)."),
        "warmup": flags.DEFINE_integer("warmup", 20, "Warm-up invokes.", lower_bound=0),
        "rounds": flags.DEFINE_integer("rounds", 10, "Interleaved rounds.", lower_bound=1),
        "invokes_per_round": flags.DEFINE_integer(
            "invokes_per_round", 30, "Timed invokes per round.", lower_bound=1
        ),
        "memory": flags.DEFINE_bool("memory", True, "Measure peak RSS growth."),
        "work_dir": flags.DEFINE_string("work_dir", "runs/bench/latency", "Built files."),
        "seed": flags.DEFINE_integer("seed", 0, "Seed of weights and input."),
        "out": flags.DEFINE_string("out", "runs/bench/latency.json", "JSON path ('' for none)."),
    }


_FLAGS: dict[str, flags.FlagHolder] = {}


def _on_off(values: Sequence[str]) -> tuple[bool, ...]:
    unknown = sorted(set(values) - {"on", "off"})
    if unknown:
        raise ValueError(f"Expected xnnpack among ['on', 'off']; received: xnnpack={list(values)}")
    return tuple(v == "on" for v in values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.ERROR)
    convert = {
        "files": tuple,
        "threads": lambda values: tuple(int(v) for v in values),
        "xnnpack": _on_off,
        "out": lambda value: value or None,
    }
    try:
        settings = common.settings_from_flags(_FLAGS, Settings, "bench.latency", convert)
        if settings.files == () and _FLAGS["smoke"].value and not _FLAGS["work_dir"].present:
            settings = dataclasses.replace(settings, work_dir=tempfile.mkdtemp("latency_smoke"))
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    run(settings)


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    app.run(main)
