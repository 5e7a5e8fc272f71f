"""Behaviour of the Keras 3 adapter on the backend this process runs (KERAS_BACKEND).

pytest runs this file in its own process on Keras 3's default backend (TensorFlow);
``backends_test.py`` runs it again in a subprocess for every other backend (JAX).
"""

import json
import os
import warnings
import zipfile

import keras
import numpy as np
import pytest

import tf_admm
from tf_admm import allocation, projections
from tf_admm.keras3 import AdmmModel, AdmmWrapper, wrappers
from tf_admm.testing import small_convnet

BACKEND = keras.backend.backend()


pytestmark = pytest.mark.usefixtures("keras3_session")


def _convnet(sequential: bool = False) -> keras.Model:
    name = "seq" if sequential else "net"
    return small_convnet(name, units=16, sequential=sequential, keras_module=keras)


def _conv1d() -> keras.Model:
    """Conv1D and DepthwiseConv1D inside a nested Sequential, then Dense."""
    inner = keras.Sequential(
        [
            keras.Input((12, 2)),
            keras.layers.Conv1D(5, 3, name="conv1d"),
            keras.layers.DepthwiseConv1D(3, name="depthwise1d"),
        ],
        name="features",
    )
    inputs = keras.Input((12, 2))
    h = keras.layers.Flatten()(inner(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(h), name="seq1d")


def _data(model: keras.Model, count: int = 32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count, *model.inputs[0].shape[1:])).astype("float32")
    y = rng.integers(0, model.outputs[0].shape[-1], size=count)
    return x, y


def _compile(model: keras.Model) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _effective(model) -> dict[str, np.ndarray]:
    """{layer name: masked kernel} of every wrapper, on the host."""
    return {w.layer.name: w.slots[0].host_masked() for w in wrappers(model)}


def _slot_state(model) -> dict[str, np.ndarray]:
    state = {}
    for wrapper in wrappers(model):
        for slot in wrapper.slots:
            for field in ("variable", "auxiliary", "dual", "mask", "rho"):
                state[f"{wrapper.layer.name}.{field}"] = keras.ops.convert_to_numpy(
                    getattr(slot, field)
                )
    for counter in ("admm_step", "admm_epoch", "admm_round", "admm_phase"):
        state[counter] = keras.ops.convert_to_numpy(getattr(model, counter))
    return state


MODELS = {
    "functional": _convnet,
    "sequential": lambda: _convnet(sequential=True),
    "conv1d_nested": _conv1d,
}


@pytest.mark.parametrize("build", MODELS.values(), ids=MODELS.keys())
def test_wrap_then_strip_without_training_changes_no_output(build):
    model = build()
    x, _ = _data(model)
    admm = tf_admm.admm_wrap(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5)))
    assert isinstance(admm, AdmmModel)
    plain = tf_admm.strip(admm)
    assert type(plain) is type(model)
    assert not any(isinstance(la, AdmmWrapper) for la in tf_admm.keras3.registry.leaf_layers(plain))
    expected = model.predict(x, verbose=0)
    with warnings.catch_warnings():
        # A one-input model keeps one input tensor, not a one-element list: Keras would warn
        # "The structure of `inputs` doesn't match" when given one array.
        warnings.simplefilter("error")
        np.testing.assert_allclose(admm.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(plain.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(plain(x)), expected, rtol=1e-6, atol=1e-6)


def test_user_model_is_never_mutated():
    model = _convnet()
    before = [w.copy() for w in model.get_weights()]
    layers = list(model.layers)
    admm = _compile(tf_admm.admm_wrap(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.8))))
    x, y = _data(model)
    admm.fit(x, y, epochs=2, verbose=0, callbacks=tf_admm.callbacks())
    tf_admm.strip(admm)
    assert model.layers == layers
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("unit, every, epochs", [("step", 2, 3), ("epoch", 1, 4)])
def test_hard_projection_keeps_exact_counts_and_retraining_keeps_zeros(unit, every, epochs):
    model = _convnet()
    rules = [tf_admm.Rule(name="fc1", keep=37), tf_admm.Rule(layer_type="Conv2D", sparsity=0.75)]
    spec = tf_admm.Spec(
        rules=rules,
        default=tf_admm.Rule(sparsity=0.5),
        update_unit=unit,
        update_every=every,
        admm_rounds=3,
        rho=tf_admm.RhoSchedule(initial=1e-2, multiplier=1.5),
    )
    admm = _compile(tf_admm.admm_wrap(model, spec))
    x, y = _data(model)  # 32 samples, batch 8: 4 steps per epoch.
    admm.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.RETRAIN
    expected = {"conv": 14, "depthwise": 27, "fc1": 37, "fc2": 24}  # 54*0.25, 54*0.5, 48*0.5
    counts = {name: int(np.count_nonzero(w)) for name, w in _effective(admm).items()}
    assert counts == expected
    zeros = {name: w == 0 for name, w in _effective(admm).items()}
    admm.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=tf_admm.callbacks())
    stripped = tf_admm.strip(admm)
    for name, pruned in zeros.items():
        kernel = keras.ops.convert_to_numpy(stripped.get_layer(name).weights[0])
        assert np.all(kernel[pruned] == 0), name
        assert int(np.count_nonzero(kernel)) == expected[name]
        assert np.any(_effective(admm)[name][~pruned] != 0)


