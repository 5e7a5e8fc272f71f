"""Loading saved models with errors that say what is wrong with the file.

``keras.models.load_model`` reports a damaged ``.keras`` file badly: cut short, the zip archive
loses its central directory, Keras takes it for HDF5 and h5py answers "file signature not
found" without naming the file; a damaged member surfaces as a bare ``zipfile.BadZipFile``.
:func:`load_model` checks the file first and raises :class:`ModelFileError` naming the path,
the size and the damage, then loads with Keras (safe mode on: no lambda deserialization).

Wrapped tf-admm models need no ``custom_objects`` either way: the wrapper and model classes are
registered with Keras.
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any

from tf_admm.compat import keras, keras3

__all__ = ["ModelFileError", "check_model_file", "keras_generation", "load_model"]

# The first bytes of every HDF5 file (the legacy .h5 format).
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# Members every .keras archive written by Keras holds.
_KERAS_MEMBERS = ("config.json", "metadata.json")


class ModelFileError(ValueError):
    """A model file or directory is missing, truncated or corrupt."""


def _fail(path: str, problem: str) -> ModelFileError:
    return ModelFileError(f"Model file {path!r}: {problem}")


def _check_keras_archive(path: str) -> None:
    size = os.path.getsize(path)
    if not zipfile.is_zipfile(path):
        raise _fail(
            path,
            f"Expected a .keras zip archive; received {size:,} bytes without a zip central "
            "directory (truncated or not a .keras file)",
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [m for m in _KERAS_MEMBERS if m not in names]
            if missing:
                raise _fail(path, f"Expected members {list(_KERAS_MEMBERS)}; missing: {missing}")
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise _fail(path, f"Expected an intact zip archive; reading it failed: {error}") from error
    if damaged is not None:
        raise _fail(path, f"Expected intact members; member {damaged!r} fails its CRC check")


def _check_hdf5(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(len(_HDF5_SIGNATURE))
    if head != _HDF5_SIGNATURE:
        raise _fail(path, f"Expected an HDF5 file (.h5); received first bytes {head!r}")


def _check_saved_model(path: str) -> None:
    names = [n for n in ("saved_model.pb", "saved_model.pbtxt") if os.path.exists(f"{path}/{n}")]
    if not names:
        raise _fail(path, "Expected a SavedModel directory with saved_model.pb; none found")
    if os.path.getsize(os.path.join(path, names[0])) == 0:
        raise _fail(path, f"Expected a non-empty {names[0]}; received 0 bytes")


def check_model_file(path: str | os.PathLike) -> None:
    """Raises :class:`ModelFileError` unless ``path`` looks like a complete saved model.

    Checks what can be checked without building the model: a ``.keras`` file is a zip archive
    with Keras' members whose CRCs match; an ``.h5`` file starts with the HDF5 signature; a
    directory holds a non-empty ``saved_model.pb``.

    Args:
      path: a ``.keras`` or ``.h5`` file, or a SavedModel directory.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise _fail(path, "Expected an existing file or SavedModel directory; not found")
    if os.path.isdir(path):
        _check_saved_model(path)
    elif path.endswith((".h5", ".hdf5")):
        _check_hdf5(path)
    elif path.endswith(".keras"):
        _check_keras_archive(path)
    else:
        raise _fail(path, "Expected a .keras or .h5 file or a SavedModel directory")


def keras_generation(path: str | os.PathLike) -> int:
    """3 for a ``.keras`` file written by Keras 3 (``import keras``), else 2 (``tf_keras``:
    its ``.keras`` files, ``.h5`` files and SavedModel directories), from the archive's
    ``metadata.json``. Check the file with :func:`check_model_file` first."""
    path = os.fspath(path)
    if not path.endswith(".keras"):
        return 2
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("metadata.json"))
    version = str(metadata.get("keras_version", ""))
    return 3 if version.split(".")[0] == "3" else 2


def load_model(
    path: str | os.PathLike, *, compile: bool = True, safe_mode: bool = True, **kwargs: Any
) -> keras.Model:
    """Loads a model saved with ``model.save`` (wrapped, mid-ADMM or stripped), by the Keras
    that wrote it: a Keras 3 ``.keras`` file gives a Keras 3 model, anything else a ``tf_keras``
    one (:func:`keras_generation`).

    Args:
      path: a ``.keras`` or ``.h5`` file, or a SavedModel directory.
      compile: restore the optimizer and loss as saved.
      safe_mode: refuse to deserialize lambdas (``.keras`` files only).
      **kwargs: passed on to ``keras.models.load_model`` (e.g. ``custom_objects`` for the
        user's own layers).

    Returns:
      The model, exactly as ``keras.models.load_model`` returns it.

    Raises:
      ModelFileError: the file is missing, truncated or corrupt; the message names the path.
    """
    check_model_file(path)
    path = os.fspath(path)
    if path.endswith(".keras"):
        kwargs["safe_mode"] = safe_mode
    generation = keras3 if keras_generation(path) == 3 else keras
    return generation.models.load_model(path, compile=compile, **kwargs)
