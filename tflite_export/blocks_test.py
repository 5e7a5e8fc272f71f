"""Tests of tflite_export.blocks: the 1x4 block layout of FULLY_CONNECTED filters."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from tf_admm.compat import keras
from tflite_export import blocks, exporter, flatbuffer, report, verify
from tflite_export.candidates import build_file
from tflite_export.conversion import convert_float
from tflite_export.encodings import Encoding
from tflite_export.errors import ExportError, VerificationError
from tflite_export.weights import find_weight_tensors

_OPS = flatbuffer.schema.BuiltinOperator


def _block_sparse(rows: int, cols: int, kept_fraction: float, seed: int = 0) -> np.ndarray:
    """A (rows, cols) matrix whose nonzeros are whole 1x4 blocks, every block value nonzero."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.1, 1.0, (rows, cols)) * rng.choice([-1.0, 1.0], (rows, cols))
    kept = rng.random((rows, cols // 4)) < kept_fraction
    return (values * np.repeat(kept, 4, axis=1)).astype(np.float32)


def _mlp(fc1_filter: np.ndarray) -> keras.Model:
    """Input 64 -> Dense 32 (relu, named fc1, the given TFLite filter) -> Dense 6."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,), name="features")
    hidden = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    outputs = keras.layers.Dense(6, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    model.get_layer("fc1").kernel.assign(fc1_filter.T)  # Keras (in, out), TFLite (out, in)
    for layer in model.layers[1:]:
        layer.bias.assign(np.linspace(-0.1, 0.1, layer.bias.shape[0]).astype(np.float32))
    return model


def test_docstring_examples():
    results = doctest.testmod(blocks, extraglobs={"np": np})
    assert results.failed == 0 and results.attempted > 0


def test_block_layout_stores_whole_blocks_row_by_row_and_densifies_back():
    values = _block_sparse(8, 16, 0.3)
    layout = blocks.block_layout(values)
    occupied = (values.reshape(8, 4, 4) != 0).any(axis=2)
    assert layout.num_blocks == int(occupied.sum())
    assert layout.segments.tolist() == [0, *np.cumsum(occupied.sum(axis=1)).tolist()]
    assert layout.indices.tolist() == np.nonzero(occupied)[1].tolist()
    assert layout.values.size == 4 * layout.num_blocks
    assert layout.stored_zeros == 0
    restored = blocks.densify_blocks(values.shape, layout.segments, layout.indices, layout.values)
    np.testing.assert_array_equal(restored, values)


def test_scattered_zeros_are_not_whole_blocks_and_say_how_many_zeros_blocks_would_store():
    values = np.ones((2, 8), np.float32)
    values[:, 1::2] = 0.0  # every block half zeros: 8 blocks would store 8 zeros
    assert blocks.block_problem(values) == (
        "zeros are not whole 1x4 blocks: the 4 blocks holding nonzeros would store 8 zeros "
        "(50% of their values, at most 25%)"
    )
    with pytest.raises(ValueError, match="not whole 1x4 blocks"):
        blocks.block_layout(values)


@pytest.mark.parametrize(
    "values, reason",
    [
        (np.ones((2, 8), np.float32), "no zero weights"),
        (np.zeros((2, 6), np.float32), "input size 6 is not a multiple of the kernel's block of 4"),
        (
            np.zeros((2, 2, 4), np.float32),
            "Expected a matrix (rows, cols); received: shape=(2, 2, 4)",
        ),
    ],
)
def test_block_problem_names_the_reason(values, reason):
    assert blocks.block_problem(values) == reason
    assert not blocks.is_block_sparse(values)


def test_densify_blocks_rejects_inconsistent_arrays():
    with pytest.raises(ValueError, match="Expected 3 segments"):
        blocks.densify_blocks((2, 8), [0, 1], [0], np.ones(4))
    with pytest.raises(ValueError, match="Expected 4 values"):
        blocks.densify_blocks((2, 8), [0, 1, 1], [0], np.ones(3))


def _block_file(model: keras.Model) -> tuple[bytes, bytes]:
    """The converter's file and the same with fc1's filter in the block layout."""
    reference = convert_float(model)
    parsed = flatbuffer.read_model(reference)
    weights = find_weight_tensors(parsed, model, any_operator=True)
    fc1 = next(w for w in weights if w.layer == "fc1")
    values = flatbuffer.decode_tensor(parsed, fc1.subgraph, fc1.tensor)
    candidate = blocks.block_candidate(fc1, values)
    assert not isinstance(candidate, str)
    assert candidate.encoding is Encoding.SPARSE_BLOCKS
    data = build_file(
        reference, {(fc1.subgraph, fc1.tensor): fc1}, {(fc1.subgraph, fc1.tensor): candidate}
    )
    return reference, data


def test_block_file_feeds_the_filter_to_fully_connected_and_the_builtin_kernel_gives_keras():
    filter_values = _block_sparse(32, 64, 0.1)
    model = _mlp(filter_values)
    reference, data = _block_file(model)
    parsed = flatbuffer.read_model(data)
    subgraph = parsed.subgraphs[0]
    codes = [flatbuffer.builtin_code(parsed, op) for op in subgraph.operators]
    assert _OPS.DENSIFY not in codes
    fc1 = next(
        op
        for op in subgraph.operators
        if flatbuffer.builtin_code(parsed, op) == _OPS.FULLY_CONNECTED
        and subgraph.tensors[op.inputs[1]].sparsity is not None
    )
    tensor = subgraph.tensors[fc1.inputs[1]]
    sparsity = tensor.sparsity
    assert list(tensor.shape) == [32, 64]
    assert list(sparsity.traversalOrder) == [0, 1, 2]
    assert list(sparsity.blockMap) == [1]
    formats = [m.format for m in sparsity.dimMetadata]
    dense, csr = flatbuffer.schema.DimensionType.DENSE, flatbuffer.schema.DimensionType.SPARSE_CSR
    assert formats == [dense, csr, dense]
    assert [sparsity.dimMetadata[0].denseSize, sparsity.dimMetadata[2].denseSize] == [32, 4]
    columns = sparsity.dimMetadata[1]
    stored = np.frombuffer(bytes(parsed.buffers[tensor.buffer].data), np.float32)
    restored = blocks.densify_blocks(
        (32, 64), columns.arraySegments.values, columns.arrayIndices.values, stored
    )
    np.testing.assert_array_equal(restored, filter_values)
    assert len(data) < len(reference)
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    expected = model(x).numpy()
    (builtin,) = verify.run(data, [x], runtime=verify.Runtime.BUILTIN)
    assert float(np.max(np.abs(builtin - expected))) < 1e-5


def test_block_file_bytes_are_accounted_exactly_with_the_block_index_arrays():
    filter_values = _block_sparse(32, 64, 0.1)
    _, data = _block_file(_mlp(filter_values))
    parts = report.account(data)
    assert parts.tensor_bytes + parts.metadata_bytes + parts.overhead_bytes == len(data)
    layout = blocks.block_layout(filter_values)
    row = next(t for t in parts.tensors if t.index_bytes)
    assert row.value_bytes == 4 * layout.values.size
    # Segments and indices, plus the int32 traversal order (3) and block map (1).
    assert row.index_bytes == layout.stored_bytes - 4 * layout.values.size + 4 * (3 + 1)


def test_xnnpack_reads_the_block_filter_as_dense_so_the_default_delegate_gets_it_wrong():
    # The finding that keeps SPARSE_BLOCKS out of "auto" and keeps verification from running a
    # block file with XNNPACK (ai_edge_litert 2.3.0, TF 2.21): NaN here, a segmentation fault on
    # larger layers. If a LiteRT release makes XNNPACK decline or read such filters, this fails.
    model = _mlp(_block_sparse(32, 64, 0.1))
    _, data = _block_file(model)
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    outcome = blocks.default_delegate_outcome(data, x, model(x).numpy())
    assert outcome in ("max|diff|=nan", "crashed: signal 11"), outcome


def test_asking_for_sparse_blocks_fails_verification_naming_the_default_delegate(tmp_path):
    model = _mlp(_block_sparse(32, 64, 0.1))
    path = tmp_path / "blocks.tflite"
    with pytest.raises(VerificationError) as raised:
        exporter.export(model, str(path), encoding={"fc1": "sparse_blocks"})
    # The builtin kernels pass; the default delegate is not run, with the reason.
    assert str(raised.value) == (
        "Expected the written file to reproduce the Keras outputs in every runtime; received: "
        f"the only candidates: xnnpack: failed to run: {blocks.DEFAULT_DELEGATE_PROBLEM}"
    )
    assert not path.exists()


def test_asking_for_sparse_blocks_on_scattered_zeros_is_refused_naming_the_layer(tmp_path):
    rng = np.random.default_rng(1)
    scattered = rng.standard_normal((32, 64)).astype(np.float32) * (rng.random((32, 64)) < 0.1)
    model = _mlp(scattered)
    with pytest.raises(ExportError) as raised:
        exporter.export(model, str(tmp_path / "x.tflite"), encoding={"fc1": "sparse_blocks"})
    message = str(raised.value)
    assert message.startswith(
        "Weight 'fc1' (Dense): Expected weights that encoding 'sparse_blocks' can store; "
        "received: zeros are not whole 1x4 blocks"
    )


def test_asking_for_sparse_blocks_on_a_convolution_is_refused_naming_the_operator(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 4), name="image")
    hidden = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, outputs)
    kernel = model.get_layer("conv").kernel
    kernel.assign(np.where(np.arange(8) < 2, kernel.numpy(), 0.0).astype(np.float32))
    with pytest.raises(ExportError) as raised:
        exporter.export(model, str(tmp_path / "x.tflite"), encoding={"conv": "sparse_blocks"})
    assert str(raised.value) == (
        "Weight 'conv' (Conv2D): Expected weights that encoding 'sparse_blocks' can store; "
        "received: only FULLY_CONNECTED filters (LiteRT's sparse kernels); received operator "
        "CONV_2D"
    )


def test_auto_never_writes_block_layout(tmp_path):
    model = _mlp(_block_sparse(32, 64, 0.1))
    exported = exporter.export(model, str(tmp_path / "auto.tflite"))
    choice = next(w for w in exported.weights if w.label == "fc1")
    assert choice.encoding is Encoding.SPARSE_FLOAT32
    assert ("sparse_blocks", blocks.AUTO_PROBLEM) in choice.rejected
    assert all(c.passed for c in exported.checks)
    # Weights that are not whole blocks get no such entry.
    head = next(w for w in exported.weights if w.label == "head")
    assert all(name != "sparse_blocks" for name, _ in head.rejected)
