"""Tests for recipes.run_files: atomic writes, keyed backup folders, provenance."""

import json
import os

import numpy as np

from recipes import run_files
from tf_admm.compat import keras


def test_backup_dirs_are_keyed_on_phase_and_settings():
    first = run_files.backup_dir("run", "admm", {"a": 1, "b": 2})
    assert first == run_files.backup_dir("run", "admm", {"b": 2, "a": 1})
    assert first.startswith(os.path.join("run", "backup", "admm_"))
    assert first != run_files.backup_dir("run", "admm", {"a": 1, "b": 3})
    assert first != run_files.backup_dir("run", "pretrain", {"a": 1, "b": 2})


def test_results_are_written_whole(tmp_path):
    path = str(tmp_path / "results.json")
    run_files.write_json_atomically(path, {"nonzeros": 12})
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == {"nonzeros": 12}
    assert os.listdir(tmp_path) == ["results.json"]


def test_saved_weights_load_back_and_leave_no_temporary_file(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = str(tmp_path / "dense.weights.h5")
    run_files.save_weights_atomically(model, path)
    assert os.listdir(tmp_path) == ["dense.weights.h5"]
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    other.load_weights(path)
    for saved, loaded in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(saved, loaded)


def test_provenance_names_the_command_commit_seed_and_time(monkeypatch):
    monkeypatch.setattr("sys.argv", ["lenet5_mnist.py", "--seed=2", "--config=a b.json"])
    run = run_files.provenance("recipes.lenet5_mnist", seed=2)
    assert run["command"] == "python -m recipes.lenet5_mnist --seed=2 '--config=a b.json'"
    assert run["seed"] == 2
    # The checkout the module really lives in (under Bazel, behind the runfiles symlinks).
    root = os.path.dirname(os.path.realpath(run_files.__file__))
    head = os.popen(f"git -C {root} rev-parse HEAD 2>/dev/null").read().strip()
    if head:
        assert run["commit"].rstrip("+") == head
    else:  # Not a git checkout.
        assert run["commit"] is None
    assert run["finished_utc"].endswith("+00:00")
