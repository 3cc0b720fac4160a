"""The latency histograms without numpy (the Lambda zip ships without it) equal the numpy ones."""

from __future__ import annotations

import random

import pytest

from streaming.speed import ops

pytestmark = pytest.mark.unit


def test_plain_python_buckets_equal_numpy_including_bounds_and_clock_skew(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    now = 1_767_225_600.0
    # Exactly on a bound, just past one, negative latencies (a collector clock ahead), huge ones.
    received = [now - b / 1000 for b in ops.LATENCY_BOUNDS_MS] + [now - b / 1000 - 1e-6 for b in ops.LATENCY_BOUNDS_MS]
    received += [now + 5, now, now - 1e9] + [now - rng.expovariate(1 / 3) for _ in range(5_000)]
    with_numpy = ops.latency_histogram(received, now)
    minutes_numpy = ops._by_minute(received)
    monkeypatch.setattr(ops, "np", None)
    assert ops.latency_histogram(received, now) == with_numpy
    assert ops._by_minute(received) == minutes_numpy
    assert sum(with_numpy.values()) == len(received)