def test_target_ratio_allocates_by_lamp_and_keeps_the_total():
    model = _convnet()
    spec = tf_admm.Spec(target_ratio=5.0, admm_rounds=1)
    plan = tf_admm.plan(model, spec)
    kernels = {
        f"{la.name}/kernel": keras.ops.convert_to_numpy(la.weights[0])
        for la in model.layers
        if la.weights
    }
    total = sum(k.size for k in kernels.values())
    keep = allocation.keep_for_ratio(total, 5.0, layers=len(kernels))
    expected = allocation.allocate(kernels, keep, "lamp")
    kept = {
        f"{row.layer}/{w.target.weight}": w.kept for row in plan.compressed for w in row.weights
    }
    assert kept == expected and sum(kept.values()) == keep
    admm = _compile(tf_admm.admm_wrap(model, spec))
    x, y = _data(model)
    admm.fit(x, y, epochs=1, verbose=0, callbacks=tf_admm.callbacks())
    counts = {f"{n}/kernel": int(np.count_nonzero(w)) for n, w in _effective(admm).items()}
    assert counts == expected


def test_progressive_stages_reach_each_stage_count():
    model = _convnet()
    spec = tf_admm.Spec(
        default=tf_admm.Rule(keep=6),
        prune_stages=(0.25, 1.0),
        admm_rounds=1,
        retrain_rounds=1,
        update_unit="epoch",
    )
    admm = _compile(tf_admm.admm_wrap(model, spec))
    x, y = _data(model)
    admm.fit(x, y, epochs=1, verbose=0, callbacks=tf_admm.callbacks())
    # Stage 1 at a quarter of the final ratio keeps 4 * 6 weights per layer.
    assert {n: int(np.count_nonzero(w)) for n, w in _effective(admm).items()} == dict.fromkeys(
        ["conv", "depthwise", "fc1", "fc2"], 24
    )
    admm.fit(x, y, epochs=2, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.RETRAIN and int(admm.admm_round.numpy()) == 3
    assert {n: int(np.count_nonzero(w)) for n, w in _effective(admm).items()} == dict.fromkeys(
        ["conv", "depthwise", "fc1", "fc2"], 6
    )


class _Recorder(keras.callbacks.Callback):
    """Records W, Z, U and rho of one wrapper after AdmmUpdate at every step."""

    def __init__(self):
        super().__init__()
        self.records = []

    def on_train_batch_end(self, batch, logs=None):
        (slot,) = [w for w in wrappers(self.model) if w.layer.name == "fc1"][0].slots
        host = keras.ops.convert_to_numpy
        self.records.append(
            {f: host(getattr(slot, f)) for f in ("variable", "auxiliary", "dual", "rho")}
        )


def test_step_updates_see_the_weights_of_the_step_that_just_ran():
    # On JAX the variables are stale during an epoch unless synced: a Z-step on them would
    # project old weights, and an update assigned without a sync would be overwritten.
    model = _convnet()
    spec = tf_admm.Spec(
        default=tf_admm.Rule(sparsity=0.75),
        update_unit="step",
        admm_rounds=5,
        rho=tf_admm.RhoSchedule(initial=1e-2, multiplier=2.0),
    )
    admm = _compile(tf_admm.admm_wrap(model, spec))
    recorder = _Recorder()
    x, y = _data(model)
    admm.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[*tf_admm.callbacks(), recorder])
    keep = projections.keep_count(96 * 16, 0.75)  # fc1's kernel is 96x16.
    for before, after in zip(recorder.records[:3], recorder.records[1:4]):
        # The recorded W is the one the update saw (recorded after it, in the same sync).
        shifted = after["variable"] + before["dual"]
        np.testing.assert_array_equal(
            after["auxiliary"], projections.project_top_k_numpy(shifted, keep)
        )
        ratio = before["rho"] / after["rho"]
        np.testing.assert_allclose(
            after["dual"],
            (before["dual"] + after["variable"] - after["auxiliary"]) * ratio,
            rtol=1e-5,
            atol=1e-7,
        )
        assert after["rho"] == pytest.approx(2 * before["rho"])
        assert not np.array_equal(after["variable"], before["variable"])
    # The last update survives the end of the epoch.
    final = _slot_state(admm)
    np.testing.assert_array_equal(final["fc1.auxiliary"], recorder.records[-1]["auxiliary"])
    assert int(final["admm_step"]) == 4 and int(final["admm_round"]) == 4


