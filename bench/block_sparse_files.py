"""Three files of one block-sparse model for :mod:`bench.latency`: dense, CSR + DENSIFY, blocks.

Usage:
  python -m bench.block_sparse_files --model=lenet5 --sparsity=0.9 --out_dir=runs/bench/blocks
  python -m bench.latency --files=runs/bench/blocks/dense.tflite,\
runs/bench/blocks/csr_densify.tflite,runs/bench/blocks/blocks_1x4.tflite --threads=1

The model has random weights (latency does not depend on the values); every Dense layer but the
output layer keeps ``1 - sparsity`` of its 1x4 blocks (one output, four consecutive inputs:
``tf_admm.projections.structured_mask(kernel, "block", keep, block=(1, 4))``). Files:

  dense         ``tflite_export.export(..., encoding="float32")``: the converter's file.
  csr_densify   ``tflite_export.export(...)`` ("auto"): the pruned filters as CSR without blocks,
                expanded by DENSIFY when the interpreter prepares the model.
  blocks_1x4    the converter's file with the pruned filters in the block layout, read by the
                FULLY_CONNECTED kernel (:mod:`tflite_export.blocks`). Not written by ``export``
                (XNNPACK reads such filters as dense): checked here against Keras with the
                builtin kernels; its XNNPACK outcome (NaN, or a crash) is run in a child
                process and reported.

Models: ``lenet5`` (fc1 800x500 pruned, the convolutions dense) and ``mlp`` (784-1024-1024-10,
both hidden layers pruned).
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags

import tflite_export
from recipes import models
from tf_admm.compat import keras
from tf_admm.projections import structured_mask
from tflite_export import blocks, flatbuffer, verify
from tflite_export.candidates import build_file
from tflite_export.conversion import convert_float
from tflite_export.weights import find_weight_tensors

__all__ = ["MODELS", "block_file", "build", "mlp", "prune_blocks"]


def mlp(num_classes: int = 10) -> keras.Model:
    """784 -> 1024 (relu) -> 1024 (relu) -> num_classes."""
    inputs = keras.Input((784,), name="features")
    h = keras.layers.Dense(1024, activation="relu", name="fc1")(inputs)
    h = keras.layers.Dense(1024, activation="relu", name="fc2")(h)
    outputs = keras.layers.Dense(num_classes, name="fc3")(h)
    return keras.Model(inputs, outputs, name="mlp")


MODELS = {"lenet5": models.lenet5, "mlp": mlp}


def prune_blocks(model: keras.Model, sparsity: float) -> list[str]:
    """Keeps ``1 - sparsity`` of the 1x4 blocks of every Dense kernel but the output layer's;
    returns the pruned layers' names."""
    pruned = []
    outputs = set(model.output_names)
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Dense) or layer.name in outputs:
            continue
        kernel = layer.kernel
        groups = int(np.prod(kernel.shape)) // 4
        keep = max(1, groups - int(round(sparsity * groups)))
        mask = structured_mask(kernel, "block", keep, block=(1, 4))
        kernel.assign(kernel * mask)
        pruned.append(layer.name)
    return pruned


def block_file(model: keras.Model) -> bytes:
    """The converter's file with every block-sparse FULLY_CONNECTED filter in the block layout."""
    reference = convert_float(model)
    parsed = flatbuffer.read_model(reference)
    weights = {}
    plan = {}
    for weight in find_weight_tensors(parsed, model, any_operator=True):
        values = flatbuffer.decode_tensor(parsed, weight.subgraph, weight.tensor)
        candidate = blocks.block_candidate(weight, values)
        if not isinstance(candidate, str):
            key = (weight.subgraph, weight.tensor)
            weights[key] = weight
            plan[key] = candidate
    return build_file(reference, weights, plan)


def build(model_name: str, sparsity: float, out_dir: str, seed: int = 0) -> dict[str, str]:
    """Writes the three files; returns {name: path}. Prints the block file's agreement with
    Keras (builtin kernels and XNNPACK)."""
    keras.utils.set_random_seed(seed)
    model = MODELS[model_name]()
    pruned = prune_blocks(model, sparsity)
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, f"{name}.tflite") for name in ("dense", "csr_densify")}
    tflite_export.export(model, paths["dense"], encoding="float32")
    report = tflite_export.export(model, paths["csr_densify"])
    print(f"pruned {pruned} to {sparsity:.0%} of their 1x4 blocks")
    print(report)
    data = block_file(model)
    paths["blocks_1x4"] = os.path.join(out_dir, "blocks_1x4.tflite")
    with open(paths["blocks_1x4"], "wb") as handle:
        handle.write(data)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, *model.input_shape[1:])).astype(np.float32)
    expected = model(x).numpy()
    (outputs,) = verify.run(data, [x], runtime=verify.Runtime.BUILTIN)
    difference = float(np.max(np.abs(outputs - expected)))
    print(f"blocks_1x4 ({len(data):,} bytes), builtin: max|diff|={difference:.3g}")
    # XNNPACK may crash on it: in a child process.
    print(f"blocks_1x4, xnnpack: {blocks.default_delegate_outcome(data, x, expected)}")
    return paths


# Flags are defined only when this module is the program (see bench.overhead).
def _define_flags() -> dict[str, flags.FlagHolder]:
    return {
        "model": flags.DEFINE_enum("model", "lenet5", list(MODELS), "Model (random weights)."),
        "sparsity": flags.DEFINE_float("sparsity", 0.9, "Fraction of 1x4 blocks removed."),
        "out_dir": flags.DEFINE_string("out_dir", "runs/bench/blocks", "Where to write files."),
        "seed": flags.DEFINE_integer("seed", 0, "Seed of the weights, masks and inputs."),
    }


_FLAGS: dict[str, flags.FlagHolder] = {}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    values = {name: holder.value for name, holder in _FLAGS.items()}
    paths = build(values["model"], values["sparsity"], values["out_dir"], values["seed"])
    print(",".join(paths.values()))


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    app.run(main)
