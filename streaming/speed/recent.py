"""event_ids this processor applied a moment ago: a repeat of one is dropped before it reaches Redis.

Producer retries repeat an event within seconds, usually in a later batch of the same shard. The apply
script would catch the repeat too, but then the tenant's whole share has to be rebuilt without it and
sent again, one more round trip. This bounded map (first-in first-out) catches most repeats in Python.

It only holds ids whose apply committed here (so Redis's seen-sets hold them), or is in flight here (an
overlapped batch, which the processor settles, sending it again until it commits, before it sends any
later batch), and it drops a repeat only while it is well inside the dedup horizon (Redis keeps an id for
at least the horizon), so it never decides differently from the script; a processor is made per lease,
so the map starts empty, and one that gives up is dropped with its map.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from itertools import islice

#: Margin under the dedup horizon: local and Redis clocks may differ a little.
CLOCK_MARGIN_S = 60.0


class RecentIds:
    def __init__(self, horizon_s: float, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.window_s = max(0.0, horizon_s - CLOCK_MARGIN_S)
        self.applied_at: dict[bytes, float] = {}

    def add(self, ids: Iterable[bytes], now: float | None = None) -> None:
        """Remember ids whose apply just committed, or is in flight (see the module docstring)."""
        if self.window_s <= 0:
            return
        now = time.time() if now is None else now
        applied_at = self.applied_at
        fresh = dict.fromkeys(ids, now)
        for eid in fresh.keys() & applied_at.keys():  # rare; an id keeps the time it was first applied
            del fresh[eid]
        applied_at.update(fresh)
        if len(applied_at) > self.max_entries:
            keep = self.max_entries // 2  # drop the older half at once: amortised O(1) per id
            self.applied_at = dict(islice(applied_at.items(), len(applied_at) - keep, None))

    def is_repeat(self, eid: bytes, now: float) -> bool:
        """True only for an id applied here less than the horizon (minus a margin) ago."""
        at = self.applied_at.get(eid)
        return at is not None and now - at < self.window_s
