"""Acceptance: the LeNet-5 recipe, killed mid-ADMM and restarted, ends as an uninterrupted run.

The recipe runs in subprocesses (``python -m recipes.lenet5_mnist``) on a few batches of real
MNIST with ``--deterministic``; one is killed with SIGKILL just after ADMM round 2 of 4 and
restarted with the same ``--model_dir``, the other runs through. The final weights must agree
to the last bit. Pretraining's resume and the atomic dense checkpoint are tested in-process.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from recipes import data, lenet5_mnist
from tf_admm.compat import keras, tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Ye et al.'s 71x budgets with 4 rounds of one epoch: enough to kill in the middle.
CONFIG = {
    "rules": [
        {"name": "conv1", "sparsity": 0.8},
        {"name": "conv2", "sparsity": 0.92},
        {"name": "fc1", "sparsity": 0.991},
        {"name": "fc2", "sparsity": 0.93},
    ],
    "rho": {"initial": 0.003, "multiplier": 1.6, "maximum": 1.0},
    "update_every": 1,
    "update_unit": "epoch",
    "admm_rounds": 4,
}


def _start(config, model_dir, data_dir, log_path):
    command = [
        sys.executable,
        "-m",
        "recipes.lenet5_mnist",
        f"--config={config}",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--pretrain_epochs=1",
        "--retrain_epochs=2",
        "--train_batches=6",
        "--export=false",
        "--verbose=0",
        "--deterministic",
    ]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    log = open(log_path, "w")  # The child writes to it; closed in _wait.
    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    process.log = log
    return process


def _wait(process, timeout=300):
    """Waits for ``process`` (killing it after ``timeout`` seconds); returns its exit code."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    if process.poll() is None:
        process.kill()
        process.wait()
    process.log.close()
    return process.returncode


def _read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _rounds(log):
    return [int(n) for n in re.findall(r"Round (\d+)/4 \(", log)]


def _stripped_weights(model_dir):
    model = keras.models.load_model(os.path.join(model_dir, "lenet5_compressed.keras"))
    return {w.name: w.numpy() for w in model.weights}


def test_recipe_killed_mid_admm_resumes_to_the_uninterrupted_result(tmp_path, mnist_data_dir):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(CONFIG))
    straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
    straight_log, killed_log, resumed_log = (tmp_path / f"{n}.log" for n in ("s", "k", "r"))
    started = []

    def start(model_dir, log_path):
        started.append(_start(config, model_dir, mnist_data_dir, log_path))
        return started[-1]

    try:
        # The uninterrupted run goes alongside the one to be killed.
        straight = start(straight_dir, straight_log)
        killed = start(killed_dir, killed_log)
        deadline = time.monotonic() + 300
        while "Round 2/4" not in _read(killed_log):
            assert killed.poll() is None, _read(killed_log)[-3000:]
            assert time.monotonic() < deadline, "no ADMM round 2 after 300 s"
            time.sleep(0.02)
        killed.send_signal(signal.SIGKILL)
        assert _wait(killed) == -signal.SIGKILL
        assert not (killed_dir / "results.json").exists()
        assert (killed_dir / "backup").is_dir()

        resumed = start(killed_dir, resumed_log)
        assert _wait(resumed) == 0, _read(resumed_log)[-3000:]
        assert _wait(straight) == 0, _read(straight_log)[-3000:]
    finally:
        for process in started:  # Only after a failure is one still running.
            _wait(process, timeout=0)

    log = _read(resumed_log)
    assert "Loading cached dense model" in log
    done = int(re.search(r"Resuming ADMM from its backup after (\d+) epoch", log).group(1))
    assert done in (1, 2)  # The backup of round 1, or of round 2 if it was written in time.
    # No round run twice, none skipped.
    assert _rounds(_read(killed_log))[:done] == list(range(1, done + 1))
    assert _rounds(log) == list(range(done + 1, 5))
    assert _rounds(_read(straight_log)) == [1, 2, 3, 4]

    results = {
        n: json.loads((d / "results.json").read_text())
        for n, d in (("straight", straight_dir), ("resumed", killed_dir))
    }
    assert results["resumed"]["resumed_after_epochs"] == {"ADMM": done}
    assert results["straight"]["resumed_after_epochs"] == {}
    for key in ("dense_accuracy", "pruned_accuracy", "layers", "nonzeros"):
        assert results["resumed"][key] == results["straight"][key], key
    straight_weights, resumed_weights = (_stripped_weights(d) for d in (straight_dir, killed_dir))
    assert straight_weights.keys() == resumed_weights.keys()
    for name, value in straight_weights.items():
        np.testing.assert_array_equal(resumed_weights[name], value, err_msg=name)
    assert not os.listdir(killed_dir / "backup"), "a finished run leaves no backup"


