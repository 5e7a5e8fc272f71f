"""The benchmarks' --smoke modes run and give results of the expected shape (CI keeps them alive).

Each benchmark's ``run()`` is called in-process with its smoke settings, once per module (the
report test reads all their outputs): seconds of work, so the numbers mean nothing, but every
variant, library, table, JSON file and plot is produced.
"""

import json
import math
import os
import re

import pytest

from bench import combined, common, frontier, overhead, results
from recipes import models
from tf_admm.compat import keras


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_smoke")


@pytest.fixture(scope="module")
def overhead_results(smoke_dir):
    # tf_keras only: bench/overhead_stacks_test.py times the Keras 3 stacks.
    settings = overhead.Settings.smoke(out=str(smoke_dir / "overhead.json"), stacks=("tf_keras",))
    return overhead.run(settings)


@pytest.fixture(scope="module")
def frontier_results(smoke_dir, mnist_data_dir):
    """Two seeds, every arm at 100x, 256 training images."""
    work_dir = str(smoke_dir / "frontier")
    return frontier.run(frontier.Settings.smoke(work_dir=work_dir, data_dir=mnist_data_dir))


@pytest.fixture(scope="module")
def combined_results(smoke_dir, mnist_data_dir):
    settings = combined.Settings.smoke(
        work_dir=str(smoke_dir / "combined"), data_dir=mnist_data_dir
    )
    return combined.run(settings)


@pytest.fixture(scope="module")
def frontier_again(smoke_dir, mnist_data_dir, frontier_results):
    """The same points read back from the cache, plus a seed that was never run (skipped)."""
    work_dir = smoke_dir / "frontier"
    return frontier.run(
        frontier.Settings.smoke(
            work_dir=str(work_dir),
            data_dir=mnist_data_dir,
            seeds=(0, 1, 2),
            run_missing=False,
            out=str(work_dir / "again.json"),
            plot="",
        )
    )


def test_wrapper_state_bytes_counts_only_what_the_library_adds():
    keras.utils.set_random_seed(0)
    assert common.wrapper_state_bytes(models.lenet5()) == 0


def test_overhead_smoke_times_every_variant_on_both_models(smoke_dir, overhead_results):
    out = smoke_dir / "overhead.json"
    results = overhead_results
    assert set(results["models"]) == {"lenet5", "vgg"}
    for model in results["models"].values():
        variants = model["variants"]
        assert set(variants) == set(overhead.VARIANTS)
        assert variants["plain"]["ratio"] == 1.0
        for entry in variants.values():
            assert math.isfinite(entry["ratio"]) and entry["ratio"] > 0
            assert len(entry["step_ms"]) == 2 and all(len(r) == 3 for r in entry["step_ms"])
            assert all(t > 0 for r in entry["step_ms"] for t in r)
        assert variants["admm"]["zu_update_ms"] > 0
    lenet = results["models"]["lenet5"]
    weights = 430_500  # LeNet-5 kernels: 500 + 25,000 + 400,000 + 5,000.
    # tf-admm: Z, U and mask (float32) per kernel entry, rho and dual residual per kernel,
    # four int64 counters on the model.
    assert lenet["variants"]["admm"]["extra_state_bytes"] == 4 * (3 * weights + 2 * 4) + 4 * 8
    # tfmot: a float32 mask per kernel entry plus a threshold and a step per layer.
    assert 4 * weights < lenet["variants"]["tfmot"]["extra_state_bytes"] < 4 * weights + 100
    assert lenet["variants"]["plain"]["extra_state_bytes"] == 0
    for key in ("command", "machine", "start", "end"):
        assert key in results
    assert results["machine"]["nproc"] >= 1 and results["start"]["load_average"]
    with open(out, encoding="utf-8") as f:
        assert set(json.load(f)["models"]["vgg"]["variants"]) == set(overhead.VARIANTS)
    printed = overhead.format_results(results)
    assert "admm_no_penalty" in printed and "Z/U update" in printed


