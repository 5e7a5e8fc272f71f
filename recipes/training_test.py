"""Tests for recipes.training: cached pretraining and compression through a spec's phases."""

import os

import numpy as np

import tf_admm
from recipes import data, schedules, training
from tf_admm.compat import keras, keras3, tf


def _data(count=16, features=6, classes=4):
    images = np.random.default_rng(0).normal(size=(count, features)).astype(np.float32)
    labels = np.arange(count) % classes
    return lambda optimizer: tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)


def _dense():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="fc")])


def test_pretrain_caches_its_checkpoint_and_loads_it_the_next_time(tmp_path):
    train_data = _data()
    test_ds = train_data(None)
    arguments = {
        "checkpoint": str(tmp_path / "dense.weights.h5"),
        "backup": str(tmp_path / "backup"),
        "learning_rate": 0.1,
        "epochs": 2,
        "schedule": schedules.step_decay(0.1, 2),
        "description": "test model",
        "verbose": 0,
    }
    trained = _dense()
    first = training.pretrain(trained, train_data, test_ds, resumed={}, **arguments)
    assert os.path.exists(arguments["checkpoint"])
    assert not os.path.exists(arguments["backup"])  # removed once the checkpoint is written

    def no_training(optimizer):
        raise AssertionError("a cached checkpoint is loaded, not trained again")

    loaded = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="fc")])
    resumed = {}
    again = training.pretrain(loaded, no_training, test_ds, resumed=resumed, **arguments)
    assert again == first and resumed == {}
    for a, b in zip(trained.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_spec_counting_steps_sets_the_learning_rate_per_step_and_retrains_after_its_rounds(
    tmp_path, monkeypatch
):
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc", keep=5)],
        update_every=3,
        update_unit="step",
        admm_rounds=2,
        retrain_rounds=0,
    )
    seen = []  # (step, learning rate, phase) before every batch.

    class Recording(schedules.StepLearningRate):
        def on_train_batch_begin(self, batch, logs=None):
            super().on_train_batch_begin(batch, logs)
            optimizer = self.model.optimizer
            seen.append(
                (
                    int(optimizer.iterations.numpy()),
                    round(float(optimizer.learning_rate), 6),
                    self.model.phase.name,
                )
            )

    monkeypatch.setattr(schedules, "StepLearningRate", Recording)
    model, phase_times = training.compress(
        _dense(),
        spec,
        _data(),
        learning_rate=1.0,
        retrain_learning_rate=2.0,
        retrain_epochs=1,
        log_dir=str(tmp_path / "logs"),
        backup=str(tmp_path / "backup"),
        resumed={},
        metrics=lambda: [],
        objective=lambda: keras.losses.SparseCategoricalCrossentropy(True),
        verbose=0,
    )
    # 4 steps per epoch: 2 rounds of 3 steps end in the second epoch, so fit runs 2 + 1 epochs
    # and the final phase gets the last 2 steps of the second epoch and the third epoch: 6
    # steps from 2.0 by step_decay (3 at 2.0, 1 at 0.6, 2 at 0.2).
    assert [step for step, _, _ in seen] == list(range(12))
    assert [rate for _, rate, _ in seen] == [1.0] * 6 + [2.0] * 3 + [0.6] + [0.2] * 2
    assert [phase for _, _, phase in seen] == ["ADMM"] * 6 + ["RETRAIN"] * 6
    assert np.count_nonzero(tf_admm.strip(model).get_layer("fc").kernel.numpy()) == 5
    # Each epoch counted in the phase it began in: two ADMM epochs, one of retraining.
    assert set(phase_times) == {"admm", "retrain"}
    assert all(seconds > 0 for seconds in phase_times.values())


def test_keras3_data_order_follows_the_epoch_counter_as_tf_keras_follows_the_optimizer():
    # Labels are the example indices; a map records the order in which fit draws them.
    count, batch = 12, 4
    images = np.zeros((count, 6), np.uint8)
    indices = np.arange(count, dtype=np.int64)
    counter = training.EpochCounter()
    drawn: list[int] = []

    def record(labels):
        drawn.extend(labels.numpy().tolist())
        return labels

    def recorded(x, y):
        y = tf.py_function(record, [y], tf.int64)
        return x, tf.reshape(y, [-1])

    keyed = data.epoch_keyed_batches(images, indices, batch, seed=3, epoch=lambda: counter.epoch)
    keras3.utils.set_random_seed(0)
    model = keras3.Sequential([keras3.Input((6,)), keras3.layers.Dense(count)])
    model.compile(optimizer="sgd", loss=training.loss(keras3))
    model.fit(keyed.map(recorded), epochs=2, verbose=0, callbacks=[counter])

    def order(epoch):
        fixed = data.epoch_keyed_batches(images, indices, batch, 3, lambda: tf.constant(epoch))
        return [int(i) for _, labels in fixed for i in labels.numpy()]

    assert order(0) != order(1)
    # On JAX, fit first peeks at a batch (with its prefetch, two) of an iterator it then
    # discards: a prefix of epoch 0's order.
    peeked = len(drawn) - 2 * count
    assert 0 <= peeked < count and drawn[:peeked] == order(0)[:peeked]
    assert drawn[peeked:] == order(0) + order(1)
