"""bench.timing: the interleaved rounds, their order, and the summaries."""

import math

import pytest

from bench import timing


def _recorder(name, calls):
    def subject():
        calls.append(name)
        return [float(len(calls))]

    return subject


def test_interleaved_rotates_the_first_subject_each_round_and_groups_samples_by_subject():
    calls = []
    rounds = timing.interleaved([_recorder(n, calls) for n in "abc"], 4, rotate=True)
    assert calls == list("abcbcacababc")
    # Samples are the call numbers: a's rounds ran as calls 1, 6, 8 and 10.
    assert rounds[0] == [[1.0], [6.0], [8.0], [10.0]]
    assert [len(r) for r in rounds] == [4, 4, 4]


def test_interleaved_without_rotation_keeps_the_order_every_round():
    calls = []
    timing.interleaved([_recorder(n, calls) for n in "ab"], 3, rotate=False)
    assert calls == list("ababab")


def test_warm_up_and_time_calls_call_exactly_as_often_as_asked():
    calls = []
    timing.warm_up(lambda: calls.append("warm"), 3)
    samples = timing.time_calls(lambda: calls.append("timed"), 5)
    assert calls == ["warm"] * 3 + ["timed"] * 5
    assert len(samples) == 5 and all(s >= 0 for s in samples)


def test_median_and_percentiles():
    assert timing.median([3.0, 1.0, 2.0]) == 2.0
    assert math.isnan(timing.median([]))
    assert timing.percentiles(list(range(11)), [10, 50, 90]) == pytest.approx([1.0, 5.0, 9.0])