def test_frontier_smoke_runs_every_arm_from_one_dense_model_per_seed(
    smoke_dir, frontier_results, frontier_again
):
    work_dir = smoke_dir / "frontier"
    records = frontier_results["records"]
    assert [(r["seed"], r["arm"], r["target_ratio"]) for r in records] == [
        (seed, arm, 100.0)
        for seed in (0, 1)
        for arm in ("tf_admm:lamp", "tfmot:lamp", "tfmot:uniform")
    ]
    assert {p["source"] for p in frontier_results["points"]} == {"run"}
    by_seed = {}
    for r in records:
        assert r["weights"] == 430_500 and 0 <= r["test"] <= 1 and 0 <= r["validation"] <= 1
        assert r["provenance"]["command"].startswith("python -m bench.frontier")
        by_seed.setdefault(r["seed"], {})[r["arm"]] = r
    for arms in by_seed.values():
        # One dense model per seed, shared by every arm; tfmot:lamp gets tf-admm's counts.
        assert len({json.dumps(r["dense"]) for r in arms.values()}) == 1
        assert arms["tfmot:lamp"]["kept"] == arms["tf_admm:lamp"]["kept"]
        assert arms["tf_admm:lamp"]["nonzeros"] == arms["tf_admm:lamp"]["kept"]
        assert arms["tfmot:uniform"]["kept"]["conv1"] == 5  # 1% of 500 at 100x.
    # Each seed has its own dense model.
    assert by_seed[0]["tfmot:lamp"]["dense"] != by_seed[1]["tfmot:lamp"]["dense"]
    for key in ("command", "machine", "start", "end", "protocol"):
        assert key in frontier_results
    assert frontier_results["protocol"]["train_examples"] == 256
    with open(work_dir / "frontier_mnist.json", encoding="utf-8") as f:
        assert len(json.load(f)["records"]) == 6
    assert (work_dir / "frontier_mnist.png").read_bytes().startswith(b"\x89PNG")
    # Read back, not trained again; the seed that never ran is listed, not run.
    again = frontier_again
    assert again["records"] == records
    assert [p["source"] for p in again["points"]] == ["cached"] * 6 + ["missing"] * 3
    with open(work_dir / "frontier_mnist.json", encoding="utf-8") as f:
        assert len(json.load(f)["records"]) == 6  # The first run's output is left alone.


