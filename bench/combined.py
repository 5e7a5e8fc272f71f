"""Pruning + quantization of LeNet-5: tf-admm against tfmot's prune -> cluster -> PCQAT pipeline.

Usage:
  python -m bench.combined                                 # the recipe's combined config
  python -m bench.combined --ratios=50,100                 # plus the config scaled to 50x, 100x
  python -m bench.combined --smoke                         # about a minute, numbers meaningless

Both libraries start from one dense LeNet-5, pretrained once and cached in ``--dense_dir``
(default: ``--work_dir``; the recorded runs used ``runs/bench/frontier``, where the frontier
benchmark of the time kept the same checkpoint), and get the same per-layer
targets, the same number of epochs and the same learning-rate schedule:

* tf-admm trains the config (``recipes/configs/lenet5_admm_quant_105x.json``: pruning ADMM and
  masked retraining in progressive stages, quantization ADMM, iterative locking onto the
  levels) and then
  ``--final_epochs`` epochs with every weight on its levels: ``E = scheduled rounds +
  final_epochs`` epochs in all.
* tfmot gets the same ``E`` epochs: ``prune_low_magnitude`` with a ``PolynomialDecay`` ramp over
  the config's pruning stages (their ADMM rounds and the retraining rounds between them),
  fine-tuning over the retraining rounds after the last stage (so pruning ends where tf-admm's
  does), then ``strip_pruning`` and
  ``cluster_weights(preserve_sparsity=True)`` with each layer's number of levels for the rest
  of the epochs but the last ``--pcqat_epochs``, then ``strip_clustering``, then
  prune- and cluster-preserving QAT (``quantize_apply`` with
  ``Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)``) for the last ones.
  Two tfmot rows come out: after clustering (``tfmot_cluster``, ``E - pcqat_epochs`` epochs)
  and after PCQAT (``tfmot_pcqat``, ``E`` epochs).
* Clusters: tf-admm's ``bits`` gives ``2**bits`` nonzero levels (pruned weights are the
  zeros). tfmot's ``preserve_sparsity`` spends one of ``number_of_clusters`` on the zero
  centroid, so by default it gets ``2**bits + 1`` clusters: the same ``2**bits`` nonzero
  values (``--nozero_cluster_extra``: exactly ``2**bits``). Centroids start with
  ``--centroid_init`` (tfmot's default k-means++); a layer where it fails falls back to
  linear, then density-based, and the row records which one each layer used.

Recorded per run: test accuracy; nonzeros and pruning ratio; the paper-style storage of
``tf_admm.report.storage_report`` (weight data only, and with indices, fillers and codebooks;
for PCQAT from the int8 codes of the converted file, per-channel scales counted as codebook);
two ``.tflite`` files with their bytes, gzip bytes and test accuracy in LiteRT: the plain
converter with ``Optimize.DEFAULT`` (what a tfmot user does) and ``tflite_export.export``
(error recorded when it does not accept the model); wall time; for tf-admm the per-epoch ADMM
logs. A table on stdout, JSON (``--out``) and a PNG (``--plot``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from absl import app, flags, logging

import tf_admm
import tflite_export
from bench import combined_runs, common, plots
from bench import combined_setup as setup
from bench.combined_measure import storage_from_tflite
from bench.combined_plan import Budget, LayerPlan, allocate, budget, layer_plans, point_spec
from bench.combined_setup import (
    CENTROID_INITS,
    CONFIG,
    CONFIGS,
    DATASETS,
    LIBRARIES,
    VARIANTS,
    Settings,
)
from tf_admm.compat import keras, tf
from tf_admm.projections import keep_count
from tflite_export.report import gzip_size

__all__ = [
    "CENTROID_INITS",
    "CONFIG",
    "CONFIGS",
    "DATASETS",
    "LIBRARIES",
    "VARIANTS",
    "Budget",
    "LayerPlan",
    "Settings",
    "allocate",
    "budget",
    "layer_plans",
    "point_spec",
    "run",
    "storage_from_tflite",
]


def _points(settings: Settings, spec: tf_admm.Spec, plans) -> list[dict[str, Any]]:
    sizes = {p.name: p.size for p in plans}
    total = sum(sizes.values())
    kept = {p.name: keep_count(p.size, p.rule.target_sparsity) for p in plans}
    points = [
        {"name": "config", "target_ratio": total / sum(kept.values()), "kept": kept, "spec": spec}
    ]
    profile = {p.name: p.rule.target_sparsity for p in plans}
    for ratio in settings.ratios:
        scaled = allocate(ratio, sizes, profile)
        points.append(
            {
                "name": f"{ratio:g}x",
                "target_ratio": float(ratio),
                "kept": scaled,
                "spec": point_spec(spec, plans, scaled),
            }
        )
    return points


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _bytes(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "-"
    if "error" in entry:
        return "error"
    return f"{entry['file_bytes']:,} ({entry['gzip_bytes']:,})"


def format_results(results: Mapping[str, Any]) -> str:
    """The table printed at the end of a run."""
    rows = []
    for r in results["runs"]:
        totals = r["storage"]["totals"]
        files = r.get("files") or {}
        rows.append(
            (
                r["point"],
                r["variant"],
                f"{100 * r['accuracy']:.2f}",
                f"{r['pruning_ratio']:.1f}x",
                f"{totals['weight_data_ratio'] or 0:,.0f}x",
                f"{totals['ratio_with_indices'] or 0:,.0f}x",
                _bytes(files.get("tflite_export")),
                _bytes(files.get("converter_default")),
                f"{r['seconds']:.1f}",
            )
        )
    header = (
        "point",
        "variant",
        "accuracy %",
        "pruning",
        "weight data",
        "with indices",
        "tflite_export B (gzip)",
        "converter B (gzip)",
        "seconds",
    )
    dense = results["dense"]
    lines = [
        common.format_table(header, rows),
        f"dense LeNet-5: {100 * dense['accuracy']:.2f}% ({dense['checkpoint']}); float .tflite "
        f"{dense['float_file_bytes']:,} B (gzip {dense['float_gzip_bytes']:,} B)",
        "budget: " + ", ".join(f"{k} {v}" for k, v in results["budget"].items()) + " epochs",
    ]
    for r in results["runs"]:
        if r.get("centroid_init"):
            fallbacks = {n: i for n, i in r["centroid_init"].items() if "failed" in i}
            if fallbacks:
                lines.append(
                    f"{r['point']} {r['variant']}: centroid init fell back on "
                    + ", ".join(f"{n} ({i['used']})" for n, i in fallbacks.items())
                )
    return "\n".join(lines)


def _dense_facts(settings: Settings, facts: dict[str, Any]) -> dict[str, Any]:
    float_file = tflite_export.convert_float(setup.dense_model(settings))
    return {
        **facts,
        "float_file_bytes": len(float_file),
        "float_gzip_bytes": gzip_size(float_file),
    }


def run(settings: Settings) -> dict[str, Any]:
    """Compresses the shared dense LeNet-5 with both libraries at every point; reports."""
    machine = common.machine_info()
    start = common.snapshot()
    print(common.format_header("pruning + quantization", settings.command, machine, start))
    spec = settings.spec()
    plan = budget(spec, settings.final_epochs, settings.pcqat_epochs)
    os.makedirs(settings.work_dir, exist_ok=True)
    dense = _dense_facts(settings, setup.pretrain(settings))
    plans = layer_plans(setup.dense_model(settings), spec)
    points = _points(settings, spec, plans)
    runs = []
    for point in points:
        for library in settings.libraries:
            # Fresh data for each library: both see the same sequence of shuffles.
            train_ds, test_ds = setup.datasets(settings)
            if library == "tf_admm":
                rows = [combined_runs.run_tf_admm(settings, point, plans, plan, train_ds, test_ds)]
            else:
                rows = combined_runs.run_tfmot(settings, point, plans, plan, train_ds, test_ds)
            for row in rows:
                totals = row["storage"]["totals"]
                print(
                    f"{point['name']} {row['variant']}: accuracy {100 * row['accuracy']:.2f}%, "
                    f"pruning {row['pruning_ratio']:.1f}x, storage "
                    f"{totals['weight_data_ratio'] or 0:,.0f}x / "
                    f"{totals['ratio_with_indices'] or 0:,.0f}x, {row['seconds']:.0f} s",
                    flush=True,
                )
            runs += rows
            keras.backend.clear_session()
    results: dict[str, Any] = {
        "benchmark": "combined",
        "command": settings.command,
        "settings": dataclasses.asdict(settings),
        "machine": machine,
        "start": start,
        "config": {"path": settings.config, "spec": spec.to_dict()},
        "budget": plan.to_dict(),
        "layers": [p.name for p in plans],
        "sizes": {p.name: p.size for p in plans},
        "points": [
            {k: v for k, v in point.items() if k in ("name", "target_ratio", "kept")}
            for point in points
        ],
        "dense": dense,
        "runs": runs,
    }
    results["end"] = common.snapshot()
    has_storage = any("storage" in r for r in runs)
    return common.finish(
        results,
        format_results(results),
        out=settings.output_path(settings.out, "json"),
        plot_path=settings.output_path(settings.plot, "png") if has_storage else None,
        draw=plots.combined,
    )


# ----------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------


# Flags are defined only when this module is the program, so that tests can import several
# benchmarks and recipes (which share flag names) in one process.
def _define_flags() -> dict[str, flags.FlagHolder]:
    defaults = Settings()
    return {
        **common.define_run_flags(defaults, LIBRARIES),
        "smoke": flags.DEFINE_bool("smoke", False, "Tiny run (about a minute) to check it works."),
        "dataset": flags.DEFINE_enum("dataset", defaults.dataset, sorted(DATASETS), "Dataset."),
        "work_dir": flags.DEFINE_string(
            "work_dir", defaults.work_dir, "JSON, PNG and .tflite files."
        ),
        "dense_dir": flags.DEFINE_string(
            "dense_dir", defaults.dense_dir, "Dense checkpoint cache (default: --work_dir)."
        ),
        "config": flags.DEFINE_string("config", defaults.config, "tf-admm spec (JSON)."),
        "ratios": flags.DEFINE_list(
            "ratios", [], "Extra points: the config scaled to these pruning ratios."
        ),
        "final_epochs": flags.DEFINE_integer(
            "final_epochs",
            defaults.final_epochs,
            "Epochs after the config's scheduled rounds.",
            lower_bound=0,
        ),
        "pcqat_epochs": flags.DEFINE_integer(
            "pcqat_epochs", defaults.pcqat_epochs, "tfmot's PCQAT epochs.", lower_bound=0
        ),
        "learning_rate": flags.DEFINE_float(
            "learning_rate", defaults.learning_rate, "Adam learning rate (scheduled rounds)."
        ),
        "retrain_learning_rate": flags.DEFINE_float(
            "retrain_learning_rate",
            defaults.retrain_learning_rate,
            "Adam learning rate at the start of the final epochs.",
        ),
        "centroid_init": flags.DEFINE_enum(
            "centroid_init",
            defaults.centroid_init,
            list(CENTROID_INITS),
            "tfmot centroid initialisation tried first (then linear, density_based).",
        ),
        "zero_cluster_extra": flags.DEFINE_bool(
            "zero_cluster_extra",
            defaults.zero_cluster_extra,
            "Give tfmot 2**bits + 1 clusters (one is its zero centroid).",
        ),
        "export": flags.DEFINE_bool("export", True, "Write and measure the .tflite files."),
    }


_FLAGS: dict[str, flags.FlagHolder] = {}


def settings_from_flags() -> Settings:
    convert = {
        "ratios": lambda values: tuple(float(v) for v in values),
        "libraries": tuple,
        "verbose": int,
    }
    try:
        settings = common.settings_from_flags(_FLAGS, Settings, "bench.combined", convert)
        budget(settings.spec(), settings.final_epochs, settings.pcqat_epochs)
        return settings
    except (ValueError, OSError) as error:
        raise app.UsageError(str(error)) from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.ERROR)  # TFDS and per-round ADMM logs.
    tf.get_logger().setLevel("ERROR")  # tfmot clustering's "Gradients do not exist" warnings.
    run(settings_from_flags())


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too.
    app.run(main)
