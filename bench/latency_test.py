"""bench.latency: every file measured in every configuration, ratios against the first file.

The smoke settings time 20 invokes per interpreter: the numbers mean nothing, the shapes and the
ratios' arithmetic do. Files, MACs and parameters are deterministic.
"""

import json

import pytest

from bench import latency


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """LeNet-5 with random weights: filter pruning on conv1/conv2, column pruning on fc1/fc2."""
    work_dir = tmp_path_factory.mktemp("latency")
    settings = latency.Settings.smoke(
        work_dir=str(work_dir), fc_structure="column", out=str(work_dir / "latency.json")
    )
    return settings, latency.run(settings)


def _by_name(results):
    return {entry["name"]: entry for entry in results["files"]}


def test_smoke_measures_every_file_at_both_thread_counts_with_and_without_xnnpack(built):
    settings, results = built
    files = _by_name(results)
    assert list(files) == [
        "dense",
        "unstructured",
        "filter+column_masked",
        "filter+column_shrunk",
        "tfmot_2of4",
    ]
    for entry in files.values():
        configs = [(row["threads"], row["xnnpack"]) for row in entry["latency"]]
        assert configs == [(1, True), (1, False), (2, True), (2, False)]
        for row in entry["latency"]:
            assert row["invokes"] == len(row["samples_us"]) == settings.invokes == 20
            assert 0 < row["p10_us"] <= row["median_us"] <= row["p90_us"]
        assert set(entry["memory"]) == {"xnnpack", "builtin"}
        assert all(probe["growth"] > 0 for probe in entry["memory"].values())
    with open(settings.out, encoding="utf-8") as f:
        assert [entry["name"] for entry in json.load(f)["files"]] == list(files)


def test_smoke_ratios_are_the_first_files_values_over_each_files(built):
    _, results = built
    files = results["files"]
    reference = files[0]
    assert results["reference"] == "dense"
    ref_median = {(r["threads"], r["xnnpack"]): r["median_us"] for r in reference["latency"]}
    for entry in files:
        assert entry["x_smaller"] == pytest.approx(reference["file_bytes"] / entry["file_bytes"])
        assert entry["x_fewer_macs"] == pytest.approx(reference["macs"] / entry["macs"])
        for row in entry["latency"]:
            key = (row["threads"], row["xnnpack"])
            assert row["x_faster"] == pytest.approx(ref_median[key] / row["median_us"])
        for key, probe in entry["memory"].items():
            assert probe["x_less"] == pytest.approx(
                reference["memory"][key]["growth"] / probe["growth"]
            )
    assert all(row["x_faster"] == 1.0 for row in reference["latency"])


def test_shrunk_file_is_smaller_with_fewer_macs_and_parameters_than_the_masked_one(built):
    _, results = built
    files = _by_name(results)
    masked, shrunk, dense = (
        files["filter+column_masked"],
        files["filter+column_shrunk"],
        files["dense"],
    )
    assert shrunk["file_bytes"] < masked["file_bytes"]
    assert shrunk["macs"] < masked["macs"] == dense["macs"]
    assert shrunk["params"] < masked["params"] == dense["params"]
    # LeNet-5 at batch 1: conv1 24*24*500 + conv2 8*8*25,000 + fc1 400,000 + fc2 5,000 MACs.
    assert dense["macs"] == 2_293_000
    # Half the filters of conv1 (10 of 20) and conv2 (25 of 50) leave: conv1 24*24*250, conv2
    # 8*8*10*25*25. Half of fc2's columns (inputs) are zero, so shrink drops the 250 fc1 units
    # they read: fc1 4*4*25 inputs x 250, fc2 250 x 10.
    assert shrunk["macs"] == 24 * 24 * 250 + 8 * 8 * 6_250 + 400 * 250 + 250 * 10


def test_densified_weights_show_in_the_tensor_bytes(built):
    # LiteRT expands sparse weights (DENSIFY) into non-constant tensors when it prepares the
    # model: the unstructured file is smaller than the dense one and needs more memory.
    _, results = built
    files = _by_name(results)
    assert files["unstructured"]["file_bytes"] < files["dense"]["file_bytes"]
    assert files["unstructured"]["tensor_bytes"] > files["dense"]["tensor_bytes"] + 4 * 400_000


def test_given_files_are_measured_against_the_first(built, capsys):
    settings, first = built
    files = _by_name(first)
    paths = (files["filter+column_shrunk"]["path"], files["dense"]["path"])
    results = latency.run(
        latency.Settings.smoke(files=paths, threads=(1,), xnnpack=(True,), memory=False)
    )
    assert [entry["path"] for entry in results["files"]] == list(paths)
    shrunk, dense = results["files"]
    assert shrunk["x_smaller"] == 1.0 and dense["x_smaller"] < 1.0
    assert [(row["threads"], row["xnnpack"]) for row in dense["latency"]] == [(1, True)]
    printed = capsys.readouterr().out
    assert "load average at start" in printed and "load average at end" in printed
    assert "x faster" in printed


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(model="resnet"), "received: model='resnet'"),
        (dict(structure="rows"), "received: structure='rows'"),
        (dict(fc_structure="block"), "received: fc_structure='block'"),
        (dict(sparsity=1.0), "received: sparsity=1.0"),
        (dict(threads=(0,)), "received: threads=[0]"),
        (dict(xnnpack=()), "received: xnnpack=[]"),
        (dict(rounds=0), "received: rounds=0"),
        (dict(warmup=-1), "received: warmup=-1"),
    ],
)
def test_settings_reject_bad_values_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        latency.Settings(**overrides)
