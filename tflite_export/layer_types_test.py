"""Export of every compressible layer type: its weights re-encoded in the file, verified in LiteRT.

One table row per layer type: a tiny model whose layer ``target`` holds weights with 85% exact
zeros (some rows: on 3-bit levels too). Each is exported, its outputs checked against Keras in
LiteRT (with and without XNNPACK, by the exporter and again here on other inputs), and the
written file must hold each of the layer's weights re-encoded (sparse, or as integer codes)
with exactly the Keras nonzeros, in the layout this file spells out per layer type, *not*
worked out by the exporter's own search (:mod:`tflite_export.layouts`). Layer types LiteRT
cannot run must fail with a message naming the operator and the layer.

Then two small end-to-end models (an Embedding + LSTM text classifier, a Conv1D + GRU
keyword spotter), sparsified by hand, exported and verified.
"""

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest

from tf_admm.compat import keras
from tflite_export import conversion, exporter, flatbuffer
from tflite_export.encodings import Encoding
from tflite_export.keras_weights import kernel_weights
from tflite_export.testing import on_levels, prune

layers = keras.layers

_ZEROS = 0.85  # fraction of each compressed weight set to zero


def _gates(kernel, count, to_tflite):
    """Per gate, the TFLite tensor: the gate's slice of the last axis, then ``to_tflite``."""
    units = kernel.shape[-1] // count
    return [to_tflite(kernel[..., g * units : (g + 1) * units]) for g in range(count)]


def _slice_label(name, kernel, count, gate):
    units = kernel.shape[-1] // count
    index = ", ".join([":"] * (kernel.ndim - 1) + [f"{gate * units}:{(gate + 1) * units}"])
    return f"target.{name}[{index}]"


def _per_gate(layer, names, count, to_tflite):
    """``label -> expected tensor`` of a recurrent layer whose weights are split per gate."""
    expected = {}
    for name, variable in kernel_weights(layer):
        if name.split("/")[-1] not in names:
            continue
        kernel = variable.numpy()
        for gate, tensor in enumerate(_gates(kernel, count, to_tflite)):
            expected[_slice_label(name, kernel, count, gate)] = tensor
    return expected


def _transposed(kernel):
    return kernel.T


def _conv1d_gate(kernel):  # (k, in, out) -> (out, 1, k, in)
    return kernel.transpose(2, 0, 1)[:, None]


def _conv2d_gate(kernel):  # (kh, kw, in, out) -> (out, kh, kw, in)
    return kernel.transpose(3, 0, 1, 2)


def _depthwise(kernel):  # (k[, k], in, m) -> (1[, 1], k, k, in * m)
    return kernel.reshape(1, *([1] * (4 - kernel.ndim)), *kernel.shape[:-2], -1)


def _pointwise(kernel):  # (1[, 1], in, out) -> (out, 1, 1, in)
    matrix = kernel.reshape(kernel.shape[-2], kernel.shape[-1])
    return matrix.T.reshape(matrix.shape[1], 1, 1, matrix.shape[0])


def _einsum_matrix(kernel):  # (in, d, e) -> (d * e, in)
    return kernel.reshape(kernel.shape[0], -1).T


@dataclasses.dataclass(frozen=True)
class Case:
    """One layer type: the model, the TFLite operator reading its weights, and per label the
    tensor the file must hold (TFLite layout, from the Keras weights)."""

    name: str
    build: Callable[[], keras.Model]
    operator: str
    expected: Callable[[keras.layers.Layer], dict[str, np.ndarray]]
    levels: bool = False  # weights on 3-bit levels too (stored as integer codes)
    recurrent: bool = False  # the file's batch is fixed to 1
    inputs: Callable[[keras.Model], np.ndarray] | None = None


def _sequential(input_shape, layer, dtype="float32", flatten=True):
    stack = [keras.Input(input_shape, dtype=dtype, name="x"), layer]
    if flatten:
        stack.append(layers.Flatten(name="flatten"))
    stack.append(layers.Dense(3, name="head"))
    return keras.Sequential(stack, name="model")


def _attention_model(use_bias=True):
    inputs = keras.Input((5, 16), name="x")
    attention = layers.MultiHeadAttention(num_heads=2, key_dim=8, use_bias=use_bias, name="target")
    hidden = attention(inputs, inputs)
    outputs = layers.Dense(3, name="head")(layers.Flatten(name="flatten")(hidden))
    return keras.Model(inputs, outputs, name="model")


