"""Small hand-made benchmark outputs for the tests of :mod:`bench.results` and its parts.

The outputs have the shape the benchmarks write (see bench/smoke_test.py for the real ones);
their numbers are chosen so that every comparison has a known answer.
"""

import json
import os

__all__ = [
    "combined",
    "combined_run",
    "frontier",
    "history",
    "overhead",
    "provenance",
    "recipe_run",
    "record",
    "storage",
    "write",
]


def provenance(benchmark, dataset=None, **settings):
    if dataset is not None:
        settings["dataset"] = dataset
    return {
        "benchmark": benchmark,
        "command": f"python -m bench.{benchmark} --seed={settings.get('seed', 0)}",
        "settings": settings,
        "machine": {"nproc": 2, "cpu_model": "test CPU", "tensorflow": "2.x", "tfmot": "0.8"},
        "start": {"time_utc": "2026-01-01T00:00:00+00:00", "load_average": [0.5, 0.5, 0.5]},
        "end": {"time_utc": "2026-01-01T01:00:00+00:00", "load_average": [0.7, 0.6, 0.5]},
    }


# Each seed has its own dense model; the frontier's gaps are to these.
DENSE = {0: {"test": 0.9900, "validation": 0.9850}, 1: {"test": 0.9920, "validation": 0.9860}}
# (arm, ratio): test gaps of seeds 0 and 1 in points, validation gaps (None: the same).
# Same allocation: tf-admm reaches 100x (mean -0.10), tfmot:lamp 50x: 2x.
# Best practice: tfmot:uniform is chosen at 100x on validation and is within too: 1x.
FRONTIER_GRID = {
    ("tf_admm:lamp", 50): ((0.00, -0.02), None),
    ("tf_admm:lamp", 100): ((-0.05, -0.15), None),
    ("tf_admm:lamp", 200): ((-0.30, -0.50), None),
    ("tfmot:lamp", 50): ((-0.05, -0.05), None),
    ("tfmot:lamp", 100): ((-0.20, -0.40), None),
    ("tfmot:lamp", 200): ((-1.00, -1.20), None),
    ("tfmot:uniform", 50): ((0.10, 0.10), (-0.20, -0.20)),  # Best on test, not on validation.
    ("tfmot:uniform", 100): ((-0.05, -0.05), (-0.10, -0.10)),
    ("tfmot:uniform", 200): ((-0.60, -0.60), None),
}


def record(arm, ratio, seed, test_gap, validation_gap):
    """A point record as bench.sweep.run_point writes it."""
    library, allocation = arm.split(":")
    kept = round(430_500 / ratio)
    return {
        "protocol": {"dataset": "mnist"},
        "seed": seed,
        "arm": arm,
        "library": library,
        "allocation": allocation,
        "target_ratio": float(ratio),
        "kept": {"conv1": 1, "conv2": 2, "fc1": kept - 4, "fc2": 1},
        "nonzeros": {"conv1": 1, "conv2": 2, "fc1": kept - 4, "fc2": 1},
        "weights": 430_500,
        "achieved_ratio": 430_500 / kept,
        "dense": dict(DENSE[seed]),
        "validation": DENSE[seed]["validation"] + validation_gap / 100,
        "test": DENSE[seed]["test"] + test_gap / 100,
        "seconds": 30.0 if library == "tf_admm" else 20.0,
        "load_average": {"start": [1.5, 1.0, 1.0], "end": [2.5, 1.0, 1.0]},
        "date": f"2026-01-01T0{seed}:00:00+0000",
        "provenance": {
            "command": "python -m bench.frontier --seeds=0,1",
            "commit": "0123456789abcdef",
            "seed": seed,
        },
        "machine": {"nproc": 2, "cpu_model": "test CPU", "tensorflow": "2.x", "tfmot": "0.8"},
    }


def frontier(dataset="mnist", shift=0.0):
    """A bench.frontier document; ``shift`` is added to every test accuracy."""
    doc = provenance("frontier", dataset, seeds=[0, 1], ratios=[50.0, 100.0, 200.0])
    doc["format"] = 2
    doc["protocol"] = {
        "dataset": dataset,
        "epochs": 40,
        "prune_epochs": 24,
        "pretrain_epochs": 12,
        "batch_size": 128,
        "learning_rate": 1e-3,
        "final_learning_rate": 1e-5,
        "update_every": 100,
        "rho": 3e-4,
        "rho_multiplier": 1.042,
        "validation_examples": 5000,
        "train_examples": None,
    }
    doc["tolerance_points"] = {"mnist": 0.1, "fashion_mnist": 0.5}[dataset]
    doc["records"] = []
    doc["points"] = []
    for seed in (0, 1):
        for (arm, ratio), (test, validation) in FRONTIER_GRID.items():
            entry = record(arm, ratio, seed, test[seed], (validation or test)[seed])
            entry["test"] += shift
            doc["records"].append(entry)
            source = "cached" if seed == 0 else "run"
            doc["points"].append({"seed": seed, "arm": arm, "ratio": ratio, "source": source})
    return doc


def storage(bits, kept, weight_data_ratio, ratio_with_indices):
    sizes = {"conv1": 500, "conv2": 25_000, "fc1": 400_000, "fc2": 5_000}
    return {
        "layers": [
            {"name": n, "num_weights": sizes[n], "num_nonzeros": kept[n], "bits_per_value": bits[n]}
            for n in sizes
        ],
        "totals": {
            "weight_data_ratio": weight_data_ratio,
            "ratio_with_indices": ratio_with_indices,
        },
    }


