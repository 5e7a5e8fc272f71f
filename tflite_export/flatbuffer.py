"""Reading, editing and writing ``.tflite`` flatbuffers through the schema's object API.

The schema bindings come from ``ai_edge_litert`` when it is installed, else from TensorFlow's
bundled copy; both are generated from the same ``schema.fbs`` and carry the object API
(``ModelT``, ``TensorT``, ...). Writing goes through ``flatbuffers.Builder`` with every buffer's
data aligned to 16 bytes, as the converter aligns them.

Nothing here knows about Keras; :func:`decode_tensor` turns any constant tensor, or the output
of a DENSIFY / DEQUANTIZE chain over constants, back into the dense array the interpreter sees.
"""

from __future__ import annotations

import flatbuffers
import numpy as np

from tflite_export import encodings

try:
    from ai_edge_litert import schema_py_generated as schema
except ImportError:  # pragma: no cover - depends on the installed packages
    from tensorflow.lite.python import schema_py_generated as schema

__all__ = [
    "BUFFER_ALIGNMENT",
    "FILE_IDENTIFIER",
    "ModelEditor",
    "builtin_code",
    "decode_tensor",
    "dequantize",
    "numpy_dtype",
    "producers",
    "read_model",
    "schema",
    "tensor_name",
    "type_name",
    "write_model",
]

FILE_IDENTIFIER = b"TFL3"
BUFFER_ALIGNMENT = 16

_TYPE_NAMES = {
    value: name.lower()
    for name, value in vars(schema.TensorType).items()
    if not name.startswith("_") and isinstance(value, int)
}
_NUMPY_TYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.FLOAT64: np.float64,
    schema.TensorType.INT8: np.int8,
    schema.TensorType.UINT8: np.uint8,
    schema.TensorType.INT16: np.int16,
    schema.TensorType.UINT16: np.uint16,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.UINT32: np.uint32,
    schema.TensorType.INT64: np.int64,
    schema.TensorType.UINT64: np.uint64,
    schema.TensorType.BOOL: np.bool_,
}
_INDEX_VECTORS = {
    np.dtype(np.uint8): (schema.SparseIndexVector.Uint8Vector, schema.Uint8VectorT),
    np.dtype(np.uint16): (schema.SparseIndexVector.Uint16Vector, schema.Uint16VectorT),
    np.dtype(np.int32): (schema.SparseIndexVector.Int32Vector, schema.Int32VectorT),
}


def type_name(tensor_type: int) -> str:
    """``'float32'``, ``'int8'``, ... for a schema ``TensorType`` value."""
    return _TYPE_NAMES.get(tensor_type, f"type{tensor_type}")


def numpy_dtype(tensor_type: int) -> np.dtype:
    """The numpy dtype of a schema ``TensorType`` (INT4 has none: it is packed)."""
    if tensor_type not in _NUMPY_TYPES:
        raise ValueError(
            "Expected a tensor type with a numpy equivalent; received: "
            f"type={type_name(tensor_type)}"
        )
    return np.dtype(_NUMPY_TYPES[tensor_type])


def tensor_name(tensor) -> str:
    """A schema tensor's name as a str (``''`` if it has none)."""
    name = tensor.name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else (name or "")


def builtin_code(model, operator) -> int:
    """The builtin operator code of ``operator`` (new or deprecated field)."""
    code = model.operatorCodes[operator.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def read_model(data: bytes) -> schema.ModelT:
    """Parses ``.tflite`` bytes into the object API.

    Raises:
      ValueError: if the bytes are not a TFLite flatbuffer.
    """
    data = bytes(data)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ValueError(
            f"Expected a TFLite flatbuffer (identifier {FILE_IDENTIFIER!r}); received: "
            f"identifier={data[4:8]!r}, size={len(data)}"
        )
    return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)


class _AlignedBufferT(schema.BufferT):
    """A Buffer whose data vector starts on a ``BUFFER_ALIGNMENT`` boundary."""

    def Pack(self, builder):  # noqa: N802 - flatbuffers' name
        data = None
        if self.data is not None and len(self.data):
            raw = np.asarray(self.data, np.uint8).tobytes()
            builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
            builder.head = builder.head - len(raw)
            builder.Bytes[builder.head : builder.head + len(raw)] = raw
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        if self.offset:
            schema.BufferAddOffset(builder, self.offset)
        if self.size:
            schema.BufferAddSize(builder, self.size)
        return schema.BufferEnd(builder)


