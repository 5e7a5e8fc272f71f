"""The NumPy level functions (Keras 3 on JAX runs the Z-step with them) agree with the
TensorFlow versions and refuse what they refuse."""

import numpy as np
import pytest

from tf_admm.projections.levels import (
    fit_scale,
    make_levels,
    nearest_level_index,
    project_to_levels,
    relative_error,
)
from tf_admm.projections.levels_numpy import (
    fit_scale_numpy,
    nearest_level_index_numpy,
    project_to_levels_numpy,
    relative_error_numpy,
)

SCHEMES = ["uniform", "power_of_two"]
SHAPES = [(9,), (6, 5), (3, 3, 2, 4)]


def _normal(shape, seed, scale=1.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape).astype(np.float32)


def _mask(shape, seed, keep=0.6):
    return (np.random.default_rng(seed + 100).random(shape) < keep).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_channel", [False, True])
def test_numpy_projection_and_index_equal_tensorflow(shape, per_channel):
    w = _normal(shape, seed=3)
    mask = _mask(shape, seed=3)
    levels = make_levels(np.linspace(0.2, 0.5, shape[-1]) if per_channel else 0.3, 2).numpy()
    # Exact ties, a kept zero and values beyond the ends.
    w.reshape(-1)[:3] = [0.0, 0.45 if not per_channel else 0.0, 9.0]
    np.testing.assert_array_equal(
        nearest_level_index_numpy(w, levels, mask), nearest_level_index(w, levels, mask).numpy()
    )
    projected = project_to_levels_numpy(w, levels, mask)
    np.testing.assert_array_equal(projected, project_to_levels(w, levels, mask).numpy())
    assert projected.dtype == np.float32
    np.testing.assert_allclose(
        relative_error_numpy(w, projected, mask),
        float(relative_error(w, projected, mask)),
        rtol=1e-6,
    )


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", [1, 2, 3, 8])
@pytest.mark.parametrize("axis", [None, -1])
def test_numpy_scale_fit_equals_tensorflow(scheme, bits, axis):
    w = _normal((5, 4, 6), seed=bits)
    mask = _mask(w.shape, seed=bits)
    host = fit_scale_numpy(w, bits, scheme, mask=mask, axis=axis)
    graph = fit_scale(w, bits, scheme, mask=mask, axis=axis)
    np.testing.assert_allclose(host.scale, graph.scale.numpy(), rtol=1e-6)
    np.testing.assert_allclose(host.levels, graph.levels.numpy(), rtol=1e-6)
    np.testing.assert_allclose(host.projected, graph.projected.numpy(), rtol=1e-6)
    on_levels = project_to_levels_numpy(host.projected, host.levels, mask, axis=-1)
    np.testing.assert_array_equal(on_levels, host.projected)


def test_numpy_twins_refuse_what_tensorflow_refuses():
    with pytest.raises(ValueError, match="sorted ascending"):
        project_to_levels_numpy(np.ones(3), [1.0, -1.0])
    with pytest.raises(ValueError, match="one level row per channel"):
        project_to_levels_numpy(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="received: bits=9"):
        fit_scale_numpy(np.ones(4, np.float32), 9)
