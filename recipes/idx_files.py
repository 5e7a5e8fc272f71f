"""IDX files (the format of MNIST and Fashion-MNIST), checked against the MD5 of the originals
and written only once verified."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from absl import logging

__all__ = [
    "ChecksumMismatchError",
    "check_md5",
    "decode_idx",
    "encode_idx",
    "materialize_idx_files",
    "read_idx",
    "verify_md5",
    "write_idx",
]

_IDX_UBYTE = 0x08


class ChecksumMismatchError(ValueError):
    """A file's MD5 differs from the one of the original data set."""


def encode_idx(array: np.ndarray) -> bytes:
    """Serializes a uint8 array in LeCun's IDX format.

    The header is the magic number ``0x0000_08_NN`` (unsigned bytes, ``NN`` dimensions), so 2051
    for a stack of images and 2049 for a label vector, followed by each dimension as a big-endian
    uint32; then the values in C order.

    Args:
      array: uint8 array with 1 to 255 dimensions.

    Returns:
      The IDX bytes.

    Raises:
      ValueError: if ``array`` is not uint8 or has no dimension.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(
            "Expected a uint8 array with 1 to 255 dimensions; "
            f"received: dtype={array.dtype}, ndim={array.ndim}"
        )
    header = np.array([(_IDX_UBYTE << 8) | array.ndim, *array.shape], dtype=">u4")
    return header.tobytes() + np.ascontiguousarray(array).tobytes()


def decode_idx(data: bytes) -> np.ndarray:
    """Parses IDX bytes written by :func:`encode_idx` (or by LeCun) into a uint8 array.

    Args:
      data: the whole file's bytes.

    Returns:
      A read-only uint8 array with the dimensions of the header.

    Raises:
      ValueError: if the header is not one of unsigned bytes or the size does not match it.
    """
    if len(data) < 4:
        raise ValueError(f"Expected at least a 4-byte IDX header; received: size={len(data)}")
    zeros, dtype_code, ndim = data[0:2], data[2], data[3]
    if zeros != b"\x00\x00" or dtype_code != _IDX_UBYTE or ndim == 0:
        raise ValueError(
            "Expected an IDX header 0x0000 0x08 <ndim> (unsigned bytes); "
            f"received: magic=0x{data[:4].hex()}"
        )
    header_size = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data[4:header_size], dtype=">u4"))
    expected_size = header_size + int(np.prod(shape, dtype=np.int64))
    if len(shape) != ndim or len(data) != expected_size:
        raise ValueError(
            f"Expected {expected_size} bytes for an IDX file of shape {shape}; "
            f"received: size={len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes ``array`` to ``path`` as an IDX file (see :func:`encode_idx`)."""
    _write_atomically(Path(path), encode_idx(array))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an uncompressed IDX file (see :func:`decode_idx`)."""
    return decode_idx(Path(path).read_bytes())


def verify_md5(path: str | os.PathLike, expected_md5: str) -> None:
    """Refuses a file whose MD5 is not ``expected_md5``.

    Args:
      path: file to check.
      expected_md5: lowercase hex digest.

    Raises:
      ChecksumMismatchError: naming the file, the expected and the actual MD5.
    """
    check_md5(Path(path).read_bytes(), expected_md5, source=os.fspath(path))


def check_md5(data: bytes, expected_md5: str, *, source: str) -> None:
    actual = hashlib.md5(data).hexdigest()
    if actual != expected_md5:
        raise ChecksumMismatchError(
            f"Expected {source} to have MD5 {expected_md5}; received: md5={actual}. "
            "It is not the original data: delete it (and any cached copy it came from) and "
            "prepare the data again."
        )


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(data)
    os.replace(f.name, path)


def materialize_idx_files(
    target_dir: Path,
    expected_md5: Mapping[str, str],
    produce: Callable[[], Mapping[str, bytes]],
    source: str,
) -> dict[str, Path]:
    """Returns verified IDX files in ``target_dir``, producing them only when missing or bad.

    ``produce`` makes the files' bytes from ``source`` (named in errors); what it makes is
    checked before anything is written.
    """
    paths = {name: target_dir / name for name in expected_md5}
    try:
        for name, path in paths.items():
            verify_md5(path, expected_md5[name])
        logging.info("Reusing verified IDX files in %s", target_dir)
        return paths
    except FileNotFoundError:
        pass
    except ChecksumMismatchError as error:
        logging.warning("Cached IDX file is bad, writing it anew: %s", error)

    produced = produce()
    for name, path in paths.items():
        check_md5(produced[name], expected_md5[name], source=f"{name} made from {source}")
        _write_atomically(path, produced[name])
    logging.info("Wrote %d verified IDX files to %s", len(paths), target_dir)
    return paths
