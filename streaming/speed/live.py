"""Which tenants had traffic in a range: a SCAN over minute-counter keys (for the live view and demo)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from streaming.speed import keys


def busiest_tenants(client: Any, start: dt.datetime, end: dt.datetime, top: int = 10) -> list[str]:
    """Tenants with hour counters overlapping [start, end), busiest first (by those hours' totals)."""
    h0, h1 = int(start.timestamp()) // 3600, (int(end.timestamp()) + 3599) // 3600
    totals: dict[str, int] = {}
    hits: list[tuple[str, bytes | str]] = []
    for key in client.scan_iter(match=keys.counts_pattern("h"), count=1000):
        parsed = keys.parse_counts(key)
        if parsed and parsed[1] == "h" and h0 <= parsed[2] < h1:
            hits.append((parsed[0], key))
    pipe = client.pipeline(transaction=False)
    for _, key in hits:
        pipe.hvals(key)
    for (tenant, _), values in zip(hits, pipe.execute(), strict=True):
        totals[tenant] = totals.get(tenant, 0) + sum(int(v) for v in values)
    return [t for t, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
