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
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from absl import app, flags, logging

import tflite_export
from bench import common
from bench.latency_files import build_files, macs
from bench.latency_measure import add_ratios, measure_memory, tensor_bytes, time_files
from bench.latency_setup import MODELS, Settings, small_cnn

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
    time_files(files, settings)
    add_ratios(files)
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
