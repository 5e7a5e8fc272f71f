"""The combined recipe's entry point: its defaults and that explicit flags still win."""

import os

from absl import flags
from absl.testing import flagsaver

from recipes import lenet5_mnist, lenet5_mnist_quant


def _settings(argv):
    with flagsaver.flagsaver():
        lenet5_mnist_quant.use_defaults()
        flags.FLAGS.unparse_flags()
        flags.FLAGS(argv)
        return lenet5_mnist.settings_from_flags()


def test_defaults_are_the_combined_config_and_its_own_directory():
    settings = _settings(["prog"])
    assert settings.model_dir == "runs/lenet5_mnist_quant"
    bits = {rule.name: rule.bits for rule in settings.spec.rules}
    assert bits == {"conv1": 3, "conv2": 3, "fc1": 2, "fc2": 3}
    assert all(rule.sparsity > 0 for rule in settings.spec.rules)
    # Everything else is the LeNet-5 recipe's default.
    assert settings.distill_weight == 0.5
    assert settings.export


def test_explicit_flags_win_over_the_defaults():
    config = os.path.join(lenet5_mnist.CONFIG_DIR, "lenet5_admm_quant_167x.json")
    settings = _settings(["prog", f"--config={config}", "--model_dir=elsewhere"])
    assert settings.model_dir == "elsewhere"
    pruned = sum(rule.sparsity for rule in settings.spec.rules)
    assert pruned > sum(rule.sparsity for rule in _settings(["prog"]).spec.rules)  # 167.5x > 106.3x


def test_flag_defaults_are_restored_for_the_other_recipe():
    _settings(["prog"])
    assert flags.FLAGS["config"].default.endswith("lenet5_admm_71x.json")
    assert flags.FLAGS["model_dir"].default == "runs/lenet5_mnist"
