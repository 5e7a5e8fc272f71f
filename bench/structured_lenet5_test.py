"""bench.structured_lenet5 on 256 random images (smoke settings): exact kept filters and
columns, the shrunk model equal to the masked one, every row of the table with numbers, the
JSON read back into the same table and into docs/RESULTS.md's section.

The accuracies of random labels mean nothing; shapes, counts and the table's arithmetic do.
"""

import copy
import json
import re

import pytest

from bench import results, structured_lenet5, structured_table

_NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?x?$")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("structured")
    settings = structured_lenet5.Settings.smoke(
        work_dir=str(work_dir), out=str(work_dir / "structured_lenet5.json")
    )
    return settings, structured_lenet5.run(settings)


def test_smoke_keeps_exactly_half_of_the_filters_and_columns(smoke):
    _, doc = smoke
    # LeNet-5: conv1 5x5x1x20, conv2 5x5x20x50, fc1 800x500, fc2 500x10; 50% of each group.
    assert doc["kept"] == {"conv1": 10 * 25, "conv2": 25 * 20 * 25, "fc1": 400 * 500, "fc2": 2500}
    assert doc["masked_kernels"] == {
        "conv1": [5, 5, 1, 20],
        "conv2": [5, 5, 20, 50],
        "fc1": [800, 500],
        "fc2": [500, 10],
    }
    # conv1 and conv2 lose their zero filters (and conv2 conv1's channels); fc2's 250 zero
    # columns take fc1's units; fc1's inputs go with conv2's removed channels (4x4 each).
    assert doc["shrunk_kernels"] == {
        "conv1": [5, 5, 1, 10],
        "conv2": [5, 5, 10, 25],
        "fc1": [400, 250],
        "fc2": [250, 10],
    }


def test_smoke_shrunk_outputs_equal_the_masked_outputs(smoke):
    _, doc = smoke
    assert doc["shrink_max_abs_error"] <= 1e-5


def test_smoke_table_has_every_variant_with_numbers(smoke):
    settings, doc = smoke
    names = [entry["name"] for entry in doc["files"]]
    assert names == [
        "dense",
        "unstructured",
        "structured_masked",
        "structured_shrunk",
        "structured_shrunk_int8",
        "tfmot_2of4",
    ]
    header = structured_table.header(doc)
    assert header[-2:] == ["1 thr µs", "1 thr x faster"]
    rows = structured_table.rows(doc)
    assert [row[0] for row in rows] == [structured_table.VARIANTS[name] for name in names]
    for row in rows:
        assert len(row) == len(header)
        assert all(_NUMBER.match(cell) for cell in row[1:]), row
    by_name = {entry["name"]: entry for entry in doc["files"]}
    assert by_name["dense"]["x_smaller"] == 1.0
    shrunk = by_name["structured_shrunk"]
    # MACs of the shrunk model: conv1 24*24*25*10, conv2 8*8*250*25, fc1 400*250, fc2 250*10.
    assert shrunk["macs"] == 144_000 + 400_000 + 100_000 + 2_500
    assert shrunk["x_fewer_macs"] == pytest.approx(2_293_000 / shrunk["macs"])
    assert shrunk["file_bytes"] < by_name["structured_masked"]["file_bytes"]
    text = structured_lenet5.format_results(doc)
    for label in structured_table.VARIANTS.values():
        assert label in text
    assert "fc2: 250 zero columns; shrink removes the fc1 units they read" in text


def test_json_round_trip_gives_the_same_table_and_a_results_section(smoke, tmp_path):
    settings, doc = smoke
    with open(settings.out, encoding="utf-8") as f:
        loaded = json.load(f)
    assert loaded["benchmark"] == "structured_lenet5"
    assert structured_table.header(loaded) == structured_table.header(doc)
    assert structured_table.rows(loaded) == structured_table.rows(doc)
    assert structured_table.notes(loaded) == structured_table.notes(doc)
    report = results.run(
        results.Settings(
            frontier=(),
            combined=(),
            overhead=(),
            structured=(settings.out,),
            ablation=None,
            targets=None,
            out=str(tmp_path / "RESULTS.md"),
        )
    )
    markdown = report["markdown"]
    assert "## Structured pruning in LiteRT: LeNet-5 on synthetic" in markdown
    assert "| filter + column, shrunk |" in markdown
    assert "- commit: " in markdown and "bench.structured_lenet5" in markdown


@pytest.mark.parametrize(
    "field, value",
    [("sparsity", 1.0), ("fc_sparsity", 0.0), ("admm_epochs", 0), ("threads", ())],
)
def test_bad_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"received: {field}="):
        structured_lenet5.Settings(**{field: value})


def test_multi_thread_median_far_above_one_thread_is_flagged(smoke):
    _, doc = smoke
    doc = copy.deepcopy(doc)
    doc["files"][1]["latency"] = [
        {"threads": 1, "median_us": 20.0, "x_faster": 1.0},
        {"threads": 2, "median_us": 80.0, "x_faster": 0.25},
    ]
    doc["files"] = doc["files"][:2]
    for entry in doc["files"]:
        entry["latency"] = doc["files"][1]["latency"]
    lines = structured_table.notes(doc)
    flagged = [line for line in lines if "descheduled" in line]
    assert flagged == [
        "dense: the 2-thread median (80.0 µs) is 4.0x its 1-thread median; likely a "
        "descheduled thread on a loaded machine: re-measure before quoting it.",
        "unstructured, same kept counts: the 2-thread median (80.0 µs) is 4.0x its 1-thread "
        "median; likely a descheduled thread on a loaded machine: re-measure before quoting it.",
    ]
