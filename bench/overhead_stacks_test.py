"""bench.overhead on each Keras stack: Keras 3 on TensorFlow here, Keras 3 on JAX in a
subprocess, the table that puts the stacks side by side, and the checks of its settings."""

import math

import pytest

from bench import overhead, overhead_stacks
from recipes import models
from tf_admm.compat import keras3

LENET5_WEIGHTS = 430_500  # Kernels: 500 + 25,000 + 400,000 + 5,000.


def _tiny(**overrides):
    values = dict(
        models=("lenet5",),
        variants=("plain", "admm", "retrain", "tfmot"),
        batch_size=8,
        steps=2,
        warmup=1,
        repeats=1,
        out=None,
    )
    values.update(overrides)
    return overhead.Settings(**values)


def _check_stack(entry, variants):
    lenet = entry["models"]["lenet5"]
    assert set(lenet["variants"]) == set(variants)
    for found in lenet["variants"].values():
        assert math.isfinite(found["ratio"]) and found["ratio"] > 0
        assert found["epoch_s"] > 0 and len(found["epoch_s_per_repeat"]) == 1
        assert len(found["step_ms"]) == 1 and len(found["step_ms"][0]) == 2
    admm = lenet["variants"]["admm"]
    assert admm["zu_update_ms"] > 0
    # Z, U and the mask per kernel entry (float32), rho and a dual residual per kernel, and
    # the model's counters.
    assert 12 * LENET5_WEIGHTS < admm["extra_state_bytes"] < 12 * LENET5_WEIGHTS + 256
    assert lenet["variants"]["plain"]["extra_state_bytes"] == 0


@pytest.mark.skipif(keras3.backend.backend() != "tensorflow", reason="Keras 3 on TensorFlow here")
def test_keras3_tensorflow_is_timed_here_and_jax_in_a_subprocess_in_one_run(capsys):
    pytest.importorskip("jax", reason="pip install -e '.[test]' installs jax")
    results = overhead.run(_tiny(stacks=("keras3_tensorflow", "keras3_jax")))
    assert list(results["stacks"]) == ["keras3_tensorflow", "keras3_jax"]
    assert results["models"] == {}  # tf_keras' place, not timed here.
    here, there = results["stacks"]["keras3_tensorflow"], results["stacks"]["keras3_jax"]
    assert here["process"] == "this" and there["process"] == "subprocess"
    assert there["backend"] == "jax"
    # tfmot prunes tf_keras models only; every other variant runs on Keras 3.
    for entry in (here, there):
        _check_stack(entry, {"plain", "admm", "retrain"})
    printed = capsys.readouterr().out
    assert "Stacks side by side" in printed and "lenet5 on keras3_jax: ADMM step" in printed
    assert "tfmot prunes tf_keras models only" in printed


def test_stack_table_has_a_row_per_model_and_stack_with_n_a_for_what_did_not_run():
    def variants(plain, admm):
        return {
            "plain": {"median_ms": plain, "ratio": 1.0, "epoch_s": 0.5},
            "admm": {"median_ms": admm, "ratio": admm / plain, "epoch_s": 0.6, "zu_update_ms": 3},
        }

    stacks = {
        "tf_keras": {"models": {"lenet5": {"variants": variants(10.0, 10.5)}}},
        "keras3_jax": {
            "models": {"lenet5": {"variants": variants(8.0, 9.6)}},
            "process": "subprocess",
            "load_average": [1.0, 1.0, 1.0],
        },
    }
    rows = overhead_stacks.stack_rows(stacks)
    assert rows == [
        ("lenet5", "tf_keras", "10.00", "10.50", "1.050x", "n/a", "0.50", "0.60", "3.0"),
        ("lenet5", "keras3_jax", "8.00", "9.60", "1.200x", "n/a", "0.50", "0.60", "3.0"),
    ]
    text = overhead_stacks.format_stacks(stacks, 45)
    assert "lenet5 on tf_keras: ADMM step 1.05x plain: meets the 1.10x target" in text
    assert "lenet5 on keras3_jax: ADMM step 1.20x plain: misses the 1.10x target" in text
    assert "an epoch is 45 steps" in text and "keras3_jax: timed in a subprocess" in text


def test_unknown_stacks_are_refused():
    with pytest.raises(ValueError, match="Expected stacks among.*received: stacks=\\['keras4'\\]"):
        _tiny(stacks=("keras4",))
    with pytest.raises(ValueError, match="Expected stacks among"):
        _tiny(stacks=())
    assert overhead.Settings().stacks == ("tf_keras", "keras3_tensorflow", "keras3_jax")


def test_a_stack_subprocess_never_starts_another(monkeypatch):
    monkeypatch.setenv("TF_ADMM_OVERHEAD_STACK", "1")
    monkeypatch.setattr(overhead_stacks.subprocess, "run", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(RuntimeError, match="Expected Keras 3 on the jax backend"):
        overhead_stacks.time_elsewhere("keras3_jax", [])


def test_keras3_state_bytes_counts_nothing_in_a_plain_model():
    assert overhead_stacks.keras3_state_bytes(models.lenet5(api=keras3)) == 0