def _settings(model_dir, data_dir, **overrides):
    os.makedirs(model_dir)  # As run() does.
    values = dict(
        spec=lenet5_mnist.tf_admm.Spec.from_dict(CONFIG),
        model_dir=str(model_dir),
        data_dir=data_dir,
        pretrain_epochs=3,
        train_batches=2,
        batch_size=32,
        verbose=0,
    )
    values.update(overrides)
    return lenet5_mnist.Settings(**values)


def _tiny_test_set(arrays):
    images, labels = arrays
    return tf.data.Dataset.from_tensor_slices((tf.cast(images, tf.float32) / 255, labels)).batch(64)


def test_pretraining_crashed_at_an_epoch_resumes_to_the_uninterrupted_weights(
    tmp_path, mnist_data_dir, monkeypatch
):
    straight_settings = _settings(tmp_path / "straight", mnist_data_dir)
    arrays = lenet5_mnist._train_arrays(straight_settings)
    test_ds = _tiny_test_set(arrays)
    straight, _ = lenet5_mnist._pretrain(straight_settings, arrays, test_ds, {})

    settings = _settings(tmp_path / "crashed", mnist_data_dir)
    real_step_decay = lenet5_mnist._step_decay

    def crashing_step_decay(base, epochs, start=0):
        schedule = real_step_decay(base, epochs, start)

        def crash_at_epoch_2(epoch, lr):
            if epoch == 2:
                raise KeyboardInterrupt("crash at epoch 2")
            return schedule(epoch, lr)

        return crash_at_epoch_2

    monkeypatch.setattr(lenet5_mnist, "_step_decay", crashing_step_decay)
    with pytest.raises(KeyboardInterrupt):
        lenet5_mnist._pretrain(settings, arrays, test_ds, {})
    names = os.listdir(settings.model_dir)
    assert names == ["backup"], "no dense checkpoint before pretraining has finished"
    monkeypatch.undo()

    resumed: dict[str, int] = {}
    model, _ = lenet5_mnist._pretrain(settings, arrays, test_ds, resumed)
    assert resumed == {"pretraining": 2}
    for a, b in zip(straight.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    assert sorted(os.listdir(settings.model_dir)) == ["backup", "dense_e3_s0_b2.weights.h5"]
    assert not os.listdir(os.path.join(settings.model_dir, "backup"))


def test_dense_checkpoint_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
    path = str(tmp_path / "dense.weights.h5")
    lenet5_mnist._save_weights_atomically(model, path)
    saved = [w.numpy() for w in model.weights]
    model.get_layer("dense").kernel.assign(np.ones((3, 2), np.float32))

    def save_half_then_die(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"\x89HDF\r\n half a file")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save_weights", save_half_then_die)
    with pytest.raises(OSError, match="disk full"):
        lenet5_mnist._save_weights_atomically(model, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["dense.weights.h5"], "the temporary file is cleaned up"
    model.load_weights(path)
    for before, after in zip(saved, model.weights):
        np.testing.assert_array_equal(before, after.numpy())


def test_epoch_keyed_batches_depend_on_seed_and_epoch_only():
    images = tf.reshape(tf.range(10 * 4, dtype=tf.int32) % 256, (10, 2, 2))
    images = tf.cast(images, tf.uint8)
    labels = tf.range(10, dtype=tf.int64)
    epoch = tf.Variable(0, dtype=tf.int64)

    def order(seed):
        dataset = data.epoch_keyed_batches(images, labels, 4, seed, lambda: epoch + 0)
        assert len(dataset) == 3
        return [int(v) for _, batch in dataset for v in batch]

    first = order(seed=3)
    assert sorted(first) == list(range(10))
    assert order(seed=3) == first  # Iterating again: same epoch, same order.
    epoch.assign(1)
    second = order(seed=3)
    assert second != first
    epoch.assign(0)
    assert order(seed=3) == first  # Epoch 0 again (as after a restart): epoch 0's order.
    assert order(seed=4) != first
