"""Tensor names in a written file: as the converter wrote them, or only those users look up.

The converter names every tensor after the TensorFlow operations fused into it
(``model/bn_project5/FusedBatchNormV3;...;model/project5/Conv2D``); on a small network these
strings are a tenth of the file. At run time only the names of the inputs and outputs are read:
``interpreter.get_input_details()`` / ``get_output_details()`` report them and code looks tensors
up by them; signature runners map the signature's own names (``serving_default``'s Keras input
and output names) to tensor *indices*, not to tensor names. What the other names are still
good for is reading the graph: viewers (Netron, Model Explorer) and ``get_tensor_details()``
show them.

:class:`TensorNames` is the ``tensor_names`` option of :func:`tflite_export.export`:

* ``"keep"`` (default): the converter's names, the file unchanged;
* ``"io"``: the names of every subgraph's inputs and outputs, and of every tensor a signature
  lists, are kept; every other tensor is written without a name field (interpreters report
  ``''`` for it).

:func:`drop_names` is the file's last re-encoding (:func:`tflite_export.flatbuffer.read_model` /
:func:`~tflite_export.flatbuffer.write_model`), made after the weights are chosen and before
the file is verified again, written and its bytes accounted, so the report describes the file
as written. The bytes a name string takes are :func:`string_bytes`.

Example:
  >>> TensorNames("io").value, string_bytes(len("StatefulPartitionedCall:0"))
  ('io', 32)
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from tflite_export import flatbuffer
from tflite_export.errors import ExportError

__all__ = [
    "DroppedNames",
    "TensorNames",
    "as_tensor_names",
    "drop_names",
    "named_tensors",
    "string_bytes",
]


class TensorNames(str, enum.Enum):
    """Which tensor names a written file keeps: ``KEEP`` all of the converter's, ``IO`` only
    those of the subgraphs' inputs and outputs and of the tensors signatures list."""

    KEEP = "keep"
    IO = "io"


def as_tensor_names(value: Any) -> TensorNames:
    """``value`` as a :class:`TensorNames`.

    Raises:
      ExportError: naming ``tensor_names`` and the allowed values.
    """
    try:
        return TensorNames(value)
    except ValueError:
        allowed = [mode.value for mode in TensorNames]
        raise ExportError(
            f"Expected tensor_names in {allowed}; received: tensor_names={value!r}"
        ) from None


def string_bytes(length: int) -> int:
    """Bytes a flatbuffer string of ``length`` UTF-8 bytes takes: its 4-byte length, the
    characters, the terminating zero, padded to 4 bytes (the field's offset not counted)."""
    return 4 * -(-(length + 5) // 4)


def named_tensors(model: Any) -> set[tuple[int, int]]:
    """``(subgraph, tensor)`` of the tensors whose names users read: each subgraph's inputs
    and outputs and the tensors of every signature."""
    kept = set()
    for index, subgraph in enumerate(model.subgraphs or []):
        for tensors in (subgraph.inputs, subgraph.outputs):
            kept.update((index, int(t)) for t in (tensors if tensors is not None else []) if t >= 0)
    for signature in model.signatureDefs or []:
        for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
            kept.add((int(signature.subgraphIndex), int(entry.tensorIndex)))
    return kept


@dataclasses.dataclass(frozen=True)
class DroppedNames:
    """What :func:`drop_names` did.

    Attributes:
      dropped: tensors whose name was removed.
      kept: named tensors that keep their name.
      bytes_before: the file's size with the names (what ``tensor_names="keep"`` writes).
      bytes_after: its size without them.
    """

    dropped: int
    kept: int
    bytes_before: int
    bytes_after: int

    def note(self) -> str:
        """One line for the report's notes."""
        return (
            f"tensor_names='io': {self.dropped:,} internal tensor names dropped, "
            f"{self.kept:,} input and output names kept; the file is "
            f"{self.bytes_before - self.bytes_after:,} B smaller than with every name "
            f"({self.bytes_before:,} B)"
        )


def drop_names(data: bytes) -> tuple[bytes, DroppedNames]:
    """``data`` re-encoded without the names of tensors :func:`named_tensors` leaves out.

    Tensor indices, buffers, operators and signatures are unchanged, so the file computes the
    same. The converter's own files are laid out by another writer: re-encoding one moves a few
    bytes of padding too, so ``bytes_before - bytes_after`` is what dropping the names saves
    on the file as it would be written with them, not exactly the names' bytes.
    """
    model = flatbuffer.read_model(data)
    kept = named_tensors(model)
    dropped = named = 0
    for index, subgraph in enumerate(model.subgraphs or []):
        for position, tensor in enumerate(subgraph.tensors or []):
            if tensor.name is None:
                continue
            if (index, position) in kept:
                named += 1
            else:
                tensor.name = None
                dropped += 1
    written = flatbuffer.write_model(model)
    return written, DroppedNames(dropped, named, len(data), len(written))