def _attention_expected(layer):
    # query/key/value (dim, heads, key_dim) -> (heads * key_dim, dim); the output projection
    # (heads, key_dim, dim) -> (dim, heads * key_dim). The converter may fold the
    # 1/sqrt(key_dim) score scaling into the query kernel (it does when the biases are zero).
    return {
        f"target.{name}/kernel": getattr(layer, f"_{name}_dense").kernel.numpy().reshape(16, 16).T
        for name in ("query", "key", "value")
    } | {"target.attention_output/kernel": layer._output_dense.kernel.numpy().reshape(16, 16).T}


def _tokens(model):
    vocabulary = model.get_layer("target").input_dim
    rng = np.random.default_rng(3)
    return rng.integers(0, vocabulary, size=(8, *model.input_shape[1:])).astype(np.int32)


CASES = [
    Case(
        "conv3d",
        lambda: _sequential((5, 5, 5, 4), layers.Conv3D(8, 3, name="target")),
        "CONV_3D",
        lambda layer: {"target": layer.kernel.numpy()},
    ),
    Case(
        "separable_conv1d",
        lambda: _sequential(
            (12, 16), layers.SeparableConv1D(16, 5, depth_multiplier=4, name="target")
        ),
        "DEPTHWISE_CONV_2D,CONV_2D",
        lambda layer: {
            "target.depthwise_kernel": _depthwise(layer.depthwise_kernel.numpy()),
            "target.pointwise_kernel": _pointwise(layer.pointwise_kernel.numpy()),
        },
    ),
    Case(
        "separable_conv2d",
        lambda: _sequential(
            (8, 8, 8), layers.SeparableConv2D(16, 3, depth_multiplier=4, name="target")
        ),
        "DEPTHWISE_CONV_2D,CONV_2D",
        lambda layer: {
            "target.depthwise_kernel": _depthwise(layer.depthwise_kernel.numpy()),
            "target.pointwise_kernel": _pointwise(layer.pointwise_kernel.numpy()),
        },
    ),
    Case(
        "conv1d_transpose",  # (k, out, in) -> (out, 1, k, in)
        lambda: _sequential((6, 16), layers.Conv1DTranspose(16, 3, name="target")),
        "TRANSPOSE_CONV",
        lambda layer: {"target": layer.kernel.numpy().transpose(1, 0, 2)[:, None]},
    ),
    Case(
        "conv2d_transpose",  # (kh, kw, out, in) -> (out, kh, kw, in)
        lambda: _sequential((5, 5, 8), layers.Conv2DTranspose(16, 3, strides=2, name="target")),
        "TRANSPOSE_CONV",
        lambda layer: {"target": layer.kernel.numpy().transpose(2, 0, 1, 3)},
    ),
    Case(
        "conv3d_transpose",
        lambda: _sequential((3, 3, 3, 8), layers.Conv3DTranspose(8, 2, name="target")),
        "CONV_3D_TRANSPOSE",
        lambda layer: {"target": layer.kernel.numpy()},
    ),
    Case(
        "depthwise_conv1d",
        lambda: _sequential((12, 16), layers.DepthwiseConv1D(5, depth_multiplier=4, name="target")),
        "DEPTHWISE_CONV_2D",
        lambda layer: {"target": _depthwise(layer.depthwise_kernel.numpy())},
    ),
    Case(
        "embedding",
        lambda: _sequential((7,), layers.Embedding(64, 16, name="target"), dtype="int32"),
        "GATHER",
        lambda layer: {"target": layer.embeddings.numpy()},
        inputs=_tokens,
    ),
    Case(
        "embedding_levels",
        lambda: _sequential((7,), layers.Embedding(64, 16, name="target"), dtype="int32"),
        "GATHER",
        lambda layer: {"target": layer.embeddings.numpy()},
        levels=True,
        inputs=_tokens,
    ),
    Case(
        "locally_connected1d",
        lambda: _sequential((8, 8), layers.LocallyConnected1D(8, 3, name="target")),
        "BATCH_MATMUL",
        lambda layer: {"target": layer.kernel.numpy()},
    ),
    Case(
        "locally_connected2d",
        lambda: _sequential((5, 5, 4), layers.LocallyConnected2D(8, 3, name="target")),
        "BATCH_MATMUL",
        lambda layer: {"target": layer.kernel.numpy()},
    ),
    Case(
        # The kernel (h, w, c, oh, ow, f) times the layer's mask of receptive fields, as the
        # matrix (oh*ow*f, h*w*c).
        "locally_connected2d_implementation2",
        lambda: _sequential(
            (5, 5, 4), layers.LocallyConnected2D(8, 3, implementation=2, name="target")
        ),
        "FULLY_CONNECTED",
        lambda layer: {"target": (layer.kernel.numpy() * layer.kernel_mask).reshape(100, 72).T},
    ),
    Case(
        "einsum_dense",
        lambda: _sequential(
            (4, 16),
            layers.EinsumDense(
                "abc,cde->abde", output_shape=(None, 4, 8), bias_axes="de", name="target"
            ),
        ),
        "FULLY_CONNECTED",
        lambda layer: {"target": _einsum_matrix(layer.kernel.numpy())},
    ),
    Case("multi_head_attention", _attention_model, "FULLY_CONNECTED", _attention_expected),
    Case(
        "multi_head_attention_no_bias",  # the converter folds the score scale into the query
        lambda: _attention_model(use_bias=False),
        "FULLY_CONNECTED",
        _attention_expected,
    ),
    Case(
        "time_distributed_dense",
        lambda: _sequential((4, 16), layers.TimeDistributed(layers.Dense(32), name="target")),
        "FULLY_CONNECTED",
        lambda layer: {"target": layer.layer.kernel.numpy().T},
    ),
    Case(
        "lstm",  # one tensor per gate (i, f, c, o) of each kernel
        lambda: _sequential((6, 16), layers.LSTM(16, name="target"), flatten=False),
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        lambda layer: _per_gate(layer, ("kernel", "recurrent_kernel"), 4, _transposed),
        recurrent=True,
    ),
    Case(
        "lstm_levels",
        lambda: _sequential((6, 16), layers.LSTM(16, name="target"), flatten=False),
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        lambda layer: _per_gate(layer, ("kernel", "recurrent_kernel"), 4, _transposed),
        levels=True,
        recurrent=True,
    ),
    Case(
        "gru",  # a WHILE loop; whole kernels, transposed
        lambda: _sequential((6, 16), layers.GRU(16, name="target"), flatten=False),
        "FULLY_CONNECTED",
        lambda layer: {
            "target.kernel": layer.cell.kernel.numpy().T,
            "target.recurrent_kernel": layer.cell.recurrent_kernel.numpy().T,
        },
        recurrent=True,
    ),
    Case(
        "gru_reset_before",  # reset_after=False: the recurrent kernel in two slices
        lambda: _sequential(
            (6, 16), layers.GRU(16, reset_after=False, name="target"), flatten=False
        ),
        "FULLY_CONNECTED",
        lambda layer: {
            "target.kernel": layer.cell.kernel.numpy().T,
            "target.recurrent_kernel[:, 0:32]": layer.cell.recurrent_kernel.numpy()[:, :32].T,
            "target.recurrent_kernel[:, 32:48]": layer.cell.recurrent_kernel.numpy()[:, 32:].T,
        },
        recurrent=True,
    ),
    Case(
        "simple_rnn",
        lambda: _sequential((6, 16), layers.SimpleRNN(16, name="target"), flatten=False),
        "FULLY_CONNECTED",
        lambda layer: {
            "target.kernel": layer.cell.kernel.numpy().T,
            "target.recurrent_kernel": layer.cell.recurrent_kernel.numpy().T,
        },
        recurrent=True,
    ),
    Case(
        "bidirectional_lstm",
        lambda: _sequential(
            (6, 16),
            layers.Bidirectional(layers.LSTM(16, name="cell"), name="target"),
            flatten=False,
        ),
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        lambda layer: _per_gate(layer, ("kernel", "recurrent_kernel"), 4, _transposed),
        recurrent=True,
    ),
    Case(
        "conv_lstm2d",  # a WHILE loop of CONV_2D, one per gate
        lambda: _sequential((3, 6, 6, 4), layers.ConvLSTM2D(8, 3, name="target")),
        "CONV_2D",
        lambda layer: _per_gate(layer, ("kernel", "recurrent_kernel"), 4, _conv2d_gate),
        recurrent=True,
    ),
    Case(
        "conv_lstm1d",
        lambda: _sequential((3, 8, 4), layers.ConvLSTM1D(8, 3, name="target")),
        "CONV_2D",
        lambda layer: _per_gate(layer, ("kernel", "recurrent_kernel"), 4, _conv1d_gate),
        recurrent=True,
    ),
]


