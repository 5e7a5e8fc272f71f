"""The behaviour table, row by row on every Keras stack: tf_keras, Keras 3 + TensorFlow and
Keras 3 + JAX.

Each row takes a ``stack`` (``tests/stacks.py``): pytest's process runs the rows on
``tf_keras`` and on Keras 3 on its own backend (TensorFlow); Keras 3 fixes its backend at its
first import, so ``test_table_passes_on_keras3_jax`` runs this file again in a subprocess with
``KERAS_BACKEND=jax`` (there only the Keras 3 rows run) and fails with that run's output. A row
that cannot apply to a stack says so with a skip and its reason; the JAX run lists its skips
in its output.

Rows: exact nonzero counts after pruning and strip; exact filters, blocks and n-of-m runs after
structured pruning and strip, with the bias of every removed filter zero; quantized weights on
their levels (uniform, per-channel uniform, power-of-two, k-means), and trained grid scales
still exact grids; wrap -> strip changes no
output and the user's model is never modified; ``.keras`` save/load mid-ADMM without custom
objects continues identically; BackupAndRestore resumes as an uninterrupted run; a NaN loss
stops training; the sensitivity split is measured on a copy and kept exactly; and the rows of
``tests/bad_input_test.py`` that take a model, with the same error text.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest

import tf_admm
import tflite_export
from tests import bad_input_test
from tests.stacks import KERAS3, LAYER_SIZES, TF_KERAS, Stack
from tf_admm import projections
from tf_admm.testing import small_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Set in the subprocess that runs this file on another Keras 3 backend: only Keras 3 rows there.
ONLY_KERAS3 = "TF_ADMM_STACKS_ONLY_KERAS3"
STACKS = [KERAS3] if os.environ.get(ONLY_KERAS3) else [TF_KERAS, KERAS3]


@pytest.fixture(params=STACKS)
def stack(request) -> Stack:
    stack = Stack(request.param)
    stack.reset()
    yield stack
    stack.reset()


def _fit(stack, admm, epochs=1, batches=4, **kwargs):
    """``epochs`` of ``batches`` steps of 8 samples, in order, with tf_admm's callbacks."""
    x, y = small_data(8 * batches)
    kwargs.setdefault("callbacks", tf_admm.callbacks())
    return admm.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, **kwargs)


def _wrap(stack, spec, model=None):
    return stack.compile(tf_admm.admm_wrap(model or stack.convnet(), spec))


def _planned(model, spec) -> dict[str, int]:
    plan = tf_admm.plan(model, spec)
    return {row.layer: sum(w.kept for w in row.weights) for row in plan.compressed}


# Keras 3 on JAX: this file again, in a process started with KERAS_BACKEND=jax.


def _environment(**overrides) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "KERAS_"))}
    env.update(overrides)
    return env


@pytest.mark.parametrize("backend", ["jax"])
def test_table_passes_on_keras3_jax(backend):
    if os.environ.get(ONLY_KERAS3):
        pytest.skip("this is the run on the other backend")
    pytest.importorskip(backend, reason="pip install -e '.[test]' installs jax")
    command = [sys.executable, "-m", "pytest", "-q", "-rsx", "-p", "no:cacheprovider"]
    command += ["-p", "no:xdist", os.path.abspath(__file__)]
    # Two CPU devices for the data-parallel row.
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
    env = _environment(KERAS_BACKEND=backend, XLA_FLAGS=flags.strip(), **{ONLY_KERAS3: "1"})
    result = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False
    )
    shown = (
        f"exit status {result.returncode}\n--- stdout\n{result.stdout[-30000:]}\n"
        f"--- stderr\n{result.stderr[-8000:]}"
    )
    assert result.returncode == 0, f"stacks_test.py on Keras 3 + {backend}: {shown}"
    assert f"[keras3_{backend}" in result.stdout or " passed" in result.stdout, shown
    # Only the export rows (TensorFlow only) and this test are skipped there.
    skipped = re.findall(r"SKIPPED \[(\d+)\]", result.stdout)
    assert sum(int(n) for n in skipped) == 2, shown


# Behaviour.


