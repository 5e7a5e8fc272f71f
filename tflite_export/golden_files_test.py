"""Golden files: the sha256 of every file (and report) ``export`` writes for a fixed set of models.

The cases cover the float32 LiteRT target (auto and forced encodings, float16, k-means, a
recurrent and a multi-output model), full-integer LiteRT (auto, levels, sparse levels, int8
inputs and outputs) and the two TFLite Micro targets. A change to ``tflite_export`` that should
not change behaviour (a refactoring) leaves every hash as recorded in
``testdata/golden_files.json``; a change that should, rewrites that file (and says why):

  python -m tflite_export.golden_files_test            # from the repository root

The hashes hold for the TensorFlow / LiteRT / tflite-micro versions recorded with them (the
converter's output changes between versions): with other versions the test skips.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from tf_admm.compat import keras
from tflite_export import exporter, verify
from tflite_export.testing import (
    LAYER_KINDS,
    kernel_of,
    on_centroids,
    on_levels,
    prune,
    random_zeros,
    small_model,
)

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "golden_files.json")
# Versions that decide the converter's and the compression library's bytes.
_PACKAGES = ("tensorflow", "tf_keras", "ai-edge-litert", "numpy")
_TFLM_PACKAGE = "tflite-micro"


def _set(model: keras.Model, transform: Callable[[np.ndarray], np.ndarray]) -> keras.Model:
    for name in ("target", "head"):
        variable = kernel_of(model.get_layer(name))
        variable.assign(transform(variable.numpy()))
    return model


def _pruned(kind: str) -> keras.Model:
    return _set(small_model(kind), lambda v: prune(v, max(1, v.size // 10)))


def _levels(kind: str, bits: int = 3) -> keras.Model:
    return _set(small_model(kind), lambda v: random_zeros(on_levels(v, bits), 0.7))


def _kmeans(kind: str) -> keras.Model:
    def cluster(values):
        centroids = np.quantile(values, np.linspace(0.05, 0.95, 5)).astype(np.float32)
        return on_centroids(prune(values, max(1, values.size // 3)), centroids)

    return _set(small_model(kind), cluster)


def _recurrent() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), dtype="int32", name="tokens")
    hidden = keras.layers.Embedding(20, 8, name="embedding")(inputs)
    hidden = keras.layers.LSTM(8, name="lstm")(hidden)
    outputs = keras.layers.Dense(3, name="head")(hidden)
    model = keras.Model(inputs, outputs, name="recurrent")
    for layer in model.layers:
        for variable in layer.trainable_weights:
            if variable.shape.rank == 2:
                variable.assign(on_levels(prune(variable.numpy(), variable.shape[0]), 4))
    return model


def _two_outputs() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), name="zeta")
    hidden = keras.layers.Dense(8, name="shared")(inputs)
    first = keras.layers.Dense(3, name="yy")(hidden)
    second = keras.layers.Dense(2, name="aa")(hidden)
    model = keras.Model(inputs, [first, second])
    for layer in model.layers[1:]:
        layer.kernel.assign(prune(layer.kernel.numpy(), 6))
    return model


def _samples(model: keras.Model, count: int = 16, seed: int = 1) -> np.ndarray:
    shape = (count, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _cases() -> Iterator[tuple[str, Callable[[], keras.Model], dict]]:
    for kind in LAYER_KINDS:
        yield f"{kind}_pruned_float", lambda k=kind: _pruned(k), {}
        yield f"{kind}_levels_float", lambda k=kind: _levels(k), {}
        yield f"{kind}_levels_int", lambda k=kind: _levels(k), {"representative_data": True}
    yield "dense_kmeans_float", lambda: _kmeans("dense"), {}
    yield "conv2d_kmeans_float16", lambda: _kmeans("conv2d"), {"allow_float16": True}
    yield "dense_levels_sparse_levels", lambda: _levels("dense"), {"encoding": "sparse_levels"}
    yield "dense_levels_forced_int8", lambda: _levels("dense", 5), {"encoding": "int8"}
    yield (
        "conv2d_forced_by_layer",
        lambda: _pruned("conv2d"),
        {"encoding": {"target": "sparse_float16", "head": "float32"}},
    )
    yield (
        "dense_pruned_int_io",
        lambda: _pruned("dense"),
        {
            "representative_data": True,
            "int8_io": True,
        },
    )
    yield (
        "conv2d_levels_int_forced",
        lambda: _levels("conv2d"),
        {
            "representative_data": True,
            "encoding": {"target": "sparse_levels"},
        },
    )
    yield "recurrent_float", _recurrent, {}
    yield "two_outputs_float", _two_outputs, {}
    for kind in ("dense", "conv2d"):
        yield f"{kind}_kmeans_tflm", lambda k=kind: _kmeans(k), {"target": "tflm"}
        yield (
            f"{kind}_levels_tflm_int8",
            lambda k=kind: _levels(k),
            {
                "target": "tflm_int8",
                "representative_data": True,
            },
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# What a check measures (how far the interpreter's outputs are from Keras') depends on the CPU's
# float kernels, not on the exporter; pass / fail and the allowance stay in the hash.
_MEASURED = ("max_abs_diff", "top1")


def _decided_fields(fields: dict) -> dict:
    """The report's JSON without what varies between machines: the path and measured errors."""
    fields.pop("path")
    for check in fields["checks"]:
        for output in check["outputs"]:
            for key in _MEASURED:
                output.pop(key)
    return fields


