"""The speed layer as the core sees it: Redis minute counters, and how far its consumer has read.

Counters are read with SCAN over the minute keys (:func:`streaming.speed.keys.counts` at resolution
``m``) and pipelined HGETALLs, so a tenant the other layers never saw is still
found. The speed watermark is event time, derived without trusting Redis (a flushed Redis must read
as *missing*, not as *not yet arrived*): per shard, the speed consumer's checkpoint in the lease table,
mapped through the archive manifests to the newest ``received_at`` known to lie at or before it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from streaming.kinesis.leases import SHARD_END, Lease
from streaming.reconcile.sources.archive import ShardProgress
from streaming.speed import keys

def parse_minute_key(key: str) -> tuple[str, int] | None:
    """(tenant, epoch minute) of a minute counter key, or None."""
    parsed = keys.parse_counts(key)
    return (parsed[0], parsed[2]) if parsed and parsed[1] == "m" else None


class SpeedReader:
    def __init__(self, client: Any, chunk: int = 2_000) -> None:
        self.client = client
        self.chunk = chunk

    def minute_keys(self, start_minute: int, end_minute: int) -> list[tuple[str, str, int]]:
        found = []
        for raw in self.client.scan_iter(match=keys.counts_pattern("m"), count=5_000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            parsed = parse_minute_key(key)
            if parsed and start_minute <= parsed[1] < end_minute:
                found.append((key, parsed[0], parsed[1]))
        return sorted(found)

    def counts(self, start_minute: int, end_minute: int) -> pd.DataFrame:
        """SPEED_COLUMNS per cell in ``[start_minute, end_minute)``."""
        found = self.minute_keys(start_minute, end_minute)
        rows: list[tuple[str, str, int, int]] = []
        for i in range(0, len(found), self.chunk):
            part = found[i:i + self.chunk]
            pipe = self.client.pipeline(transaction=False)
            for key, _, _ in part:
                pipe.hgetall(key)
            for (_, tenant, minute), fields in zip(part, pipe.execute(), strict=True):
                for etype, n in fields.items():
                    etype = etype.decode() if isinstance(etype, bytes) else etype
                    rows.append((tenant, etype, minute, int(n)))
        return pd.DataFrame(rows, columns=["tenant_id", "event_type", "minute", "n"])

    def rollups(self, tenants: list[str], start_minute: int, end_minute: int) -> pd.DataFrame:
        """ROLLUP_COLUMNS for the hour and day counters wholly inside ``[start_minute, end_minute)``."""
        wanted = [("hour", "h", b) for b in whole_buckets(start_minute, end_minute, 60)]
        wanted += [("day", "d", b) for b in whole_buckets(start_minute, end_minute, 1440)]
        todo = [(grain, tenant, bucket, keys.counts(tenant, res, bucket))
                for tenant in tenants for grain, res, bucket in wanted]
        rows: list[tuple[str, str, str, str, int, int]] = []
        for i in range(0, len(todo), self.chunk):
            part = todo[i:i + self.chunk]
            pipe = self.client.pipeline(transaction=False)
            for *_, key in part:
                pipe.hgetall(key)
            for (grain, tenant, bucket, _), fields in zip(part, pipe.execute(), strict=True):
                for etype, n in fields.items():
                    etype = etype.decode() if isinstance(etype, bytes) else etype
                    rows.append(("speed", grain, tenant, etype, bucket, int(n)))
        return pd.DataFrame(rows, columns=["layer", "grain", "tenant_id", "event_type", "bucket", "n"])

    def cell(self, tenant: str, event_type: str, minute: int) -> int:
        value = self.client.hget(keys.counts(tenant, "m", minute), event_type)
        return int(value) if value is not None else 0


def whole_buckets(start_minute: int, end_minute: int, width: int) -> list[int]:
    """Buckets of ``width`` minutes that lie wholly inside ``[start_minute, end_minute)``."""
    first = -(-start_minute // width)
    return list(range(first, end_minute // width))


def speed_watermark(leases: Mapping[str, Lease], shards: Mapping[str, ShardProgress]) -> float | None:
    """The slowest shard's event time reached by the speed consumer; None if a shard was never read."""
    marks: list[float] = []
    for shard_id, progress in shards.items():
        lease = leases.get(shard_id)
        if lease is None or lease.checkpoint is None:
            return None
        mark = progress.watermark if lease.checkpoint == SHARD_END else progress.event_time_at(int(lease.checkpoint))
        if mark is None:
            return None
        marks.append(mark)
    return min(marks) if marks else None