def combined_run(variant, accuracy, weight_data, with_indices, gzip_bytes, seconds, **extra):
    kept = {"conv1": 200, "conv2": 1100, "fc1": 1120, "fc2": 150}
    bits = {"conv1": 3, "conv2": 3, "fc1": 2, "fc2": 3}
    run = {
        "point": "config",
        "target_ratio": 167.5,
        "variant": variant,
        "library": "tf_admm" if variant == "tf_admm" else "tfmot",
        "epochs": 34,
        "accuracy": accuracy,
        "nonzeros": kept,
        "requested_nonzeros": kept,
        "pruning_ratio": 167.5,
        "bits": bits,
        "distinct_values": {"conv1": 8, "conv2": 8, "fc1": 4, "fc2": 8},
        "storage": storage(bits, kept, weight_data, with_indices),
        "files": {
            "converter_default": {"file_bytes": 444_256, "gzip_bytes": gzip_bytes, "accuracy": 0.9},
            "tflite_export": {"file_bytes": 16_800, "gzip_bytes": 10_000, "accuracy": 0.9},
        },
        "seconds": seconds,
    }
    run.update(extra)
    return run


def history():
    # Two pruning ADMM epochs, one retraining, one quantization ADMM, one on the levels.
    phases = [0, 0, 1, 2, 4]
    return [
        {
            "epoch": e,
            "phase": phase,
            "primal_residual": 0.1 / (e + 1),
            "dual_residual": 0.01 / (e + 1),
            "rho": 0.003 * 1.6**e,
            "admm_phase": phases[min(e + 1, 4)],
            "conv1_sparsity": 0.6 if e >= 1 else 0.0,
            "fc1_sparsity": 0.9972 if e >= 1 else 0.0,
            **({"conv1_quant_error": 0.05 / (e + 1)} if phase >= 2 else {}),
        }
        for e, phase in enumerate(phases)
    ]


def combined(seed=0):
    doc = provenance("combined", "mnist", seed=seed)
    doc["config"] = {"path": "recipes/configs/lenet5_admm_quant.json"}
    doc["budget"] = {
        "epochs": 34,
        "scheduled": 22,
        "final": 12,
        "prune_ramp": 12,
        "prune_finetune": 4,
        "cluster": 14,
        "pcqat": 4,
    }
    doc["layers"] = ["conv1", "conv2", "fc1", "fc2"]
    doc["sizes"] = {"conv1": 500, "conv2": 25_000, "fc1": 400_000, "fc2": 5_000}
    doc["points"] = [{"name": "config", "target_ratio": 167.5}]
    doc["dense"] = {
        "accuracy": 0.99,
        "checkpoint": "dense.h5",
        "float_file_bytes": 1_727_420,
        "float_gzip_bytes": 1_590_000,
    }
    doc["runs"] = [
        combined_run("tf_admm", 0.9890, 2000.0, 600.0, 9_000, 300.0, history=history()),
        # tfmot: better accuracy and smaller gzip file, worse storage ratios, faster.
        combined_run("tfmot_cluster", 0.9895, 1800.0, 480.0, 8_000, 200.0),
        combined_run("tfmot_pcqat", 0.9850, 1100.0, 400.0, 9_500, 350.0),
    ]
    return doc


def overhead():
    doc = provenance("overhead", steps=40, repeats=3, batch_size=128, sparsity=0.9)
    variant = lambda ratio, state: {  # noqa: E731
        "median_ms": 10 * ratio,
        "mean_ms": 10 * ratio,
        "ratio": ratio,
        "ratio_per_repeat": [ratio, ratio],
        "extra_state_bytes": state,
    }
    doc["models"] = {
        "lenet5": {
            "variants": {
                "plain": variant(1.0, 0),
                "admm": variant(1.12, 5_000_000),
                "retrain": variant(1.02, 5_000_000),
                "tfmot": variant(1.05, 1_700_000),
            }
        }
    }
    return doc


def write(directory, name, doc):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    return path


def recipe_run(directory, name, seed, dense, compressed, **extra):
    """A recipe ``results.json`` (the fields bench.seeds reads) at ``directory/name``.

    ``extra``: ``ratio``; ``validation`` (dense, compressed; None for none); ``flagfile`` (None
    for none) and ``config`` name the run's config; ``weight_data`` with ``with_indices``;
    ``tflite`` (its test accuracy).
    """
    validation = extra.pop("validation", (0.99, 0.99 - 0.001 * seed))
    flagfile = extra.pop("flagfile", "recipes/configs/x.flags")
    config = extra.pop("config", "/elsewhere/x.json")
    results = {
        "dense_accuracy": dense,
        "pruned_accuracy": compressed,
        "pruning_ratio": extra.pop("ratio", 300.0),
        "run": {
            "command": "python -m recipes.lenet5_mnist "
            + (f"--flagfile={flagfile} " if flagfile else "")
            + f"--config={config} --seed={seed} --model_dir=runs/x_s{seed} --verbose=2",
            "commit": "89abcdef01234567",
            "seed": seed,
            "finished_utc": "2026-12-07T12:00:00+00:00",
        },
    }
    if validation:
        results["validation"] = dict(zip(("dense_accuracy", "pruned_accuracy"), validation))
    if "weight_data" in extra:
        results["storage"] = {
            "totals": {
                "weight_data_ratio": extra.pop("weight_data"),
                "ratio_with_indices": extra.pop("with_indices"),
            }
        }
    if "tflite" in extra:
        results["tflite"] = {"accuracy": extra.pop("tflite")}
    assert not extra, extra
    path = directory / name
    path.write_text(json.dumps(results))
    return str(path)
