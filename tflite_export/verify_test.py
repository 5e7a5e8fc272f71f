"""Running files in both runtimes and comparing outputs."""

import numpy as np
import pytest

from tflite_export import exporter, verify
from tflite_export.testing import small_model


@pytest.fixture(scope="module")
def model_and_file():
    model = small_model("dense")
    return model, exporter.convert_float(model)


def _inputs(seed=0):
    return [np.random.default_rng(seed).standard_normal((3, 24)).astype(np.float32)]


def test_float_file_matches_keras_in_both_runtimes(model_and_file):
    model, data = model_and_file
    inputs = _inputs()
    expected = [model(inputs[0]).numpy()]
    checks = verify.check_outputs(data, inputs, expected, tolerance=1e-5, output_names=["head"])
    assert [c.runtime for c in checks] == [verify.Runtime.DEFAULT_DELEGATE, verify.Runtime.BUILTIN]
    assert all(c.passed for c in checks)
    assert checks[0].outputs[0].output == "head"


def test_a_different_expectation_fails_with_its_difference(model_and_file):
    model, data = model_and_file
    inputs = _inputs()
    expected = [model(inputs[0]).numpy() + 0.5]
    checks = verify.check_outputs(data, inputs, expected, tolerance=1e-5)
    assert not any(c.passed for c in checks)
    assert all(abs(c.outputs[0].max_abs_diff - 0.5) < 1e-4 for c in checks)
    assert "max|diff|=0.5" in checks[0].describe()


def test_a_file_that_cannot_load_is_reported_not_raised():
    checks = verify.check_outputs(b"TFL3garbage", _inputs(), [np.zeros((3, 6))], tolerance=1e-4)
    assert all(c.error and not c.passed for c in checks)


def test_nan_outputs_never_pass(model_and_file):
    _, data = model_and_file
    inputs = [np.full((2, 24), np.nan, np.float32)]
    checks = verify.check_outputs(data, inputs, [np.zeros((2, 6))], tolerance=1e-4)
    assert not any(c.passed for c in checks)


def test_top1_agreement_leaves_out_ties_at_the_output_resolution():
    want = np.array([[0.0, 1.0], [0.5, 0.52], [2.0, 0.0], [0.0, 3.0]])
    got = np.array([[0.0, 1.0], [0.6, 0.5], [0.0, 2.0], [0.0, 3.0]])  # rows 2 and 3 flip
    assert verify.top1_agreement(got, want) == (0.5, 4)
    # Row 2's best two are 0.02 apart: a tie at a resolution of 0.1.
    assert verify.top1_agreement(got, want, tie=0.1) == (2 / 3, 3)
    assert verify.top1_agreement(got[:, :1], want[:, :1]) is None  # not class scores


def test_min_top1_fails_an_output_within_its_bound():
    want = [np.array([[0.0, 1.0], [1.0, 0.0]])]
    got = [np.array([[0.0, 1.0], [0.4, 0.6]])]  # within 0.6, one of two flips
    check = verify.compare_outputs(
        verify.Runtime.BUILTIN, got, want, tolerance=[0.6], absolute=True, min_top1=0.9
    )
    assert check.outputs[0].max_abs_diff <= check.outputs[0].allowed
    assert not check.passed
    assert "top-1 agreement 50.0% of 2 (min 90.0%)" in check.describe()
    loose = verify.compare_outputs(
        verify.Runtime.BUILTIN, got, want, tolerance=[0.6], absolute=True, min_top1=0.5
    )
    assert loose.passed
