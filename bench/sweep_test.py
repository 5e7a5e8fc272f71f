"""bench/sweep.py: arms, protocol checks, the learning rate, one cached point per arm.

The comparisons computed from the records are tested in bench/comparisons_test.py."""

import json
import os

import numpy as np
import pytest

from bench import sweep


def test_arm_parses_library_and_allocation_and_names_bad_fields():
    assert sweep.Arm.parse("tfmot:uniform") == sweep.Arm("tfmot", "uniform")
    assert str(sweep.Arm.parse("tf_admm:lamp")) == "tf_admm:lamp"
    with pytest.raises(ValueError, match="library:allocation"):
        sweep.Arm.parse("tf_admm")
    with pytest.raises(ValueError, match="library in .*received: library='torch'"):
        sweep.Arm.parse("torch:lamp")
    with pytest.raises(ValueError, match="allocation in .*received: allocation='random'"):
        sweep.Arm.parse("tfmot:random")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"dataset": "cifar10"}, "dataset"),
        ({"epochs": 24, "prune_epochs": 24}, "prune_epochs < epochs"),
        ({"update_every": 0}, "update_every >= 1"),
        ({"rho": 0.0}, "rho > 0"),
        ({"rho_multiplier": 0.9}, "rho_multiplier >= 1"),
        ({"distill_weight": 1.5}, "distillation weight"),
        ({"distill_weight": 0.5, "distill_temperature": 0.0}, "distillation temperature"),
    ],
)
def test_protocol_refuses_bad_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        sweep.Protocol(**fields)


def test_protocol_key_changes_with_any_field():
    assert sweep.Protocol().key() == sweep.Protocol().key()
    assert sweep.Protocol().key() != sweep.Protocol(rho=1e-3).key()
    assert sweep.Protocol().key() != sweep.Protocol(dataset="fashion_mnist").key()


def test_protocol_without_distillation_keeps_the_key_of_the_points_recorded_before_it():
    # The key of docs/data/sweep/points/mnist_e442964f8f_*: adding the distillation fields must
    # not orphan them.
    assert sweep.Protocol().key() == "e442964f8f"
    assert sweep.Protocol(dataset="fashion_mnist").key() == "450b7436c5"
    assert "distill_weight" not in sweep.Protocol().identity()
    distilled = sweep.Protocol(distill_weight=0.5)
    assert distilled.identity()["distill_weight"] == 0.5
    assert distilled.key() != sweep.Protocol().key()
    assert distilled.key() != sweep.Protocol(distill_weight=0.5, distill_temperature=2).key()


