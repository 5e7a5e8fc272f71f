"""Resilience: resuming an interrupted fit from its backup, and stopping on NaN or Inf."""

import math
import pickle

import numpy as np
import pytest

import tf_admm
from tf_admm import keras, tf
from tf_admm.finite import NonFiniteError
from tf_admm.testing import compile_for_classification, small_convnet, small_data

SPARSITY = {"conv": 0.5, "depthwise": 0.6, "fc1": 0.9, "fc2": 0.7}


def _spec(rounds=3, every=1, unit="epoch"):
    return tf_admm.Spec(
        rules=[tf_admm.Rule(name=n, sparsity=s) for n, s in SPARSITY.items()],
        rho=tf_admm.RhoSchedule(0.05, 1.5),
        admm_rounds=rounds,
        update_every=every,
        update_unit=unit,
    )


def _model(spec=None, learning_rate=1e-2):
    keras.utils.set_random_seed(7)  # Same initial weights for every model of a test.
    return compile_for_classification(
        tf_admm.admm_wrap(small_convnet(), spec or _spec()), learning_rate
    )


class _CrashAt(keras.callbacks.Callback):
    """Stands in for a killed process: raises when epoch ``epoch`` begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt(f"crash at epoch {epoch}")


class _Snapshot(keras.callbacks.Callback):
    """Keeps every weight's value at each epoch end (put it after the backup callback)."""

    def __init__(self):
        super().__init__()
        self.epochs: dict[int, list[np.ndarray]] = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = [w.numpy() for w in self.model.weights]


def _state(model):
    return {
        "step": int(model.admm_step.numpy()),
        "epoch": int(model.admm_epoch.numpy()),
        "round": int(model.admm_round.numpy()),
        "phase": model.phase,
        "iterations": int(model.optimizer.iterations.numpy()),
    }


def _backup(backup_dir):
    """{name: value} of the latest checkpoint BackupAndRestore wrote in ``backup_dir``."""
    path = tf.train.latest_checkpoint(f"{backup_dir}/chief")
    assert path is not None, f"no backup in {backup_dir}"
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _saved_epoch(backup):
    return int(backup["ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"])


def _assert_all_finite(backup):
    floats = {k: v for k, v in backup.items() if np.issubdtype(np.asarray(v).dtype, np.floating)}
    assert len(floats) > 20
    for name, value in floats.items():
        assert np.isfinite(value).all(), name


