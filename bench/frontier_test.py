"""bench.frontier without training: settings, and a document built from cached points only.

The smoke run that trains every arm is in bench/smoke_test.py.
"""

import dataclasses
import json
import os

import pytest

from bench import common, frontier, sweep


def test_default_settings_give_the_sweeps_protocol_so_its_points_are_read_back():
    settings = frontier.Settings()
    assert settings.protocol == sweep.Protocol()
    assert settings.protocol.key() == sweep.Protocol().key()
    assert settings.tolerance == 0.1
    assert frontier.Settings(dataset="fashion_mnist").tolerance == 0.5
    assert frontier.Settings(tolerance_points=0.3).tolerance == 0.3
    smoke = frontier.Settings.smoke()
    assert smoke.protocol.train_examples == 256 and smoke.seeds == (0, 1)
    assert smoke.work_dir != settings.work_dir  # A smoke run never overwrites a real document.


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"arms": ("tfmot:random",)}, "allocation='random'"),
        ({"arms": ()}, "at least one arm"),
        ({"ratios": (1.0,)}, "ratios > 1"),
        ({"epochs": 24}, "prune_epochs < epochs"),
        ({"tolerance_points": -0.1}, "tolerance_points >= 0"),
    ],
)
def test_settings_refuse_bad_fields_naming_them(fields, message):
    with pytest.raises(ValueError, match=message):
        frontier.Settings(**fields)


def _cache(work_dir, protocol, seed, arm, ratio, test):
    record = {
        "protocol": protocol.identity(),
        "seed": seed,
        "arm": arm,
        "library": arm.split(":")[0],
        "allocation": arm.split(":")[1],
        "target_ratio": float(ratio),
        "kept": {"conv1": 1, "conv2": 2, "fc1": 3, "fc2": 4},
        "nonzeros": {"conv1": 1, "conv2": 2, "fc1": 3, "fc2": 4},
        "achieved_ratio": float(ratio),
        "dense": {"test": 0.99, "validation": 0.98},
        "test": test,
        "validation": test - 0.01,
        "seconds": 1.0,
    }
    path = sweep.point_path(str(work_dir), protocol, seed, sweep.Arm.parse(arm), ratio)
    common.write_json(path, record)
    return record


def test_cached_points_only_make_a_document_and_missing_ones_are_listed(tmp_path, monkeypatch):
    settings = frontier.Settings(
        seeds=(0,),
        ratios=(100.0, 200.0),
        arms=("tf_admm:lamp", "tfmot:lamp"),
        work_dir=str(tmp_path),
        run_missing=False,
        command="python -m bench.frontier --test",
    )

    def no_training(*args, **kwargs):
        raise AssertionError("--norun_missing trained or loaded data")

    monkeypatch.setattr(sweep, "run_point", no_training)
    monkeypatch.setattr(sweep, "load_arrays", no_training)
    cached = [
        _cache(tmp_path, settings.protocol, 0, "tf_admm:lamp", 100, 0.9895),
        _cache(tmp_path, settings.protocol, 0, "tfmot:lamp", 100, 0.9870),
        _cache(tmp_path, settings.protocol, 0, "tf_admm:lamp", 200, 0.9850),
    ]
    # A point of another protocol is not this run's, even at the same seed, arm and ratio.
    other = dataclasses.replace(settings.protocol, rho=1e-3)
    _cache(tmp_path, other, 0, "tfmot:lamp", 200, 0.99)

    document = frontier.run(settings)
    assert document["records"] == cached
    assert [(p["arm"], p["ratio"], p["source"]) for p in document["points"]] == [
        ("tf_admm:lamp", 100.0, "cached"),
        ("tfmot:lamp", 100.0, "cached"),
        ("tf_admm:lamp", 200.0, "cached"),
        ("tfmot:lamp", 200.0, "missing"),
    ]
    with open(tmp_path / "frontier_mnist.json", encoding="utf-8") as f:
        written = json.load(f)
    assert written["benchmark"] == "frontier" and written["format"] == 2
    assert written["command"] == "python -m bench.frontier --test"
    assert written["protocol"] == sweep.Protocol().identity()
    assert written["tolerance_points"] == 0.1
    for key in ("machine", "start", "end", "settings"):
        assert key in written
    assert os.path.exists(tmp_path / "frontier_mnist.png")