def test_combined_smoke_runs_tf_admm_and_the_tfmot_pipeline_on_one_budget(
    smoke_dir, combined_results
):
    results = combined_results
    budget = results["budget"]
    # Smoke spec: 1 pruning round, 1 quantization round, 1 locking step, then 1 final epoch.
    assert budget == {
        "epochs": 3,
        "scheduled": 2,
        "final": 1,
        "prune_ramp": 1,
        "prune_finetune": 0,
        "cluster": 1,
        "pcqat": 1,
    }
    # Its own dense checkpoint, in its work_dir (no --dense_dir), trained by this run.
    assert os.path.dirname(results["dense"]["checkpoint"]) == str(smoke_dir / "combined")
    assert not results["dense"]["cached"]
    runs = {r["variant"]: r for r in results["runs"]}
    assert list(runs) == list(combined.VARIANTS)
    admm, cluster, pcqat = (runs[v] for v in combined.VARIANTS)
    assert admm["epochs"] == pcqat["epochs"] == 3 and cluster["epochs"] == 2
    # The config's allocation (105x with the paper's bits), the same for every run.
    requested = {"conv1": 200, "conv2": 1_400, "fc1": 2_250, "fc2": 250}
    bits = {"conv1": 3, "conv2": 3, "fc1": 2, "fc2": 3}
    for run in runs.values():
        assert run["requested_nonzeros"] == requested and run["bits"] == bits
        assert run["weights"] == 430_500 and 0 <= run["accuracy"] <= 1
        totals = run["storage"]["totals"]
        # Fewer than 32 bits per kept value: weight data beats pruning alone; indices cost.
        assert totals["weight_data_ratio"] > run["pruning_ratio"] > 1
        assert totals["weight_data_ratio"] > totals["ratio_with_indices"]
        converter = run["files"]["converter_default"]
        assert converter["gzip_bytes"] < converter["file_bytes"]
        assert 0 <= converter["accuracy"] <= 1 and os.path.exists(converter["path"])
    # tf-admm keeps exactly the allocation, on at most 2**bits levels per layer.
    assert admm["nonzeros"] == requested
    for layer, count in admm["distinct_values"].items():
        assert 1 <= count <= 2 ** bits[layer]
    exported = admm["files"]["tflite_export"]
    assert "error" not in exported and exported["file_bytes"] < exported["float_file_bytes"]
    assert exported["accuracy"] == pytest.approx(admm["accuracy"], abs=0.02)
    assert set(exported["encodings"].values()) <= {"levels", "sparse_levels"}
    # tfmot: 2**bits + 1 clusters, one of them the zero centroid; clustering may zero more.
    assert cluster["clusters"] == {layer: 2**b + 1 for layer, b in bits.items()}
    for layer, count in cluster["distinct_values"].items():
        assert 1 <= count <= 2 ** bits[layer]
        assert 1 <= cluster["nonzeros"][layer] <= requested[layer] + 2
        assert cluster["centroid_init"][layer]["used"] in combined.CENTROID_INITS
    # PCQAT: counted from the int8 codes of the converter's file, same zeros as clustering.
    assert pcqat["storage_source"] == "int8 codes of the converter's file"
    assert pcqat["nonzeros"] == cluster["nonzeros"]
    # tf-admm's history runs through every phase the smoke spec has.
    assert [e["phase"] for e in admm["history"]] == [0, 2, 4]
    assert all("primal_residual" in e and "conv1_sparsity" in e for e in admm["history"])
    assert (smoke_dir / "combined" / "combined_mnist.png").read_bytes().startswith(b"\x89PNG")
    with open(smoke_dir / "combined" / "combined_mnist.json", encoding="utf-8") as f:
        assert len(json.load(f)["runs"]) == 3
    assert "tfmot_pcqat" in combined.format_results(results)


def test_results_report_from_the_smoke_outputs(
    smoke_dir, overhead_results, frontier_results, frontier_again, combined_results
):
    out = smoke_dir / "docs" / "RESULTS.md"
    report = results.run(
        results.Settings(
            frontier=(str(smoke_dir / "frontier" / "frontier_mnist.json"),),
            compare=(str(smoke_dir / "frontier" / "again.json"),),
            combined=(str(smoke_dir / "combined" / "combined_mnist.json"),),
            overhead=(str(smoke_dir / "overhead.json"),),
            structured=(),
            ablation=None,
            targets=None,
            out=str(out),
        )
    )
    markdown = out.read_text(encoding="utf-8")
    assert report["missing"] == []
    assert markdown.count("the numbers below do not measure anything") == 3
    assert "| 100x | tf_admm:lamp | 2 | 100.0x |" in markdown
    assert "| 100x | tfmot:uniform | 2 | 100.0x |" in markdown
    assert "### Same allocation (tf_admm:lamp against tfmot:lamp)" in markdown
    # Both comparisons end in a verdict (which one depends on the smoke run's noise).
    verdicts = re.findall(r"\*\*(?:Same allocation|Best practice) .*\*\*", markdown)
    assert len(verdicts) == 2
    assert all(
        v.endswith(("at least 2x.**", "tf-admm.**", "lower ones.**", "yet.**")) for v in verdicts
    )
    assert "| config | tf-admm prune + quantize | 3 |" in markdown
    assert "| config | tfmot prune + cluster + PCQAT | 3 |" in markdown
    assert "| lenet5 | admm |" in markdown and "| vgg | tfmot |" in markdown
    assert "## Where tf-admm does not win" in markdown
    # The read-back run is the same points: no difference at all.
    assert "Largest accuracy difference: 0.00 points." in markdown
    for name in (
        "frontier_mnist.png",
        "combined_mnist.png",
        "combined_mnist_layers.png",
        "combined_mnist_admm.png",
    ):
        assert (out.parent / name).read_bytes().startswith(b"\x89PNG")