def test_pruning_then_strip_keeps_exactly_the_planned_counts_and_retraining_no_pruned_weight(
    stack,
):
    model = stack.convnet()
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="fc1", keep=37), tf_admm.Rule(layer_type="Conv2D", sparsity=0.75)],
        default=tf_admm.Rule(sparsity=0.5),
        update_unit="step",
        update_every=2,
        admm_rounds=2,
        rho=tf_admm.RhoSchedule(1e-2, 1.5),
    )
    # keep_count rounds size * (1 - sparsity) half up: conv 54 * 0.25, depthwise 54 / 2, fc2 72 / 2.
    expected = {"conv": 14, "depthwise": 27, "fc1": 37, "fc2": 36}
    assert _planned(model, spec) == expected
    admm = _wrap(stack, spec, model)
    _fit(stack, admm)  # 4 steps: two ADMM rounds of 2, then the hard projection.
    assert admm.phase is tf_admm.Phase.RETRAIN
    projected = stack.kernels(tf_admm.strip(admm))
    assert {n: int(np.count_nonzero(k)) for n, k in projected.items()} == expected
    _fit(stack, admm, epochs=2)
    retrained = stack.kernels(tf_admm.strip(admm))
    for name, kernel in retrained.items():
        assert np.all(kernel[projected[name] == 0] == 0), f"{name}: a pruned weight revived"
        assert int(np.count_nonzero(kernel)) == expected[name], name
        assert not np.array_equal(kernel, projected[name]), f"{name}: kept weights froze"


def test_structured_pruning_then_strip_keeps_exact_groups_and_zeroes_removed_filters_biases(
    stack,
):
    model = stack.convnet()
    spec = tf_admm.Spec(
        rules=[
            tf_admm.Rule(name="conv", structure="filter", keep=4),
            tf_admm.Rule(name="depthwise", structure="filter", keep=3),
            tf_admm.Rule(name="fc1", structure="block", block=(2, 4), keep=30),
            tf_admm.Rule(name="fc2", structure="n_of_m", n=2, m=4),
        ],
        update_unit="step",
        update_every=2,
        admm_rounds=2,
        rho=tf_admm.RhoSchedule(1e-2, 1.5),
    )
    # (structure, layout, block, groups kept, entries kept): filters of 3 * 3 taps, blocks of
    # 2 * 4 in fc1's 24x96 GEMM view, 2 of every 4 of fc2's 24 * 3 entries.
    groups = {
        "conv": ("filter", "dense", None, 4, 36),
        "depthwise": ("filter", "depthwise", None, 3, 27),
        "fc1": ("block", "dense", (2, 4), 30, 240),
        "fc2": ("n_of_m", "dense", None, None, 36),
    }
    assert _planned(model, spec) == {name: kept for name, (*_, kept) in groups.items()}
    admm = _wrap(stack, spec, model)
    _fit(stack, admm)  # Two ADMM rounds of 2 steps, then the hard projection.
    assert admm.phase is tf_admm.Phase.RETRAIN
    plain = tf_admm.strip(admm)
    x, _ = small_data(8)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), admm.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    projected = stack.kernels(plain)
    for name, (structure, layout, block, kept, entries) in groups.items():
        kernel = projected[name]
        bias = stack.host(plain.get_layer(name).weights[1])
        assert int(np.count_nonzero(kernel)) == entries, name
        if structure == "n_of_m":
            runs = (kernel != 0).reshape(-1, 4, kernel.shape[-1])
            assert np.all(runs.sum(axis=1) == 2), name
        else:
            norms = projections.group_norms(kernel, structure, layout, block).numpy()
            assert int(np.count_nonzero(norms)) == kept, name
        # A removed filter takes its bias along, so its output is exactly 0; other structures
        # and kept filters keep the bias the layer trained.
        (wrapper,) = [w for w in admm.admm_wrappers if w.layer.name == name]
        trained = stack.host(wrapper.layer.bias)
        if structure == "filter":
            filters = projections.group_norms(kernel, "filter", layout).numpy() > 0
            trained = np.where(filters, trained, 0.0)
        np.testing.assert_array_equal(bias, trained, err_msg=name)
    _fit(stack, admm)
    retrained = stack.kernels(tf_admm.strip(admm))
    for name, kernel in retrained.items():
        assert np.all(kernel[projected[name] == 0] == 0), f"{name}: a pruned weight revived"