def test_save_and_load_mid_admm_continue_identically(tmp_path):
    model = _convnet()
    spec = tf_admm.Spec(
        default=tf_admm.Rule(sparsity=0.8), update_unit="step", update_every=3, admm_rounds=4
    )
    admm = _compile(tf_admm.admm_wrap(model, spec))
    x, y = _data(model)
    admm.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=tf_admm.callbacks())
    assert admm.phase is tf_admm.Phase.ADMM and int(admm.admm_round.numpy()) == 1
    path = str(tmp_path / "mid_admm.keras")
    admm.save(path)
    loaded = keras.models.load_model(path)  # No custom_objects.
    assert isinstance(loaded, AdmmModel) and loaded.spec == admm.spec
    original, restored = _slot_state(admm), _slot_state(loaded)
    assert original.keys() == restored.keys()
    for key in original:
        np.testing.assert_array_equal(restored[key], original[key], err_msg=key)
    for model_ in (admm, loaded):
        model_.fit(
            x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=tf_admm.callbacks()
        )
    assert loaded.phase is tf_admm.Phase.RETRAIN
    original, restored = _slot_state(admm), _slot_state(loaded)
    for key in original:
        np.testing.assert_allclose(restored[key], original[key], rtol=1e-5, atol=1e-6, err_msg=key)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt


