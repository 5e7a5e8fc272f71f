"""Block-sparse FULLY_CONNECTED weights in the schema's block layout, read by the kernel itself.

Every other sparse encoding is expanded by a DENSIFY operator when the interpreter prepares the
model: the file is smaller, the work is dense. LiteRT's builtin FULLY_CONNECTED kernel (TF 2.21,
``tflite/kernels/fully_connected.cc``) also multiplies directly by a constant float32 filter
that carries ``sparsity``, when that sparsity has three levels, DENSE rows, SPARSE_CSR block
columns and a DENSE block of 4 values (``FullyConnectedSparseWeight1x4``: each stored block is
4 consecutive weights of one output row). Its int8 sibling (1x16 blocks) serves full-integer
files only. ``Encoding.SPARSE_BLOCKS`` writes such a filter:

* traversal order ``(0, 1, 2)``, block map ``(1,)`` (only the input axis is blocked);
* level 0 DENSE of size ``rows``; level 1 CSR over the ``cols / 4`` block columns (segments
  ``rows + 1``, indices the nonzero blocks' columns); level 2 DENSE of size 4;
* the values: every nonzero block, 4 floats each, row by row.

It applies to the filter of a FULLY_CONNECTED operator whose input size is a multiple of 4
and whose zeros are whole 1x4 blocks (a block holding any nonzero is stored whole, zeros
included, so "whole blocks" is a question of size, not of correctness: :func:`block_layout`
refuses a pattern whose blocks store more zeros than :data:`MAX_STORED_ZERO_FRACTION` of their
values, which would make it larger than the unblocked CSR layout).

The finding that decides how it is used (measured with ``ai_edge_litert`` 2.3.0, TF 2.21, see
``docs/experiments.md``): the XNNPACK delegate, LiteRT's default, claims such a
FULLY_CONNECTED node and reads the sparse filter as if it were dense, past the end of its
buffer: NaN outputs on small layers, a segmentation fault on large ones. So verification never
runs a file holding block layouts with the default delegate (it would crash the exporting
process); its default-delegate check fails with :data:`DEFAULT_DELEGATE_PROBLEM`. "auto" does
not offer the encoding, and asking for it fails verification, naming that reason. Files meant
for the builtin kernels only (``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``) can be
written with :func:`apply_block_layout` on a converted file; :func:`default_delegate_outcome`
runs one with XNNPACK in a child process, to watch for a LiteRT release that fixes this.

Example:
  >>> w = np.zeros((2, 8), np.float32); w[0, 4:8] = 1.0; w[1, 0:4] = 2.0
  >>> layout = block_layout(w)
  >>> layout.segments.tolist(), layout.indices.tolist(), layout.values.tolist()
  ([0, 1, 2], [1, 0], [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0])
  >>> bool(np.array_equal(densify_blocks(w.shape, layout.segments, layout.indices,
  ...                                    layout.values), w))
  True
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile

import numpy as np

from tflite_export import flatbuffer
from tflite_export.candidates import OPERATOR_OVERHEAD, Candidate
from tflite_export.encodings import Encoding, index_dtype
from tflite_export.weights import WeightTensor

__all__ = [
    "AUTO_PROBLEM",
    "BLOCK",
    "DEFAULT_DELEGATE_PROBLEM",
    "MAX_STORED_ZERO_FRACTION",
    "BlockLayout",
    "apply_block_layout",
    "block_candidate",
    "block_layout",
    "block_problem",
    "block_sparsity_parameters",
    "default_delegate_outcome",
    "densify_blocks",
    "is_block_sparse",
]

# The float32 kernel's block: 1 row x 4 input columns (FullyConnectedSparseWeight1x4).
BLOCK = 4
# Stored blocks may be at most this fraction zeros: beyond, the blocks hold so many explicit
# zeros that the pattern is not "whole blocks" (and CSR without blocks is smaller).
MAX_STORED_ZERO_FRACTION = 0.25

# Why a file with block layouts is not run with the default delegate (see the module doc).
DEFAULT_DELEGATE_PROBLEM = (
    "not run: XNNPACK claims FULLY_CONNECTED nodes with a block-sparse filter and reads the "
    "filter as dense (NaN outputs or a segmentation fault, ai_edge_litert 2.3.0)"
)
# What "auto" says of a weight the block layout would store.
AUTO_PROBLEM = (
    "not chosen by auto: the weights are whole 1x4 blocks, but XNNPACK, the default delegate, "
    "reads the block layout as dense (see tflite_export.blocks)"
)

_schema = flatbuffer.schema
_FULLY_CONNECTED = "FULLY_CONNECTED"


@dataclasses.dataclass(frozen=True, eq=False)
class BlockLayout:
    """A ``(rows, cols)`` weight in the 1x4 block layout.

    Attributes:
      shape: the dense shape ``(rows, cols)``.
      segments: CSR segments over the block columns, ``rows + 1`` offsets.
      indices: the block column (``col // 4``) of every stored block, row by row.
      values: the stored blocks' values, 4 per block, float32.
    """

    shape: tuple[int, int]
    segments: np.ndarray
    indices: np.ndarray
    values: np.ndarray

    @property
    def num_blocks(self) -> int:
        """Stored blocks."""
        return int(self.indices.size)

    @property
    def stored_zeros(self) -> int:
        """Zeros stored inside nonzero blocks."""
        return int(np.count_nonzero(self.values == 0))

    @property
    def stored_bytes(self) -> int:
        """Values plus the segments and indices in their narrowest types."""
        return (
            4 * self.values.size
            + self.segments.size * index_dtype(self.segments).itemsize
            + self.indices.size * index_dtype(self.indices).itemsize
        )

    def detail(self) -> str:
        """The layout for the report."""
        types = "/".join(sorted({index_dtype(self.segments).name, index_dtype(self.indices).name}))
        return (
            f"float32, {self.num_blocks:,} blocks of 1x{BLOCK} ({self.stored_zeros:,} stored "
            f"zeros), levels d,s,d(block), {types} indices, read by the FULLY_CONNECTED kernel"
        )


def block_problem(values: np.ndarray) -> str | None:
    """Why ``values`` (a FULLY_CONNECTED filter, TFLite layout) have no 1x4 block layout, or
    ``None`` when they do."""
    values = np.asarray(values)
    if values.ndim != 2:
        return f"Expected a matrix (rows, cols); received: shape={values.shape}"
    rows, cols = values.shape
    if cols % BLOCK:
        return f"input size {cols} is not a multiple of the kernel's block of {BLOCK}"
    nonzeros = int(np.count_nonzero(values))
    if nonzeros == values.size:
        return "no zero weights"
    occupied = (values.reshape(rows, cols // BLOCK, BLOCK) != 0).any(axis=2)
    stored = int(occupied.sum()) * BLOCK
    zeros = stored - nonzeros
    if zeros > MAX_STORED_ZERO_FRACTION * stored:
        return (
            f"zeros are not whole 1x{BLOCK} blocks: the {stored // BLOCK:,} blocks holding "
            f"nonzeros would store {zeros:,} zeros ({zeros / stored:.0%} of their values, at "
            f"most {MAX_STORED_ZERO_FRACTION:.0%})"
        )
    return None


def is_block_sparse(values: np.ndarray) -> bool:
    """Whether ``values`` have a 1x4 block layout (:func:`block_problem` finds none)."""
    return block_problem(values) is None


def block_layout(values: np.ndarray) -> BlockLayout:
    """The 1x4 block layout of a ``(rows, cols)`` weight.

    Raises:
      ValueError: when :func:`block_problem` finds one.
    """
    problem = block_problem(values)
    if problem is not None:
        raise ValueError(problem)
    values = np.asarray(values, np.float32)
    rows, cols = values.shape
    blocks = values.reshape(rows, cols // BLOCK, BLOCK)
    occupied = (blocks != 0).any(axis=2)
    segments = np.concatenate([[0], np.cumsum(occupied.sum(axis=1))]).astype(np.int64)
    indices = np.nonzero(occupied)[1].astype(np.int64)
    return BlockLayout((rows, cols), segments, indices, blocks[occupied].reshape(-1).copy())


def densify_blocks(shape, segments, indices, values) -> np.ndarray:
    """The dense ``(rows, cols)`` weight of a 1x4 block layout's arrays (an independent decoder
    for tests and read-back: it walks the file's arrays as the kernel does)."""
    rows, cols = (int(d) for d in shape)
    segments = np.asarray(segments, np.int64)
    indices = np.asarray(indices, np.int64)
    values = np.asarray(values).reshape(-1)
    if segments.size != rows + 1 or segments[-1] != indices.size:
        raise ValueError(
            f"Expected {rows + 1} segments ending at len(indices)={indices.size}; received: "
            f"len(segments)={segments.size}, segments[-1]={segments[-1] if segments.size else None}"
        )
    if values.size != BLOCK * indices.size:
        raise ValueError(
            f"Expected {BLOCK * indices.size} values ({BLOCK} per block); received: "
            f"len(values)={values.size}"
        )
    dense = np.zeros((rows, cols // BLOCK, BLOCK), values.dtype)
    row_of = np.repeat(np.arange(rows), np.diff(segments))
    dense[row_of, indices] = values.reshape(-1, BLOCK)
    return dense.reshape(rows, cols)


def block_sparsity_parameters(layout: BlockLayout) -> _schema.SparsityParametersT:
    """``SparsityParametersT`` of the layout: order (0, 1, 2), block map (1,), levels DENSE rows,
    CSR block columns, DENSE block."""
    parameters = _schema.SparsityParametersT()
    parameters.traversalOrder = np.arange(3, dtype=np.int32)
    parameters.blockMap = np.asarray([1], np.int32)
    rows_level = _schema.DimensionMetadataT()
    rows_level.format = _schema.DimensionType.DENSE
    rows_level.denseSize = layout.shape[0]
    columns_level = _schema.DimensionMetadataT()
    columns_level.format = _schema.DimensionType.SPARSE_CSR
    columns_level.arraySegmentsType, columns_level.arraySegments = flatbuffer.index_vector(
        layout.segments
    )
    columns_level.arrayIndicesType, columns_level.arrayIndices = flatbuffer.index_vector(
        layout.indices
    )
    block_level = _schema.DimensionMetadataT()
    block_level.format = _schema.DimensionType.DENSE
    block_level.denseSize = BLOCK
    parameters.dimMetadata = [rows_level, columns_level, block_level]
    return parameters


def apply_block_layout(
    editor: flatbuffer.ModelEditor, subgraph_index: int, tensor_index: int, layout: BlockLayout
) -> None:
    """Rewrites a constant filter in place: its values as ``layout``'s blocks, with the block
    sparsity; the FULLY_CONNECTED operator reads it directly (no DENSIFY)."""
    tensor = editor.model.subgraphs[subgraph_index].tensors[tensor_index]
    tensor.buffer = editor.add_buffer(layout.values.astype(np.float32))
    tensor.sparsity = block_sparsity_parameters(layout)


def block_candidate(weight: WeightTensor, values: np.ndarray) -> Candidate | str:
    """The ``SPARSE_BLOCKS`` candidate of a weight, or why it does not apply."""
    if weight.operator != _FULLY_CONNECTED:
        return (
            f"only FULLY_CONNECTED filters (LiteRT's sparse kernels); received operator "
            f"{weight.operator}"
        )
    problem = block_problem(values)
    if problem is not None:
        return problem
    layout = block_layout(values)

    def apply(editor: flatbuffer.ModelEditor, target: WeightTensor) -> None:
        apply_block_layout(editor, target.subgraph, target.tensor, layout)

    # No added tensor or operator; the sparsity table costs about what an operator does.
    estimate = layout.stored_bytes + OPERATOR_OVERHEAD
    return Candidate(Encoding.SPARSE_BLOCKS, estimate, layout.detail(), values, apply)


_CHILD = """
import sys
import numpy as np
from tflite_export import verify
data = open(sys.argv[1], "rb").read()
arrays = np.load(sys.argv[2])
(outputs,) = verify.run(data, [arrays["inputs"]], runtime=verify.Runtime.DEFAULT_DELEGATE)
print(float(np.max(np.abs(outputs.astype(np.float64) - arrays["expected"]))))
"""


def default_delegate_outcome(data: bytes, inputs: np.ndarray, expected: np.ndarray) -> str:
    """Runs a one-input, one-output file with the default delegate in a child process: the
    largest output difference from ``expected`` (``"max|diff|=..."``), or how the child died
    (``"crashed: signal 11"``)."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.tflite")
        with open(path, "wb") as handle:
            handle.write(bytes(data))
        arrays = os.path.join(directory, "arrays.npz")
        np.savez(arrays, inputs=inputs, expected=expected)
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, path, arrays],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            check=False,
        )
    if child.returncode < 0:
        return f"crashed: signal {-child.returncode}"
    if child.returncode:
        return f"failed: {child.stderr.strip().splitlines()[-1]}"
    return f"max|diff|={float(child.stdout.split()[-1]):.3g}"
