"""Property tests for the structured projections (filters, channels, columns, blocks, N:M).

The groups are recomputed here in NumPy from the module docstring's definitions (index
arithmetic, not the library's reshapes), so a wrong reshape shows up as a wrong group.
"""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tf_admm.projections import structured
from tf_admm.projections.structured import (
    gemm_shape,
    group_count,
    n_of_m_mask,
    project_n_of_m,
    project_structured,
    structured_mask,
)

# (shape, layout, structure, block): Dense, Conv1D, Conv2D and depthwise kernels.
CASES = [
    ((6, 4), "dense", "filter", None),
    ((6, 4), "dense", "channel", None),
    ((6, 4), "dense", "column", None),
    ((6, 4), "dense", "block", (1, 3)),
    ((6, 4), "dense", "block", (2, 2)),
    ((3, 4, 5), "dense", "filter", None),
    ((2, 2, 4, 3), "dense", "filter", None),
    ((2, 2, 4, 3), "dense", "channel", None),
    ((2, 2, 4, 3), "dense", "column", None),
    ((2, 2, 4, 3), "dense", "block", (1, 4)),
    ((2, 2, 4, 3), "dense", "block", (3, 2)),
    ((3, 3, 4, 1), "depthwise", "filter", None),
    ((2, 2, 3, 2), "depthwise", "filter", None),
    ((2, 2, 3, 2), "depthwise", "channel", None),
    ((2, 2, 3, 2), "depthwise", "column", None),
    ((2, 2, 3, 2), "depthwise", "block", (2, 2)),
]
IDS = [
    f"{layout}{'x'.join(map(str, shape))}-{structure}{'' if block is None else block}"
    for shape, layout, structure, block in CASES
]


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _group_ids(shape, layout, structure, block):
    """The group of every entry of a kernel of ``shape``, from the definitions by index."""
    index = np.indices(shape)
    spatial = shape[:-2]
    position = np.ravel_multi_index(tuple(index[:-2]), spatial) if spatial else 0
    channel, last = index[-2], index[-1]
    if layout == "dense":
        output, fan_in = last, position * shape[-2] + channel
    else:
        output, fan_in = channel * shape[-1] + last, position + 0 * channel
    outputs, columns = gemm_shape(shape, layout)
    if structure == "filter":
        return output
    if structure == "channel":
        return channel
    if structure == "column":
        return fan_in
    r, c = block
    return (output // r) * (columns // c) + fan_in // c


def _distance(x, z):
    return float(np.sum(np.square(x.astype(np.float64) - z.astype(np.float64))))


@pytest.mark.parametrize("shape, layout, structure, block", CASES, ids=IDS)
def test_result_keeps_exactly_k_whole_groups_of_largest_norm(shape, layout, structure, block):
    ids = _group_ids(shape, layout, structure, block)
    count = group_count(shape, structure, layout, block)
    assert count == len(np.unique(ids))
    x = _random(shape, seed=count)
    for k in range(count + 1):
        mask = structured_mask(tf.constant(x), structure, k, layout=layout, block=block).numpy()
        assert set(np.unique(mask)) <= {0.0, 1.0}
        kept = np.unique(ids[mask == 1])
        assert len(kept) == k
        # Whole groups: every entry of a kept group is kept.
        np.testing.assert_array_equal(mask, np.isin(ids, kept).astype(np.float32))
        z = project_structured(tf.constant(x), structure, k, layout=layout, block=block).numpy()
        assert len(np.unique(ids[z != 0])) == k  # Random inputs: no kept group is all zero.
        norms = np.array([np.sum(np.square(x[ids == g])) for g in range(count)])
        if 0 < k < count:
            assert norms[kept].min() >= np.delete(norms, kept).max()


@pytest.mark.parametrize("shape, layout, structure, block", CASES, ids=IDS)
def test_projection_is_idempotent_and_fixes_points_of_the_set(shape, layout, structure, block):
    x = tf.constant(_random(shape, seed=1))
    k = max(1, group_count(shape, structure, layout, block) // 2)
    z = project_structured(x, structure, k, layout=layout, block=block)
    np.testing.assert_array_equal(
        project_structured(z, structure, k, layout=layout, block=block).numpy(), z.numpy()
    )
    # A point with fewer than k nonzero groups is in the set too.
    sparser = project_structured(x, structure, k - 1 or 1, layout=layout, block=block)
    np.testing.assert_array_equal(
        project_structured(sparser, structure, k, layout=layout, block=block).numpy(),
        sparser.numpy(),
    )


@pytest.mark.parametrize("shape, layout, structure, block", CASES, ids=IDS)
def test_no_member_of_the_set_is_closer_brute_force(shape, layout, structure, block):
    ids = _group_ids(shape, layout, structure, block)
    count = group_count(shape, structure, layout, block)
    for seed in range(3):
        x = _random(shape, seed=10 + seed)
        for k in range(1, count):
            z = project_structured(tf.constant(x), structure, k, layout=layout, block=block)
            # Over supports the best point keeps x there; every support of k groups is tried.
            best = min(
                _distance(x, x * np.isin(ids, support))
                for support in itertools.combinations(range(count), k)
            )
            assert _distance(x, z.numpy()) == pytest.approx(best, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("shape, layout, structure, block", CASES, ids=IDS)
def test_no_random_feasible_point_is_closer(shape, layout, structure, block):
    ids = _group_ids(shape, layout, structure, block)
    count = group_count(shape, structure, layout, block)
    rng = np.random.default_rng(5)
    x = _random(shape, seed=6)
    k = max(1, count // 3)
    z = project_structured(tf.constant(x), structure, k, layout=layout, block=block).numpy()
    for _ in range(200):
        support = rng.choice(count, size=k, replace=False)
        other = (x + rng.normal(scale=0.1, size=shape)) * np.isin(ids, support)
        assert _distance(x, z) <= _distance(x, other) + 1e-6


@pytest.mark.parametrize(
    "structure, block", [("filter", None), ("column", None), ("block", (1, 2))]
)
def test_ties_keep_the_lowest_group_index(structure, block):
    x = tf.ones([4, 4])
    mask = structured_mask(x, structure, 2, block=block).numpy()
    ids = _group_ids((4, 4), "dense", structure, block)
    np.testing.assert_array_equal(np.unique(ids[mask == 1]), [0, 1])


NM_CASES = [((8, 3), 2, 4), ((8, 3), 1, 2), ((2, 2, 4, 3), 2, 4), ((3, 6, 2), 1, 3)]


def _runs(shape, m):
    """Run index of every entry: m consecutive input channels at one position and output."""
    index = np.indices(shape)
    spatial = shape[:-2]
    position = np.ravel_multi_index(tuple(index[:-2]), spatial) if spatial else 0
    per_position = shape[-2] // m
    return (position * per_position + index[-2] // m) * shape[-1] + index[-1]


@pytest.mark.parametrize("shape, n, m", NM_CASES)
def test_n_of_m_keeps_exactly_n_largest_of_every_run(shape, n, m):
    x = _random(shape, seed=n + m)
    mask = n_of_m_mask(tf.constant(x), n, m).numpy()
    z = project_n_of_m(tf.constant(x), n, m).numpy()
    runs = _runs(shape, m)
    for run in np.unique(runs):
        in_run = runs == run
        assert mask[in_run].sum() == n
        assert np.count_nonzero(z[in_run]) == n
        kept, dropped = np.abs(x[in_run & (mask == 1)]), np.abs(x[in_run & (mask == 0)])
        assert kept.min() >= dropped.max()
    assert mask.sum() == x.size * n // m


@pytest.mark.parametrize("shape, n, m", NM_CASES)
def test_n_of_m_is_idempotent_and_the_closest_point(shape, n, m):
    x = _random(shape, seed=3)
    z = project_n_of_m(tf.constant(x), n, m).numpy()
    np.testing.assert_array_equal(project_n_of_m(tf.constant(z), n, m).numpy(), z)
    runs = _runs(shape, m)
    # The set is a product over runs: brute force each run's supports of n entries.
    best = 0.0
    for run in np.unique(runs):
        values = x[runs == run].astype(np.float64)
        best += min(
            float(np.sum(np.square(np.delete(values, list(support)))))
            for support in itertools.combinations(range(m), n)
        )
    assert _distance(x, z) == pytest.approx(best, rel=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(100):
        keys = rng.random(shape) + runs * 2.0  # Random order inside each run.
        order = np.argsort(keys, axis=None, kind="stable").reshape(-1, m)
        chosen = np.zeros(x.size, bool)
        chosen[order[:, :n].ravel()] = True
        other = x * chosen.reshape(shape)
        assert _distance(x, z) <= _distance(x, other) + 1e-6


def test_n_of_m_ties_keep_the_lower_input_channel():
    mask = n_of_m_mask(tf.ones([4, 2]), 2, 4).numpy()
    np.testing.assert_array_equal(mask, [[1, 1], [1, 1], [0, 0], [0, 0]])


def test_group_counts_and_gemm_shapes():
    assert gemm_shape((3, 3, 16, 32)) == (32, 144)
    assert gemm_shape((3, 3, 16, 2), "depthwise") == (32, 9)
    assert group_count((3, 3, 16, 32), "filter") == 32
    assert group_count((3, 3, 16, 32), "channel") == 16
    assert group_count((3, 3, 16, 32), "column") == 144
    assert group_count((3, 3, 16, 32), "block", block=(4, 1)) == 8 * 144
    assert group_count((3, 3, 16, 2), "column", "depthwise") == 9
    assert structured.group_size((128, 64), "block", block=(1, 4)) == 4


def test_works_inside_tf_function():
    x = tf.constant(_random((2, 2, 4, 6), seed=4))
    for structure, kwargs in [
        ("filter", {"keep": 3}),
        ("channel", {"keep": 2}),
        ("column", {"keep": 5}),
        ("block", {"keep": 4, "block": (2, 2)}),
        ("n_of_m", {"n": 2, "m": 4}),
    ]:
        graph = tf.function(lambda t, s=structure, kw=kwargs: project_structured(t, s, **kw))
        np.testing.assert_array_equal(
            graph(x).numpy(), project_structured(x, structure, **kwargs).numpy()
        )


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x: structured_mask(x, "block", 1, block=(5, 1)), r"block shape dividing.*5x1"),
        (lambda x: structured_mask(x, "block", 1, block=(1,)), r"block to be two integers"),
        (lambda x: structured_mask(x, "filter", 5), r"k in \[0, 4\].*received: k=5"),
        (lambda x: structured_mask(x, "channel", -1), r"received: k=-1"),
        (lambda x: n_of_m_mask(x, 4, 4), r"1 <= n < m; received: n=4, m=4"),
        (lambda x: n_of_m_mask(x, 1, 4), r"m dividing the input dimension \(6\).*m=4"),
        (lambda x: n_of_m_mask(x, 1, 2, "depthwise"), r"dense-layout kernel for n_of_m"),
        (lambda x: structured_mask(x, "rows", 1), r"'rows' is not a valid Structure"),
        (lambda x: structured.group_count((4,), "filter"), r"rank >= 2"),
    ],
)
def test_bad_arguments_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call(tf.constant(_random((6, 4), seed=0)))


# Kernels tied by a residual Add: the same output channels in each, any kernel shape.
COUPLED = [
    [(6, 4), (6, 4)],
    [(2, 2, 3, 4), (1, 1, 5, 4), (7, 4)],
    [(3, 3)],
]


def _filters(x):
    return np.reshape(x, (-1, x.shape[-1]))


@pytest.mark.parametrize(
    "shapes", COUPLED, ids=lambda s: "+".join("x".join(map(str, t)) for t in s)
)
def test_coupled_filters_keep_one_support_in_every_kernel_brute_force(shapes):
    count = shapes[0][-1]
    for seed in range(3):
        xs = [_random(shape, seed=20 + seed + i) for i, shape in enumerate(shapes)]
        for k in range(0, count + 1):
            zs = [z.numpy() for z in structured.project_coupled_filters(xs, k)]
            supports = {tuple(np.flatnonzero(np.any(_filters(z) != 0, axis=0))) for z in zs}
            assert len(supports) == 1 and len(supports.pop()) == k
            for x, z in zip(xs, zs):  # Kept filters are untouched.
                kept = np.any(_filters(z) != 0, axis=0)
                np.testing.assert_array_equal(_filters(z)[:, kept], _filters(x)[:, kept])
            # Every common support of k filters is tried: none is closer.
            best = min(
                sum(_distance(x, x * np.isin(np.arange(count), support)) for x in xs)
                for support in itertools.combinations(range(count), k)
            )
            total = sum(_distance(x, z) for x, z in zip(xs, zs))
            assert total == pytest.approx(best, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize(
    "shapes", COUPLED, ids=lambda s: "+".join("x".join(map(str, t)) for t in s)
)
def test_coupled_filters_projection_is_idempotent_and_fixes_points_of_the_set(shapes):
    count = shapes[0][-1]
    xs = [_random(shape, seed=30 + i) for i, shape in enumerate(shapes)]
    k = max(1, count // 2)
    zs = structured.project_coupled_filters(xs, k)
    again = structured.project_coupled_filters(zs, k)
    for z, z2 in zip(zs, again):
        np.testing.assert_array_equal(z2.numpy(), z.numpy())
    # Fewer than k common filters: in the set, unchanged.
    sparser = structured.project_coupled_filters(xs, k - 1)
    for z, z2 in zip(sparser, structured.project_coupled_filters(sparser, k)):
        np.testing.assert_array_equal(z2.numpy(), z.numpy())


def test_coupled_filters_keep_the_largest_summed_norm_not_each_kernels_own():
    a = tf.constant([[3.0, 0.0, 1.0]])
    b = tf.constant([[0.0, 4.0, 2.0]])
    za, zb = structured.project_coupled_filters([a, b], 2)
    np.testing.assert_array_equal(za.numpy(), [[3.0, 0.0, 0.0]])
    np.testing.assert_array_equal(zb.numpy(), [[0.0, 4.0, 0.0]])
    # A single kernel: the plain filter projection.
    x = _random((2, 2, 3, 5), seed=3)
    (z,) = structured.project_coupled_filters([x], 2)
    np.testing.assert_array_equal(z.numpy(), structured.project_filters(x, 2).numpy())


@pytest.mark.parametrize(
    "kernels, k, message",
    [
        ([], 1, "at least one kernel"),
        ([np.ones((3, 4)), np.ones((3, 5))], 1, "same number of filters"),
        ([np.ones((3, 4))], 5, "k in \\[0, 4\\]"),
    ],
)
def test_coupled_filters_bad_arguments_are_rejected(kernels, k, message):
    with pytest.raises(ValueError, match=message):
        structured.coupled_filter_masks([np.float32(x) for x in kernels], k)
