"""What :mod:`bench.latency` measures of each file: invoke latency (interleaved, with and without
XNNPACK, per thread count), peak RSS growth of a fresh process, the bytes of the non-constant
tensors, and the reference's values over each file's."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from typing import Any

import numpy as np

from bench import timing
from bench.latency_setup import Settings
from tflite_export import flatbuffer, verify

__all__ = ["add_ratios", "measure_memory", "tensor_bytes", "time_files"]


def _interpreter(data: bytes, threads: int, xnnpack: bool, seed: int):
    runtime = verify.Runtime.DEFAULT_DELEGATE if xnnpack else verify.Runtime.BUILTIN
    interpreter = verify.litert_interpreter(data, runtime, num_threads=threads)
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


def time_files(files: list[dict[str, Any]], settings: Settings) -> None:
    """Interleaved invoke timing (:mod:`bench.timing`); adds ``latency`` to every entry."""
    subjects = []
    for entry in files:
        with open(entry["path"], "rb") as f:
            data = f.read()
        for threads, xnnpack in _configs(settings):
            interpreter = _interpreter(data, threads, xnnpack, settings.seed)
            timing.warm_up(interpreter.invoke, settings.warmup)
            subjects.append((entry, threads, xnnpack, interpreter))
    rounds = timing.interleaved(
        [
            functools.partial(timing.time_calls, interpreter.invoke, settings.invokes_per_round)
            for _, _, _, interpreter in subjects
        ],
        settings.rounds,
        rotate=True,
    )
    for (entry, threads, xnnpack, _), by_round in zip(subjects, rounds):
        samples = [1e6 * seconds for samples in by_round for seconds in samples]
        p10, p50, p90 = timing.percentiles(samples, [10, 50, 90])
        entry.setdefault("latency", []).append(
            {
                "threads": threads,
                "xnnpack": xnnpack,
                "median_us": p50,
                "p10_us": p10,
                "p90_us": p90,
                "invokes": len(samples),
                "samples_us": [round(s, 2) for s in samples],
            }
        )


def _ratio(reference, value) -> float | None:
    if reference is None or value is None or value == 0:
        return None
    return reference / value


def add_ratios(files: list[dict[str, Any]]) -> None:
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
