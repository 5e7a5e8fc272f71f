"""The TFLite converter, called once per file: a Keras model's serving function to a flatbuffer.

:func:`converter_for` converts a concrete function of the model rather than
``from_keras_model``, with a small root object holding the model's variables: the converter
saves that root as a SavedModel before converting, and saving the Keras model itself would trace
every layer's call functions again (seconds per LSTM, tens of seconds per Bidirectional LSTM).
The file is the same bytes.

Recurrent layers (LSTM, GRU, SimpleRNN, Bidirectional, ConvLSTM) loop over a tensor list whose
element shape includes the batch: with a dynamic batch the converter stops with
``'tf.TensorListReserve' op requires element_shape to be static``. :func:`convert_float` then
converts again with the batch fixed to 1, which lowers LSTM to LiteRT's fused
UNIDIRECTIONAL_SEQUENCE_LSTM and GRU, SimpleRNN, masked LSTM and ConvLSTM to a WHILE loop; a
model whose inputs already fix the batch (``keras.Input(batch_size=...)``) is converted with
its own batch. Files with a fixed batch are verified slice by slice
(:func:`tflite_export.verify.run`).

A model with an operator LiteRT has no builtin kernel for fails with an :class:`ExportError`
that names the TensorFlow operators and the layers they come from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tf_admm.compat import keras, keras3, tf
from tflite_export.errors import ExportError
from tflite_export.inputs import input_specs, output_names
from tflite_export.keras_weights import keras_layers

__all__ = [
    "ConversionError",
    "convert_float",
    "convert_float_any_batch",
    "converter_for",
    "explain",
    "static_batch",
]

# What the converter says when a loop's tensor list needs a static batch.
_TENSOR_LIST_ERRORS = ("TensorListReserve", "element_shape to be static", "TensorList")
_UNTRACKED = "untracked"
# TensorFlow operators some Keras layers lower to that LiteRT has no builtin kernel for.
_HINTS = {
    "SparseTensorDenseMatMul": (
        "LocallyConnected1D/2D with implementation=3 multiply by a sparse matrix; "
        "implementation=1 or 2 convert to builtin operators"
    ),
}


class ConversionError(ExportError):
    """The TFLite converter cannot convert the model to LiteRT builtin operators."""


def _serving_function(model: keras.Model, batch_size: int | None):
    # A Keras 3 model on the TensorFlow backend is traced like a tf_keras one: its call runs
    # TensorFlow operations on the function's placeholders and reads its tf.Variables.
    specs = []
    for spec in input_specs(model):
        shape = spec.shape.as_list()
        if batch_size is not None and shape:
            shape[0] = batch_size
        specs.append(tf.TensorSpec(shape, spec.dtype, name=spec.name))
    names = output_names(model)

    @tf.function(input_signature=specs)
    def serving_default(*args):
        outputs = model(list(args) if len(args) > 1 else args[0], training=False)
        if isinstance(outputs, Mapping):
            outputs = [outputs[name] for name in names]
        elif not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return dict(zip(names, outputs))

    return serving_default.get_concrete_function()


def converter_for(
    model: keras.Model, batch_size: int | None = None, *, track_model: bool = False
) -> Any:
    """A ``tf.lite.TFLiteConverter`` for ``model``'s serving function (no options set).

    The signature's inputs and outputs carry the Keras input and output names.

    Args:
      model: a built ``tf_keras`` model with known inputs.
      batch_size: fix the inputs' batch to this size; ``None`` keeps the model's (dynamic
        unless its inputs fix it).
      track_model: give the converter the model itself as the object to save, not a root
        holding its variables (for models that capture other resources, e.g. lookup tables).
    """
    concrete = _serving_function(model, batch_size)
    if track_model:
        root = model
    else:
        root = tf.Module()
        root.model_variables = _tf_variables(model)
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], root)


def _tf_variables(model: keras.Model) -> list[tf.Variable]:
    """The ``tf.Variable`` objects behind the model's variables. A Keras 3 variable on the
    TensorFlow backend is no ``tf.Variable`` but holds one (``.value``); given the Keras 3
    variables, the converter does not find them in the saved root and leaves READ_VARIABLE
    operators on uninitialized resources in the file instead of constants."""
    if isinstance(model, keras3.Model):
        return [variable.value for variable in model.variables]
    return list(model.variables)


def static_batch(model: keras.Model) -> int | None:
    """The batch the model's inputs fix, or ``None`` when it is dynamic."""
    batches = {t.shape.as_list()[0] if t.shape.rank else None for t in input_specs(model)}
    return batches.pop() if len(batches) == 1 and None not in batches else None


def _convert(converter_factory) -> bytes:
    """``converter_factory(track_model).convert()``, again with the model tracked when the
    lightweight root misses a resource the function captures."""
    try:
        return converter_factory(False).convert()
    except Exception as error:  # noqa: BLE001 - the converter raises many types
        if _UNTRACKED not in str(error):
            raise
    return converter_factory(True).convert()


