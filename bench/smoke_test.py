"""The benchmarks' --smoke modes run and give results of the expected shape (CI keeps them alive).

Each test calls a benchmark's ``run()`` in-process with its smoke settings: seconds of work, so
the numbers mean nothing, but every variant, library, table, JSON file and plot is produced.
"""

import json
import math

import numpy as np
import pytest

from bench import common, frontier, overhead
from recipes import models
from tf_admm.compat import keras


def test_allocate_scales_the_71x_profile_to_the_requested_ratio():
    profile, _ = frontier.load_profile()
    sizes = {"conv1": 500, "conv2": 25_000, "fc1": 400_000, "fc2": 5_000}
    # The config's own counts (100/2000/3600/350, Ye et al. 2018) come back at its own ratio.
    assert frontier.allocate(430_500 / 6_050, sizes, profile) == {
        "conv1": 100,
        "conv2": 2_000,
        "fc1": 3_600,
        "fc2": 350,
    }
    for ratio in (20, 50, 100, 167, 250):
        kept = frontier.allocate(ratio, sizes, profile)
        assert sum(kept.values()) == pytest.approx(430_500 / ratio, abs=2)
        # Same proportions as the profile while no layer is full.
        assert kept["fc1"] / kept["conv2"] == pytest.approx(3_600 / 2_000, rel=1e-2)


def test_allocate_caps_full_layers_and_gives_the_rest_to_the_others():
    profile = {"small": 0.2, "big": 0.99}
    kept = frontier.allocate(2.0, {"small": 100, "big": 10_000}, profile)
    assert kept["small"] == 100  # 0.8 * scale would exceed 1: the layer keeps everything.
    assert sum(kept.values()) == 5_050
    with pytest.raises(ValueError, match="ratio >= 1"):
        frontier.allocate(0.5, {"small": 100, "big": 10_000}, profile)


def test_wrapper_state_bytes_counts_only_what_the_library_adds():
    keras.utils.set_random_seed(0)
    assert common.wrapper_state_bytes(models.lenet5()) == 0


def test_overhead_smoke_times_every_variant_on_both_models(tmp_path, capsys):
    out = tmp_path / "overhead.json"
    results = overhead.run(overhead.Settings.smoke(out=str(out)))
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
    printed = capsys.readouterr().out
    assert "admm_no_penalty" in printed and "load average at end" in printed


def test_frontier_smoke_compares_both_libraries_from_one_checkpoint(tmp_path, mnist_data_dir):
    settings = frontier.Settings.smoke(work_dir=str(tmp_path), data_dir=mnist_data_dir)
    results = frontier.run(settings)
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
    # One shared dense checkpoint, reused by a second run instead of pretraining again.
    assert not results["dense"]["cached"]
    again = frontier.run(
        frontier.Settings.smoke(
            work_dir=str(tmp_path), data_dir=mnist_data_dir, ratios=(50,), libraries=("tf_admm",)
        )
    )
    assert again["dense"]["cached"]
    assert again["dense"]["accuracy"] == pytest.approx(results["dense"]["accuracy"])
    with open(tmp_path / "frontier_mnist.json", encoding="utf-8") as f:
        assert json.load(f)["runs"][0]["target_ratio"] == 50.0
    png = (tmp_path / "frontier_mnist.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert np.isfinite(again["runs"][0]["achieved_ratio"])