@pytest.mark.parametrize(
    "unit, every, crash_epoch",
    [
        ("epoch", 1, 2),  # Crash mid-ADMM: rounds 1 and 2 done.
        ("epoch", 1, 4),  # Crash after the hard projection: retraining.
        ("step", 3, 2),  # Rounds counted in steps (8 per epoch), across epoch ends.
    ],
)
def test_resumed_fit_equals_uninterrupted_fit_without_skipped_or_repeated_rounds(
    tmp_path, unit, every, crash_epoch
):
    x, y = small_data(128)
    spec = _spec(rounds=3, every=every, unit=unit)
    fit = dict(x=x, y=y, batch_size=16, epochs=6, shuffle=False, verbose=0)
    reference = _model(spec)
    history = reference.fit(**fit, callbacks=tf_admm.callbacks()).history

    backup_dir = str(tmp_path / "backup")
    crashed = _model(spec)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(
            **fit, callbacks=tf_admm.callbacks(backup_dir=backup_dir) + [_CrashAt(crash_epoch)]
        )
    assert _saved_epoch(_backup(backup_dir)) == crash_epoch - 1
    # What a kill in the middle of the next backup leaves: its files, half written, while the
    # `checkpoint` index (replaced atomically, after the files) still names the last whole one.
    chief = tmp_path / "backup" / "chief"
    for name in (f"ckpt-{crash_epoch + 1}.index", f"ckpt-{crash_epoch + 1}.data-00000-of-00001"):
        (chief / name).write_bytes(b"\x00half written")
    (chief / f"ckpt-{crash_epoch + 1}_temp").mkdir()

    resumed = _model(spec)  # A new process would start from the same fresh model.
    resumed_history = resumed.fit(**fit, callbacks=tf_admm.callbacks(backup_dir=backup_dir)).history
    assert len(resumed_history["loss"]) == 6 - crash_epoch
    # The rounds logged per epoch continue exactly where the crashed run stopped.
    assert resumed_history["admm_round"] == history["admm_round"][crash_epoch:]
    assert _state(resumed) == _state(reference)
    assert resumed.phase is tf_admm.Phase.RETRAIN
    for a, b in zip(reference.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    assert not tf.io.gfile.exists(backup_dir + "/chief"), "a finished fit deletes its backup"


def test_backup_before_update_callback_is_rejected_with_the_fix():
    x, y = small_data(32)
    model = _model()
    backup = keras.callbacks.BackupAndRestore("unused")
    with pytest.raises(ValueError, match=r"callbacks\[0\]=BackupAndRestore before callbacks\[1\]"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[backup, tf_admm.AdmmUpdate()])
    checkpoint = keras.callbacks.ModelCheckpoint("unused.h5")
    with pytest.raises(ValueError, match="tf_admm.callbacks\\(backup_dir=...\\)"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[checkpoint, *tf_admm.callbacks()])


class _Plant(keras.callbacks.Callback):
    """Writes ``value`` into one entry of a wrapper variable at the end of epoch ``epoch``."""

    def __init__(self, epoch, layer, attribute, value, batch=None):
        super().__init__()
        self.epoch, self.layer, self.attribute, self.value, self.batch = (
            epoch,
            layer,
            attribute,
            value,
            batch,
        )
        self._current = 0

    def _plant(self):
        wrapper = next(w for w in self.model.admm_wrappers if w.layer.name == self.layer)
        variable = getattr(wrapper.slots[0], self.attribute)
        value = np.array(variable.numpy())  # A copy, also for scalars.
        value.flat[0] = self.value
        variable.assign(value)

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.batch == batch and self._current == self.epoch:
            self._plant()

    def on_epoch_end(self, epoch, logs=None):
        if self.batch is None and epoch == self.epoch:
            self._plant()


@pytest.mark.parametrize(
    "attribute, label, value",
    [
        ("variable", "W (kernel)", math.nan),
        ("auxiliary", "Z (kernel_auxiliary)", math.inf),
        ("dual", "U (kernel_dual)", math.nan),
        ("rho", "rho (kernel_rho)", math.inf),
    ],
)
def test_planted_nan_or_inf_stops_training_naming_layer_and_variable(
    tmp_path, attribute, label, value
):
    x, y = small_data(64)
    model = _model(_spec(rounds=5))
    backup_dir = str(tmp_path / "backup")
    snapshot = _Snapshot()
    # The planting callback runs before AdmmUpdate, as a bad update would.
    plant = _Plant(2, "fc1", attribute, value)
    callbacks = [plant, *tf_admm.callbacks(backup_dir=backup_dir), snapshot]
    with pytest.raises(NonFiniteError) as raised:
        model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=callbacks)
    error = raised.value
    nan, inf = (1, 0) if math.isnan(value) else (0, 1)
    size = 1 if attribute == "rho" else 96 * 24  # fc1 kernel: 4*4*6 inputs, 24 units.
    assert error.culprits == [("fc1", label, nan, inf, size)]
    assert f"layer 'fc1' {label}: {nan} NaN and {inf} Inf of {size}" in str(error)
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    assert error.epoch == 2 and error.step == 12
    # Stopped before the Z/U update and before the backup of epoch 2.
    assert int(model.admm_round.numpy()) == 2
    assert sorted(snapshot.epochs) == [0, 1]
    backup = _backup(backup_dir)
    assert _saved_epoch(backup) == 1
    _assert_all_finite(backup)
    values = sorted(np.asarray(v).tobytes() for v in backup.values())
    for weight in snapshot.epochs[1]:  # The backup holds the last good epoch's state.
        assert weight.tobytes() in values