def _compress(model, *, levels):
    """Every kernel of ``target`` with exactly 15% nonzeros (on 4-bit levels if ``levels``);
    nonzero biases everywhere, so that the converter keeps them."""
    for variable in model.weights:
        if variable.name.split("/")[-1].startswith("bias"):
            size = int(np.prod(variable.shape))
            variable.assign(np.linspace(-0.1, 0.1, size).reshape(variable.shape))
    for _, variable in kernel_weights(model.get_layer("target")):
        values = prune(variable.numpy(), round(variable.shape.num_elements() * (1 - _ZEROS)))
        variable.assign(on_levels(values, 3) if levels else values)


def _tensor_index(parsed, subgraph, name):
    tensors = parsed.subgraphs[subgraph].tensors
    return next(i for i, t in enumerate(tensors) if flatbuffer.tensor_name(t) == name)


def _check_stored(case, report, parsed, layer):
    expected = case.expected(layer)
    choices = {w.label: w for w in report.weights if w.label.split(".")[0] == "target"}
    assert set(choices) == set(expected)
    assert not [s for s in report.skipped_weights if s.layer == "target"]
    assert {c.operator for c in choices.values()} <= set(case.operator.split(","))
    for label, choice in choices.items():
        rows = [t for t in report.file.tensors if t.label == label and t.value_bytes]
        assert len(rows) == 1, rows
        row = rows[0]
        decoded = flatbuffer.decode_tensor(
            parsed, row.subgraph, _tensor_index(parsed, row.subgraph, choice.tensor_name)
        )
        if "scaled" in choice.layout:  # the query kernel, when the converter folds the scale
            assert label == "target.query/kernel"
            scaled = expected[label] * np.float32(1 / math.sqrt(8))
            np.testing.assert_allclose(decoded, scaled, rtol=1e-6, atol=0)
        else:
            np.testing.assert_array_equal(decoded, expected[label])
        nonzeros = int(np.count_nonzero(expected[label]))
        assert choice.nonzeros == nonzeros and choice.num_weights == expected[label].size
        # Stored as nonzeros (or codes), never as the dense float32 tensor.
        if choice.encoding is Encoding.SPARSE_FLOAT32:
            assert row.storage == "sparse float32" and row.value_bytes == 4 * nonzeros
        elif choice.encoding is Encoding.SPARSE_LEVELS:
            assert case.levels and row.storage == "sparse int8" and row.value_bytes == nonzeros
        else:
            assert case.levels and choice.encoding is Encoding.LEVELS, choice
            assert row.storage in ("int4", "int8")
            bits = 4 if row.storage == "int4" else 8
            assert row.value_bytes == math.ceil(choice.num_weights * bits / 8)
        assert choice.stored_bytes < 4 * choice.num_weights
    # Every nonzero of the Keras weights is in the file, once (but those a mask zeroes).
    if not any("masked" in c.layout for c in choices.values()):
        kept = sum(int(np.count_nonzero(v.numpy())) for _, v in kernel_weights(layer))
        assert sum(c.nonzeros for c in choices.values()) == kept


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_layer_type_exports_with_its_weights_re_encoded_and_verified(case, tmp_path):
    keras.utils.set_random_seed(0)
    model = case.build()
    _compress(model, levels=case.levels)
    data = case.inputs(model) if case.inputs else None
    path = str(tmp_path / f"{case.name}.tflite")
    report = exporter.export(
        model, path, representative_data=data, activations="float32" if data is not None else None
    )
    assert all(c.passed for c in report.checks) and len(report.checks) == 2
    assert report.file_batch_size == (1 if case.recurrent else None)
    with open(path, "rb") as handle:
        written = handle.read()
    _check_stored(case, report, flatbuffer.read_model(written), model.get_layer("target"))
    # The written file again, on other inputs.
    if data is None:
        rng = np.random.default_rng(11)
        data = rng.standard_normal((5, *model.input_shape[1:])).astype(np.float32)
    else:
        data = data[::-1].copy()
    assert all(c.passed for c in exporter.verify_file(written, model, representative_data=data))


