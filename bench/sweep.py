"""One point of the accuracy-against-ratio comparison: LeNet-5, one ratio, one arm, one seed.

An *arm* is a library and a per-layer allocation, written ``library:allocation``:

* ``tf_admm:lamp``: tf-admm's ADMM with the LAMP split (its default allocation);
* ``tfmot:lamp``: tfmot's ``prune_low_magnitude`` with the very same kept counts (the same
  allocation for both: the optimizer alone differs);
* ``tfmot:uniform``: tfmot as its guides use it, one sparsity for every layer;
* ``global_magnitude`` is accepted too, for either library;
* ``tf_admm:default``: what a user gets from ``admm_wrap(model, Spec(target_ratio=R))`` with
  nothing else: LAMP inside ``admm_wrap`` and the automatic schedule (100 Z/U rounds in the
  first 60% of the fit, rho from 3e-4 x1.042); the protocol's ``rho``, ``rho_multiplier``,
  ``update_every`` and ``prune_epochs`` are not given to the library (the learning rates are).

Every arm of one seed starts from ONE dense LeNet-5 (trained once with a cosine learning rate
and cached), sees the same batches, and gets the same epochs and learning rates:

* ``prune_epochs`` of pruning: tf-admm's ADMM with Z/U every ``update_every`` steps and rho
  from ``rho`` growing by ``rho_multiplier`` per update, then the hard projection; tfmot's
  ``PolynomialDecay`` from 0 to the final sparsity over the same steps (a mask update every
  ``update_every`` steps at most, the last on the ramp's last step). Adam at
  ``learning_rate``.
* ``epochs - prune_epochs`` of masked retraining for both, the learning rate following a
  cosine from ``learning_rate`` to ``final_learning_rate`` step by step.

The last ``validation_examples`` training images are held out: choices are made on their
accuracy (``validation``); the test set only reports (``test``). The allocation is computed
from the dense kernels (:func:`tf_admm.allocation.allocate`) and handed to both libraries as
exact kept counts.

Each point is written to its own JSON file under ``<work_dir>/points`` and is not run again
while that file exists with the same protocol, so a long sweep that is stopped resumes where it
was. ``python -m bench.frontier`` runs a grid of points and writes their records into one
document; :mod:`bench.comparisons` computes the comparisons from the records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

import tf_admm
from bench import common
from bench.common import tfmot
from recipes import data, distillation, models, run_files, schedules
from tf_admm.compat import keras, tf

__all__ = [
    "accuracy",
    "batches",
    "ALLOCATIONS",
    "DATASETS",
    "LIBRARIES",
    "Arm",
    "Protocol",
    "allocation_for",
    "cosine_rate",
    "dense_model",
    "load_arrays",
    "point_path",
    "read_point",
    "run_point",
]

LIBRARIES = ("tf_admm", "tfmot")
ALLOCATIONS = ("lamp", "uniform", "global_magnitude", "default")
DATASETS = {"mnist": data.prepare_mnist, "fashion_mnist": data.prepare_fashion_mnist}
LAYERS = ("conv1", "conv2", "fc1", "fc2")


@dataclasses.dataclass(frozen=True)
class Arm:
    """A library and the allocation it is given (``"tf_admm:lamp"``)."""

    library: str
    allocation: str

    def __post_init__(self):
        if self.library not in LIBRARIES:
            raise ValueError(
                f"Expected library in {list(LIBRARIES)}; received: library={self.library!r}"
            )
        if self.allocation not in ALLOCATIONS:
            raise ValueError(
                f"Expected allocation in {list(ALLOCATIONS)}; "
                f"received: allocation={self.allocation!r}"
            )
        if self.allocation == "default" and self.library != "tf_admm":
            raise ValueError(
                "Expected the 'default' arm with library 'tf_admm' (tf-admm's own defaults); "
                f"received: {self.library}:default"
            )

    @classmethod
    def parse(cls, text: str) -> Arm:
        library, sep, allocation = text.partition(":")
        if not sep:
            raise ValueError(
                f"Expected an arm 'library:allocation' (e.g. 'tf_admm:lamp'); received: {text!r}"
            )
        return cls(library, allocation)

    def __str__(self) -> str:
        return f"{self.library}:{self.allocation}"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """The training protocol every arm shares (what makes two points comparable)."""

    dataset: str = "mnist"
    epochs: int = 40
    prune_epochs: int = 24
    pretrain_epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-5
    update_every: int = 100
    rho: float = 3e-4
    rho_multiplier: float = 1.042
    validation_examples: int = 5_000
    train_examples: int | None = None  # Smoke runs: only the first N training images.
    # Knowledge distillation from the point's own dense model during pruning and retraining
    # (recipes.distillation; 0: labels only). Added after the first points were recorded: at
    # 0 these fields are left out of the protocol's identity, so those points still match.
    distill_weight: float = 0.0
    distill_temperature: float = 4.0

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(
                f"Expected dataset in {sorted(DATASETS)}; received: dataset={self.dataset!r}"
            )
        if not 1 <= self.prune_epochs < self.epochs:
            raise ValueError(
                "Expected 1 <= prune_epochs < epochs; received: "
                f"prune_epochs={self.prune_epochs}, epochs={self.epochs}"
            )
        for name in ("pretrain_epochs", "batch_size", "update_every", "validation_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"Expected {name} >= 1; received: {name}={getattr(self, name)}")
        distillation.check_settings(self.distill_weight, self.distill_temperature)
        if not (self.rho > 0 and self.rho_multiplier >= 1):
            raise ValueError(
                "Expected rho > 0 and rho_multiplier >= 1; received: "
                f"rho={self.rho}, rho_multiplier={self.rho_multiplier}"
            )

    def identity(self) -> dict[str, Any]:
        """The fields that tell protocols apart (every field, except the distillation fields
        when there is no distillation: points recorded before they existed still match)."""
        fields = dataclasses.asdict(self)
        if self.distill_weight == 0:
            del fields["distill_weight"], fields["distill_temperature"]
        return fields

    def key(self) -> str:
        """A short hash of :meth:`identity`: points of different protocols never mix."""
        text = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------------------------
# Data, dense model, learning rate
# ----------------------------------------------------------------------------------------------


def load_arrays(protocol: Protocol, data_dir: str | None = None):
    """``(train, validation, test)`` as ``(float images in [0, 1], labels)`` pairs.

    The validation split is the last ``validation_examples`` of the training set, never
    trained on.
    """
    directory = DATASETS[protocol.dataset](data_dir)
    splits = {}
    for split in ("train", "test"):
        examples = tfds.load(
            protocol.dataset, split=split, data_dir=directory, as_supervised=True, batch_size=-1
        )
        images, labels = tfds.as_numpy(examples)
        splits[split] = (images.astype(np.float32) / 255.0, labels.astype(np.int64))
    (x, y), test = splits["train"], splits["test"]
    held = protocol.validation_examples
    train = (x[:-held], y[:-held])
    if protocol.train_examples:
        train = (train[0][: protocol.train_examples], train[1][: protocol.train_examples])
    return train, (x[-held:], y[-held:]), test


def batches(arrays, batch_size: int, seed: int) -> tf.data.Dataset:
    """``(images, labels)`` arrays as shuffled batches (the same order for the same seed)."""
    ds = tf.data.Dataset.from_tensor_slices(arrays).shuffle(len(arrays[0]), seed=seed)
    return ds.batch(batch_size).prefetch(4)


def steps_per_epoch(protocol: Protocol, train) -> int:
    return math.ceil(len(train[0]) / protocol.batch_size)


def accuracy(model: keras.Model, arrays) -> float:
    logits = model.predict(arrays[0], batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == arrays[1]))


def cosine_rate(step: int, start: int, steps: int, high: float, low: float) -> float:
    """``high`` before ``start``, then a cosine from ``high`` to ``low`` over ``steps`` steps
    (the recipes' :func:`recipes.schedules.cosine_decay`, counted in steps)."""
    return schedules.cosine_decay(high, steps, start=start, final=low)(step, None)


class _StepLearningRate(keras.callbacks.Callback):
    """Sets the learning rate before every step from the number of steps taken in this fit."""

    def __init__(self, rate):
        super().__init__()
        self.rate, self.step = rate, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate(self.step))
        self.step += 1


