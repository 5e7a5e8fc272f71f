"""Tests of bench.block_sparse_files (a small model; the real runs use LeNet-5 and an MLP)."""

from __future__ import annotations

import numpy as np

from bench import block_sparse_files
from tf_admm.compat import keras
from tflite_export import flatbuffer, verify


def _small() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32,), name="features")
    hidden = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
    outputs = keras.layers.Dense(3, name="head")(hidden)
    return keras.Model(inputs, outputs)


def test_prune_blocks_keeps_whole_1x4_blocks_of_the_hidden_layers_only():
    model = _small()
    assert block_sparse_files.prune_blocks(model, 0.75) == ["fc1"]
    kernel = model.get_layer("fc1").kernel.numpy()  # (in, out): a block is 4 inputs, 1 output
    blocks = (kernel.T.reshape(16, 8, 4) != 0).any(axis=2)
    assert int(blocks.sum()) == 32  # 128 blocks, 96 removed
    assert np.count_nonzero(kernel) == 4 * 32
    assert np.count_nonzero(model.get_layer("head").kernel.numpy()) == 16 * 3


def test_block_file_has_block_sparse_filters_no_densify_and_keras_outputs():
    model = _small()
    block_sparse_files.prune_blocks(model, 0.75)
    data = block_sparse_files.block_file(model)
    parsed = flatbuffer.read_model(data)
    subgraph = parsed.subgraphs[0]
    codes = [flatbuffer.builtin_code(parsed, op) for op in subgraph.operators]
    assert flatbuffer.schema.BuiltinOperator.DENSIFY not in codes
    sparse = [t for t in subgraph.tensors if t.sparsity is not None]
    assert [list(t.sparsity.blockMap) for t in sparse] == [[1]]
    x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    (outputs,) = verify.run(data, [x], runtime=verify.Runtime.BUILTIN)
    assert float(np.max(np.abs(outputs - model(x).numpy()))) < 1e-5
