"""One worker of ``multi_worker_test``: a full ADMM run under MultiWorkerMirroredStrategy.

Run as ``python tests/multi_worker_worker.py OUT.npz`` with ``TF_CONFIG`` naming this worker;
it trains the small wrapped model of :func:`train` on its half of every global batch and saves
the final state (:func:`state`) to ``OUT.npz``. The test runs :func:`train` without a strategy
in its own process for the single-process reference.

Every worker runs TensorFlow's compute on one thread, so that two of them fit on two cores, and
prints how long each stage took to its log.
"""

from __future__ import annotations

import os
import sys
import time

_START = time.monotonic()

if __package__ in (None, ""):  # Run by path: make the repository importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import tf_admm  # noqa: E402
from tf_admm.compat import tf  # noqa: E402
from tf_admm.testing import compile_for_classification, small_convnet, small_data  # noqa: E402

GLOBAL_BATCH = 16
STEPS_PER_EPOCH = 2
EPOCHS = 8
SAMPLES = 64  # 16 steps of 16 samples: four passes, always in the same order.

# Every phase in 16 steps, a round every 2 steps: pruning ADMM (rounds 1-2, hard projection at
# the end of round 2), retraining (3), quantization ADMM (4-5), locking 50% and 80% (5, 6), all
# locked (7, step 14) and 2 steps of retraining the shared values. Each kind of quantized weight
# is here: k-means centroids that train (conv), pruning only (depthwise), per-channel uniform
# levels (fc1) and power-of-two levels without pruning (fc2).
SPEC = tf_admm.Spec(
    rules=(
        tf_admm.Rule(name="conv", sparsity=0.5, clusters=4),
        tf_admm.Rule(name="depthwise", sparsity=0.5),
        tf_admm.Rule(name="fc1", sparsity=0.8, bits=3, per_channel=True),
        tf_admm.Rule(name="fc2", bits=2, scheme="power_of_two"),
    ),
    rho=tf_admm.RhoSchedule(0.05, 1.5),
    update_every=2,
    update_unit="step",
    admm_rounds=2,
    retrain_rounds=1,
    quant_admm_rounds=2,
    quant_fractions=(0.5, 0.8, 1.0),
    centroid_update="mean",
)


def limit_threads() -> None:
    """One thread per worker (must run before TensorFlow starts its runtime)."""
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)


def _model() -> tf_admm.AdmmModel:
    """The wrapped small convnet with initial weights from a NumPy seed (same in every process)."""
    model = small_convnet()
    rng = np.random.default_rng(0)
    model.set_weights(
        [rng.normal(0.0, 0.3, size=w.shape).astype(np.float32) for w in model.get_weights()]
    )
    return compile_for_classification(tf_admm.admm_wrap(model, SPEC))


def _global_batches() -> tf.data.Dataset:
    x, y = small_data(SAMPLES, seed=0)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH).repeat()


def _replica_batches(context: tf.distribute.InputContext) -> tf.data.Dataset:
    """Input pipeline ``i`` of ``n`` gets rows ``[i * b, (i + 1) * b)`` of every global batch.

    Sharding is explicit, so the global batches are exactly those of :func:`_global_batches`.
    """
    per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH)
    count, index = context.num_input_pipelines, context.input_pipeline_id
    assert per_replica * count == GLOBAL_BATCH, (per_replica, count)
    x, y = small_data(SAMPLES, seed=0)
    rows = np.arange(SAMPLES).reshape(-1, count, per_replica)[:, index].ravel()
    return tf.data.Dataset.from_tensor_slices((x[rows], y[rows])).batch(per_replica).repeat()


def train(strategy: tf.distribute.Strategy | None = None) -> tuple[tf_admm.AdmmModel, dict]:
    """Trains through every phase; returns the model and its per-epoch history.

    Args:
      strategy: a ``MultiWorkerMirroredStrategy`` (one replica per worker), or None for one
        process on the default strategy with the same global batches.
    """
    if strategy is None:
        model, data = _model(), _global_batches()
    else:
        with strategy.scope():
            model = _model()
        data = strategy.distribute_datasets_from_function(_replica_batches)
    history = model.fit(
        data,
        epochs=EPOCHS,
        steps_per_epoch=STEPS_PER_EPOCH,
        verbose=0,
        callbacks=tf_admm.callbacks(),
    )
    return model, history.history


def state(model: tf_admm.AdmmModel, history: dict) -> dict[str, np.ndarray]:
    """Every model variable (weights and ADMM state, by position) and the per-epoch logs.

    The logs hold, besides loss and accuracy, what each worker computes from its own copy of
    the ADMM state at every epoch end (phase, round, residuals, rho, sparsity, locked fraction
    and quantization error of each layer), so a worker that strays for a while shows there.
    """
    result = {"names": np.array([w.name for w in model.weights])}
    for index, variable in enumerate(model.weights):
        result[f"v{index:03d}"] = variable.numpy()
    for key, values in history.items():
        result[f"history_{key}"] = np.asarray(values)
    result["optimizer_iterations"] = np.asarray(model.optimizer.iterations.numpy())
    return result


def _log(message: str) -> None:
    print(f"[{time.monotonic() - _START:6.1f} s] {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(f"usage: {argv[0]} OUT.npz (with TF_CONFIG set)")
    limit_threads()
    # No tf.data autotuning thread: it sleeps for up to a minute between rounds and the
    # destructor of fit's input iterator waits for it, so one worker could finish fit many
    # seconds after the other, which by then has shut down.
    tf.data.experimental.enable_debug_mode()
    _log("TensorFlow configured")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if strategy.num_replicas_in_sync != 2:
        raise SystemExit(f"Expected 2 replicas; received: {strategy.num_replicas_in_sync}")
    _log("strategy ready")
    model, history = train(strategy)
    _log("trained")
    np.savez(argv[1] + ".tmp.npz", **state(model, history))
    os.replace(argv[1] + ".tmp.npz", argv[1])  # The test sees a complete file or none.
    _log("saved")


if __name__ == "__main__":
    main(sys.argv)