def _referenced_buffers(model) -> set[int]:
    used = {0}
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            used.add(int(tensor.buffer))
    for metadata in model.metadata or []:
        used.add(int(metadata.buffer))
    for index in model.metadataBuffer if model.metadataBuffer is not None else []:
        used.add(int(index))
    return used


def _drop_unused_buffers(model) -> None:
    """Removes buffers no tensor or metadata refers to, renumbering the references."""
    used = _referenced_buffers(model)
    if len(used) == len(model.buffers):
        return
    remap = {}
    kept = []
    for index, buffer in enumerate(model.buffers):
        if index in used:
            remap[index] = len(kept)
            kept.append(buffer)
    model.buffers = kept
    for subgraph in model.subgraphs or []:
        for tensor in subgraph.tensors or []:
            tensor.buffer = remap[int(tensor.buffer)]
    for metadata in model.metadata or []:
        metadata.buffer = remap[int(metadata.buffer)]
    if model.metadataBuffer is not None:
        model.metadataBuffer = np.asarray(
            [remap[int(i)] for i in model.metadataBuffer], dtype=np.int32
        )


def write_model(model: schema.ModelT) -> bytes:
    """Serialises a ``ModelT`` (unreferenced buffers dropped, buffer data 16-byte aligned)."""
    _drop_unused_buffers(model)
    for buffer in model.buffers:
        buffer.__class__ = _AlignedBufferT
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def producers(subgraph) -> dict[int, int]:
    """Tensor index -> index of the operator that writes it."""
    written = {}
    for op_index, operator in enumerate(subgraph.operators or []):
        for tensor_index in operator.outputs if operator.outputs is not None else []:
            if tensor_index >= 0:
                written[int(tensor_index)] = op_index
    return written


def _index_array(kind: int, vector) -> np.ndarray | None:
    if kind == schema.SparseIndexVector.NONE or vector is None:
        return None
    return np.asarray(vector.values if vector.values is not None else [], np.int64)


def _raw_values(model, tensor) -> np.ndarray:
    """Stored values of a constant tensor (sparse tensors: the stored entries only)."""
    buffer = model.buffers[tensor.buffer]
    raw = np.asarray(buffer.data if buffer.data is not None else [], np.uint8)
    if tensor.type == schema.TensorType.INT4:
        count = (
            int(np.prod(tensor.shape, dtype=np.int64)) if tensor.sparsity is None else raw.size * 2
        )
        return encodings.unpack_int4(raw, count)
    return raw.view(numpy_dtype(tensor.type))


def dequantize(tensor, values: np.ndarray) -> np.ndarray:
    """``values`` (a quantized tensor's stored codes) as float32, per tensor or per channel.

    Raises:
      ValueError: when the tensor has no quantization parameters.
    """
    return _dequantize(tensor, values)


def _dequantize(tensor, values: np.ndarray) -> np.ndarray:
    quantization = tensor.quantization
    if quantization is None or quantization.scale is None or not len(quantization.scale):
        raise ValueError(
            f"Expected quantization parameters on tensor {tensor_name(tensor)!r} to dequantize "
            f"it; received: none"
        )
    scale = np.asarray(quantization.scale, np.float32)
    zero_point = np.asarray(
        quantization.zeroPoint if quantization.zeroPoint is not None else [0], np.int64
    )
    axis = int(quantization.quantizedDimension) if scale.size > 1 else None
    if zero_point.size > 1 or axis is not None:
        shape = [1] * values.ndim
        shape[axis] = -1
        zero_point = zero_point.reshape(shape) if zero_point.size > 1 else zero_point
    shifted = values.astype(np.int64) - zero_point
    return encodings.decode_codes(shifted, scale, axis)


