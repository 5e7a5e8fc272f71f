"""Runs a ``.tflite`` model in an interpreter and compares its outputs with the Keras model's.

A LiteRT file is run twice: with the interpreter's default delegate (XNNPACK on CPU) and with the
plain builtin kernels (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``), since the two take different code
paths for sparse and quantized weights. The interpreter is ``ai_edge_litert``'s when installed,
else TensorFlow's ``tf.lite.Interpreter``. A TFLite Micro file is run in ``tflite_micro``'s
Python interpreter (the reference kernels, built with DECODE support), one sample at a time,
since TFLite Micro has no dynamic batch.

Inputs and outputs are matched by the names of the ``serving_default`` signature (the Keras input
and output names) when they agree, else by position: the converter may order outputs
alphabetically.

Outputs are compared by their largest absolute difference; full-integer files use an
:class:`Int8Tolerance` (output quantization steps and top-1 agreement). :func:`litert_tensors`
reads tensors back from the builtin interpreter after a run, so that the weights a kernel
actually reads can be checked exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tflite_export import flatbuffer
from tflite_export.checks import (
    LITERT_RUNTIMES,
    Int8Tolerance,
    OutputCheck,
    Runtime,
    RuntimeCheck,
)

try:
    from ai_edge_litert import interpreter as _interpreter

    INTERPRETER = "ai_edge_litert"
except ImportError:  # pragma: no cover - depends on the installed packages
    from tensorflow.lite.python import interpreter as _interpreter

    INTERPRETER = "tensorflow.lite"

__all__ = [
    "INTERPRETER",
    "LITERT_RUNTIMES",
    "Int8Tolerance",
    "OutputCheck",
    "Runtime",
    "RuntimeCheck",
    "check_outputs",
    "compare_outputs",
    "error_message",
    "fixed_batch",
    "litert_interpreter",
    "litert_tensors",
    "run",
    "top1_agreement",
    "signature_names",
    "tflm_available",
    "tflm_tensors",
]


_RESOLVERS = {  # LiteRT only
    Runtime.DEFAULT_DELEGATE: _interpreter.OpResolverType.AUTO,
    Runtime.BUILTIN: _interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
}


def litert_interpreter(data: bytes, runtime: Runtime, **options):
    """A LiteRT interpreter of ``data`` with ``runtime``'s kernels, not allocated yet.

    ``options`` go to ``Interpreter`` (``num_threads``, ``experimental_preserve_all_tensors``).
    """
    return _interpreter.Interpreter(
        model_content=bytes(data), experimental_op_resolver_type=_RESOLVERS[runtime], **options
    )


def _names_match(given: Sequence[str], signature: Sequence[str]) -> bool:
    return len(given) == len(signature) and set(given) == set(signature)


def tflm_available() -> bool:
    """Whether ``tflite_micro`` (the TFLite Micro interpreter and compression library) imports."""
    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        return False
    return True


def signature_names(model) -> tuple[dict[int, str], dict[int, str]]:
    """Tensor index -> signature name, for the inputs and outputs of the first signature."""
    if not model.signatureDefs:
        return {}, {}
    signature = model.signatureDefs[0]

    def names(entries):
        return {
            int(entry.tensorIndex): (
                entry.name.decode() if isinstance(entry.name, bytes) else entry.name
            )
            for entry in entries or []
        }

    return names(signature.inputs), names(signature.outputs)


def _ordered(given: Sequence[str], available: Sequence[str], values: Sequence) -> list:
    """``values`` (in ``available`` order) reordered to ``given`` when the names agree."""
    if _names_match(given, available):
        by_name = dict(zip(available, values))
        return [by_name[name] for name in given]
    return list(values)


def _arena_bytes(model, data: bytes) -> int:
    """A tensor arena large enough for every run-time tensor at once, plus room for the
    interpreter's own allocations (TFLite Micro plans a far smaller one)."""
    total = 0
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            buffer = model.buffers[tensor.buffer]
            if buffer.data is not None and len(buffer.data):
                continue
            count = int(np.prod(tensor.shape, dtype=np.int64)) if tensor.shape is not None else 1
            itemsize = 8
            try:
                itemsize = flatbuffer.numpy_dtype(tensor.type).itemsize
            except ValueError:
                pass
            total += count * itemsize + 16
    return 2 * total + 4 * len(data) + 256 * 1024