def test_cosine_rate_holds_then_decays_to_the_floor():
    assert sweep.cosine_rate(0, 10, 4, 1e-3, 1e-5) == 1e-3
    assert sweep.cosine_rate(9, 10, 4, 1e-3, 1e-5) == 1e-3
    assert sweep.cosine_rate(10, 10, 4, 1e-3, 1e-5) == pytest.approx(1e-3)
    assert sweep.cosine_rate(12, 10, 4, 1e-3, 1e-5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert sweep.cosine_rate(14, 10, 4, 1e-3, 1e-5) == pytest.approx(1e-5)
    assert sweep.cosine_rate(99, 10, 4, 1e-3, 1e-5) == pytest.approx(1e-5)


def _arrays(count=256, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = rng.uniform(0, 0.2, (count, 28, 28, 1)).astype(np.float32)
    for digit in range(10):  # A bright block per class, so that training learns something.
        images[labels == digit, 2 * digit : 2 * digit + 4, 4:10, 0] += 0.8
    return images, labels


def test_every_arm_keeps_exactly_the_allocation_and_a_point_is_read_back(tmp_path, monkeypatch):
    protocol = sweep.Protocol(
        epochs=2, prune_epochs=1, pretrain_epochs=1, batch_size=64, update_every=2
    )
    arrays = (_arrays(), _arrays(64, 1), _arrays(64, 2))
    records = {}
    for arm in ("tf_admm:lamp", "tfmot:lamp", "tfmot:uniform"):
        records[arm] = sweep.run_point(
            protocol, 0, sweep.Arm.parse(arm), 100, work_dir=str(tmp_path), arrays=arrays
        )
    # keep_for_ratio(430,500, 100) = 4,305 weights; LAMP splits them by the dense kernels.
    lamp = records["tf_admm:lamp"]["kept"]
    assert sum(lamp.values()) == 4_305
    assert records["tfmot:lamp"]["kept"] == lamp
    for record in records.values():
        assert record["nonzeros"] == record["kept"]
        assert record["weights"] == 430_500
        assert record["achieved_ratio"] == pytest.approx(430_500 / 4_305)
        assert 0 <= record["test"] <= 1 and 0 <= record["validation"] <= 1
    # Uniform: one sparsity everywhere, so conv1 (500 weights) keeps 5.
    assert records["tfmot:uniform"]["kept"]["conv1"] == 5
    # Same seed: both libraries started from the same cached dense model.
    assert records["tfmot:lamp"]["dense"] == records["tf_admm:lamp"]["dense"]

    path = sweep.point_path(str(tmp_path), protocol, 0, sweep.Arm.parse("tf_admm:lamp"), 100)
    assert os.path.exists(path)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached point was trained again")

    monkeypatch.setattr(sweep, "_tf_admm", no_training)
    again = sweep.run_point(
        protocol, 0, sweep.Arm.parse("tf_admm:lamp"), 100, work_dir=str(tmp_path), arrays=arrays
    )
    assert again == json.loads(open(path, encoding="utf-8").read())
    assert sweep.read_point(protocol, 0, sweep.Arm.parse("tf_admm:lamp"), 100, str(tmp_path))
    assert (
        sweep.read_point(protocol, 1, sweep.Arm.parse("tf_admm:lamp"), 100, str(tmp_path)) is None
    )
    # Another protocol is a different point, not the cached one.
    other = sweep.Protocol(epochs=2, prune_epochs=1, pretrain_epochs=1, batch_size=64)
    assert sweep.point_path(str(tmp_path), other, 0, sweep.Arm.parse("tf_admm:lamp"), 100) != path


def test_a_distilled_point_trains_on_the_dense_models_logits(tmp_path, monkeypatch):
    protocol = sweep.Protocol(
        epochs=2,
        prune_epochs=1,
        pretrain_epochs=1,
        batch_size=64,
        update_every=2,
        distill_weight=0.5,
    )
    arrays = (_arrays(), _arrays(64, 1), _arrays(64, 2))
    seen = {}
    real_fit = sweep._fit

    def spy(model, protocol, train, seed, callbacks, verbose):
        seen["rows"], seen["loss"] = train[1], model.loss
        return real_fit(model, protocol, train, seed, callbacks, verbose)

    monkeypatch.setattr(sweep, "_fit", spy)
    record = sweep.run_point(
        protocol, 0, sweep.Arm.parse("tf_admm:lamp"), 100, work_dir=str(tmp_path), arrays=arrays
    )
    dense = sweep.dense_model(protocol, 0, arrays[0], str(tmp_path))
    logits = dense.predict(arrays[0][0], verbose=0)
    assert seen["rows"].shape == (256, 11)
    np.testing.assert_array_equal(seen["rows"][:, 0], arrays[0][1])
    np.testing.assert_allclose(seen["rows"][:, 1:], logits, rtol=1e-5, atol=1e-5)
    assert seen["loss"].weight == 0.5 and seen["loss"].temperature == 4.0
    assert record["nonzeros"] == record["kept"] and sum(record["kept"].values()) == 4_305
    assert record["protocol"]["distill_weight"] == 0.5
    assert "_" + protocol.key() + "_" in sweep.point_path(
        str(tmp_path), protocol, 0, sweep.Arm.parse("tf_admm:lamp"), 100
    )


def test_the_default_arm_gives_tf_admm_nothing_but_the_target(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="'default' arm with library 'tf_admm'.*tfmot:default"):
        sweep.Arm.parse("tfmot:default")
    protocol = sweep.Protocol(epochs=2, prune_epochs=1, pretrain_epochs=1, batch_size=64)
    arrays = (_arrays(), _arrays(64, 1), _arrays(64, 2))
    seen = {}

    def train(protocol, dense, spec, train, seed, verbose, expected=None):
        seen.update(spec=spec, expected=expected)
        wrapped = sweep.tf_admm.admm_wrap(dense, spec)
        seen["allocated"] = dict(wrapped.spec.allocated)
        return sweep.tf_admm.strip(wrapped)  # Not trained: the dense weights.

    monkeypatch.setattr(sweep, "_train_tf_admm", train)
    record = sweep.run_point(
        protocol, 0, sweep.Arm.parse("tf_admm:default"), 100, work_dir=str(tmp_path), arrays=arrays
    )
    spec = seen["spec"]
    # Only the target: the automatic schedule and LAMP, none of the protocol's ADMM settings.
    assert spec == sweep.tf_admm.Spec(target_ratio=spec.target_ratio) and spec.automatic
    assert spec.rho == sweep.tf_admm.RhoSchedule(initial=3e-4, multiplier=1.042)
    # The record's kept counts are LAMP's split, and admm_wrap chose exactly that split.
    assert (
        record["kept"]
        == seen["expected"]
        == sweep.allocation_for(
            sweep.dense_model(protocol, 0, arrays[0], str(tmp_path)), 100, "lamp"
        )
    )
    assert {k.split("/")[0]: v for k, v in seen["allocated"].items()} == record["kept"]