@pytest.mark.parametrize("quant_rho", [None, {"initial": 0.01, "multiplier": 2.0}])
def test_quant_rho_sets_every_layers_rho_in_the_quantization_rounds(stack, quant_rho):
    rules = [
        tf_admm.Rule(name="fc1", sparsity=0.8, bits=2, rho=0.2),
        tf_admm.Rule(name="conv", bits=3),
    ]
    spec = tf_admm.Spec(
        rules=rules,
        rho=tf_admm.RhoSchedule(0.05, 1.5),
        update_every=2,
        update_unit="step",
        admm_rounds=2,
        retrain_rounds=1,
        quant_admm_rounds=3,
        quant_fractions=(1.0,),
        quant_rho=quant_rho,
    )
    assert tf_admm.Spec.from_dict(spec.to_dict()) == spec
    admm = _wrap(stack, spec)
    # Rounds of 2 steps: 2 of pruning ADMM, 1 of retraining, then quantization ADMM. After
    # 8 steps the first quantization round has ended: rho is the schedule's value at 1.
    _fit(stack, admm, epochs=2)
    assert admm.phase is tf_admm.Phase.QUANT_ADMM
    rho = {name: float(stack.host(stack.slot(admm, name).rho)) for name in ("fc1", "conv")}
    if quant_rho is None:  # Each layer's own start again: the rule's 0.2, the spec's 0.05.
        assert rho == pytest.approx({"fc1": 0.2 * 1.5, "conv": 0.05 * 1.5})
    else:  # Spec.quant_rho for every layer, whatever the rule says.
        assert rho == pytest.approx({"fc1": 0.02, "conv": 0.02})


def test_sensitivity_split_is_measured_on_a_copy_and_kept_exactly_after_strip(stack):
    model = stack.convnet()
    before = [stack.host(v) for v in model.weights]
    spec = tf_admm.Spec(target_ratio=20, update_unit="step", update_every=2, admm_rounds=2)
    shared = tf_admm.shared_weights(model, spec)
    # The model's own variables (tf_keras' depthwise kernel is depthwise_kernel, Keras 3's kernel).
    assert [key.split("/")[0] for key in shared] == list(LAYER_SIZES)
    assert all(shared[k] is model.get_layer(k.split("/")[0]).weights[0] for k in shared)
    x, y = small_data(32, seed=1)
    copies = []

    def evaluate(copy):
        copies.append(copy)
        logits = stack.host(copy(x, training=False)).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return float(-log_softmax[np.arange(len(y)), y].mean())

    measured = tf_admm.sensitivity_allocation(model, spec, evaluate, points=4)
    assert copies and all(c is copies[0] and c is not model for c in copies)
    for old, new in zip(before, [stack.host(v) for v in model.weights]):
        np.testing.assert_array_equal(old, new)
    allocated = {key.split("/")[0]: kept for key, kept in measured.allocated.items()}
    # 2,484 weights / 20 = 124.2: 124 kept.
    assert sum(allocated.values()) == 124 and _planned(model, measured) == allocated
    admm = _wrap(stack, measured, model)
    _fit(stack, admm)  # Two ADMM rounds of 2 steps, then the hard projection.
    kernels = stack.kernels(tf_admm.strip(admm))
    assert {name: int(np.count_nonzero(k)) for name, k in kernels.items()} == allocated


def _quantized(stack, rules, **fields):
    """The convnet under ``rules`` trained into the final phase: every weight on its levels."""
    spec = tf_admm.Spec(
        rules=rules,
        rho=tf_admm.RhoSchedule(0.05, 1.5),
        update_every=2,
        update_unit="step",
        admm_rounds=2,
        retrain_rounds=1,
        quant_admm_rounds=2,
        quant_fractions=(0.5, 1.0),
        **fields,
    )
    admm = _wrap(stack, spec)
    # Rounds of 2 steps: 2 pruning ADMM, 1 retraining, 2 quantization ADMM, 2 locking: 14 steps.
    _fit(stack, admm, epochs=4)
    assert admm.phase is tf_admm.Phase.QUANT_RETRAIN
    return admm


