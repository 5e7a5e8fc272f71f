"""Tests for recipes.image_flags: flags, the settings they give, and main."""

import json
import sys

import pytest
from absl import app, flags

import tf_admm
from recipes import alexnet_imagenet, image_flags, vgg16_cifar10


def _parse(argv):
    flag_values = flags.FlagValues()
    values = vgg16_cifar10.define_flags(flag_values)
    flag_values(["recipe", *argv])
    return values


def test_every_image_setting_has_a_flag_with_the_recipes_default(tmp_path):
    settings = image_flags.image_settings_from_flags(_parse([f"--model_dir={tmp_path}"]))
    defaults = vgg16_cifar10.settings(model_dir=str(tmp_path))
    assert settings == defaults
    assert settings.image_size == 32 and settings.batch_norm
    assert settings.spec == tf_admm.Spec.from_file(vgg16_cifar10.DEFAULTS["config"])
    changed = image_flags.image_settings_from_flags(
        _parse(["--synthetic_data", "--width_multiplier=0.0625", "--nobatch_norm", "--verbose=0"])
    )
    assert changed.synthetic_data and not changed.batch_norm and changed.verbose == 0
    assert changed.width_multiplier == 0.0625


def test_bad_config_flag_is_a_usage_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"name": "fc1", "ratio": 0.5}]}))
    with pytest.raises(app.UsageError, match="--config:.*ratio"):
        image_flags.image_settings_from_flags(_parse([f"--config={bad}"]))


def test_the_flags_are_listed_as_the_recipes_own():
    flag_values = flags.FlagValues()
    vgg16_cifar10.define_flags(flag_values)
    own = {flag.name for flag in flag_values.get_key_flags_for_module(vgg16_cifar10.__name__)}
    assert {"config", "model_dir", "synthetic_data", "retrain_epochs"} <= own


def test_run_as_main_the_flags_belong_to_the_script_path_helpshort_lists(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/somewhere/recipes/alexnet_imagenet.py"])
    recipe = image_flags.ImageRecipe(alexnet_imagenet.TASK, alexnet_imagenet.DEFAULTS, "__main__")
    flag_values = flags.FlagValues()
    recipe.define_flags(flag_values)
    own = {f.name for f in flag_values.get_key_flags_for_module(sys.argv[0])}
    assert own == set(flag_values) and "config" in own


def test_main_rejects_stray_arguments():
    with pytest.raises(app.UsageError, match="Unexpected arguments: extra"):
        image_flags.main_for(vgg16_cifar10.TASK, values=None)(["vgg16_cifar10", "extra"])