def test_layer_litert_cannot_run_fails_naming_the_operator_and_layer(tmp_path):
    model = _sequential((8, 8), layers.LocallyConnected1D(8, 3, implementation=3, name="target"))
    with pytest.raises(conversion.ConversionError) as error:
        exporter.export(model, str(tmp_path / "lc3.tflite"))
    message = str(error.value)
    assert "tf.SparseTensorDenseMatMul" in message and "layer 'target'" in message
    assert "implementation=1 or 2" in message


def test_kernel_folded_by_the_converter_is_reported_with_the_reason(tmp_path):
    inputs = keras.Input((8, 8, 4), name="x")
    hidden = layers.Conv2D(16, 3, use_bias=False, name="target")(inputs)
    hidden = layers.BatchNormalization(name="norm")(hidden)
    model = keras.Model(inputs, layers.Dense(3, name="head")(layers.Flatten()(hidden)))
    norm = model.get_layer("norm")
    norm.gamma.assign(np.linspace(0.5, 2.0, 16))
    norm.moving_variance.assign(np.linspace(0.5, 3.0, 16))
    _compress(model, levels=False)
    report = exporter.export(model, str(tmp_path / "folded.tflite"))
    skipped = [s for s in report.skipped_weights if s.layer == "target"]
    assert len(skipped) == 1 and skipped[0].weight == "kernel"
    assert "folded" in skipped[0].reason
    assert "not re-encoded: target.kernel (Conv2D, 3x3x4x16)" in report.format()
    # The folded kernel itself is still stored sparse, under its TFLite name.
    folded = [w for w in report.weights if w.layer_type is None and w.operator == "CONV_2D"]
    assert len(folded) == 1 and folded[0].encoding is Encoding.SPARSE_FLOAT32


