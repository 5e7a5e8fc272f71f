"""bench.combined's settings, without training (the smoke run is in smoke_test; the parts are
tested beside combined_plan, combined_measure and combined_runs)."""

import os

import pytest

from bench import combined


def test_settings_refuse_a_config_that_does_not_quantize():
    pruning_only = os.path.join(combined.CONFIGS, "lenet5_admm_71x_oneshot.json")
    settings = combined.Settings(config=pruning_only)
    with pytest.raises(ValueError, match="prunes and quantizes"):
        settings.spec()