def test_planted_nan_in_quantization_levels_is_named():
    x, y = small_data(64)
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc1", bits=2, scheme="uniform")],  # Quantization only.
        quant_admm_rounds=4,
        update_unit="epoch",
    )
    model = _model(spec)
    with pytest.raises(NonFiniteError, match=r"layer 'fc1' levels \(kernel_levels\): 1 NaN"):
        model.fit(
            x,
            y,
            batch_size=16,
            epochs=3,
            verbose=0,
            callbacks=[_Plant(1, "fc1", "levels", math.nan), *tf_admm.callbacks()],
        )


def test_exploding_learning_rate_stops_before_the_backup_saves_nans_and_a_rerun_recovers(
    tmp_path,
):
    x, y = small_data(64)
    backup_dir = str(tmp_path / "backup")

    def explode_at_epoch_2(epoch, lr):
        return 1e-2 if epoch < 2 else 1e6

    model = _model(_spec(rounds=5))
    model.compile(
        keras.optimizers.SGD(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    callbacks = tf_admm.callbacks(backup_dir=backup_dir) + [
        keras.callbacks.LearningRateScheduler(explode_at_epoch_2)
    ]
    with pytest.raises(NonFiniteError, match="Training stopped at epoch 2") as raised:
        model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=callbacks)
    assert raised.value.loss is not None and not math.isfinite(raised.value.loss)
    assert raised.value.culprits, "the weights the step blew up are named"
    backup = _backup(backup_dir)
    assert _saved_epoch(backup) == 1
    _assert_all_finite(backup)

    # With a sane learning rate the same fit goes on from the last good epoch.
    model = _model(_spec(rounds=5))
    model.compile(
        keras.optimizers.SGD(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(
        x, y, batch_size=16, epochs=5, verbose=0, callbacks=tf_admm.callbacks(backup_dir=backup_dir)
    ).history
    assert len(history["loss"]) == 3
    assert all(math.isfinite(v) for v in history["loss"])
    assert int(model.admm_round.numpy()) == 5


def test_step_counted_rounds_stop_at_the_first_non_finite_loss():
    x, y = small_data(128)
    model = _model(_spec(rounds=2, every=100, unit="step"))
    plant = _Plant(0, "fc2", "variable", math.nan, batch=2)
    with pytest.raises(NonFiniteError) as raised:
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[plant, *tf_admm.callbacks()])
    # The NaN written after step 3 makes step 4's loss NaN; the epoch has 8 steps.
    assert raised.value.step == 4 and raised.value.epoch == 0
    assert math.isnan(raised.value.loss)
    assert ("fc2", "W (kernel)") in [c[:2] for c in raised.value.culprits]


def test_step_wise_backups_check_every_step_and_keep_the_last_good_one(tmp_path):
    x, y = small_data(128)
    backup_dir = str(tmp_path / "backup")
    model = _model(_spec(rounds=3))
    plant = _Plant(1, "conv", "dual", math.inf, batch=4)
    callbacks = [plant, *tf_admm.callbacks(backup_dir=backup_dir, backup_freq=2)]
    with pytest.raises(NonFiniteError) as raised:
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=callbacks)
    # Found in the very step it appeared, before that step's backup.
    assert raised.value.culprits == [("conv", "U (kernel_dual)", 0, 1, 3 * 3 * 6)]
    assert raised.value.step == 8 + 5
    backup = _backup(backup_dir)
    assert int(backup["ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"]) == 3
    _assert_all_finite(backup)


def test_check_finite_false_lets_nans_through():
    x, y = small_data(32)
    model = _model()
    update = tf_admm.AdmmUpdate(check_finite=False)
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[_Plant(0, "fc1", "dual", math.nan), update],
    )
    assert np.isnan(model.admm_wrappers[2].slots[0].dual.numpy()).any()