def decode_tensor(model, subgraph_index: int, tensor_index: int) -> np.ndarray:
    """The dense array a tensor holds once the interpreter has prepared the model.

    Handles constant tensors (dense or sparse, any numpy type or INT4) and tensors written by
    DENSIFY or DEQUANTIZE ops whose inputs decode in turn. Values of quantized constants are
    returned as stored (integer codes); DEQUANTIZE applies the scale.

    Raises:
      ValueError: for a tensor computed at run time by any other op.
    """
    subgraph = model.subgraphs[subgraph_index]
    tensor = subgraph.tensors[tensor_index]
    buffer = model.buffers[tensor.buffer]
    if buffer.data is not None and len(buffer.data):
        values = _raw_values(model, tensor)
        sparsity = tensor.sparsity
        if sparsity is None:
            return values.reshape(tuple(int(d) for d in tensor.shape))
        order = list(np.asarray(sparsity.traversalOrder, np.int64))
        if (
            order != list(range(len(tensor.shape)))
            or sparsity.blockMap is not None
            and len(sparsity.blockMap)
        ):
            raise ValueError(
                f"Expected identity traversal order and no blocks in tensor "
                f"{tensor_name(tensor)!r}; received: traversal_order={order}, "
                f"block_map={sparsity.blockMap}"
            )
        formats, segments, indices = [], [], []
        for metadata in sparsity.dimMetadata:
            dense = metadata.format == schema.DimensionType.DENSE
            formats.append(encodings.DimFormat.DENSE if dense else encodings.DimFormat.CSR)
            segments.append(_index_array(metadata.arraySegmentsType, metadata.arraySegments))
            indices.append(_index_array(metadata.arrayIndicesType, metadata.arrayIndices))
        shape = tuple(int(d) for d in tensor.shape)
        return encodings.densify(shape, formats, segments, indices, values)
    written = producers(subgraph)
    if tensor_index not in written:
        raise ValueError(
            f"Expected a constant tensor or one written by DENSIFY/DEQUANTIZE; received: "
            f"tensor {tensor_name(tensor)!r} (index {tensor_index}) has no data and no producer"
        )
    operator = subgraph.operators[written[tensor_index]]
    code = builtin_code(model, operator)
    source = decode_tensor(model, subgraph_index, int(operator.inputs[0]))
    if code == schema.BuiltinOperator.DENSIFY:
        return source
    if code == schema.BuiltinOperator.DEQUANTIZE:
        source_tensor = subgraph.tensors[int(operator.inputs[0])]
        if source.dtype.kind == "f":
            return source.astype(np.float32)
        return _dequantize(source_tensor, source)
    raise ValueError(
        f"Expected a constant tensor or one written by DENSIFY/DEQUANTIZE; received: tensor "
        f"{tensor_name(tensor)!r} written by builtin operator {code}"
    )


