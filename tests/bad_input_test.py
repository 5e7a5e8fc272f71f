"""Every user-facing error path in one table: bad input fails with a typed error naming the culprit.

Each row is (id, callable, exception type, regex). The callable gets ``env`` (``tmp_path`` and
``monkeypatch``) and must raise that type (or a subclass of it) with a message that names the
offending field, rule, layer, model or file. Spec rows go through ``Spec.from_dict`` (the form a
JSON config file takes), so they also cover the dict path that the constructor tests in
``tf_admm/spec_test.py`` do not. A known gap gets a row marked ``xfail(strict=True)``: it starts
failing (XPASS) once the gap is closed, and then the mark should go.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import types
import zipfile

import numpy as np
import pytest
from absl.testing import flagsaver

import tf_admm
import tflite_export
from recipes import lenet5_mnist
from tf_admm import Spec, SpecError
from tf_admm.compat import keras
from tf_admm.testing import (
    compile_for_classification,
    mobilenet_v2_like,
    small_convnet,
    small_data,
    text_classifier,
)

# Wrapping copies the model and leaves it untouched, so one instance serves every row.
_model = functools.cache(small_convnet)


def _spec(**fields):
    """A spec dict with a valid default rule plus ``fields``, as read from a config file."""
    return Spec.from_dict({"default": {"sparsity": 0.5}, **fields})


def _rule(**fields):
    """A spec dict whose only rule is ``fields``."""
    return Spec.from_dict({"rules": [fields]})


def _wrap(*rules, model=None):
    return tf_admm.admm_wrap(model if model is not None else _model(), {"rules": list(rules)})


@functools.cache
def _admm_model():
    return compile_for_classification(_wrap({"name": "fc1", "sparsity": 0.5}))


def _fit(model, **kwargs):
    x, y = small_data(8)
    return model.fit(x, y, epochs=1, verbose=0, **kwargs)


def _write(directory, name: str, content: str | bytes) -> str:
    path = directory / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def _saved_keras_bytes(env) -> bytes:
    path = str(env.tmp_path / "good.keras")
    _admm_model().save(path)
    with open(path, "rb") as f:
        return f.read()


def _load_truncated(env):
    data = _saved_keras_bytes(env)
    return tf_admm.load_model(_write(env.tmp_path, "cut.keras", data[: len(data) // 2]))


def _load_damaged(env):
    data = bytearray(_saved_keras_bytes(env))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        member = archive.getinfo("config.json")
    start = member.header_offset + 30 + len(member.filename) + len(member.extra)
    data[start + 10 : start + 30] = b"#" * 20
    return tf_admm.load_model(_write(env.tmp_path, "corrupt.keras", bytes(data)))


_VALID_JSON = json.dumps({"rules": [{"name": "fc1", "sparsity": 0.5}], "admm_rounds": 4})


def _from_file(env, content: str | bytes, name: str = "spec.json"):
    return Spec.from_file(_write(env.tmp_path, name, content))


def _recipe_config(path: str):
    lenet5_mnist.flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(config=path):
        return lenet5_mnist.settings_from_flags()


def _recipe_file(env, name: str, content: str | bytes):
    return _recipe_config(_write(env.tmp_path, name, content))


def _sequential_unbuilt():
    return keras.Sequential([keras.layers.Dense(3, name="fc")], name="seq")


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = keras.layers.Dense(3, name="inner_fc")

    def call(self, x):
        return self.fc(x)


class _CreatesInCall(_Subclassed):
    def call(self, x):
        return keras.layers.Dense(2, name="late")(self.fc(x))


def _creates_in_call():
    model = _CreatesInCall(name="creates")
    model(np.zeros((1, 4), np.float32))
    return model


def _nested_subclassed():
    inputs = keras.Input((4,))
    outputs = _Subclassed(name="inner")(inputs)
    return keras.Model(inputs, outputs, name="outer")


def _tied_then_reshaped():
    """Two Conv2D layers meeting at an Add, then a Reshape; filter 1 zero in both."""
    inputs = keras.Input((4, 4, 2))
    left = keras.layers.Conv2D(3, 1, name="left")(inputs)
    right = keras.layers.Conv2D(3, 1, name="right")(inputs)
    h = keras.layers.Add(name="add")([left, right])
    h = keras.layers.Reshape((16, 3), name="reshape")(h)
    model = keras.Model(inputs, keras.layers.Conv1D(2, 1, name="head")(h))
    for name in ("left", "right"):
        kernel, bias = model.get_layer(name).get_weights()
        kernel[..., 1] = 0.0
        model.get_layer(name).set_weights([kernel, bias])
    return model


def _no_compressible_layer():
    inputs = keras.Input((4,))
    outputs = keras.layers.Activation("relu", name="act")(inputs)
    return keras.Model(inputs, outputs, name="plain")


def _keras3_model():
    import keras as keras3  # The Keras 3 package, which `import keras` gives users by default.

    return keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2, name="fc")])


def _keras3_operator_join():
    """A Keras 3 model joining two convolutions with ``+`` (a keras.ops operation, no layer)."""
    import keras as keras3

    inputs = keras3.Input((4, 4, 2))
    a = keras3.layers.Conv2D(3, 1, name="a")(inputs)
    b = keras3.layers.Conv2D(3, 1, name="b")(inputs)
    return keras3.Model(inputs, keras3.layers.Conv2D(2, 1, name="head")(a + b), name="operator")


def _keras3_wrapper(target):
    """Builds a Keras 3 AdmmWrapper from a target config (as a hand-edited .keras file holds)."""
    import keras as keras3

    from tf_admm.keras3 import AdmmWrapper

    wrapper = AdmmWrapper(keras3.layers.Dense(2, name="fc"), [target])
    wrapper.build((None, 4))
    return wrapper


def _export_to_read_only_directory(env):
    directory = env.tmp_path / "read_only"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        if os.access(directory, os.W_OK):
            # Root ignores permission bits: show the exporter what any other user would see.
            real_access = os.access

            def access(path, mode, **kwargs):
                if mode & os.W_OK and os.fspath(path) == str(directory):
                    return False
                return real_access(path, mode, **kwargs)

            env.monkeypatch.setattr(os, "access", access)
        tflite_export.export(_model(), str(directory / "m.tflite"))
    finally:
        directory.chmod(0o755)


CASES = [
    # Spec fields, as a JSON config file gives them.
    (
        "sparsity_out_of_range",
        lambda env: _rule(name="fc1", sparsity=1.5),
        SpecError,
        r"Rule\(name='fc1'\): Expected sparsity in \[0, 1\); received: sparsity=1.5",
    ),
    (
        "sparsity_nan",
        lambda env: _rule(name="fc1", sparsity=math.nan),
        SpecError,
        r"Expected sparsity in \[0, 1\); received: sparsity=nan",
    ),
    (
        "sparsity_wrong_type",
        lambda env: _rule(name="fc1", sparsity="0.5"),
        SpecError,
        r"sparsity to be a number in \[0, 1\); received: sparsity='0.5'",
    ),
    (
        "ratio_infinite",
        lambda env: _rule(name="fc1", ratio=math.inf),
        SpecError,
        r"Expected ratio >= 1; received: ratio=inf",
    ),
    (
        "ratio_wrong_type",
        lambda env: _rule(name="fc1", ratio=[50]),
        SpecError,
        r"ratio to be a number >= 1; received: ratio=\[50\]",
    ),
    (
        "sparsity_and_ratio",
        lambda env: _rule(name="fc1", sparsity=0.5, ratio=2),
        SpecError,
        r"one of sparsity, ratio or keep; received: sparsity=0.5, ratio=2",
    ),
    (
        "no_compression_target",
        lambda env: _rule(name="fc1"),
        SpecError,
        r"Rule\(name='fc1'\): Expected a compression target",
    ),
    (
        "rule_rho_wrong_type",
        lambda env: _rule(name="fc1", sparsity=0.5, rho="1e-3"),
        SpecError,
        r"rho to be a finite number; received: rho='1e-3'",
    ),
    (
        "spec_rho_wrong_type",
        lambda env: _spec(rho="fast"),
        SpecError,
        r"rho to be a number > 0, a RhoSchedule or a mapping; received: rho='fast'",
    ),
    (
        "spec_quant_rho_wrong_type",
        lambda env: _spec(quant_rho=[0.01, 2.0]),
        SpecError,
        r"Spec: Expected quant_rho to be a number > 0, a RhoSchedule or a mapping; received: "
        r"quant_rho=\[0.01, 2.0\]",
    ),
    (
        "spec_quant_rho_multiplier_shrinks",
        lambda env: _spec(quant_rho={"initial": 0.01, "multiplier": 0.9}),
        SpecError,
        r"multiplier >= 1 \(rho never shrinks\); received: multiplier=0.9",
    ),
    (
        "rho_initial_zero",
        lambda env: _spec(rho={"initial": 0}),
        SpecError,
        r"RhoSchedule: Expected initial > 0; received: initial=0",
    ),
    (
        "rho_multiplier_shrinks",
        lambda env: _spec(rho={"initial": 1e-3, "multiplier": 0.5}),
        SpecError,
        r"multiplier >= 1 \(rho never shrinks\); received: multiplier=0.5",
    ),
    (
        "rho_maximum_infinite",
        lambda env: _spec(rho={"initial": 1e-3, "maximum": math.inf}),
        SpecError,
        r"maximum to be a finite number; received: maximum=inf",
    ),
    (
        "rho_unknown_key",
        lambda env: _spec(rho={"initial": 1e-3, "growth": 2}),
        SpecError,
        r"RhoSchedule: Expected fields among .*received unknown field\(s\) \['growth'\]",
    ),
    (
        "bits_out_of_range",
        lambda env: _rule(name="fc1", bits=16),
        SpecError,
        r"bits to be an integer in \[1, 8\]; received: bits=16",
    ),
    (
        "bits_wrong_type",
        lambda env: _rule(name="fc1", bits=4.0),
        SpecError,
        r"bits to be an integer in \[1, 8\]; received: bits=4.0",
    ),
    (
        "clusters_wrong_type",
        lambda env: _rule(name="fc1", clusters="8"),
        SpecError,
        r"clusters to be an integer >= 2; received: clusters='8'",
    ),
    (
        "bits_and_clusters",
        lambda env: _rule(name="fc1", bits=2, clusters=4),
        SpecError,
        r"one of bits or clusters; received: bits=2, clusters=4",
    ),
    (
        "scheme_wrong_case",
        lambda env: _rule(name="fc1", bits=4, scheme="Uniform"),
        SpecError,
        r"scheme in \['uniform', 'power_of_two', 'kmeans'\]; received: scheme='Uniform'",
    ),
    (
        "scheme_without_bits",
        lambda env: _rule(name="fc1", sparsity=0.5, scheme="uniform"),
        SpecError,
        r"Expected bits or clusters with scheme='uniform'; received neither",
    ),
    (
        "per_channel_wrong_type",
        lambda env: _rule(name="fc1", bits=4, per_channel="yes"),
        SpecError,
        r"per_channel to be true or false; received: per_channel='yes'",
    ),
    (
        "per_channel_with_kmeans",
        lambda env: _rule(name="fc1", clusters=4, per_channel=True),
        SpecError,
        r"per_channel only with uniform or power_of_two; received: scheme='kmeans'",
    ),
    (
        "per_channel_without_bits",
        lambda env: _rule(name="fc1", sparsity=0.5, per_channel=True),
        SpecError,
        r"Rule\(name='fc1'\): Expected bits with per_channel=True",
    ),
    # Structured pruning fields (tf_admm.projections.structured).
    (
        "structure_unknown",
        lambda env: _rule(name="fc1", structure="rows", sparsity=0.5),
        SpecError,
        r"Rule\(name='fc1'\): Expected structure in \['filter', 'channel', 'column', 'block', "
        r"'n_of_m'\]; received: structure='rows'",
    ),
    (
        "structure_block_without_block",
        lambda env: _rule(name="fc1", structure="block", sparsity=0.5),
        SpecError,
        r"Rule\(name='fc1'\): Expected block=\(rows, columns\) with structure='block'; "
        r"received no block",
    ),
    (
        "block_not_two_integers",
        lambda env: _rule(name="fc1", structure="block", block=[1, 4, 1], sparsity=0.5),
        SpecError,
        r"Expected block to be two integers >= 1 \(rows, columns of the GEMM view\); "
        r"received: block=\[1, 4, 1\]",
    ),
    (
        "block_without_structure_block",
        lambda env: _rule(name="fc1", structure="filter", block=[1, 4], sparsity=0.5),
        SpecError,
        r"Rule\(name='fc1'\): Expected block only with structure='block'; "
        r"received: structure='filter'",
    ),
    (
        "structure_filter_tied_keeps_differ",
        lambda env: tf_admm.admm_wrap(
            mobilenet_v2_like(),
            {
                "rules": [
                    {"name": "project1", "structure": "filter", "keep": 2},
                    {"layer_type": "Conv2D", "structure": "filter", "keep": 4},
                ]
            },
        ),
        ValueError,
        r"Layers \['project1', 'project2', 'stem'\] meet at \['add1', 'add2'\] and must keep "
        r"the same filters: Expected one number of kept filters; received: .*'project1': 2",
    ),
    (
        "structure_filter_shrink_keras3_operator_join",
        lambda env: tf_admm.shrink(_keras3_operator_join()),
        tf_admm.ShrinkError,
        r"Operation 'add' \(Add\) in model 'operator': Expected layers only in a Keras 3 model "
        r"to shrink; received a keras.ops operation on Keras tensors \(write it as a layer",
    ),
    (
        "structure_filter_shrink_tied_channels_reshaped",
        lambda env: tf_admm.shrink(_tied_then_reshaped()),
        tf_admm.ShrinkError,
        r"Layer 'reshape' \(Reshape\) reads them and is a Reshape: Expected per-channel "
        r"layers, joins .* tied to filter-pruned \['left', 'right'\]",
    ),
    (
        "n_without_structure_n_of_m",
        lambda env: _rule(name="fc1", sparsity=0.5, n=2, m=4),
        SpecError,
        r"Expected n only with structure='n_of_m'; received: structure=None",
    ),
    (
        "m_wrong_type",
        lambda env: _rule(name="fc1", structure="n_of_m", n=2, m="4"),
        SpecError,
        r"Expected m to be an integer >= 1; received: m='4'",
    ),
    (
        "n_of_m_n_not_below_m",
        lambda env: _rule(name="fc1", structure="n_of_m", n=4, m=4),
        SpecError,
        r"Rule\(name='fc1'\): Expected n < m with structure='n_of_m'; received: n=4, m=4",
    ),
    (
        "n_of_m_with_sparsity",
        lambda env: _rule(name="fc1", structure="n_of_m", n=2, m=4, sparsity=0.9),
        SpecError,
        r"Expected no sparsity, ratio or keep with structure='n_of_m' \(n and m fix the "
        r"fraction pruned, 1 - n/m\); received: sparsity=0.9",
    ),
    (
        "structure_sharing_target_ratio",
        lambda env: Spec.from_dict({"default": {"structure": "filter"}, "target_ratio": 4}),
        SpecError,
        r"Rule\(default\): Expected sparsity, ratio or keep \(counting filter groups\) with "
        r"structure='filter'; structured rules do not share Spec.target_ratio; received none",
    ),
    (
        "structure_the_layer_type_cannot_have",
        lambda env: tf_admm.admm_wrap(
            text_classifier(), {"rules": [{"name": "embedding", "structure": "filter", "keep": 8}]}
        ),
        ValueError,
        r"Spec rules\[0\] \(name='embedding'\), layer 'embedding' \(Embedding\), weight "
        r"'embeddings': Expected a weight with filters, input channels and a GEMM view \(.*\); "
        r"received: structure='filter'",
    ),
    (
        "block_not_dividing_the_kernel",
        lambda env: _wrap({"name": "fc1", "structure": "block", "block": [5, 4], "sparsity": 0.5}),
        ValueError,
        r"Spec rules\[0\] \(name='fc1'\), layer 'fc1' \(Dense\), weight 'kernel': Expected a "
        r"block shape dividing the GEMM view 24x96 \(outputs x fan_in\) of the kernel of shape "
        r"\(96, 24\); received: block=5x4",
    ),
    (
        "n_of_m_m_not_dividing_the_input_dimension",
        lambda env: _wrap({"name": "fc2", "structure": "n_of_m", "n": 2, "m": 5}),
        ValueError,
        r"layer 'fc2' \(Dense\), weight 'kernel': Expected m dividing the input dimension "
        r"\(24\) of the kernel of shape \(24, 3\); received: m=5",
    ),
    (
        "n_of_m_on_a_depthwise_kernel",
        lambda env: _wrap({"name": "depthwise", "structure": "n_of_m", "n": 1, "m": 3}),
        ValueError,
        r"layer 'depthwise' \(DepthwiseConv2D\), weight 'depthwise_kernel': Expected a "
        r"dense-layout kernel for n_of_m",
    ),
    (
        "structure_keep_above_the_groups",
        lambda env: _wrap({"name": "conv", "structure": "filter", "keep": 7}),
        ValueError,
        r"Spec rules\[0\] \(name='conv'\), layer 'conv', weight 'kernel': Expected keep <= "
        r"the weight's 6 filter groups; received: keep=7",
    ),
    (
        "update_unit_unknown",
        lambda env: _spec(update_unit="batch"),
        SpecError,
        r"update_unit in \['step', 'epoch'\]; received: update_unit='batch'",
    ),
    (
        "update_every_zero",
        lambda env: _spec(update_every=0),
        SpecError,
        r"update_every to be an integer >= 1; received: update_every=0",
    ),
    (
        "update_every_bool",
        lambda env: _spec(update_every=True),
        SpecError,
        r"update_every to be an integer >= 1; received: update_every=True",
    ),
    (
        "update_every_beyond_int64",
        lambda env: _spec(update_every=2**63),
        SpecError,
        r"update_every <= 2\*\*63 - 1; received: update_every=9223372036854775808",
    ),
    (
        "admm_rounds_string",
        lambda env: _spec(admm_rounds="10"),
        SpecError,
        r"admm_rounds to be an integer >= 1; received: admm_rounds='10'",
    ),
    (
        "retrain_rounds_float",
        lambda env: _spec(retrain_rounds=1.5),
        SpecError,
        r"retrain_rounds to be an integer >= 0; received: retrain_rounds=1.5",
    ),
    (
        "quant_admm_rounds_null",
        lambda env: _spec(quant_admm_rounds=None),
        SpecError,
        r"quant_admm_rounds to be an integer >= 1; received: quant_admm_rounds=None",
    ),
    (
        "quant_lock_rounds_zero",
        lambda env: _spec(quant_lock_rounds=0),
        SpecError,
        r"quant_lock_rounds to be an integer >= 1; received: quant_lock_rounds=0",
    ),
    (
        "quant_fractions_not_ending_at_1",
        lambda env: _spec(quant_fractions=[0.5, 0.9]),
        SpecError,
        r"quant_fractions increasing in \(0, 1\] and ending at 1; "
        r"received: quant_fractions=\[0.5, 0.9\]",
    ),
    (
        "quant_fractions_nan",
        lambda env: _spec(quant_fractions=[math.nan, 1.0]),
        SpecError,
        r"received: quant_fractions=\[nan, 1.0\]",
    ),
    (
        "quant_fractions_mapping",
        lambda env: _spec(quant_fractions={"0": 1.0}),
        SpecError,
        r"quant_fractions to be a list of numbers; received: quant_fractions=\{'0': 1.0\}",
    ),
    (
        "prune_stages_decreasing",
        lambda env: _spec(prune_stages=[0.5, 0.25, 1.0]),
        SpecError,
        r"Spec: Expected prune_stages increasing in \(0, 1\] and ending at 1; "
        r"received: prune_stages=\[0.5, 0.25, 1.0\]",
    ),
    (
        "prune_stages_a_number",
        lambda env: _spec(prune_stages=0.5),
        SpecError,
        r"prune_stages to be a list of numbers; received: prune_stages=0.5",
    ),
    (
        "centroid_update_wrong_case",
        lambda env: _spec(centroid_update="MEAN"),
        SpecError,
        r"centroid_update in \['none', 'sum', 'mean'\]; received: centroid_update='MEAN'",
    ),
    (
        "scale_update_unknown",
        lambda env: _spec(scale_update="scale"),
        SpecError,
        r"scale_update in \['none', 'sum', 'mean'\]; received: scale_update='scale'",
    ),
    (
        "straight_through_string",
        lambda env: _spec(straight_through="yes"),
        SpecError,
        r"Spec: Expected straight_through to be true or false; received: straight_through='yes'",
    ),
    (
        "unknown_spec_key",
        lambda env: _spec(admm_round=3),
        SpecError,
        r"Spec: Expected fields among .*received unknown field\(s\) \['admm_round'\]",
    ),
    (
        "unknown_rule_key",
        lambda env: _rule(name="fc1", sparsity=0.5, bit=4),
        SpecError,
        r"Rule: Expected fields among .*received unknown field\(s\) \['bit'\]",
    ),
    (
        "spec_not_a_mapping",
        lambda env: Spec.from_dict(["rules"]),
        SpecError,
        r"Spec: Expected a mapping of Spec fields; received: config=\['rules'\]",
    ),
    (
        "spec_empty",
        lambda env: Spec.from_dict({}),
        SpecError,
        r"Spec: Expected at least one rule, a default rule or a target_ratio; received none",
    ),
    (
        "rules_a_mapping",
        lambda env: Spec.from_dict({"rules": {"name": "fc1"}}),
        SpecError,
        r"rules to be a list of Rule; received: rules=\{'name': 'fc1'\}",
    ),
    (
        "rules_a_string",
        lambda env: _spec(rules="fc1"),
        SpecError,
        r"rules to be a list of Rule; received: rules='fc1'",
    ),
    (
        "rule_not_a_mapping",
        lambda env: Spec.from_dict({"rules": ["fc1"]}),
        SpecError,
        r"each rule to be a Rule or a mapping; received: rules\[0\]='fc1'",
    ),
    (
        "rule_without_matcher",
        lambda env: Spec.from_dict({"rules": [{"sparsity": 0.5}]}),
        SpecError,
        r"Expected rules\[0\] to have one of name, pattern, layer_type",
    ),
    (
        "default_with_matcher",
        lambda env: Spec.from_dict({"default": {"name": "fc1", "sparsity": 0.5}}),
        SpecError,
        r"Spec: Expected a default rule without matcher; "
        r"received: default=Rule\(name='fc1'",
    ),
    (
        "two_matchers",
        lambda env: _rule(name="fc1", layer_type="Dense", sparsity=0.5),
        SpecError,
        r"at most one of name, pattern, layer_type; "
        r"received: name='fc1', layer_type='Dense'",
    ),
    (
        "name_not_a_string",
        lambda env: _rule(name=1, sparsity=0.5),
        SpecError,
        r"Rule\(name=1\): Expected name to be a non-empty string; received: name=1",
    ),
    (
        "pattern_invalid",
        lambda env: _rule(pattern="fc[", sparsity=0.5),
        SpecError,
        r"Rule\(pattern='fc\['\): Expected a valid regular expression",
    ),
    (
        "pattern_repeat_too_large",
        lambda env: _rule(pattern="fc{4294967296}", sparsity=0.5),
        SpecError,
        r"valid regular expression \(the repetition number is too large\); "
        r"received: pattern='fc\{4294967296\}'",
    ),
    (
        "weights_a_string",
        lambda env: _rule(name="fc1", sparsity=0.5, weights="kernel"),
        SpecError,
        r"weights to be a list of attribute names; received: weights='kernel'",
    ),
    (
        "weights_repeated",
        lambda env: _rule(name="fc1", sparsity=0.5, weights=["kernel", "kernel"]),
        SpecError,
        r"distinct attribute names; received: weights=\['kernel', 'kernel'\]",
    ),
    (
        "admm_wrap_spec_a_path",
        lambda env: tf_admm.admm_wrap(_model(), "spec.json"),
        SpecError,
        r"Spec: Expected a mapping of Spec fields; received: config='spec.json'",
    ),
    (
        "admm_wrap_spec_dict_bad_field",
        lambda env: _wrap({"name": "fc1", "sparsity": 2}),
        SpecError,
        r"Rule\(name='fc1'\): Expected sparsity in \[0, 1\); received: sparsity=2",
    ),
    # Rules that do not fit the model.
    (
        "name_matches_no_layer",
        lambda env: _wrap({"name": "fc3", "sparsity": 0.5}),
        ValueError,
        r"Spec rules\[0\] \(name='fc3'\) matches no layer of model 'small'; its layers "
        r"are: image \(InputLayer\), conv \(Conv2D\), .*fc2 \(Dense\)",
    ),
    (
        "pattern_matches_no_layer",
        lambda env: _wrap({"pattern": "dense_.*", "sparsity": 0.5}),
        ValueError,
        r"Spec rules\[0\] \(pattern='dense_\.\*'\) matches no layer of model 'small'",
    ),
    (
        "layer_type_matches_no_layer",
        lambda env: _wrap({"layer_type": "Conv2d", "sparsity": 0.5}),
        ValueError,
        r"Spec rules\[0\] \(layer_type='Conv2d'\) matches no layer of model 'small'",
    ),
    (
        "layer_without_weights",
        lambda env: _wrap({"layer_type": "Flatten", "bits": 4}),
        ValueError,
        r"Spec rules\[0\] \(layer_type='Flatten'\) matches layer 'flatten': "
        r"Layer 'flatten' \(Flatten\) has no compressible weights",
    ),
    (
        "weights_attribute_not_a_variable",
        lambda env: _wrap({"name": "fc1", "sparsity": 0.5, "weights": ["units"]}),
        ValueError,
        r"Spec rules\[0\] \(name='fc1'\), field 'weights': Layer 'fc1' \(Dense\): Expected a "
        r"weight among its variables \(attribute path: variable name\) \{'kernel': 'fc1/kernel', "
        r"'bias': 'fc1/bias'\}; received: weight='units' \(no variable matches\)",
    ),
    (
        "weights_attribute_of_another_layer_type",
        lambda env: _wrap(
            {"layer_type": "DepthwiseConv2D", "sparsity": 0.5, "weights": ["kernel"]}
        ),
        ValueError,
        r"field 'weights': Layer 'depthwise' \(DepthwiseConv2D\): Expected a weight among .*"
        r"'depthwise_kernel': 'depthwise/depthwise_kernel'.*; received: weight='kernel' "
        r"\(no variable matches\)",
    ),
    (
        "kmeans_clusters_exceed_kept_weights",
        lambda env: _wrap({"name": "fc2", "sparsity": 0.9, "clusters": 8}),
        ValueError,
        r"Spec rules\[0\] \(name='fc2'\), layer 'fc2', weight 'kernel': Expected at most as "
        r"many quantization levels as kept weights \(7\); received: clusters=8 \(8 levels\)",
    ),
    (
        "levels_exceed_kept_weights",
        lambda env: _wrap({"name": "fc2", "sparsity": 0.9, "bits": 8}),
        ValueError,
        r"layer 'fc2', weight 'kernel': .*\(7\); received: bits=8 \(256 levels\)",
    ),
    # Models that cannot be wrapped.
    (
        "not_a_model",
        lambda env: _wrap({"name": "fc", "sparsity": 0.5}, model=keras.layers.Dense(3, name="fc")),
        ValueError,
        r"Expected a tf_keras Model .*received: model of type tf_keras\..*\.Dense",
    ),
    (
        "keras3_levels_exceed_kept_weights",
        lambda env: _wrap({"name": "fc", "sparsity": 0.5, "bits": 3}, model=_keras3_model()),
        ValueError,
        r"Spec rules\[0\] \(name='fc'\), layer 'fc', weight 'kernel': Expected at most as many "
        r"quantization levels as kept weights \(4\); received: bits=3 \(8 levels\)",
    ),
    (
        "keras3_wrapper_config_with_more_clusters_than_kept_weights",
        lambda env: _keras3_wrapper(
            {"weight": "kernel", "sparsity": 0.5, "rho": 1.0, "scheme": "kmeans", "clusters": 5}
        ),
        ValueError,
        r"Layer 'fc', weight 'kernel': Expected at most as many levels as kept weights \(4\); "
        r"received: clusters=5",
    ),
    (
        "unbuilt_sequential",
        lambda env: _wrap({"name": "fc", "sparsity": 0.5}, model=_sequential_unbuilt()),
        ValueError,
        r"Model 'seq': Expected a model with a known input shape; received a Sequential "
        r"model that is not built",
    ),
    (
        "unbuilt_subclassed_model",
        lambda env: _wrap({"name": "inner_fc", "sparsity": 0.5}, model=_Subclassed(name="sub")),
        ValueError,
        r"Model 'sub' \(_Subclassed\): Expected a built model; received a subclassed model "
        r"that was never called.*model.build\(input_shape\)",
    ),
    (
        "subclassed_layer_created_in_call",
        lambda env: _wrap({"name": "late", "sparsity": 0.5}, model=_creates_in_call()),
        ValueError,
        r"Model 'creates' \(_CreatesInCall\): Expected every variable call\(\) reads to be "
        r"reachable.*layers 'late' \(spec rules\[0\] \(name='late'\) would take it\)",
    ),
    (
        "nested_subclassed_model",
        lambda env: _wrap({"name": "inner_fc", "sparsity": 0.5}, model=_nested_subclassed()),
        ValueError,
        r"Model 'inner' \(_Subclassed\): Expected a Sequential or Functional model",
    ),
    (
        "nothing_compressible",
        lambda env: tf_admm.admm_wrap(_no_compressible_layer(), {"default": {"sparsity": 0.5}}),
        ValueError,
        r"Spec matches no compressible layer of model 'plain'",
    ),
    (
        "already_wrapped",
        lambda env: _wrap({"name": "admm_fc1", "sparsity": 0.5}, model=_admm_model()),
        ValueError,
        r"Layer 'admm_fc1': Expected an unwrapped model; received a model that is "
        r"already ADMM-wrapped \(strip it first with tf_admm.strip\)",
    ),
    (
        "admm_model_without_spec",
        lambda env: tf_admm.AdmmModel(_model().inputs, _model().outputs),
        ValueError,
        r"AdmmModel: Expected spec; received: spec=None \(use admm_wrap\)",
    ),
    (
        "strip_not_a_model",
        lambda env: tf_admm.strip(keras.layers.Dense(3)),
        ValueError,
        r"Expected a tf_keras Model .*received: model of type tf_keras\..*\.Dense",
    ),
    # Training wiring.
    (
        "fit_without_admm_callback",
        lambda env: _fit(_admm_model()),
        ValueError,
        r"Model 'small': Expected the ADMM update callback among the callbacks; received "
        r"none\. Add it: model\.fit\(\.\.\., callbacks=tf_admm\.callbacks\(\)\)",
    ),
    (
        "fit_with_other_callbacks_only",
        lambda env: _fit(_admm_model(), callbacks=[keras.callbacks.History()]),
        ValueError,
        r"Model 'small': Expected the ADMM update callback",
    ),
    (
        "admm_callback_on_plain_model",
        lambda env: _fit(
            compile_for_classification(small_convnet()), callbacks=tf_admm.callbacks()
        ),
        ValueError,
        r"AdmmUpdate: Expected to train a model made by tf_admm.admm_wrap; received: "
        r"model of type Functional",
    ),
    # Export.
    (
        "export_wrapped_model",
        lambda env: tflite_export.export(_admm_model(), str(env.tmp_path / "m.tflite")),
        tflite_export.ExportError,
        r"call tf_admm.strip\(model\) before exporting; received: "
        r"AdmmWrapper layers=\['admm_fc1'\]",
    ),
    (
        "export_subclassed_model_never_called",
        lambda env: tflite_export.export(_Subclassed(name="sub"), str(env.tmp_path / "m.tflite")),
        tflite_export.ExportError,
        r"Model 'sub' \(_Subclassed\): Expected a built model with a known input shape; "
        r"received a subclassed model that was never called or built.*model.build",
    ),
    (
        "export_keras3_model_not_stripped",
        lambda env: tflite_export.export(
            _wrap({"name": "fc", "sparsity": 0.5}, model=_keras3_model()),
            str(env.tmp_path / "m.tflite"),
        ),
        tflite_export.ExportError,
        r"Expected a stripped model without tf_admm wrappers: call tf_admm.strip\(model\)",
    ),
    (
        "export_tensor_names_unknown",
        lambda env: tflite_export.export(
            _model(), str(env.tmp_path / "m.tflite"), tensor_names="none"
        ),
        tflite_export.ExportError,
        r"Expected tensor_names in \['keep', 'io'\]; received: tensor_names='none'",
    ),
    (
        "export_path_under_a_file",
        lambda env: tflite_export.export(
            _model(), os.path.join(_write(env.tmp_path, "f", ""), "m")
        ),
        tflite_export.ExportError,
        r"Expected a path in an existing directory; received: "
        r"path='.*/f/m' \(no directory '.*/f'\)",
    ),
    (
        "export_read_only_directory",
        _export_to_read_only_directory,
        tflite_export.ExportError,
        r"Expected a writable path; received: "
        r"path='.*/read_only/m\.tflite' \(permission denied\)",
    ),
    # Model files.
    (
        "model_file_truncated",
        _load_truncated,
        tf_admm.ModelFileError,
        r"Model file '.*cut\.keras': Expected a \.keras zip archive; received [\d,]+ bytes "
        r"without a zip central directory \(truncated",
    ),
    (
        "model_file_corrupt_member",
        _load_damaged,
        tf_admm.ModelFileError,
        r"Model file '.*corrupt\.keras': Expected intact members; member 'config\.json' "
        r"fails its CRC check",
    ),
    (
        "model_file_missing",
        lambda env: tf_admm.load_model(str(env.tmp_path / "gone.keras")),
        tf_admm.ModelFileError,
        r"Model file '.*gone\.keras': Expected an existing file",
    ),
    # Config files.
    (
        "config_file_truncated",
        lambda env: _from_file(env, _VALID_JSON[:30], "cut.json"),
        SpecError,
        r"cut\.json: Spec: Expected JSON text; "
        r"received invalid JSON \(Unterminated string",
    ),
    (
        "config_file_empty",
        lambda env: _from_file(env, "", "empty.json"),
        SpecError,
        r"empty\.json: Spec: Expected JSON text; received invalid JSON \(Expecting value",
    ),
    (
        "config_file_a_list",
        lambda env: _from_file(env, "[" + _VALID_JSON + "]", "list.json"),
        SpecError,
        r"list\.json: Spec: Expected a mapping of Spec fields; received: config=\[\{",
    ),
    (
        "config_file_not_utf8",
        lambda env: _from_file(env, b"\xff\xfe{\x00}\x00", "utf16.json"),
        SpecError,
        r"utf16\.json: Spec: Expected UTF-8 JSON text; received undecodable bytes",
    ),
    (
        "config_file_bad_value",
        lambda env: _from_file(env, _VALID_JSON.replace("0.5", "1.5"), "value.json"),
        SpecError,
        r"value\.json: Rule\(name='fc1'\): Expected sparsity in \[0, 1\); "
        r"received: sparsity=1.5",
    ),
    (
        "config_file_missing",
        lambda env: Spec.from_file(str(env.tmp_path / "missing.json")),
        FileNotFoundError,
        r"No such file or directory: '.*missing\.json'",
    ),
    # The recipe's --config flag.
    (
        "recipe_config_truncated",
        lambda env: _recipe_file(env, "cut.json", '{"rules"'),
        lenet5_mnist.app.UsageError,
        r"--config: .*cut\.json: Spec: Expected JSON text; "
        r"received invalid JSON",
    ),
    (
        "recipe_config_a_list",
        lambda env: _recipe_file(env, "list.json", "[]"),
        lenet5_mnist.app.UsageError,
        r"--config: .*list\.json: Spec: Expected a mapping of Spec "
        r"fields; received: config=\[\]",
    ),
    (
        "recipe_config_not_utf8",
        lambda env: _recipe_file(env, "latin1.json", '{"rules": "é"}'.encode("latin-1")),
        lenet5_mnist.app.UsageError,
        r"--config: .*latin1\.json: Spec: Expected UTF-8 JSON text",
    ),
    (
        "recipe_config_missing",
        lambda env: _recipe_config(str(env.tmp_path / "missing.json")),
        lenet5_mnist.app.UsageError,
        r"--config: \[Errno 2\] No such file or directory: "
        r"'.*missing\.json'",
    ),
    (
        "recipe_stray_argument",
        lambda env: lenet5_mnist.main(["lenet5_mnist", "--confg=x.json"]),
        lenet5_mnist.app.UsageError,
        r"Unexpected arguments: --confg=x\.json",
    ),
]

# Cases that need pytest.param (formerly known gaps, now fixed).
GAPS = [
    pytest.param(
        lambda env: _wrap(
            {"layer_type": "Dense", "sparsity": 0.5}, {"name": "fc1", "sparsity": 0.9}
        ),
        ValueError,
        r"rules\[1\] \(name='fc1'\).*rules\[0\]",
        id="rule_shadowed_by_an_earlier_rule",
    ),
]


@pytest.mark.parametrize(
    "make, error, message",
    [pytest.param(make, error, message, id=name) for name, make, error, message in CASES] + GAPS,
)
def test_bad_input_raises_a_typed_error_naming_the_culprit(
    make, error, message, tmp_path, monkeypatch
):
    env = types.SimpleNamespace(tmp_path=tmp_path, monkeypatch=monkeypatch)
    with pytest.raises(error, match=message):
        make(env)


def test_table_ids_are_unique_and_cover_every_topic():
    names = [name for name, *_ in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 30
    for topic in (
        "sparsity",
        "ratio",
        "rho",
        "bits",
        "clusters",
        "scheme",
        "per_channel",
        "structure",
        "block",
        "n_of_m",
        "update_unit",
        "update_every",
        "admm_rounds",
        "quant_fractions",
        "centroid_update",
        "unknown",
        "matches_no_layer",
        "export",
        "config_file",
        "recipe_config",
    ):
        assert any(topic in name for name in names), topic