def export_hashes(names: Iterator[str] | None = None) -> dict[str, dict]:
    """Per case (all, or those ``names``): sha256 of the file and of its report's JSON (the
    path and the measured check errors left out: :func:`_decided_fields`), and the file's size."""
    wanted = None if names is None else set(names)
    found = {}
    with tempfile.TemporaryDirectory() as directory:
        for name, build, options in _cases():
            if wanted is not None and name not in wanted:
                continue
            model = build()
            options = dict(options)
            if options.get("representative_data") is True:
                options["representative_data"] = _samples(model)
            path = os.path.join(directory, f"{name}.tflite")
            report = exporter.export(model, path, **options)
            with open(path, "rb") as handle:
                data = handle.read()
            fields = _decided_fields(json.loads(report.to_json()))
            found[name] = {
                "file": _sha256(data),
                "bytes": len(data),
                "report": _sha256(json.dumps(fields, sort_keys=True).encode()),
            }
    return found


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _versions() -> dict[str, str | None]:
    return {package: _version(package) for package in (*_PACKAGES, _TFLM_PACKAGE)}


def test_exported_files_are_the_golden_ones():
    with open(GOLDEN, encoding="utf-8") as handle:
        golden = json.load(handle)
    recorded, installed = golden["versions"], _versions()
    differ = {
        p: (recorded.get(p), installed[p]) for p in _PACKAGES if recorded.get(p) != installed[p]
    }
    if differ:
        pytest.skip(f"golden files recorded with other versions (recorded, installed): {differ}")
    names = sorted(golden["hashes"])
    tflm = recorded.get(_TFLM_PACKAGE) == installed[_TFLM_PACKAGE] and verify.tflm_available()
    if not tflm:
        names = [name for name in names if "tflm" not in name]
    assert names == sorted(name for name, _, _ in _cases() if tflm or "tflm" not in name)
    found = export_hashes(names)
    changed = {
        name: (golden["hashes"][name], found[name])
        for name in names
        if found[name] != golden["hashes"][name]
    }
    assert not changed, (
        f"Expected the golden files; received other bytes for {sorted(changed)} "
        f"(recorded, now): {changed}. If the change is meant, run "
        "python -m tflite_export.golden_files_test"
    )


def main() -> None:
    """Rewrites the golden file with the hashes of the installed versions."""
    result = {"versions": _versions(), "hashes": export_hashes()}
    with open(GOLDEN, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(result['hashes'])} cases to {GOLDEN}")


if __name__ == "__main__":
    main()