class ModelEditor:
    """Adds buffers, tensors and decode operators to a ``ModelT`` in place.

    New tensors and buffers are appended, so existing indices (signatures, inputs, outputs)
    keep their meaning; decode operators are put before every other operator of the subgraph,
    in the order added, since their inputs are constants.
    """

    def __init__(self, model: schema.ModelT):
        self.model = model
        if not model.buffers:
            model.buffers = [schema.BufferT()]
        self._prepended: dict[int, list] = {}

    def opcode(self, code: int, version: int) -> int:
        """Index of the operator code ``(code, version)``, added when missing."""
        for index, existing in enumerate(self.model.operatorCodes or []):
            existing_code = max(existing.builtinCode, existing.deprecatedBuiltinCode)
            if existing_code == code and existing.version == version:
                return index
        entry = schema.OperatorCodeT()
        entry.builtinCode = code
        entry.deprecatedBuiltinCode = min(
            code, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
        )
        entry.version = version
        if self.model.operatorCodes is None:
            self.model.operatorCodes = []
        self.model.operatorCodes.append(entry)
        return len(self.model.operatorCodes) - 1

    def add_buffer(self, raw: np.ndarray | bytes) -> int:
        """Appends a buffer holding ``raw``'s bytes.

        Args:
          raw: an array (its bytes in C order) or bytes.

        Returns:
          The new buffer's index.
        """
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(
            bytes(raw) if isinstance(raw, bytes) else raw.tobytes(), np.uint8
        )
        self.model.buffers.append(buffer)
        return len(self.model.buffers) - 1

    def add_tensor(
        self,
        subgraph_index: int,
        name: str,
        shape,
        tensor_type: int,
        raw: np.ndarray | bytes | None = None,
        quantization=None,
        sparsity=None,
    ) -> int:
        """Appends a tensor to a subgraph, with a new buffer for its data if given.

        Args:
          subgraph_index: the subgraph to add it to.
          name: the tensor's name.
          shape: its shape.
          tensor_type: a schema ``TensorType`` value.
          raw: its constant data (see :meth:`add_buffer`); None for a run-time tensor (buffer 0).
          quantization: a schema ``QuantizationParametersT``, or None.
          sparsity: a schema ``SparsityParametersT``, or None for a dense tensor.

        Returns:
          The new tensor's index in the subgraph.
        """
        subgraph = self.model.subgraphs[subgraph_index]
        tensor = schema.TensorT()
        tensor.name = name
        tensor.shape = np.asarray(shape, np.int32)
        tensor.type = tensor_type
        tensor.buffer = self.add_buffer(raw) if raw is not None else 0
        tensor.quantization = quantization
        tensor.sparsity = sparsity
        subgraph.tensors.append(tensor)
        return len(subgraph.tensors) - 1

    def release_constant(self, subgraph_index: int, tensor_index: int) -> None:
        """Makes a constant tensor a run-time one (its old buffer is dropped on write)."""
        tensor = self.model.subgraphs[subgraph_index].tensors[tensor_index]
        tensor.buffer = 0
        tensor.sparsity = None

    def add_operator(
        self, subgraph_index: int, code: int, version: int, inputs, outputs, options=None
    ) -> None:
        """Adds an operator to run before the subgraph's existing ones, after those added before.

        Args:
          subgraph_index: the subgraph to add it to.
          code: a schema ``BuiltinOperator`` value.
          version: the operator version.
          inputs: input tensor indices.
          outputs: output tensor indices.
          options: ``(builtin_options_type, options)``, or None.
        """
        operator = schema.OperatorT()
        operator.opcodeIndex = self.opcode(code, version)
        operator.inputs = np.asarray(inputs, np.int32)
        operator.outputs = np.asarray(outputs, np.int32)
        if options is not None:
            operator.builtinOptionsType, operator.builtinOptions = options
        self._prepended.setdefault(subgraph_index, []).append(operator)

    def add_densify(self, subgraph_index: int, source: int, output: int) -> None:
        """DENSIFY: the sparse constant ``source`` expanded into the dense tensor ``output``."""
        options = (schema.BuiltinOptions.DensifyOptions, schema.DensifyOptionsT())
        self.add_operator(
            subgraph_index, schema.BuiltinOperator.DENSIFY, 1, [source], [output], options
        )

    def add_dequantize(self, subgraph_index: int, version: int, source: int, output: int) -> None:
        """DEQUANTIZE ``source`` into ``output`` (``version`` from TFLite's op_version.cc)."""
        options = (schema.BuiltinOptions.DequantizeOptions, schema.DequantizeOptionsT())
        self.add_operator(
            subgraph_index, schema.BuiltinOperator.DEQUANTIZE, version, [source], [output], options
        )

    def finish(self) -> schema.ModelT:
        """Puts the added operators in place and returns the model."""
        for subgraph_index, operators in self._prepended.items():
            subgraph = self.model.subgraphs[subgraph_index]
            subgraph.operators = operators + list(subgraph.operators or [])
        self._prepended = {}
        return self.model


def index_vector(array: np.ndarray) -> tuple[int, object]:
    """A segments/indices array as the narrowest schema index vector (type, object)."""
    dtype = encodings.index_dtype(array)
    kind, cls = _INDEX_VECTORS[dtype]
    vector = cls()
    vector.values = np.asarray(array).astype(dtype)
    return kind, vector


def sparsity_parameters(layout: encodings.SparseLayout) -> schema.SparsityParametersT:
    """``SparsityParametersT`` for a :class:`~tflite_export.encodings.SparseLayout`."""
    parameters = schema.SparsityParametersT()
    parameters.traversalOrder = np.arange(len(layout.shape), dtype=np.int32)
    parameters.dimMetadata = []
    for size, kind, segments, indices in zip(
        layout.shape, layout.formats, layout.segments, layout.indices
    ):
        metadata = schema.DimensionMetadataT()
        if kind is encodings.DimFormat.DENSE:
            metadata.format = schema.DimensionType.DENSE
            metadata.denseSize = int(size)
        else:
            metadata.format = schema.DimensionType.SPARSE_CSR
            metadata.arraySegmentsType, metadata.arraySegments = index_vector(segments)
            metadata.arrayIndicesType, metadata.arrayIndices = index_vector(indices)
        parameters.dimMetadata.append(metadata)
    return parameters
