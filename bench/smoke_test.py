"""The benchmarks' --smoke modes run and give results of the expected shape (CI keeps them alive).

Each benchmark's ``run()`` is called in-process with its smoke settings, once per module (the
report test reads all their outputs): seconds of work, so the numbers mean nothing, but every
variant, library, table, JSON file and plot is produced.
"""

import json
import math
import os

import pytest

import tf_admm
from bench import combined, common, frontier, overhead, results
from recipes import models
from tf_admm.compat import keras


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_smoke")


@pytest.fixture(scope="module")
def overhead_results(smoke_dir):
    return overhead.run(overhead.Settings.smoke(out=str(smoke_dir / "overhead.json")))


@pytest.fixture(scope="module")
def frontier_results(smoke_dir, mnist_data_dir):
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
    """A second frontier run (ratio 50, tf-admm in two stages) that reuses the first run's
    dense checkpoint."""
    work_dir = smoke_dir / "frontier"
    return frontier.run(
        frontier.Settings.smoke(
            work_dir=str(work_dir),
            data_dir=mnist_data_dir,
            ratios=(50,),
            libraries=("tf_admm",),
            epochs=4,
            prune_epochs=2,
            prune_stages=(0.5, 1.0),
            stage_retrain_epochs=1,
            out=str(work_dir / "again.json"),
            plot="",
        )
    )


def test_frontier_settings_count_stage_epochs_and_refuse_bad_budgets():
    staged = frontier.Settings(
        epochs=36, prune_epochs=20, prune_stages=(0.5, 1.0), stage_retrain_epochs=4
    )
    assert staged.pruning_epochs == 24 and staged.retrain_epochs == 12
    spec = staged.tf_admm_spec({"fc1": 0.99})
    assert (spec.admm_rounds, spec.retrain_rounds, spec.prune_stages) == (10, 4, (0.5, 1.0))
    assert spec.scheduled_rounds() == 24
    with pytest.raises(ValueError, match="multiple of the 2 prune_stages"):
        frontier.Settings(epochs=36, prune_epochs=21, prune_stages=(0.5, 1.0))
    with pytest.raises(ValueError, match="stage_retrain_epochs=20, epochs=36"):
        frontier.Settings(
            epochs=36, prune_epochs=20, prune_stages=(0.5, 1.0), stage_retrain_epochs=20
        )
    with pytest.raises(tf_admm.SpecError, match="prune_stages"):
        frontier.Settings(prune_epochs=10, prune_stages=(0.6, 0.4))


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


def test_frontier_smoke_compares_both_libraries_from_one_checkpoint(
    smoke_dir, frontier_results, frontier_again
):
    work_dir = smoke_dir / "frontier"
    results = frontier_results
    runs = results["runs"]
    assert [(r["target_ratio"], r["library"]) for r in runs] == [
        (20.0, "tf_admm"),
        (20.0, "tfmot"),
        (167.0, "tf_admm"),
        (167.0, "tfmot"),
    ]
    by_ratio = {}
    for r in runs:
        assert r["weights"] == 430_500
        assert math.isfinite(r["achieved_ratio"]) and 0 <= r["accuracy"] <= 1
        assert set(r["nonzeros"]) == {"conv1", "conv2", "fc1", "fc2"}
        by_ratio.setdefault(r["target_ratio"], []).append(r)
    for ratio, pair in by_ratio.items():
        admm, tfmot = pair
        # Same allocation for both libraries.
        assert admm["sparsities"] == tfmot["sparsities"]
        # tf-admm keeps exactly the requested number of weights in every layer.
        assert admm["nonzeros"] == admm["requested_nonzeros"]
        assert admm["achieved_ratio"] == pytest.approx(ratio, rel=0.01)
        # tfmot's last mask update lands on the final sparsity (ties could keep a few more).
        for layer, kept in tfmot["nonzeros"].items():
            assert kept == pytest.approx(tfmot["requested_nonzeros"][layer], abs=2)
    # tf-admm's per-epoch ADMM logs: one pruning round, then retraining.
    history = runs[0]["history"]
    assert [e["phase"] for e in history] == [0, 1]
    assert history[0]["admm_phase"] == 1 and history[0]["rho"] > 0
    assert all(e["seconds"] > 0 for e in history)
    assert history[-1]["fc1_sparsity"] == pytest.approx(1 - runs[0]["nonzeros"]["fc1"] / 400_000)
    assert "history" not in runs[1]
    png = (work_dir / "frontier_mnist.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    # One shared dense checkpoint, reused by a second run instead of pretraining again.
    assert not results["dense"]["cached"]
    again = frontier_again
    assert again["dense"]["cached"]
    assert again["dense"]["accuracy"] == pytest.approx(results["dense"]["accuracy"])
    with open(work_dir / "again.json", encoding="utf-8") as f:
        assert json.load(f)["runs"][0]["target_ratio"] == 50.0
    with open(work_dir / "frontier_mnist.json", encoding="utf-8") as f:
        assert len(json.load(f)["runs"]) == 4  # The first run's output is left alone.
    staged = again["runs"][0]
    assert staged["nonzeros"] == staged["requested_nonzeros"]
    # ADMM (stage 1), retraining, ADMM (stage 2), then the final retraining.
    assert [e["phase"] for e in staged["history"]] == [0, 1, 0, 1]
    assert staged["history"][1]["lr"] == pytest.approx(1e-4)  # One epoch of decay: x0.1.


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
            frontier=(
                str(smoke_dir / "frontier" / "frontier_mnist.json"),
                str(smoke_dir / "frontier" / "again.json"),
            ),
            combined=(str(smoke_dir / "combined" / "combined_mnist.json"),),
            overhead=(str(smoke_dir / "overhead.json"),),
            out=str(out),
        )
    )
    markdown = out.read_text(encoding="utf-8")
    assert report["missing"] == []
    assert markdown.count("the numbers below do not measure anything") == 4
    assert "| 167x | tf-admm |" in markdown and "| 167x | tfmot |" in markdown
    assert "| config | tf-admm prune + quantize | 3 |" in markdown
    assert "| config | tfmot prune + cluster + PCQAT | 3 |" in markdown
    assert "| lenet5 | admm |" in markdown and "| vgg | tfmot |" in markdown
    assert "## Where tf-admm does not win" in markdown
    # The staged second run is another budget, not a repeat: its own section, no noise pair.
    assert "LeNet-5 on mnist, tf-admm in 2 stages, 4 epochs" in markdown
    assert "Pass a second run of the same benchmark" in markdown
    for name in (
        "frontier_mnist.png",
        "frontier_mnist_2stages_e4.png",
        "combined_mnist.png",
        "combined_mnist_layers.png",
        "combined_mnist_admm.png",
    ):
        assert (out.parent / name).read_bytes().startswith(b"\x89PNG")
