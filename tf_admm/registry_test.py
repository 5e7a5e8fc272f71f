"""Weight paths: what the registry finds in a layer, and a rule's weights naming any variable."""

import numpy as np
import pytest

import tf_admm
from tf_admm import keras, registry

L = keras.layers


class Mixer(L.Layer):
    """A custom layer that names no compressible weights."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], 5))
        self.b = self.add_weight(name="b", shape=(5,))

    def call(self, x):
        return x @ self.w + self.b


class OwnWeights(L.Dense):
    """A Dense subclass that overrides the registered weights."""

    def get_admm_weights(self):
        return ["bias"]


def _model():
    inputs = keras.Input((6, 4))
    h = L.Bidirectional(L.LSTM(3, return_sequences=True), name="bi")(inputs)
    h = L.GRU(4, name="gru")(h)
    h = Mixer(name="mixer")(h)
    h = L.BatchNormalization(name="bn")(h)
    return keras.Model(inputs, L.Dense(2, name="fc")(h), name="m")


def _layer(model, name):
    return model.get_layer(name)


def test_variable_paths_reach_variables_inside_cells_and_wrapped_layers():
    bi = _layer(_model(), "bi")
    paths = registry.variable_paths(bi)
    assert sorted(paths) == sorted(
        f"{side}_layer.cell.{name}"
        for side in ("forward", "backward")
        for name in ("kernel", "recurrent_kernel", "bias")
    )
    owner, attribute = registry.resolve(bi, "backward_layer.cell.recurrent_kernel")
    assert owner is bi.backward_layer.cell and attribute == "recurrent_kernel"
    assert registry.variable(bi, "forward_layer.cell.bias") is bi.forward_layer.cell.bias


def test_find_takes_attribute_paths_variable_names_and_variables():
    gru = _layer(_model(), "gru")
    assert registry.find(gru, "cell.kernel") == "cell.kernel"
    assert registry.find(gru, "gru_cell/recurrent_kernel") == "cell.recurrent_kernel"
    assert registry.find(gru, "gru/gru_cell/recurrent_kernel:0") == "cell.recurrent_kernel"
    assert registry.find(gru, gru.cell.bias) == "cell.bias"
    # GRU's own kernel property reads the cell's: the path is the cell's attribute.
    assert registry.find(gru, "kernel") == "cell.kernel"
    with pytest.raises(ValueError, match=r"received: weight='kernel'"):
        registry.resolve(gru, "kernel")


def test_find_names_the_layer_and_its_variables_when_nothing_or_two_match():
    model = _model()
    with pytest.raises(ValueError, match=r"Layer 'gru' \(GRU\).*'cell\.kernel'.*no variable"):
        registry.find(_layer(model, "gru"), "gamma")
    # Both directions have a kernel.
    with pytest.raises(ValueError, match=r"received: weight='lstm_cell/kernel' \(more than one"):
        registry.find(_layer(model, "bi"), "lstm_cell/kernel")


def test_a_subclass_inherits_its_base_entry_unless_it_names_its_own():
    inputs = keras.Input((4,))
    own = OwnWeights(3)
    own(inputs)
    assert registry.compressible_weights(own) == ("bias",)
    assert registry.supports(Mixer()) is False


def test_a_rule_opts_in_any_variable_of_any_layer():
    model = _model()
    spec = tf_admm.Spec(
        rules=[
            tf_admm.Rule(name="mixer", weights=["w"], keep=4),
            tf_admm.Rule(name="gru", weights=["gru_cell/recurrent_kernel"], keep=5),
            tf_admm.Rule(name="bn", weights=["gamma"], keep=2),
        ]
    )
    admm = tf_admm.admm_wrap(model, spec)
    slots = {w.layer.name: [(s.target.weight, s.keep) for s in w.slots] for w in admm.admm_wrappers}
    assert slots == {
        "gru": [("cell.recurrent_kernel", 5)],
        "mixer": [("w", 4)],
        "bn": [("gamma", 2)],
    }
    for wrapper in admm.admm_wrappers:
        wrapper.hard_project()
    x = np.random.default_rng(0).normal(size=(2, 6, 4)).astype(np.float32)
    stripped = tf_admm.strip(admm)
    np.testing.assert_allclose(stripped(x).numpy(), admm(x).numpy(), atol=1e-6)
    assert np.count_nonzero(stripped.get_layer("mixer").w.numpy()) == 4
    assert np.count_nonzero(stripped.get_layer("gru").cell.recurrent_kernel.numpy()) == 5
    assert np.count_nonzero(stripped.get_layer("gru").cell.kernel.numpy()) == 6 * 12
    assert np.count_nonzero(stripped.get_layer("bn").gamma.numpy()) == 2


def test_a_rule_naming_a_weight_the_layer_lacks_names_rule_layer_field_and_choices():
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="gru", weights=["depthwise_kernel"], sparsity=0.5)]
    )
    with pytest.raises(ValueError) as error:
        tf_admm.admm_wrap(_model(), spec)
    message = str(error.value)
    assert message.startswith(
        "Spec rules[0] (name='gru'), field 'weights': Layer 'gru' (GRU): Expected a weight "
        "among its variables"
    )
    assert "'cell.kernel': 'gru/gru_cell/kernel'" in message
    assert message.endswith("received: weight='depthwise_kernel' (no variable matches)")


def test_a_rule_on_a_layer_without_compressible_weights_says_how_to_name_them():
    spec = tf_admm.Spec(rules=[tf_admm.Rule(name="bn", sparsity=0.5)])
    with pytest.raises(
        ValueError,
        match=r"Spec rules\[0\] \(name='bn'\) matches layer 'bn': Layer 'bn' "
        r"\(BatchNormalization\) has no compressible weights: .*or name its variables with a "
        r"rule's weights",
    ):
        tf_admm.plan(_model(), spec)


def test_two_names_for_one_weight_are_refused():
    spec = tf_admm.Spec(
        rules=[tf_admm.Rule(name="gru", weights=["cell.kernel", "gru_cell/kernel"], keep=3)]
    )
    with pytest.raises(ValueError, match=r"layer 'gru': Expected distinct weights"):
        tf_admm.plan(_model(), spec)