def _compile(model: keras.Model, protocol: Protocol, distill: bool = False) -> keras.Model:
    if distill and protocol.distill_weight > 0:
        loss = distillation.DistillationLoss(protocol.distill_weight, protocol.distill_temperature)
        metrics = [distillation.LabelAccuracy()]
    else:
        loss, metrics = common.classification_loss(), ["accuracy"]
    model.compile(keras.optimizers.Adam(protocol.learning_rate), loss, metrics)
    return model


def _with_teacher(protocol: Protocol, dense: keras.Model, train):
    """``train`` with label rows ``[label, dense logits...]`` when the protocol distills."""
    if protocol.distill_weight == 0:
        return train
    rows = distillation.targets(dense, train[0], train[1], batch_size=1000, divisor=1.0)
    return train[0], rows.numpy()


def dense_model(protocol: Protocol, seed: int, train, work_dir: str, verbose: int = 0):
    """The dense LeNet-5 of ``seed`` (cosine learning rate over ``pretrain_epochs``), trained
    once and cached in ``work_dir``."""
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(
        work_dir,
        f"dense_{protocol.dataset}_n{len(train[0])}_e{protocol.pretrain_epochs}"
        f"_b{protocol.batch_size}_s{seed}.weights.h5",
    )
    keras.utils.set_random_seed(seed)
    model = models.lenet5()
    if os.path.exists(path):
        model.load_weights(path)
        return model
    _compile(model, protocol)
    steps = steps_per_epoch(protocol, train) * protocol.pretrain_epochs
    model.fit(
        batches(train, protocol.batch_size, seed),
        epochs=protocol.pretrain_epochs,
        verbose=verbose,
        callbacks=[
            _StepLearningRate(lambda s: cosine_rate(s, 0, steps, protocol.learning_rate, 0.0))
        ],
    )
    model.save_weights(path + ".tmp.weights.h5")
    os.replace(path + ".tmp.weights.h5", path)
    return model


