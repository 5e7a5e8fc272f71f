"""What a verification finds: tolerances checked at construction, checks passing or not."""

import pytest

from tflite_export import checks


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"output_steps": 0}, "output_steps > 0"),
        ({"output_steps": True}, "output_steps > 0"),
        ({"top1_agreement": 1.5}, "0 <= top1_agreement <= 1"),
    ],
)
def test_int8_tolerance_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        checks.Int8Tolerance(**kwargs)


def test_runtime_check_passes_only_when_it_ran_and_every_output_passed():
    within = checks.OutputCheck("logits", max_abs_diff=0.1, allowed=0.2)
    outside = checks.OutputCheck("probs", max_abs_diff=0.3, allowed=0.2)
    assert within.passed and not outside.passed
    check = checks.RuntimeCheck(checks.Runtime.BUILTIN, outputs=(within, outside))
    assert not check.passed
    assert check.describe().startswith("builtin: logits: max|diff|=0.1 (allowed 0.2)")
    assert check.to_dict()["outputs"][1]["passed"] is False
    failed = checks.RuntimeCheck(checks.Runtime.TFLM, error="no kernel", reference="uncompressed")
    assert not failed.passed
    assert failed.describe() == "tflm vs uncompressed: failed to run: no kernel"