def test_quantized_weights_lie_exactly_on_their_levels(stack):
    rules = [
        tf_admm.Rule(name="fc1", sparsity=0.8, bits=2),
        tf_admm.Rule(name="conv", sparsity=0.5, bits=3, per_channel=True),
        tf_admm.Rule(name="fc2", bits=2, scheme="power_of_two"),
        tf_admm.Rule(name="depthwise", sparsity=0.5, clusters=3),
    ]
    admm = _quantized(stack, rules)
    plain = tf_admm.strip(admm)
    x, _ = small_data(8)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), admm.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    kernels = stack.kernels(plain)
    # (levels a set holds, kept weights): 96 * 24 * 0.2, 54 / 2, all 72, 54 / 2.
    sizes = {"fc1": (4, 461), "conv": (8, 27), "fc2": (4, 72), "depthwise": (3, 27)}
    for name, (count, kept) in sizes.items():
        slot = stack.slot(admm, name)
        kernel, levels = kernels[name], stack.host(slot.levels)
        assert int(np.count_nonzero(kernel)) == kept == slot.keep, name
        # One level set per output channel for per_channel, else one for the whole kernel.
        sets = [(kernel, levels)]
        if slot.target.per_channel:
            sets = [(kernel[..., c], levels[c]) for c in range(kernel.shape[-1])]
        for values, grid in sets:
            distinct = np.unique(values[values != 0])
            assert len(grid) == count and 1 <= len(distinct) <= count, name
            assert set(distinct.tolist()) <= set(grid.tolist()), f"{name}: off its levels"
        scale = np.min(np.abs(levels), axis=-1, keepdims=True)
        if slot.target.scheme == "uniform":  # Integer multiples of one step.
            np.testing.assert_allclose(levels / scale, np.round(levels / scale), atol=1e-5)
        if slot.target.scheme == "power_of_two":  # Powers of two times one scale.
            np.testing.assert_allclose(np.log2(np.abs(levels) / scale) % 1, 0.0, atol=1e-5)
    # Everything is locked now: fixed-grid weights never move again.
    _fit(stack, admm)
    after = stack.kernels(tf_admm.strip(admm))
    for name in ("fc1", "conv", "fc2"):
        np.testing.assert_array_equal(after[name], kernels[name], err_msg=name)


def test_trained_grid_scales_move_and_keep_the_levels_an_exact_scaled_grid(stack):
    rules = [
        tf_admm.Rule(name="fc1", sparsity=0.8, bits=2),
        tf_admm.Rule(name="conv", sparsity=0.5, bits=3, per_channel=True),
        tf_admm.Rule(name="fc2", bits=2, scheme="power_of_two"),
    ]
    admm = _quantized(stack, rules, scale_update="sum")
    before = {r.name: stack.host(stack.slot(admm, r.name).levels) for r in rules}
    _fit(stack, admm, epochs=2)
    kernels = stack.kernels(tf_admm.strip(admm))
    for rule in rules:
        slot = stack.slot(admm, rule.name)
        levels = stack.host(slot.levels)
        assert np.all(levels != before[rule.name]), f"{rule.name}: the scale did not train"
        # Still exactly float32(scale * unit level), so the export finds integer codes.
        unit = projections.make_levels(1.0, rule.bits, slot.target.scheme).numpy()
        scale = levels[..., -1:] / unit[-1]
        np.testing.assert_array_equal(levels, scale * unit, err_msg=rule.name)
        kernel = kernels[rule.name]
        assert int(np.count_nonzero(kernel)) == slot.keep, rule.name
        sets = [(kernel, levels)]
        if slot.target.per_channel:
            sets = [(kernel[..., c], levels[c]) for c in range(kernel.shape[-1])]
        for values, grid in sets:
            assert set(values[values != 0].tolist()) <= set(grid.tolist()), rule.name


