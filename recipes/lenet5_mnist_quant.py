"""Prune and quantize LeNet-5 on MNIST: the combined recipe.

The LeNet-5 recipe (``recipes.lenet5_mnist``: pretrain, ADMM pruning, masked retraining, ADMM
onto quantization levels, iterative quantization, retraining on the levels, export) with the
combined config and its own model directory as defaults. Every flag of that recipe applies here.

Usage:
  python -m recipes.lenet5_mnist_quant          # the paper's bits (3/3/2/3) on 106.3x pruning
  python -m recipes.lenet5_mnist_quant --config=recipes/configs/lenet5_admm_quant_167x.json
  python -m recipes.lenet5_mnist_quant --model_dir=runs/lenet5_mnist   # reuse its dense model
  python -m recipes.lenet5_mnist_quant --keras=3 --backend=jax           # Keras 3 on JAX

Prints the per-layer table, the paper-style storage report (weight data and with sparse
indices, against 32-bit dense) and the export report; writes ``results.json``, the stripped
model and the ``.tflite`` file to ``--model_dir``.
"""

from __future__ import annotations

import os

from absl import app, flags

from recipes import lenet5_mnist

# Flags whose defaults differ from recipes.lenet5_mnist.
DEFAULTS = {
    "config": os.path.join(lenet5_mnist.CONFIG_DIR, "lenet5_admm_quant.json"),
    "model_dir": "runs/lenet5_mnist_quant",
}


def use_defaults() -> None:
    """Makes this recipe's defaults the flags' defaults (explicit flags still win)."""
    for name, value in DEFAULTS.items():
        flags.FLAGS.set_default(name, value)


if __name__ == "__main__":
    use_defaults()
    app.run(lenet5_mnist.main)