def convert_float(model: keras.Model, batch_size: int | None = None) -> bytes:
    """The TFLite converter's dense float32 file of ``model`` (no optimizations).

    Args:
      model: a built ``tf_keras`` model with known inputs.
      batch_size: the inputs' batch in the file; ``None`` keeps the model's.

    Raises:
      ConversionError: naming the operators and layers the converter could not convert.
    """
    try:
        return _convert(lambda tracked: converter_for(model, batch_size, track_model=tracked))
    except Exception as error:  # noqa: BLE001 - the converter raises many types
        raise ConversionError(explain(model, error, batch_size)) from None


def convert_float_any_batch(model: keras.Model) -> tuple[bytes, int | None]:
    """The dense float32 file and its fixed batch (``None``: dynamic).

    The batch stays dynamic unless the converter needs it static (recurrent layers that are
    not unrolled, or any model it fails on for a tensor list), then it is fixed to 1 (or kept
    at the model's own fixed batch).

    Raises:
      ConversionError: as :func:`convert_float`.
    """
    fixed = static_batch(model)
    if fixed is not None:
        return convert_float(model), fixed
    if _loops_over_time(model):
        # Known to need a static batch: skip the failing attempt (seconds per recurrent layer).
        return convert_float(model, batch_size=1), 1
    try:
        return _convert(lambda tracked: converter_for(model, track_model=tracked)), None
    except Exception as error:  # noqa: BLE001 - the converter raises many types
        if not any(marker in str(error) for marker in _TENSOR_LIST_ERRORS):
            raise ConversionError(explain(model, error, None)) from None
    return convert_float(model, batch_size=1), 1


def _loops_over_time(model: keras.Model) -> bool:
    """Whether a recurrent layer (directly or inside a Bidirectional or TimeDistributed) runs
    a loop, i.e. is not unrolled: its tensor list needs a static batch."""
    for layer in keras_layers(model):
        for inner in layer._flatten_layers():
            if isinstance(inner, (keras.layers.RNN, keras3.layers.RNN)) and not inner.unroll:
                return True
    return False


def _error_lines(message: str) -> list[str]:
    """The converter's ``error:`` lines, without locations, each once."""
    found = []
    for match in re.finditer(r"error: ([^\n]+)", message):
        line = match.group(1).strip()
        if line and line not in found:
            found.append(line)
    return found


def _layers_using(model: keras.Model, op_types: set[str]) -> dict[str, list[str]]:
    """For each TensorFlow operator type, the layers whose call creates it (by name scope in
    the serving function's graph, functions it calls included)."""
    graph_def = _serving_function(model, static_batch(model)).graph.as_graph_def()
    library = {f.signature.name: f for f in graph_def.library.function}
    names = {layer.name for layer in keras_layers(model)}
    memo: dict[str, set[str]] = {}

    def called(node) -> list[str]:
        functions = []
        for value in node.attr.values():
            if value.HasField("func"):
                functions.append(value.func.name)
            functions.extend(f.name for f in value.list.func)
        return functions

    def types_in(function_name: str) -> set[str]:
        if function_name in memo:
            return memo[function_name]
        memo[function_name] = set()
        function = library.get(function_name)
        if function is None:
            return memo[function_name]
        found = set()
        for node in function.node_def:
            found.add(node.op)
            for inner in called(node):
                found |= types_in(inner)
        memo[function_name] = found
        return found

    layers: dict[str, list[str]] = {op: [] for op in op_types}
    for node in graph_def.node:
        types = {node.op}
        for function_name in called(node):
            types |= types_in(function_name)
        for op in op_types & types:
            scope = [segment for segment in node.name.split("/") if segment in names]
            if scope and scope[-1] not in layers[op]:
                layers[op].append(scope[-1])
    return layers


def explain(model: keras.Model, error: Exception, batch_size: int | None) -> str:
    """An "Expected ...; received: ..." message for a failed conversion, naming the TensorFlow
    operators LiteRT lacks and the layers that use them."""
    message = str(error)
    batch = "a dynamic batch" if batch_size is None else f"batch {batch_size}"
    flex = re.search(r"TF Select ops: ([^\n]+)", message)
    if flex:
        op_types = {op.strip() for op in flex.group(1).split(",") if op.strip()}
        try:
            layers = _layers_using(model, op_types)
        except Exception:  # noqa: BLE001 - naming layers is a courtesy, never a second error
            layers = {op: [] for op in op_types}
        parts = []
        for op in sorted(op_types):
            where = ", ".join(repr(name) for name in layers.get(op, [])) or "unknown layers"
            hint = f"; {_HINTS[op]}" if op in _HINTS else ""
            parts.append(f"tf.{op} (layer {where}{hint})")
        return (
            "Expected a model the TFLite converter lowers to LiteRT builtin operators; "
            f"received: operators LiteRT has no builtin kernel for: {'; '.join(parts)} "
            f"(converted with {batch}; the exporter does not use TF Select)"
        )
    lines = _error_lines(message) or [" ".join(message.split())[:300]]
    return (
        f"Expected a model the TFLite converter can convert; received: {type(error).__name__} "
        f"with {batch}: {' | '.join(lines)[:600]}"
    )