def _fresh_dense(protocol, seed, train, work_dir) -> keras.Model:
    return dense_model(protocol, seed, train, work_dir)


def kernels(model: keras.Model) -> dict[str, np.ndarray]:
    return {name: model.get_layer(name).kernel.numpy() for name in LAYERS}


def allocation_for(dense: keras.Model, ratio: float, method: str) -> dict[str, int]:
    """Kept weights per layer for ``ratio`` over LeNet-5's four kernels, split by ``method``
    (``"default"``: tf-admm's default, LAMP)."""
    weights = kernels(dense)
    total = sum(w.size for w in weights.values())
    keep = tf_admm.allocation.keep_for_ratio(total, ratio, layers=len(weights))
    return tf_admm.allocation.allocate(weights, keep, "lamp" if method == "default" else method)


# ----------------------------------------------------------------------------------------------
# The two libraries
# ----------------------------------------------------------------------------------------------


def _ramp_frequency(steps: int, at_most: int) -> int:
    """Largest divisor of ``steps`` up to ``at_most``, so that the last mask update is on time."""
    return max(d for d in range(1, min(steps, at_most) + 1) if steps % d == 0)


def _fit(model, protocol: Protocol, train, seed: int, callbacks, verbose: int):
    steps = steps_per_epoch(protocol, train)
    prune_steps = protocol.prune_epochs * steps
    retrain_steps = (protocol.epochs - protocol.prune_epochs) * steps
    rate = _StepLearningRate(
        lambda s: cosine_rate(
            s, prune_steps, retrain_steps, protocol.learning_rate, protocol.final_learning_rate
        )
    )
    return model.fit(
        batches(train, protocol.batch_size, seed + 1),
        epochs=protocol.epochs,
        verbose=verbose,
        callbacks=[*callbacks, rate],
    )


def _tf_admm(protocol: Protocol, dense, kept: Mapping[str, int], train, seed, verbose):
    steps = steps_per_epoch(protocol, train)
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name=name, keep=count) for name, count in kept.items()],
        rho=tf_admm.RhoSchedule(initial=protocol.rho, multiplier=protocol.rho_multiplier),
        update_every=protocol.update_every,
        update_unit="step",
        admm_rounds=max(1, protocol.prune_epochs * steps // protocol.update_every),
    )
    return _train_tf_admm(protocol, dense, spec, train, seed, verbose)


def _tf_admm_defaults(protocol: Protocol, dense, kept: Mapping[str, int], train, seed, verbose):
    """``Spec(target_ratio=...)`` alone; ``kept`` (LAMP's split) must be what admm_wrap picks."""
    total = sum(w.size for w in kernels(dense).values())
    spec = tf_admm.Spec(target_ratio=total / sum(kept.values()))
    return _train_tf_admm(protocol, dense, spec, train, seed, verbose, expected=kept)


def _train_tf_admm(protocol, dense, spec, train, seed, verbose, expected=None):
    wrapped = tf_admm.admm_wrap(dense, spec)
    if expected is not None:
        chosen = {key.split("/")[0]: count for key, count in wrapped.spec.allocated.items()}
        if chosen != dict(expected):
            raise RuntimeError(f"Expected admm_wrap to keep {expected}; received: {chosen}")
    model = _compile(wrapped, protocol, distill=True)
    _fit(model, protocol, train, seed, tf_admm.callbacks(), verbose)
    if model.phase is not tf_admm.Phase.RETRAIN:
        raise RuntimeError(f"Expected tf-admm to reach retraining; received: phase={model.phase}")
    return tf_admm.strip(model)