def _sparsify_all(model, zeros=_ZEROS):
    for layer in model.layers:
        for _, variable in kernel_weights(layer):
            keep = round(variable.shape.num_elements() * (1 - zeros))
            variable.assign(prune(variable.numpy(), keep))


def _kept_nonzeros(model):
    return sum(
        int(np.count_nonzero(v.numpy())) for layer in model.layers for _, v in kernel_weights(layer)
    )


def test_embedding_lstm_text_classifier_exports_sparse_and_verifies(tmp_path):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((12,), dtype="int32", name="tokens"),
            layers.Embedding(200, 16, mask_zero=True, name="embedding"),
            layers.LSTM(24, name="lstm"),
            layers.Dense(4, activation="softmax", name="classes"),
        ]
    )
    _sparsify_all(model)
    rng = np.random.default_rng(5)
    tokens = rng.integers(1, 200, size=(6, 12)).astype(np.int32)
    tokens[:, 9:] = 0  # padding, masked
    report = exporter.export(
        model, str(tmp_path / "text.tflite"), representative_data=tokens, activations="float32"
    )
    assert all(c.passed for c in report.checks)
    assert not report.skipped_weights
    # A masked LSTM is a WHILE loop (the fused operator has no mask); its kernels are whole.
    labels = {w.label: w for w in report.weights}
    assert {"embedding", "lstm.kernel", "lstm.recurrent_kernel", "classes"} <= set(labels)
    assert all(w.encoding is Encoding.SPARSE_FLOAT32 for w in report.weights)
    assert sum(w.nonzeros for w in report.weights if w.layer_type) == _kept_nonzeros(model)
    assert report.file_batch_size == 1 and report.file_bytes < report.float_file_bytes / 2


def test_conv1d_gru_keyword_spotter_exports_sparse_and_verifies(tmp_path):
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((40, 10), name="mfcc"),
            layers.Conv1D(32, 5, strides=2, activation="relu", name="conv"),
            layers.GRU(32, name="gru"),
            layers.Dense(6, name="keywords"),
        ]
    )
    _sparsify_all(model)
    report = exporter.export(model, str(tmp_path / "kws.tflite"))
    assert all(c.passed for c in report.checks)
    assert not report.skipped_weights
    labels = {w.label: w for w in report.weights}
    assert {"conv", "gru.kernel", "gru.recurrent_kernel", "keywords"} <= set(labels)
    assert all(w.encoding is Encoding.SPARSE_FLOAT32 for w in report.weights if w.layer_type)
    assert sum(w.nonzeros for w in report.weights if w.layer_type) == _kept_nonzeros(model)
    assert any("WHILE loop" in note for note in report.notes)
    assert report.file_bytes < report.float_file_bytes / 2


def test_recurrent_model_with_its_own_fixed_batch_keeps_it_and_verifies_in_slices(tmp_path):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 16), batch_size=3, name="x")  # 8 samples: slices of 3, 3, 2 + 1
    hidden = layers.LSTM(16, name="target")(inputs)
    model = keras.Model(inputs, layers.Dense(3, name="head")(hidden))
    _compress(model, levels=False)
    samples = np.random.default_rng(4).standard_normal((8, 6, 16)).astype(np.float32)
    report = exporter.export(
        model,
        str(tmp_path / "batch3.tflite"),
        representative_data=samples,
        activations="float32",
    )
    assert report.file_batch_size == 3 and report.batch_size == 8
    assert all(c.passed for c in report.checks)
    assert not any("fixed to batch" in note for note in report.notes)  # the user's own batch
    assert any("reset_all_variables" in note for note in report.notes)
