"""Operational figures the query API serves: consumer lag per shard and event-to-counter latency.

Latency is measured from an event's ``received_at`` to the moment its counters were committed, kept as a
histogram per minute of ``received_at`` (bucket upper bounds in ms) so percentiles over any range can be read back.
"""

from __future__ import annotations

import bisect
import time
from typing import Any

try:
    import numpy as np
except ImportError:  # the Lambda zip ships without numpy (no manylinux2014 wheel of the pinned numpy for
    np = None  # Lambda's python3.11 / Amazon Linux 2): the histograms are then binned in plain Python

from streaming.speed import keys
from streaming.speed.store import pack, unpack

#: Upper bounds (ms) of the latency histogram buckets; the last one catches everything slower.
LATENCY_BOUNDS_MS: tuple[int, ...] = (
    10, 25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10_000, 30_000, 60_000, 300_000,
    3_600_000, 86_400_000_000,
)
_BOUNDS = np.array(LATENCY_BOUNDS_MS, dtype=np.float64) if np is not None else None
#: Lag and latency keys live this long after their last write (operational figures, not counters).
HISTOGRAM_TTL_S = 2 * 86_400


def latency_histogram(received: list[float], now: float) -> dict[int, int]:
    """Bucket upper bound (ms) -> number of events, for latencies ``now - received_at``."""
    if not received:
        return {}
    if np is None:
        return _latency_histogram_py(received, now)
    latency_ms = (now - np.asarray(received, dtype=np.float64)) * 1000.0
    idx = np.searchsorted(_BOUNDS, np.maximum(latency_ms, 0.0), side="left")
    idx = np.minimum(idx, len(LATENCY_BOUNDS_MS) - 1)
    counts = np.bincount(idx, minlength=len(LATENCY_BOUNDS_MS))
    return {LATENCY_BOUNDS_MS[i]: int(n) for i, n in enumerate(counts) if n}


def _latency_histogram_py(received: list[float], now: float) -> dict[int, int]:
    """:func:`latency_histogram` without numpy (the same buckets: searchsorted ``left`` is bisect_left)."""
    last = len(LATENCY_BOUNDS_MS) - 1
    out: dict[int, int] = {}
    for ts in received:
        bound = LATENCY_BOUNDS_MS[min(last, bisect.bisect_left(LATENCY_BOUNDS_MS, max((now - ts) * 1000.0, 0.0)))]
        out[bound] = out.get(bound, 0) + 1
    return dict(sorted(out.items()))


def _by_minute(received: list[float]) -> dict[int, list[float]]:
    """Arrival times grouped by their epoch minute."""
    if np is not None:
        arrived = np.asarray(received, dtype=np.float64)
        minutes = (arrived // 60).astype(np.int64)
        return {int(m): arrived[minutes == m].tolist() for m in np.unique(minutes)}
    groups: dict[int, list[float]] = {}
    for ts in received:
        groups.setdefault(int(ts // 60), []).append(ts)
    return groups


def percentile(histogram: dict[int, int], q: float) -> float | None:
    """The bucket upper bound (seconds) under which a fraction ``q`` of the events fall."""
    total = sum(histogram.values())
    if not total:
        return None
    need = q * total
    running = 0
    for bound in sorted(histogram):
        running += histogram[bound]
        if running >= need:
            return bound / 1000.0
    return max(histogram) / 1000.0


class OpsRecorder:
    """Writes lag and latency after each applied batch (one small pipeline, tag ``{_ops}``)."""

    def __init__(self, client: Any, group: str) -> None:
        self.client = client
        self.group = group

    def record(self, shard_id: str, worker_id: str, millis_behind_latest: int, received: list[float],
               now: float | None = None) -> None:
        now = time.time() if now is None else now
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(keys.consumer_lag(), f"{self.group}/{shard_id}",
                  pack({"millis_behind_latest": millis_behind_latest, "at": now, "worker": worker_id}))
        pipe.expire(keys.consumer_lag(), HISTOGRAM_TTL_S)  # gone two days after the last consumer stopped
        if received:
            # Bucketed by the events' received minute, so a range query answers "how fast did the events
            # received then reach the counters" (a backfill of old events does not pollute today's figure).
            for minute, times in _by_minute(received).items():
                key = keys.latency_histogram(minute)
                for bound, n in latency_histogram(times, now).items():
                    pipe.hincrby(key, str(bound), n)
                pipe.expire(key, HISTOGRAM_TTL_S)
        pipe.execute()


def read_lag(client: Any) -> dict[str, dict[str, Any]]:
    """"<group>/<shard>" -> {millis_behind_latest, at, worker}."""
    return {k.decode(): unpack(v) for k, v in client.hgetall(keys.consumer_lag()).items()}


def read_latency(client: Any, start_minute: int, end_minute: int) -> dict[int, int]:
    """The summed histogram over epoch minutes [start, end]."""
    pipe = client.pipeline(transaction=False)
    for minute in range(start_minute, end_minute + 1):
        pipe.hgetall(keys.latency_histogram(minute))
    total: dict[int, int] = {}
    for h in pipe.execute():
        for bound, n in h.items():
            total[int(bound)] = total.get(int(bound), 0) + int(n)
    return total