@pytest.mark.parametrize("sequential", [False, True], ids=["functional", "sequential"])
def test_wrap_then_strip_without_training_changes_no_output(stack, sequential):
    model = stack.convnet(sequential=sequential)
    x, _ = small_data(16)
    expected = stack.host(model(x))
    admm = tf_admm.admm_wrap(model, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5)))
    assert isinstance(admm, stack.admm_model_class)
    plain = tf_admm.strip(admm)
    assert type(plain) is type(model)
    assert stack.wrapped(admm) and not stack.wrapped(plain)
    np.testing.assert_allclose(stack.host(admm(x)), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stack.host(plain(x)), expected, rtol=1e-6, atol=1e-6)


def test_wrapping_training_and_stripping_never_modify_the_users_model(stack):
    model = stack.convnet()
    layers = list(model.layers)
    before = [w.copy() for w in model.get_weights()]
    admm = _wrap(stack, tf_admm.Spec(default=tf_admm.Rule(sparsity=0.8), update_unit="step"), model)
    _fit(stack, admm)
    tf_admm.strip(admm)
    assert model.layers == layers
    assert not stack.wrapped(model)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_keras_file_saved_mid_admm_loads_without_custom_objects_and_continues_identically(
    stack, tmp_path
):
    spec = tf_admm.Spec(
        default=tf_admm.Rule(sparsity=0.8), update_unit="step", update_every=3, admm_rounds=4
    )
    admm = _wrap(stack, spec)
    _fit(stack, admm)
    assert admm.phase is tf_admm.Phase.ADMM and int(stack.host(admm.admm_round)) == 1
    path = str(tmp_path / "mid_admm.keras")
    admm.save(path)
    loaded = stack.load_model(path)  # No custom_objects, no scope.
    assert isinstance(loaded, stack.admm_model_class) and loaded.spec == admm.spec
    original, restored = stack.state(admm), stack.state(loaded)
    assert original.keys() == restored.keys()
    for key, value in original.items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)
    for model in (admm, loaded):
        _fit(stack, model, epochs=2)  # Rounds 2 to 4, the hard projection, retraining.
    assert loaded.phase is tf_admm.Phase.RETRAIN
    original, restored = stack.state(admm), stack.state(loaded)
    for key, value in original.items():
        np.testing.assert_allclose(restored[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_backup_and_restore_resumes_as_an_uninterrupted_run(stack, tmp_path):
    spec = tf_admm.Spec(
        default=tf_admm.Rule(sparsity=0.8), update_unit="step", update_every=3, admm_rounds=3
    )

    def crash_at_epoch_2(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("crash at epoch 2")

    def run(backup_dir, crash):
        stack.reset(seed=3)
        admm = _wrap(stack, spec)
        if crash:
            callbacks = tf_admm.callbacks(backup_dir=backup_dir)
            callbacks.append(stack.callback(on_epoch_begin=crash_at_epoch_2))
            with pytest.raises(KeyboardInterrupt):
                _fit(stack, admm, epochs=3, callbacks=callbacks)
            stack.reset(seed=3)  # A new process: a new model, the same initial weights.
            admm = _wrap(stack, spec)
        _fit(stack, admm, epochs=3, callbacks=tf_admm.callbacks(backup_dir=backup_dir))
        return stack.state(admm)

    resumed = run(str(tmp_path / "resumed"), crash=True)
    straight = run(str(tmp_path / "straight"), crash=False)
    # 4 steps per epoch: rounds end at steps 3, 6 and 9, then retraining; the crash is at 8.
    assert straight["admm_round"] == 3 and straight["admm_phase"] == int(tf_admm.Phase.RETRAIN)
    assert straight["admm_step"] == 12
    for key, value in straight.items():
        np.testing.assert_allclose(resumed[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_nonfinite_loss_stops_training_at_the_step(stack):
    admm = tf_admm.admm_wrap(
        stack.dense(), tf_admm.Spec(default=tf_admm.Rule(sparsity=0.5), update_unit="step")
    )
    admm.compile(stack.keras.optimizers.SGD(1.0), "mse")
    x = np.ones((8, 4), "float32")
    y = np.full((8, 2), np.nan, "float32")
    with pytest.raises(tf_admm.NonFiniteError, match="loss=nan") as caught:
        admm.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=tf_admm.callbacks())
    assert caught.value.step == 1 and caught.value.epoch == 0


def test_data_parallel_training_on_two_devices_matches_one_device(stack):
    spec = tf_admm.Spec(
        default=tf_admm.Rule(sparsity=0.75), update_unit="step", update_every=2, admm_rounds=2
    )

    def train(distributed: bool):
        stack.reset(seed=5)
        scope = stack.distributed() if distributed else contextlib.nullcontext("one device")
        with scope as used:
            admm = _wrap(stack, spec)
            history = _fit(stack, admm, epochs=2, batches=4)
        return admm, history.history["loss"], used

    single, single_loss, _ = train(distributed=False)
    parallel, parallel_loss, used = train(distributed=True)
    assert parallel.phase is tf_admm.Phase.RETRAIN, used
    kernel = stack.slot(parallel, "fc1").variable
    assert stack.replicas(kernel) == 2 and stack.replicas(stack.slot(single, "fc1").variable) == 1
    assert stack.state(parallel)["admm_step"] == stack.state(single)["admm_step"] == 8, used
    # The same loss (with the penalty counted once, not once per replica) and the same weights.
    np.testing.assert_allclose(parallel_loss, single_loss, rtol=1e-4, err_msg=used)
    one, two = stack.kernels(tf_admm.strip(single)), stack.kernels(tf_admm.strip(parallel))
    for name, kernel in one.items():
        assert int(np.count_nonzero(two[name])) == int(np.count_nonzero(kernel)), (name, used)
        np.testing.assert_array_equal(two[name] != 0, kernel != 0, err_msg=f"{name} {used}")
        np.testing.assert_allclose(two[name], kernel, atol=1e-4, err_msg=f"{name} {used}")


# Bad inputs: the rows of tests/bad_input_test.py that take a model, with its error text.

_ROWS = {name: (error, message) for name, _, error, message in bad_input_test.CASES}
_ROWS.update({p.id: p.values[1:] for p in bad_input_test.GAPS})


def _rules(stack, *rules, model=None):
    return tf_admm.admm_wrap(model if model is not None else stack.convnet(), {"rules": rules})


def _admm_model(stack):
    return stack.compile(_rules(stack, {"name": "fc1", "sparsity": 0.5}))


def _load_damaged(stack, env, damage):
    """Saves a wrapped model, damages the file's bytes with ``damage``, loads it."""
    path = env.tmp_path / "model.keras"
    _admm_model(stack).save(str(path))
    with zipfile.ZipFile(path) as archive:
        member = archive.getinfo("config.json")
    data = damage(bytearray(path.read_bytes()), member)
    path = env.tmp_path / ("cut.keras" if len(data) < path.stat().st_size else "corrupt.keras")
    path.write_bytes(bytes(data))
    return tf_admm.load_model(str(path))


def _truncate(data, member):
    return data[: len(data) // 2]


def _overwrite_config(data, member):
    start = member.header_offset + 30 + len(member.filename) + len(member.extra)
    data[start + 10 : start + 30] = b"#" * 20
    return data


def _without_spec(stack, model):
    return stack.admm_model_class(model.inputs, model.outputs)


def _plain_model_fit(stack, callbacks):
    model = stack.compile(stack.convnet())
    return _fit(stack, model, callbacks=callbacks)


BAD_INPUTS = {
    "admm_wrap_spec_a_path": lambda s, env: tf_admm.admm_wrap(s.convnet(), "spec.json"),
    "admm_wrap_spec_dict_bad_field": lambda s, env: _rules(s, {"name": "fc1", "sparsity": 2}),
    "name_matches_no_layer": lambda s, env: _rules(s, {"name": "fc3", "sparsity": 0.5}),
    "pattern_matches_no_layer": lambda s, env: _rules(s, {"pattern": "dense_.*", "sparsity": 0.5}),
    "layer_type_matches_no_layer": (
        lambda s, env: _rules(s, {"layer_type": "Conv2d", "sparsity": 0.5})
    ),
    "layer_without_weights": lambda s, env: _rules(s, {"layer_type": "Flatten", "bits": 4}),
    "weights_attribute_not_a_variable": (
        lambda s, env: _rules(s, {"name": "fc1", "sparsity": 0.5, "weights": ["units"]})
    ),
    # tf_keras' DepthwiseConv2D holds depthwise_kernel, Keras 3's kernel: each is given the
    # other's name.
    "weights_attribute_of_another_layer_type": lambda s, env: _rules(
        s,
        {
            "layer_type": "DepthwiseConv2D",
            "sparsity": 0.5,
            "weights": ["depthwise_kernel" if s.is_keras3 else "kernel"],
        },
    ),
    "kmeans_clusters_exceed_kept_weights": (
        lambda s, env: _rules(s, {"name": "fc2", "sparsity": 0.9, "clusters": 8})
    ),
    "levels_exceed_kept_weights": (
        lambda s, env: _rules(s, {"name": "fc2", "sparsity": 0.9, "bits": 8})
    ),
    "rule_shadowed_by_an_earlier_rule": lambda s, env: _rules(
        s, {"layer_type": "Dense", "sparsity": 0.5}, {"name": "fc1", "sparsity": 0.9}
    ),
    "block_not_dividing_the_kernel": lambda s, env: _rules(
        s, {"name": "fc1", "structure": "block", "block": [5, 4], "sparsity": 0.5}
    ),
    "n_of_m_m_not_dividing_the_input_dimension": (
        lambda s, env: _rules(s, {"name": "fc2", "structure": "n_of_m", "n": 2, "m": 5})
    ),
    # tf_keras' DepthwiseConv2D holds depthwise_kernel, Keras 3's kernel (MESSAGES).
    "n_of_m_on_a_depthwise_kernel": (
        lambda s, env: _rules(s, {"name": "depthwise", "structure": "n_of_m", "n": 1, "m": 3})
    ),
    "structure_keep_above_the_groups": (
        lambda s, env: _rules(s, {"name": "conv", "structure": "filter", "keep": 7})
    ),
    "not_a_model": lambda s, env: _rules(
        s, {"name": "fc", "sparsity": 0.5}, model=s.keras.layers.Dense(3, name="fc")
    ),
    "unbuilt_sequential": lambda s, env: _rules(
        s,
        {"name": "fc", "sparsity": 0.5},
        model=s.keras.Sequential([s.keras.layers.Dense(3, name="fc")], name="seq"),
    ),
    "nothing_compressible": lambda s, env: tf_admm.admm_wrap(
        s.keras.Sequential(
            [s.keras.Input((4,)), s.keras.layers.Activation("relu", name="act")], name="plain"
        ),
        {"default": {"sparsity": 0.5}},
    ),
    "already_wrapped": lambda s, env: _rules(
        s, {"name": "admm_fc1", "sparsity": 0.5}, model=_admm_model(s)
    ),
    "admm_model_without_spec": lambda s, env: _without_spec(s, s.convnet()),
    "strip_not_a_model": lambda s, env: tf_admm.strip(s.keras.layers.Dense(3)),
    "fit_without_admm_callback": lambda s, env: _fit(s, _admm_model(s), callbacks=None),
    "fit_with_other_callbacks_only": (
        lambda s, env: _fit(s, _admm_model(s), callbacks=[s.keras.callbacks.History()])
    ),
    "admm_callback_on_plain_model": (
        lambda s, env: _plain_model_fit(s, callbacks=tf_admm.callbacks())
    ),
    "export_wrapped_model": lambda s, env: tflite_export.export(
        _admm_model(s), str(env.tmp_path / "m.tflite")
    ),
    "model_file_truncated": lambda s, env: _load_damaged(s, env, _truncate),
    "model_file_corrupt_member": lambda s, env: _load_damaged(s, env, _overwrite_config),
}

# Where a stack's own types or names appear in the text, the row's message for that stack.
_NOT_A_MODEL = (
    r"Expected a tf_keras Model \(tf_admm.compat.keras\) or a Keras 3 Model \(import keras\); "
    r"received: model of type {module}\..*\.Dense"
)
MESSAGES = {
    "weights_attribute_not_a_variable": lambda s: (
        r"Spec rules\[0\] \(name='fc1'\), field 'weights': Layer 'fc1' \(Dense\): Expected a "
        r"weight among its variables \(variable name: path\) \{'kernel': 'fc1/kernel', "
        r"'bias': 'fc1/bias'\}; received: weight='units' \(no variable matches\)"
        if s.is_keras3
        else _ROWS["weights_attribute_not_a_variable"][1]
    ),
    "weights_attribute_of_another_layer_type": lambda s: (
        r"field 'weights': Layer 'depthwise' \(DepthwiseConv2D\): Expected a weight among .*"
        r"'kernel': 'depthwise/kernel'.*; received: weight='depthwise_kernel' "
        r"\(no variable matches\)"
        if s.is_keras3
        else _ROWS["weights_attribute_of_another_layer_type"][1]
    ),
    "n_of_m_on_a_depthwise_kernel": lambda s: (
        _ROWS["n_of_m_on_a_depthwise_kernel"][1].replace("depthwise_kernel", "kernel")
        if s.is_keras3
        else _ROWS["n_of_m_on_a_depthwise_kernel"][1]
    ),
    "not_a_model": lambda s: _NOT_A_MODEL.format(module=s.keras.__name__),
    "strip_not_a_model": lambda s: _NOT_A_MODEL.format(module=s.keras.__name__),
}

# Rows of tests/bad_input_test.py left out of this table, and why.
NOT_IN_TABLE = {
    "unbuilt_subclassed_model": "subclassed Keras 3 models are refused as a whole",
    "subclassed_layer_created_in_call": "subclassed Keras 3 models are refused as a whole",
    "nested_subclassed_model": "subclassed Keras 3 models are refused as a whole",
    "structure_filter_tied_keeps_differ": "residual ties (tf_admm.grouping) are tf_keras only",
    "structure_filter_shrink_tied_channels_reshaped": (
        "a tf_keras model; tf_admm/keras3/shrink_test.py checks the same error on Keras 3"
    ),
    "structure_filter_shrink_keras3_operator_join": "keras.ops operations are Keras 3 only",
    "structure_the_layer_type_cannot_have": "Keras 3 has no Embedding in its registry",
    "export_subclassed_model_never_called": "subclassed Keras 3 models are refused as a whole",
    "export_keras3_model_not_stripped": "export_wrapped_model covers it on every stack",
    "keras3_levels_exceed_kept_weights": "levels_exceed_kept_weights covers it on every stack",
    "keras3_wrapper_config_with_more_clusters_than_kept_weights": "a Keras 3 wrapper config",
    "model_file_missing": "no file, no stack",
    "export_path_under_a_file": "the path is checked, not the model",
    "export_read_only_directory": "the path is checked, not the model",
    "export_tensor_names_unknown": "the option is checked before the model",
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_raises_the_same_error_text_on_every_stack(stack, name, tmp_path, monkeypatch):
    env = types.SimpleNamespace(tmp_path=tmp_path, monkeypatch=monkeypatch)
    error, message = _ROWS[name]
    message = MESSAGES[name](stack) if name in MESSAGES else message
    if name.startswith("export_") and stack.is_keras3 and KERAS3 != "keras3_tensorflow":
        pytest.skip("tflite_export converts Keras 3 models on the TensorFlow backend only")
    with pytest.raises(error) as raised:
        BAD_INPUTS[name](stack, env)
    assert re.search(message, str(raised.value)), (message, str(raised.value))


def test_every_bad_input_row_that_takes_a_model_is_in_the_table_or_says_why_not():
    # Spec errors are raised before any model is looked at (but for admm_wrap's own rows);
    # config files and the recipe's flags take no model.
    takes_a_model = {
        name
        for name, (error, _) in _ROWS.items()
        if (error is not tf_admm.SpecError or name.startswith("admm_wrap_"))
        and not name.startswith(("config_file_", "recipe_"))
    }
    assert takes_a_model - set(NOT_IN_TABLE) == set(BAD_INPUTS)
    assert not set(NOT_IN_TABLE) & set(BAD_INPUTS) and set(NOT_IN_TABLE) <= set(_ROWS)
