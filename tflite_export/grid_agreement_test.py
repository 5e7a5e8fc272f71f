"""The storage report and the exporter give one answer to "are these weights on a uniform grid?"

Both ask :func:`tf_admm.grid.fit_step`; here every test model's compressed kernel is checked on
both sides, so the paper-style report and the file cannot disagree about the same weights.
"""

import itertools

import numpy as np
import pytest

from tf_admm import grid, report
from tflite_export import encodings, testing


def _kernels():
    """(description, kernel) of each test model kind, on levels, on centroids and float."""
    for kind, seed in itertools.product(testing.LAYER_KINDS, (0, 1)):
        layer = testing.small_model(kind, seed).get_layer("target")
        kernel = testing.kernel_of(layer).numpy()
        pruned = testing.prune(kernel, max(4, kernel.size // 5))
        for bits in (2, 3, 4):
            yield f"{kind}/s{seed}/{bits}-bit levels", testing.on_levels(pruned, bits), True
        # Only the levels in use: {2q, -3q, 5q} never uses q itself.
        q = np.float32(np.max(np.abs(pruned)) / 5)
        codes = np.where(pruned > 0, 5, -3).astype(np.float32)
        codes[np.abs(pruned) < np.median(np.abs(pruned[pruned != 0]))] = 2
        sparse_levels = (codes * q).astype(np.float32) * (pruned != 0)
        yield f"{kind}/s{seed}/levels 2q,-3q,5q", sparse_levels, True
        centroids = [-0.4137, -0.0911, 0.1234567, 0.3719]
        yield f"{kind}/s{seed}/k-means", testing.on_centroids(pruned, centroids), False
        yield f"{kind}/s{seed}/float", pruned, False


@pytest.mark.parametrize("name, kernel, on_levels", list(_kernels()), ids=lambda v: str(v)[:40])
def test_report_and_exporter_agree_on_the_grid(name, kernel, on_levels):
    _, codebook_bits = report.value_coding(kernel)
    report_step = codebook_bits == 32  # One 32-bit step instead of a table of floats.
    exported = encodings.fit_uniform_levels(kernel)
    assert report_step == (exported is not None) == grid.on_grid(kernel) == on_levels, name
    if exported is not None:
        decoded = exported.codes.astype(np.float64) * np.float64(exported.scale)
        assert np.max(np.abs(decoded - kernel)) <= 1e-6 * np.max(np.abs(kernel))


def test_fit_step_finds_q_from_levels_that_never_use_it():
    q = np.float32(0.0137)
    values = (np.array([2, -3, 5, 0, 5, 2], np.float32) * q).astype(np.float32)
    codes, step, error = grid.fit_step(values)
    assert codes.tolist() == [2, -3, 5, 0, 5, 2]
    assert step == q and error == 0.0
    assert grid.fit_step(np.array([0.1234567, 0.3711, -0.9137], np.float32)) is None
    assert grid.fit_step(np.array([np.inf, 1.0], np.float32)) is None
