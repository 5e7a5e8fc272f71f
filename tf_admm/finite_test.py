"""Tests for finding non-finite values: labels of the checked variables, culprits, the error."""

import pickle

import numpy as np

import tf_admm
from tf_admm import finite
from tf_admm.finite import NonFiniteError
from tf_admm.testing import small_convnet


def _wrapped():
    spec = tf_admm.Spec(rules=[tf_admm.Rule(name="fc1", sparsity=0.5)])
    return tf_admm.admm_wrap(small_convnet(), spec)


def test_compressed_weights_are_labelled_by_admm_symbol_and_listed_first():
    named = finite.named_float_variables(_wrapped())
    fc1 = [label for layer, label, _ in named if layer == "fc1"]
    assert fc1[:4] == ["W (kernel)", "Z (kernel_auxiliary)", "U (kernel_dual)", "rho (kernel_rho)"]
    assert "bias" in fc1
    assert [label for layer, label, _ in named if layer == "conv"] == ["kernel", "bias"]
    variables = [id(v) for _, _, v in named]
    assert len(variables) == len(set(variables))  # every variable once


def test_culprits_count_nans_and_infs_of_each_bad_variable():
    named = finite.named_float_variables(_wrapped())
    assert finite.culprits(named) == []
    label_of = {label: variable for layer, label, variable in named if layer == "fc1"}
    dual = label_of["U (kernel_dual)"]
    value = np.zeros(dual.shape, np.float32)
    value[0, :3] = np.nan
    value[1, 0] = np.inf
    dual.assign(value)
    assert finite.culprits(named) == [("fc1", "U (kernel_dual)", 3, 1, value.size)]


def test_error_names_layer_variable_and_counts_and_survives_pickling():
    error = NonFiniteError(2, 40, float("nan"), [("fc1", "U (kernel_dual)", 3, 1, 96)])
    assert str(error).startswith(
        "Training stopped at epoch 2 (ADMM step 40): Expected a finite loss and finite weights "
        "and ADMM variables; received: loss=nan; layer 'fc1' U (kernel_dual): 3 NaN and 1 Inf "
        "of 96."
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.epoch, copy.step, copy.culprits) == (2, 40, error.culprits)
    assert isinstance(copy, FloatingPointError)
