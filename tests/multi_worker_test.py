"""Acceptance: Z/U updates and phase switches under MultiWorkerMirroredStrategy.

Two worker processes on 127.0.0.1 (``TF_CONFIG``, one CPU thread each) train the small model of
``tests/multi_worker_worker.py`` through every phase (pruning ADMM, hard projection,
retraining, quantization ADMM, iterative locking, training of the shared values), each on its
half of every global batch of 16. Meanwhile this process trains the same model on the same
global batches without a strategy. The two workers must end bitwise equal, per-epoch logs
included. Against the single process, masks, level assignments, locked maps, phase, round and
step counts must be equal, and the float weights, Z, U, rho and levels and every epoch's logged
loss, accuracy, penalty, residuals and quantization state equal up to the summation order of
the all-reduce.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

import tf_admm
from tests import multi_worker_worker as worker

WORKER = os.path.abspath(worker.__file__)
REPO = os.path.dirname(os.path.dirname(WORKER))
TIMEOUT = 240.0  # Seconds for both workers to save their state (20-65 on 2 busy cores).
PORT_TAKEN = "Could not start gRPC server"

# Rounds of 2 steps, epochs of 2 steps: the phase and round at the end of each of the 8 epochs.
EXPECTED_PHASES = [
    tf_admm.Phase.ADMM,
    tf_admm.Phase.RETRAIN,  # Hard projection at the end of round 2.
    tf_admm.Phase.QUANT_ADMM,  # After 1 retraining round.
    tf_admm.Phase.QUANT_ADMM,
    tf_admm.Phase.QUANT_LOCK,  # Levels fixed, 50% locked at the end of round 5.
    tf_admm.Phase.QUANT_LOCK,  # 80%.
    tf_admm.Phase.QUANT_RETRAIN,  # 100% at the end of round 7.
    tf_admm.Phase.QUANT_RETRAIN,
]
EXPECTED_ROUNDS = [1, 2, 3, 4, 5, 6, 7, 7]

# Variables whose values are discrete: equal to the last bit whatever the summation order.
EXACT_SUFFIXES = ("_mask:0", "_locked:0", "_level_counts:0", "_assignment:0")


def _free_ports(count: int) -> list[int]:
    """Ports free on every interface (TensorFlow's gRPC server binds 0.0.0.0), held together."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


class _Cluster:
    """Two worker processes of one cluster, their logs and output files."""

    def __init__(self, directory: str):
        ports = _free_ports(2)
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        self.outputs = [os.path.join(directory, f"worker{i}.npz") for i in range(2)]
        self.logs = [os.path.join(directory, f"worker{i}.log") for i in range(2)]
        self.processes = []
        for index in range(2):
            env = dict(
                os.environ,
                TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
                PYTHONUNBUFFERED="1",
                TF_CPP_MIN_LOG_LEVEL="2",
            )
            with open(self.logs[index], "w") as log:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, WORKER, self.outputs[index]],
                        cwd=REPO,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

    def saved(self) -> list[bool]:
        return [os.path.exists(path) for path in self.outputs]

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()

    def report(self, problem: str) -> str:
        parts = [problem]
        for index, (process, log) in enumerate(zip(self.processes, self.logs)):
            parts.append(f"--- worker {index} (exit code {process.returncode}) ---\n{_read(log)}")
        return "\n".join(parts)


def _wait(cluster: _Cluster, deadline: float) -> str | None:
    """Waits until both workers saved their state; returns what went wrong, or None."""
    while not all(cluster.saved()):
        for process, saved in zip(cluster.processes, cluster.saved()):
            if process.poll() is not None and not saved:
                return "a worker exited without saving its state"
        if time.monotonic() > deadline:
            return f"the workers did not save their state within {TIMEOUT:.0f} s"
        time.sleep(0.2)
    return None


def _start_cluster(directory: str) -> tuple[_Cluster, float]:
    return _Cluster(directory), time.monotonic() + TIMEOUT


def _finish(cluster: _Cluster, deadline: float, directory: str) -> list[dict[str, np.ndarray]]:
    """Both workers' saved state; starts the cluster once more if a port was taken meanwhile.

    The workers are killed once both have saved: their shutdown is no part of the test.
    """
    for attempt in range(2):
        try:
            problem = _wait(cluster, deadline)
        finally:
            cluster.kill()
        if problem is None:
            states = []
            for path in cluster.outputs:
                with np.load(path) as saved:
                    states.append(dict(saved))
            return states
        port_taken = any(PORT_TAKEN in _read(log) for log in cluster.logs)
        if not port_taken or attempt == 1:
            raise AssertionError(cluster.report(problem))
        retry = os.path.join(directory, "retry")
        os.makedirs(retry, exist_ok=True)
        cluster, deadline = _start_cluster(retry)
    raise AssertionError("unreachable")


def _variables(state: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    names = [str(n) for n in state["names"]]
    return [(name, state[f"v{index:03d}"]) for index, name in enumerate(names)]


def test_two_workers_end_with_the_single_process_weights_masks_and_levels(tmp_path):
    cluster, deadline = _start_cluster(str(tmp_path))
    try:
        # The single-process reference trains here while the workers start up and train.
        model, history = worker.train()
        single = worker.state(model, history)
    except BaseException:
        cluster.kill()
        raise
    first, second = _finish(cluster, deadline, str(tmp_path))

    # The workers take the same decisions on the same values: bitwise equal.
    assert sorted(first) == sorted(second)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)

    # Every phase was run through, at the same steps as in one process, and every epoch's logs
    # (loss, residuals, rho, sparsity, locked fractions, quantization errors) agree with it.
    assert sorted(first) == sorted(single)
    for state in (first, single):
        assert [tf_admm.Phase(p) for p in state["history_admm_phase"]] == EXPECTED_PHASES
        assert list(state["history_admm_round"]) == EXPECTED_ROUNDS
        assert int(state["optimizer_iterations"]) == worker.EPOCHS * worker.STEPS_PER_EPOCH
    for key in (k for k in single if k.startswith("history_")):
        np.testing.assert_allclose(first[key], single[key], rtol=1e-5, atol=1e-6, err_msg=key)

    expected = _variables(single)
    received = _variables(first)
    assert [name for name, _ in received] == [name for name, _ in expected]
    for (name, want), (_, got) in zip(expected, received):
        if name.endswith(EXACT_SUFFIXES) or not np.issubdtype(want.dtype, np.floating):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)

    # The compression itself happened: exact nonzero counts, every kept weight locked.
    values = dict(received)
    for layer, weight, keep in (
        ("conv", "kernel", 27),
        ("depthwise", "depthwise_kernel", 27),
        ("fc1", "kernel", 461),
        ("fc2", "kernel", 72),
    ):
        prefix = f"admm_{layer}/{weight}"
        mask = values[f"{prefix}_mask:0"]
        assert int(mask.sum()) == keep, prefix
        locked = values.get(f"{prefix}_locked:0")
        if locked is not None:
            np.testing.assert_array_equal(locked * mask, mask, err_msg=prefix)
