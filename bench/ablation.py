"""LeNet-5 at one fixed budget: tf-admm's API variants beside a plain-TensorFlow ADMM loop.

Issue 13 asked why tf-admm's public API trailed a plain-TF ADMM script at 167x. This benchmark
runs both on the same dense model, data split and schedule (ADMM with Z/U every ``every`` steps
and rho growing by ``rho_mult`` per update for ``admm_epochs``, then masked retraining with a
cosine learning rate from 1e-3 to 1e-5 for ``retrain_epochs``; Adam, batch 128):

* ``api``: ``admm_wrap`` + one ``fit``; ``--allocation`` ``hand`` (``--kept``) or one
  ``target_ratio`` split by ``lamp``, ``global_magnitude``, ``uniform`` or ``sensitivity``;
* ``api_fresh``: the same, with the optimizer's state (moments and step count) zeroed at the
  hard projection, as a fresh Adam would start;
* ``plain``: a hand-written loop (penalty in the loss, top-k Z-step, a new Adam and the mask
  re-applied after every step in retraining).

MNIST's last 5,000 training images are the validation split that choices are made on; the test
set only reports. Writes one JSON file per run to ``--out``.

Usage:
  python -m bench.ablation --variant=api --allocation=lamp --seed=0
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np
from absl import app, flags

import tf_admm
from bench import common, sweep
from recipes import models
from tf_admm.compat import keras, tf

SIZES = {"conv1": 500, "conv2": 25_000, "fc1": 400_000, "fc2": 5_000}
VALIDATION = 5_000
VARIANTS = ("api", "api_fresh", "plain")
ALLOCATIONS = ("hand", "lamp", "global_magnitude", "uniform", "sensitivity")


@dataclasses.dataclass(frozen=True)
class Settings:
    variant: str = "api"
    allocation: str = "hand"
    seed: int = 0
    kept: tuple[int, ...] = (131, 1_311, 874, 262)  # Issue 13's 167x: 0.30/0.06/0.0025/0.06.
    target_ratio: float | None = None  # Default: the ratio of ``kept``.
    admm_epochs: int = 24
    retrain_epochs: int = 16
    pretrain_epochs: int = 12
    rho0: float = 3e-4
    rho_mult: float = 1.042
    every: int = 100
    batch_size: int = 128
    cache_dir: str = "runs/ablation"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"Expected variant in {VARIANTS}; received: {self.variant!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"Expected allocation in {ALLOCATIONS}; received: {self.allocation!r}")
        if self.variant == "plain" and self.allocation != "hand":
            raise ValueError("Expected allocation='hand' with variant='plain'")


def mnist_arrays(data_dir: str | None = None):
    """(train, validation, test) as (float images, labels) pairs; validation is MNIST's last
    5,000 training images (:func:`bench.sweep.load_arrays`)."""
    return sweep.load_arrays(sweep.Protocol(validation_examples=VALIDATION), data_dir)


def _batches(arrays, settings: Settings, seed: int) -> tf.data.Dataset:
    return sweep.batches(arrays, settings.batch_size, seed)


accuracy = sweep.accuracy


def cosine(step: int, admm_steps: int, retrain_steps: int) -> float:
    """1e-3 through ADMM, then cosine from 1e-3 to 1e-5 over the retraining steps."""
    return sweep.cosine_rate(step, admm_steps, retrain_steps, 1e-3, 1e-5)


def dense_model(settings: Settings, train, model_fn=models.lenet5) -> keras.Model:
    """The dense model of ``settings.seed``, trained (cosine from 1e-3) or loaded from cache."""
    os.makedirs(settings.cache_dir, exist_ok=True)
    path = os.path.join(
        settings.cache_dir,
        f"dense_n{len(train[0])}_e{settings.pretrain_epochs}_s{settings.seed}.weights.h5",
    )
    keras.utils.set_random_seed(settings.seed)
    model = model_fn()
    if os.path.exists(path):
        model.load_weights(path)
        return model
    model.compile(keras.optimizers.Adam(1e-3), common.classification_loss(), ["accuracy"])
    epochs = settings.pretrain_epochs
    model.fit(
        _batches(train, settings, settings.seed),
        epochs=epochs,
        verbose=2,
        callbacks=[
            keras.callbacks.LearningRateScheduler(
                lambda e, lr: 1e-3 * 0.5 * (1 + math.cos(math.pi * e / epochs))
            )
        ],
    )
    model.save_weights(path)
    return model


class _StepLearningRate(keras.callbacks.Callback):
    def __init__(self, admm_steps: int, retrain_steps: int):
        super().__init__()
        self.admm_steps, self.retrain_steps, self.step = admm_steps, retrain_steps, 0

    def on_train_batch_begin(self, batch, logs=None):
        rate = cosine(self.step, self.admm_steps, self.retrain_steps)
        self.model.optimizer.learning_rate.assign(rate)
        self.step += 1


class FreshOptimizer(keras.callbacks.Callback):
    """Zeroes every optimizer variable (moments and step count) once, at the hard projection."""

    def __init__(self):
        super().__init__()
        self.reset_at: int | None = None

    def on_train_batch_end(self, batch, logs=None):
        if self.reset_at is None and self.model.phase is tf_admm.Phase.RETRAIN:
            for variable in self.model.optimizer.variables:
                variable.assign(tf.zeros_like(variable))
            self.reset_at = int(self.model.admm_step.numpy())


def api_spec(settings: Settings, dense, steps_per_epoch: int, validation) -> tf_admm.Spec:
    """The spec of an ``api`` run (sensitivity measured on ``validation``)."""
    common = dict(
        rho=tf_admm.RhoSchedule(initial=settings.rho0, multiplier=settings.rho_mult),
        update_every=settings.every,
        update_unit="step",
        admm_rounds=max(1, settings.admm_epochs * steps_per_epoch // settings.every),
    )
    kept = dict(zip(SIZES, settings.kept))
    if settings.allocation == "hand":
        return tf_admm.Spec(rules=[tf_admm.Rule(name=n, keep=k) for n, k in kept.items()], **common)
    ratio = settings.target_ratio or sum(SIZES.values()) / sum(kept.values())
    if settings.allocation != "sensitivity":
        return tf_admm.Spec(target_ratio=ratio, allocation=settings.allocation, **common)
    loss = common.classification_loss()
    return tf_admm.sensitivity_allocation(
        dense,
        tf_admm.Spec(target_ratio=ratio, **common),
        lambda m: float(loss(validation[1], m.predict(validation[0], batch_size=1000, verbose=0))),
    )


def run_api(settings: Settings, dense, train, validation):
    steps = math.ceil(len(train[0]) / settings.batch_size)
    spec = api_spec(settings, dense, steps, validation)
    model = tf_admm.admm_wrap(dense, spec)
    model.compile(keras.optimizers.Adam(1e-3), common.classification_loss(), ["accuracy"])
    admm_steps = spec.admm_rounds * spec.update_every
    callbacks = tf_admm.callbacks() + [
        _StepLearningRate(admm_steps, settings.retrain_epochs * steps)
    ]
    if settings.variant == "api_fresh":
        callbacks.append(FreshOptimizer())
    model.fit(
        _batches(train, settings, settings.seed + 1),
        epochs=settings.admm_epochs + settings.retrain_epochs,
        verbose=2,
        callbacks=callbacks,
    )
    return tf_admm.strip(model), dict(model.spec.allocated or {})


def run_plain(settings: Settings, dense, train):
    """ADMM written out in plain TensorFlow (modifies ``dense`` in place)."""
    kept = dict(zip(SIZES, settings.kept))
    steps = math.ceil(len(train[0]) / settings.batch_size)
    weight = {n: dense.get_layer(n).kernel for n in kept}
    auxiliary = {
        n: tf.Variable(weight[n] * tf_admm.projections.top_k_mask(weight[n], kept[n])) for n in kept
    }
    dual = {n: tf.Variable(tf.zeros_like(weight[n])) for n in kept}
    rho = tf.Variable(settings.rho0)
    rate = tf.Variable(1e-3)
    optimizer = keras.optimizers.Adam(rate)
    loss = common.classification_loss()

    @tf.function
    def admm_step(x, y):
        with tf.GradientTape() as tape:
            penalty = tf.add_n(
                [tf.reduce_sum(tf.square(weight[n] - auxiliary[n] + dual[n])) for n in kept]
            )
            total = loss(y, dense(x, training=True)) + rho / 2 * penalty
        grads = tape.gradient(total, dense.trainable_variables)
        optimizer.apply_gradients(zip(grads, dense.trainable_variables))

    batches = _batches(train, settings, settings.seed + 1)
    step = 0
    for _ in range(settings.admm_epochs):
        for x, y in batches:
            admm_step(x, y)
            step += 1
            if step % settings.every == 0:
                for n in kept:
                    shifted = weight[n] + dual[n]
                    z = shifted * tf_admm.projections.top_k_mask(shifted, kept[n])
                    auxiliary[n].assign(z)
                    dual[n].assign(shifted - z)
                rho.assign(rho * settings.rho_mult)
    masks = {n: tf_admm.projections.top_k_mask(weight[n], kept[n]) for n in kept}
    for n in kept:
        weight[n].assign(weight[n] * masks[n])
    retrain_optimizer = keras.optimizers.Adam(rate)

    @tf.function
    def retrain_step(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, dense(x, training=True))
        grads = tape.gradient(value, dense.trainable_variables)
        retrain_optimizer.apply_gradients(zip(grads, dense.trainable_variables))
        for n in kept:
            weight[n].assign(weight[n] * masks[n])

    total = settings.retrain_epochs * steps
    for epoch in range(settings.retrain_epochs):
        for index, (x, y) in enumerate(batches):
            rate.assign(cosine(epoch * steps + index, 0, total))
            retrain_step(x, y)
    return dense, kept


def run(settings: Settings, arrays=None, model_fn=models.lenet5) -> dict:
    """One run; ``arrays`` = (train, validation, test) pairs (default: MNIST)."""
    train, validation, test = arrays or mnist_arrays()
    dense = dense_model(settings, train, model_fn)
    dense_scores = accuracy(dense, validation), accuracy(dense, test)
    keras.utils.set_random_seed(settings.seed + 100)
    start = time.perf_counter()
    if settings.variant == "plain":
        pruned, allocated = run_plain(settings, dense, train)
    else:
        pruned, allocated = run_api(settings, dense, train, validation)
    nonzeros = {n: int(np.count_nonzero(pruned.get_layer(n).kernel.numpy())) for n in SIZES}
    return {
        **dataclasses.asdict(settings),
        "allocated": allocated,
        "nonzeros": nonzeros,
        "ratio": sum(SIZES.values()) / sum(nonzeros.values()),
        "dense_validation": dense_scores[0],
        "dense_test": dense_scores[1],
        "validation": accuracy(pruned, validation),
        "test": accuracy(pruned, test),
        "seconds": time.perf_counter() - start,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def _define_flags():
    defaults = Settings()
    flags.DEFINE_enum("variant", defaults.variant, VARIANTS, "What to run.")
    flags.DEFINE_enum("allocation", defaults.allocation, ALLOCATIONS, "Per-layer split.")
    flags.DEFINE_integer("seed", defaults.seed, "Seed of the dense model and data order.")
    flags.DEFINE_list("kept", [str(k) for k in defaults.kept], "Kept conv1,conv2,fc1,fc2.")
    flags.DEFINE_float("target_ratio", None, "Ratio to split (default: that of --kept).")
    flags.DEFINE_integer("admm_epochs", defaults.admm_epochs, "ADMM epochs.")
    flags.DEFINE_integer("retrain_epochs", defaults.retrain_epochs, "Retraining epochs.")
    flags.DEFINE_float("rho0", defaults.rho0, "Initial rho.")
    flags.DEFINE_float("rho_mult", defaults.rho_mult, "Rho factor per Z/U update.")
    flags.DEFINE_integer("every", defaults.every, "Steps between Z/U updates.")
    flags.DEFINE_string("cache_dir", defaults.cache_dir, "Where dense checkpoints are cached.")
    flags.DEFINE_string("out", "runs/ablation", "Where each run's JSON goes.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    values = flags.FLAGS
    settings = Settings(
        variant=values.variant,
        allocation=values.allocation,
        seed=values.seed,
        kept=tuple(int(k) for k in values.kept),
        target_ratio=values.target_ratio,
        admm_epochs=values.admm_epochs,
        retrain_epochs=values.retrain_epochs,
        rho0=values.rho0,
        rho_mult=values.rho_mult,
        every=values.every,
        cache_dir=values.cache_dir,
    )
    result = run(settings)
    os.makedirs(values.out, exist_ok=True)
    name = f"{settings.variant}_{settings.allocation}_s{settings.seed}.json"
    with open(os.path.join(values.out, name), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    _define_flags()
    app.run(main)