def _file_order(model, inputs: Sequence[np.ndarray], input_names: Sequence[str]):
    """``inputs`` in the file's input order, and the file's output names."""
    subgraph = model.subgraphs[0]
    input_by_tensor, output_by_tensor = signature_names(model)
    file_inputs = [input_by_tensor.get(int(i), str(i)) for i in subgraph.inputs]
    file_outputs = [output_by_tensor.get(int(i), str(i)) for i in subgraph.outputs]
    if _names_match(input_names, file_inputs):
        by_name = dict(zip(input_names, inputs))
        inputs = [by_name[name] for name in file_inputs]
    if len(inputs) != len(file_inputs):
        raise ValueError(
            f"Expected {len(file_inputs)} inputs for the file; received: {len(inputs)} arrays"
        )
    return list(inputs), file_outputs


def _run_tflm(
    data: bytes,
    inputs: Sequence[np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
) -> list[np.ndarray]:
    from tflite_micro import runtime as tflm_runtime

    model = flatbuffer.read_model(data)
    inputs, file_outputs = _file_order(model, inputs, input_names)
    interpreter = tflm_runtime.Interpreter.from_bytes(
        bytes(data), arena_size=_arena_bytes(model, data)
    )
    details = [interpreter.get_input_details(i) for i in range(len(inputs))]
    file_batch = [int(d["shape"][0]) if len(d["shape"]) else 1 for d in details]
    batch = int(np.shape(inputs[0])[0]) if np.ndim(inputs[0]) else 1
    whole = all(b == batch for b in file_batch)
    step = batch if whole else 1
    collected: list[list[np.ndarray]] = [[] for _ in file_outputs]
    for start in range(0, batch, step):
        for index, (value, detail) in enumerate(zip(inputs, details)):
            sample = np.asarray(value)[start : start + step].astype(detail["dtype"])
            interpreter.set_input(sample.reshape(detail["shape"]), index)
        interpreter.invoke()
        for index in range(len(file_outputs)):
            collected[index].append(np.array(interpreter.get_output(index)))
    outputs = [np.concatenate(parts, axis=0) for parts in collected]
    return _ordered(output_names, file_outputs, outputs)


def tflm_tensors(
    data: bytes,
    inputs: Sequence[np.ndarray],
    tensors: Sequence[int],
    *,
    subgraph: int = 0,
    input_names: Sequence[str] = (),
) -> dict[int, np.ndarray]:
    """Values of tensors of a TFLite Micro run on the first sample of ``inputs``.

    The interpreter keeps every tensor (``kPreserveAllTensors``), so run-time tensors such as
    the weights a DECODE operator expanded can be read after ``invoke``. Inputs are cast to
    the file's input types (an integer model's the caller quantizes).
    """
    from tflite_micro import runtime as tflm_runtime

    model = flatbuffer.read_model(data)
    inputs, _ = _file_order(model, inputs, input_names)
    interpreter = tflm_runtime.Interpreter.from_bytes(
        bytes(data),
        arena_size=2 * _arena_bytes(model, data),
        intrepreter_config=tflm_runtime.InterpreterConfig.kPreserveAllTensors,
    )
    for index, value in enumerate(inputs):
        detail = interpreter.get_input_details(index)
        sample = np.asarray(value)[:1].astype(detail["dtype"])
        interpreter.set_input(sample.reshape(detail["shape"]), index)
    interpreter.invoke()
    found = {}
    for tensor in tensors:
        entry = interpreter.GetTensor(int(tensor), subgraph)
        found[int(tensor)] = np.asarray(entry["tensor_data"]).reshape(tuple(entry["shape"]))
    return found


def litert_tensors(
    data: bytes,
    inputs: Sequence[np.ndarray],
    tensors: Sequence[int],
    *,
    input_names: Sequence[str] = (),
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Tensors of subgraph 0 as LiteRT's builtin kernels hold them after a run on one sample.

    The interpreter keeps every tensor (``experimental_preserve_all_tensors``), so weights that
    a DENSIFY operator expanded, or INT4 weights the interpreter unpacked, can be read after
    ``invoke``. Inputs are cast to the file's input types (an integer model's the caller
    quantizes).

    Returns:
      tensor index -> (values, quantization scales; empty when not quantized).
    """
    model = flatbuffer.read_model(data)
    inputs, _ = _file_order(model, inputs, input_names)
    interpreter = litert_interpreter(data, Runtime.BUILTIN, experimental_preserve_all_tensors=True)
    details = interpreter.get_input_details()
    for detail, value in zip(details, inputs):
        sample = np.asarray(value)[:1]
        interpreter.resize_tensor_input(detail["index"], sample.shape)
    interpreter.allocate_tensors()
    for detail, value in zip(details, inputs):
        interpreter.set_tensor(detail["index"], np.asarray(value)[:1].astype(detail["dtype"]))
    interpreter.invoke()
    by_index = {int(d["index"]): d for d in interpreter.get_tensor_details()}
    found = {}
    for tensor in tensors:
        scales = np.asarray(by_index[int(tensor)]["quantization_parameters"]["scales"], np.float32)
        found[int(tensor)] = (np.array(interpreter.get_tensor(int(tensor))), scales)
    return found


def fixed_batch(details) -> int | None:
    """The batch a file's inputs are fixed to (their ``shape_signature`` starts with it), or
    ``None`` when the batch is dynamic or the inputs are scalars.

    Args:
      details: the interpreter's (or a signature runner's) input details.
    """
    batches = set()
    for detail in details:
        signature = detail.get("shape_signature", detail["shape"])
        if len(signature) == 0 or int(signature[0]) < 0:
            return None
        batches.add(int(signature[0]))
    return batches.pop() if len(batches) == 1 else None


def _run_in_batches(interpreter, runner, feed: dict, batch: int) -> dict:
    """``runner`` over ``feed`` in slices of the file's fixed ``batch``, outputs joined.

    The last slice is padded with copies of its last sample (their outputs dropped). Variable
    tensors (an LSTM's state) are reset after every slice, so that each sequence starts from
    zeros as in Keras, where a non-stateful recurrent layer starts each call from zeros.
    """
    total = max(int(np.shape(v)[0]) for v in feed.values())
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, total, batch):
        chunk = {}
        for name, value in feed.items():
            piece = value[start : start + batch]
            if piece.shape[0] < batch:
                pad = np.repeat(piece[-1:], batch - piece.shape[0], axis=0)
                piece = np.concatenate([piece, pad], axis=0)
            chunk[name] = piece
        results = runner(**chunk)
        interpreter.reset_all_variables()
        kept = min(batch, total - start)
        for name, value in results.items():
            parts.setdefault(name, []).append(np.asarray(value)[:kept])
    return {name: np.concatenate(values, axis=0) for name, values in parts.items()}


def run(
    data: bytes,
    inputs: Sequence[np.ndarray],
    *,
    runtime: Runtime = Runtime.DEFAULT_DELEGATE,
    input_names: Sequence[str] = (),
    output_names: Sequence[str] = (),
) -> list[np.ndarray]:
    """Outputs of the ``.tflite`` model ``data`` for a batch of ``inputs``.

    Inputs are cast to the file's input types and outputs returned as the file gives them:
    for an integer model, the caller quantizes inputs and dequantizes outputs. A LiteRT file
    whose batch is fixed (e.g. an LSTM converted with batch 1) to another size than the
    inputs' runs on slices of its batch, its variable tensors reset after each slice.

    Args:
      data: the model bytes.
      inputs: one array per model input, batch first.
      runtime: LiteRT with the default delegate or with builtin kernels only, or TFLite Micro
        (one sample at a time unless the file's batch equals the inputs').
      input_names: Keras input names, matched against the signature's.
      output_names: Keras output names; the result follows this order when they match.

    Returns:
      One array per output.
    """
    runtime = Runtime(runtime)
    if runtime is Runtime.TFLM:
        return _run_tflm(data, inputs, input_names, output_names)
    interpreter = litert_interpreter(data, runtime)
    signatures = interpreter.get_signature_list()
    if signatures:
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        runner = interpreter.get_signature_runner(key)
        signature_inputs = list(signatures[key]["inputs"])
        signature_outputs = list(signatures[key]["outputs"])
        if _names_match(input_names, signature_inputs):
            feed = dict(zip(input_names, inputs))
        elif len(signature_inputs) == len(inputs) == 1:
            feed = {signature_inputs[0]: inputs[0]}
        else:
            # The converter names signature inputs after the Keras inputs, in model order.
            feed = dict(zip(signature_inputs, inputs))
        details = runner.get_input_details()
        types = {name: detail["dtype"] for name, detail in details.items()}
        feed = {name: np.asarray(value, types.get(name)) for name, value in feed.items()}
        batch = fixed_batch(details.values())
        given = {int(np.shape(v)[0]) if np.ndim(v) else 0 for v in feed.values()}
        if batch is None or given == {batch}:
            results = runner(**feed)
        else:
            results = _run_in_batches(interpreter, runner, feed, batch)
        if _names_match(output_names, signature_outputs):
            return [np.asarray(results[name]) for name in output_names]
        return [np.asarray(results[name]) for name in signature_outputs]
    details = interpreter.get_input_details()
    for detail, value in zip(details, inputs):
        interpreter.resize_tensor_input(detail["index"], np.shape(value))
    interpreter.allocate_tensors()
    for detail, value in zip(details, inputs):
        interpreter.set_tensor(detail["index"], np.asarray(value, detail["dtype"]))
    interpreter.invoke()
    return [
        np.asarray(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()
    ]


def top1_agreement(got: np.ndarray, want: np.ndarray, tie: float = 0.0) -> tuple[float, int] | None:
    """How often the argmax over the last axis agrees, and over how many samples.

    Samples whose two largest ``want`` values are less than ``tie`` apart are left out: at
    int8 resolution (``tie`` = one output step) they are ties either class may win.

    Returns:
      ``(fraction agreeing, samples counted)``, or ``None`` when the outputs are not shaped
      like class scores (rank 2 or more, last dimension 2 or more) or no sample is counted.
    """
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape or want.ndim < 2 or want.shape[-1] < 2 or want.size == 0:
        return None
    top = np.sort(want, axis=-1)
    decisive = (top[..., -1] - top[..., -2]) >= tie
    if not np.any(decisive):
        return None
    same = np.argmax(got, axis=-1) == np.argmax(want, axis=-1)
    return float(np.mean(same[decisive])), int(np.count_nonzero(decisive))


def compare_outputs(
    runtime: Runtime,
    outputs: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
    *,
    tolerance: float | Sequence[float],
    output_names: Sequence[str] = (),
    absolute: bool = False,
    reference: str = "keras",
    min_top1: float | None = None,
    ties: Sequence[float] | None = None,
) -> RuntimeCheck:
    """Compares outputs with ``expected``, output by output.

    Args:
      runtime: the runtime that produced ``outputs``.
      outputs: what the file gave.
      expected: what it should give.
      tolerance: allowed ``max|diff|``, relative to ``max(1, max|expected|)`` unless
        ``absolute``; ``0`` asks for equal values. One number, or one per output.
      output_names: names for the report.
      absolute: take ``tolerance`` as an absolute bound.
      reference: what ``expected`` is, for the report.
      min_top1: if given, outputs shaped like class scores must also agree on the argmax
        for at least this fraction of the samples (see :func:`top1_agreement`).
      ties: per output, how close the two largest expected values may be for a sample to be
        left out of the top-1 agreement (for int8 outputs: one output step).
    """
    names = list(output_names) or [f"output_{i}" for i in range(len(expected))]
    if len(outputs) != len(expected):
        return RuntimeCheck(
            Runtime(runtime),
            error=f"expected {len(expected)} outputs, the file gave {len(outputs)}",
            reference=reference,
        )
    if isinstance(tolerance, (int, float)):
        tolerances = [float(tolerance)] * len(expected)
    else:
        tolerances = [float(t) for t in tolerance]
    ties = [0.0] * len(expected) if ties is None else list(ties)
    results = []
    for name, got, want, bound, tie in zip(names, outputs, expected, tolerances, ties):
        want = np.asarray(want, np.float64)
        got = np.asarray(got, np.float64)
        scale = 1.0 if absolute else max(1.0, float(np.max(np.abs(want), initial=0.0)))
        allowed = bound * scale
        if got.shape != want.shape:
            diff = float("inf")
        else:
            diff = float(np.max(np.abs(got - want), initial=0.0))
            if not np.isfinite(diff):
                diff = float("inf")
        top1 = required = samples = None
        if min_top1 is not None and got.shape == want.shape:
            agreement = top1_agreement(got, want, tie)
            if agreement is not None:
                (top1, samples), required = agreement, min_top1
        results.append(OutputCheck(name, diff, allowed, top1, required, samples))
    return RuntimeCheck(Runtime(runtime), tuple(results), reference=reference)


def error_message(error: Exception) -> str:
    """An exception's message on one line, at most 500 characters (for a check's error)."""
    return " ".join(str(error).split())[:500]


def check_outputs(
    data: bytes,
    inputs: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
    *,
    tolerance: float,
    input_names: Sequence[str] = (),
    output_names: Sequence[str] = (),
    runtimes: Sequence[Runtime] = LITERT_RUNTIMES,
) -> tuple[RuntimeCheck, ...]:
    """Runs ``data`` in each runtime and compares every output with ``expected``.

    An output passes when ``max|tflite - expected| <= tolerance * max(1, max|expected|)``.
    A runtime that fails to load, prepare or invoke the model yields a check with ``error`` set.

    Returns:
      One :class:`RuntimeCheck` per runtime.
    """
    checks = []
    for runtime in runtimes:
        try:
            outputs = run(
                data,
                inputs,
                runtime=runtime,
                input_names=input_names,
                output_names=output_names,
            )
        except Exception as error:  # noqa: BLE001 - any interpreter failure is a finding
            checks.append(RuntimeCheck(Runtime(runtime), error=error_message(error)))
            continue
        checks.append(
            compare_outputs(
                runtime, outputs, expected, tolerance=tolerance, output_names=output_names
            )
        )
    return tuple(checks)
