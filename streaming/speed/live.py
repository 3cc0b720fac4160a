"""Which tenants had traffic in a range: a SCAN over minute-counter keys (for the live view and demo)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

_KEY_RE = re.compile(rb"^tally:\{([a-z0-9][a-z0-9_-]{0,63})\}:cnt:h:(\d+)$")


def busiest_tenants(client: Any, start: dt.datetime, end: dt.datetime, top: int = 10) -> list[str]:
    """Tenants with hour counters overlapping [start, end), busiest first (by those hours' totals)."""
    h0, h1 = int(start.timestamp()) // 3600, (int(end.timestamp()) + 3599) // 3600
    totals: dict[str, int] = {}
    hits: list[tuple[str, bytes]] = []
    for key in client.scan_iter(match="tally:{*}:cnt:h:*", count=1000):
        m = _KEY_RE.match(key if isinstance(key, bytes) else key.encode())
        if m and h0 <= int(m.group(2)) < h1:
            hits.append((m.group(1).decode(), m.group(0)))
    pipe = client.pipeline(transaction=False)
    for _, key in hits:
        pipe.hvals(key)
    for (tenant, _), values in zip(hits, pipe.execute(), strict=True):
        totals[tenant] = totals.get(tenant, 0) + sum(int(v) for v in values)
    return [t for t, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