def test_backup_and_restore_resumes_as_an_uninterrupted_run(tmp_path):
    spec = tf_admm.Spec(
        default=tf_admm.Rule(sparsity=0.8), update_unit="step", update_every=3, admm_rounds=3
    )
    x, y = _data(_convnet())

    def run(backup_dir, interrupt):
        keras.utils.clear_session()
        keras.utils.set_random_seed(3)
        admm = _compile(tf_admm.admm_wrap(_convnet(), spec))
        extra = [_Interrupt()] if interrupt else []
        callbacks = tf_admm.callbacks(backup_dir=backup_dir) + extra
        kwargs = dict(batch_size=8, epochs=4, shuffle=False, verbose=0)
        if interrupt:
            with pytest.raises(KeyboardInterrupt):
                admm.fit(x, y, callbacks=callbacks, **kwargs)
            keras.utils.clear_session()
            keras.utils.set_random_seed(3)
            admm = _compile(tf_admm.admm_wrap(_convnet(), spec))
            admm.fit(x, y, callbacks=tf_admm.callbacks(backup_dir=backup_dir), **kwargs)
        else:
            admm.fit(x, y, callbacks=callbacks, **kwargs)
        return _slot_state(admm)

    resumed = run(str(tmp_path / "resumed"), interrupt=True)
    straight = run(str(tmp_path / "straight"), interrupt=False)
    # 4 steps per epoch: rounds end at steps 3, 6 and 9; the interruption falls in round 3.
    assert int(straight["admm_round"]) == 3 and int(straight["admm_phase"]) == 1
    for key in straight:
        np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_nonfinite_loss_stops_training_with_the_step():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
    spec = tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5), update_unit="step")
    admm = tf_admm.admm_wrap(model, spec)
    admm.compile(keras.optimizers.SGD(1.0), "mse")
    x = np.ones((8, 4), "float32")
    y = np.full((8, 2), np.nan, "float32")
    with pytest.raises(tf_admm.NonFiniteError, match="loss=nan") as caught:
        admm.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=tf_admm.callbacks())
    assert caught.value.step == 1 and caught.value.epoch == 0


def test_stripped_model_holds_only_keras_classes_and_loads(tmp_path):
    model = _convnet(sequential=True)
    admm = _compile(tf_admm.admm_wrap(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.9))))
    x, y = _data(model)
    admm.fit(x, y, epochs=1, verbose=0, callbacks=tf_admm.callbacks())
    plain = tf_admm.strip(admm)
    path = str(tmp_path / "stripped.keras")
    plain.save(path)
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    assert "tf_admm" not in config and "Admm" not in config
    assert json.loads(config)["class_name"] == "Sequential"
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), admm.predict(x, verbose=0), atol=1e-5)
    if os.environ.get("TF_ADMM_KERAS3_EXPORT"):  # backends_test.py loads it elsewhere.
        plain.save(os.environ["TF_ADMM_KERAS3_EXPORT"] + ".keras")
        np.save(os.environ["TF_ADMM_KERAS3_EXPORT"] + ".npy", x)
        np.save(os.environ["TF_ADMM_KERAS3_EXPORT"] + "_out.npy", plain.predict(x, verbose=0))


def test_public_functions_dispatch_on_the_model_type():
    model = _convnet()
    spec = tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5))
    assert tf_admm.plan(model, spec).summary().startswith("Plan for model 'net'")
    assert type(tf_admm.admm_wrap(model, spec)).__module__ == "tf_admm.keras3.model"


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_bad_inputs_fail_with_the_fix_in_the_message():
    model = _convnet()
    with pytest.raises(ValueError, match="rules\\[0\\] .* matches no layer"):
        tf_admm.admm_wrap(model, tf_admm.Spec(rules=[tf_admm.Rule(name="nope", sparsity=0.5)]))
    with pytest.raises(ValueError, match="field 'weights'.*Expected a weight among"):
        tf_admm.admm_wrap(
            model, tf_admm.Spec(rules=[tf_admm.Rule(name="fc1", sparsity=0.5, weights=["w"])])
        )
    # Structured rules: structured_test.py.
    subclassed = _Subclassed()
    subclassed(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed Keras 3 models are not supported yet"):
        tf_admm.admm_wrap(subclassed, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5)))
    admm = _compile(tf_admm.admm_wrap(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5))))
    x, y = _data(model)
    with pytest.raises(ValueError, match="callbacks=tf_admm.callbacks"):
        admm.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="Expected checkpointing callbacks after"):
        backup = keras.callbacks.BackupAndRestore(str(os.devnull))
        admm.fit(x, y, verbose=0, callbacks=[backup, *tf_admm.callbacks()])
    with pytest.raises(ValueError, match="already ADMM-wrapped"):
        tf_admm.admm_wrap(admm, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5)))
