"""tf_admm.plan: what a spec will compress, layer by layer, and why not; admm_wrap's log of it."""

import logging

import pytest

import tf_admm
from tf_admm import keras
from tf_admm.planning import KEEPS_ALL, NO_RULE, LayerPlan, Target, WeightPlan

# Sizes: conv kernel 3*3*1*4 = 36 + bias 4; bn 4 each of gamma, beta, mean, variance;
# mixer w 24*5 + v 6*5 + b 5 = 155; fc kernel 5*3 = 15 + bias 3.
UNTOUCHED_MIXER = ("w 24x5", "v 6x5")


class Mixer(keras.layers.Layer):
    """A custom layer with two trainable matrices that does not name compressible weights."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], 5))
        self.v = self.add_weight(name="v", shape=(input_shape[-2], 5))
        self.b = self.add_weight(name="b", shape=(5,))

    def call(self, x):
        return (
            keras.backend.mean(x @ self.w, axis=1)
            + keras.backend.mean(keras.backend.permute_dimensions(x, (0, 2, 1)) @ self.v, axis=1)
            + self.b
        )


def _model():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Reshape((6, 24), name="reshape")(h)
    h = Mixer(name="mixer")(h)
    outputs = keras.layers.Dense(3, name="fc")(h)
    return keras.Model(inputs, outputs, name="mixed")


def _default_spec():
    return tf_admm.Spec(default=tf_admm.Rule(sparsity=0.8))


def test_plan_rows_under_a_default_rule_say_what_is_compressed_and_why_the_rest_is_not():
    plan = tf_admm.plan(_model(), _default_spec())
    # Kept = round(size * 0.2): 7.2 -> 7 of conv's 36, 3 of fc's 15; reshape has no weights.
    assert plan.layers == (
        LayerPlan(
            "conv",
            "Conv2D",
            40,
            "default rule",
            (WeightPlan(Target("kernel", 0.8, 3e-4), (3, 3, 1, 4), 7),),
        ),
        LayerPlan(
            "bn",
            "BatchNormalization",
            16,
            reason="no compressible weights registered for BatchNormalization",
        ),
        LayerPlan(
            "mixer",
            "Mixer",
            155,
            reason="no compressible weights registered for Mixer",
            untouched=UNTOUCHED_MIXER,
        ),
        LayerPlan(
            "fc", "Dense", 18, "default rule", (WeightPlan(Target("kernel", 0.8, 3e-4), (5, 3), 3),)
        ),
    )
    assert [row.warn for row in plan.layers] == [False, False, True, False]
    assert [row.layer for row in plan.left_out] == ["bn", "mixer"]
    text = str(plan).splitlines()
    # 10 of 36 + 15 kept; 40 + 16 + 155 + 18 = 229 weights in all, 178 of them not targeted.
    assert text[0] == (
        "Plan for model 'mixed': 2 of 4 layers with weights compressed; 10 of 51 targeted "
        "weights kept (5.1x); 178 other weights stay as they are"
    )
    assert text[1].split() == "layer type weight shape kept sparsity bits rho rule".split()
    rows = {line.split()[0]: line.split() for line in text[3:]}
    assert rows["conv"] == "conv Conv2D kernel 3x3x1x4 7/36 80.00% - 0.0003 default rule".split()
    assert rows["fc"] == "fc Dense kernel 5x3 3/15 80.00% - 0.0003 default rule".split()
    assert (
        rows["mixer"]
        == (
            "mixer Mixer - - -/155 - - - not compressed: no compressible weights registered for "
            "Mixer"
        ).split()
    )
    assert len(text) == 3 + 4


def test_admm_wrap_logs_the_plan_at_info_and_warns_once_about_the_mixer_only(caplog):
    model = _model()
    with caplog.at_level(logging.INFO, logger="absl"):
        admm = tf_admm.admm_wrap(model, _default_spec())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        "Layer 'mixer' (Mixer) holds trainable weights that tf_admm will not compress "
        "(w 24x5, v 6x5): no compressible weights registered for Mixer; the default rule "
        "takes only registered layer types"
    )
    plan = tf_admm.plan(model, _default_spec())
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert str(plan) in infos
    # The plan is what admm_wrap does: the same layers, weights and kept counts.
    wrapped = {
        w.layer.name: [(s.target.weight, s.keep) for s in w.slots] for w in admm.admm_wrappers
    }
    planned = {
        row.layer: [(w.target.weight, w.kept) for w in row.weights] for row in plan.compressed
    }
    assert wrapped == planned == {"conv": [("kernel", 7)], "fc": [("kernel", 3)]}


def test_plan_names_layers_no_rule_matches_and_rules_that_keep_everything(caplog):
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="conv", sparsity=0.0), tf_admm.Rule(name="fc", bits=3, rho=0.01)]
    )
    plan = tf_admm.plan(_model(), spec)
    rows = {row.layer: row for row in plan.layers}
    assert rows["conv"] == LayerPlan(
        "conv",
        "Conv2D",
        40,
        "rules[0] (name='conv')",
        (WeightPlan(Target("kernel", 0.0, 3e-4), (3, 3, 1, 4), 36),),
        reason=KEEPS_ALL,
    )
    assert rows["fc"] == LayerPlan(
        "fc",
        "Dense",
        18,
        "rules[1] (name='fc')",
        (WeightPlan(Target("kernel", 0.0, 0.01, bits=3, scheme="uniform"), (5, 3), 15),),
    )
    assert rows["bn"].reason == rows["mixer"].reason == NO_RULE
    assert [row.layer for row in plan.compressed] == ["fc"]
    assert "3 (uniform)" in str(plan).splitlines()[-1]
    with caplog.at_level(logging.WARNING, logger="absl"):
        tf_admm.admm_wrap(_model(), spec)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # No opt-in hint: no rule matches the mixer at all.
    assert warnings == [
        "Layer 'mixer' (Mixer) holds trainable weights that tf_admm will not compress "
        f"({', '.join(UNTOUCHED_MIXER)}): {NO_RULE}"
    ]


def test_plan_shows_the_target_ratio_allocation_admm_wrap_would_use():
    spec = tf_admm.Spec(target_ratio=5, allocation="uniform")
    plan = tf_admm.plan(_model(), spec)
    kept = {row.layer: row.weights[0].kept for row in plan.compressed}
    # 51 shared weights at 5x keep 10 (tf_admm.allocation.keep_for_ratio), split uniformly.
    assert sum(kept.values()) == tf_admm.allocation.keep_for_ratio(51, 5, layers=2) == 10
    admm = tf_admm.admm_wrap(_model(), spec)
    assert {w.layer.name: w.slots[0].keep for w in admm.admm_wrappers} == kept


def test_plan_refuses_bad_input_as_admm_wrap_does():
    with pytest.raises(ValueError, match=r"rules\[0\] \(name='gone'\) matches no layer"):
        tf_admm.plan(_model(), tf_admm.Spec(rules=[tf_admm.Rule(name="gone", sparsity=0.5)]))


def test_plan_refuses_more_levels_than_kept_weights_naming_the_rule():
    # fc's kernel keeps 3 of 15 weights at 80% sparsity: 2 bits (4 levels) are too many.
    spec = tf_admm.Spec(rules=[tf_admm.Rule(name="fc", sparsity=0.8, bits=2)])
    with pytest.raises(
        ValueError,
        match=r"Spec rules\[0\] \(name='fc'\), layer 'fc', weight 'kernel': Expected at most "
        r"as many quantization levels as kept weights \(3\); received: bits=2 \(4 levels\)",
    ):
        tf_admm.plan(_model(), spec)


def test_target_from_config_rebuilds_it_and_names_the_layer_on_bad_keys():
    target = Target("kernel", 0.75, 1e-3, bits=3, scheme="uniform", structure="block", block=(1, 4))
    config = target.get_config()
    assert config["block"] == [1, 4]  # As JSON holds it.
    assert Target.from_config(config, "fc") == target
    assert Target.from_config(target, "fc") is target
    with pytest.raises(ValueError, match=r"Layer 'fc': .*\['bits', .*received: \{'weight'"):
        Target.from_config({"weight": "kernel", "sparsity": 0.5}, "fc")