def _tfmot(protocol: Protocol, dense, kept: Mapping[str, int], train, seed, verbose):
    ramp = protocol.prune_epochs * steps_per_epoch(protocol, train)
    frequency = _ramp_frequency(ramp, protocol.update_every)
    sizes = {name: w.size for name, w in kernels(dense).items()}

    def schedule(final_sparsity: float):
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=final_sparsity,
            begin_step=0,
            end_step=ramp,
            frequency=frequency,
        )

    sparsities = {name: 1.0 - kept[name] / sizes[name] for name in kept}
    model = _compile(common.tfmot_prune(dense, sparsities, schedule), protocol, distill=True)
    _fit(model, protocol, train, seed, [tfmot.sparsity.keras.UpdatePruningStep()], verbose)
    return common.tfmot_strip(model)


# ----------------------------------------------------------------------------------------------
# One point
# ----------------------------------------------------------------------------------------------


def point_path(work_dir: str, protocol: Protocol, seed: int, arm: Arm, ratio: float) -> str:
    name = f"{protocol.dataset}_{protocol.key()}_s{seed}_{arm.library}_{arm.allocation}"
    return os.path.join(work_dir, "points", f"{name}_{ratio:g}x.json")


def read_point(
    protocol: Protocol, seed: int, arm: Arm, ratio: float, work_dir: str
) -> dict[str, Any] | None:
    """The cached record of a point, or None when there is none for this very protocol."""
    path = point_path(work_dir, protocol, seed, arm, ratio)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    return record if record.get("protocol") == protocol.identity() else None


def run_point(
    protocol: Protocol,
    seed: int,
    arm: Arm,
    ratio: float,
    *,
    work_dir: str,
    arrays=None,
    data_dir: str | None = None,
    verbose: int = 0,
) -> dict[str, Any]:
    """Runs (or reads back) one point; returns its record, also written to :func:`point_path`.

    Args:
      protocol: the shared protocol.
      seed: seed of the dense model, the batches and the compression run.
      arm: library and allocation.
      ratio: target ratio over LeNet-5's four kernels (all weights / kept weights).
      work_dir: where the dense checkpoints and the points are kept.
      arrays: ``(train, validation, test)`` (default: :func:`load_arrays`).
      data_dir: TFDS data directory for :func:`load_arrays`.
      verbose: Keras fit verbosity.
    """
    cached = read_point(protocol, seed, arm, ratio, work_dir)
    if cached is not None:
        return cached
    path = point_path(work_dir, protocol, seed, arm, ratio)
    train, validation, test = arrays or load_arrays(protocol, data_dir)
    dense = dense_model(protocol, seed, train, work_dir, verbose)
    kept = allocation_for(dense, ratio, arm.allocation)
    dense_scores = {"validation": accuracy(dense, validation), "test": accuracy(dense, test)}
    keras.utils.set_random_seed(seed + 100)
    start = time.perf_counter()
    load_start = common.load_average()
    compress = {
        "tf_admm": _tf_admm_defaults if arm.allocation == "default" else _tf_admm,
        "tfmot": _tfmot,
    }[arm.library]
    plain = compress(
        protocol,
        _fresh_dense(protocol, seed, train, work_dir),
        kept,
        _with_teacher(protocol, dense, train),
        seed,
        verbose,
    )
    seconds = time.perf_counter() - start
    nonzeros = {name: int(np.count_nonzero(w)) for name, w in kernels(plain).items()}
    weights = sum(w.size for w in kernels(plain).values())
    record = {
        "protocol": protocol.identity(),
        "seed": seed,
        "arm": str(arm),
        "library": arm.library,
        "allocation": arm.allocation,
        "target_ratio": float(ratio),
        "kept": kept,
        "nonzeros": nonzeros,
        "weights": weights,
        "achieved_ratio": weights / max(1, sum(nonzeros.values())),
        "dense": dense_scores,
        "validation": accuracy(plain, validation),
        "test": accuracy(plain, test),
        "seconds": seconds,
        "load_average": {"start": load_start, "end": common.load_average()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "provenance": run_files.provenance("bench.frontier", seed),
        "machine": {k: v for k, v in common.machine_info().items() if k != "note"},
    }
    common.write_json(path + ".tmp", record)
    os.replace(path + ".tmp", path)
    keras.backend.clear_session()
    return record


if __name__ == "__main__":
    raise SystemExit(
        "bench.sweep is the point library; run a grid of points with python -m bench.frontier "
        "(the same flags: --dataset, --work_dir, --seeds, --ratios, --arms, --epochs, ...; "
        "--tolerance is now --tolerance_points). It reads the points bench.sweep cached."
    )
