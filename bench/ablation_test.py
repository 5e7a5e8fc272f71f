"""bench.ablation on a few random images: every variant ends at the exact kept counts."""

import dataclasses

import numpy as np
import pytest

import tf_admm
from bench import ablation
from tf_admm.compat import keras


def _arrays(seed=0):
    rng = np.random.default_rng(seed)

    def split(count):
        images = rng.random((count, 28, 28, 1), dtype=np.float32)
        return images, rng.integers(0, 10, size=count)

    return split(256), split(64), split(64)


@pytest.mark.parametrize(
    "variant,allocation",
    [("api", "hand"), ("api_fresh", "hand"), ("plain", "hand"), ("api", "lamp")],
)
def test_each_variant_keeps_exactly_its_budget(tmp_path, variant, allocation):
    settings = ablation.Settings(
        variant=variant,
        allocation=allocation,
        kept=(20, 200, 300, 50),
        admm_epochs=1,
        retrain_epochs=1,
        pretrain_epochs=1,
        every=1,
        cache_dir=str(tmp_path),
    )
    result = ablation.run(settings, _arrays())
    assert sum(result["nonzeros"].values()) == 570
    if allocation == "hand":
        assert list(result["nonzeros"].values()) == [20, 200, 300, 50]
    else:
        assert {f"{n}/kernel": k for n, k in result["nonzeros"].items()} == result["allocated"]
    assert result["ratio"] == pytest.approx(430_500 / 570)
    assert 0 <= result["validation"] <= 1 and 0 <= result["test"] <= 1


def test_fresh_optimizer_zeroes_the_state_once_at_the_hard_projection(tmp_path):
    settings = ablation.Settings(kept=(20, 200, 300, 50), every=1, cache_dir=str(tmp_path))
    (x, y), validation, _ = _arrays()
    dense = ablation.dense_model(dataclasses.replace(settings, pretrain_epochs=1), (x, y))
    # 2 steps of 128 per epoch, a Z/U update every step: one epoch is 2 ADMM rounds.
    spec = ablation.api_spec(dataclasses.replace(settings, admm_epochs=1), dense, 2, validation)
    assert spec.admm_rounds == 2
    model = tf_admm.admm_wrap(dense, spec)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    fresh = ablation.FreshOptimizer()
    model.fit(x, y, batch_size=128, epochs=3, verbose=0, callbacks=tf_admm.callbacks() + [fresh])
    assert fresh.reset_at == 2
    # Zeroed after step 2 of 6: 4 steps counted since.
    assert int(model.optimizer.iterations.numpy()) == 4


def test_plain_needs_the_hand_allocation():
    with pytest.raises(ValueError, match="allocation='hand' with variant='plain'"):
        ablation.Settings(variant="plain", allocation="lamp")
