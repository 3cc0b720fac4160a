"""The collector's Prometheus metrics (names in :mod:`streaming.metrics`), read off the process once a second.

The request path only bumps plain integers (``CollectorApp.counts`` and the answered status codes); a
daemon thread turns their growth into counter increments and the spool's and drainer's status into
gauges, so exporting costs the request path nothing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from streaming import metrics

#: ``CollectorApp.counts`` key -> the ``outcome`` label of ``tally_collector_events_total``.
_OUTCOMES = {"accepted": "spooled", "rejected": "rejected"}


class MetricsExporter:
    def __init__(self, app: Any, status: Callable[[], dict[str, Any]], interval_s: float = 1.0) -> None:
        self.app = app
        self.status = status
        self.interval_s = interval_s
        self.exported = metrics.collector()
        self._seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsExporter:
        self._thread = threading.Thread(target=self._run, name="collector-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.export()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.export()

    def _grow(self, key: str, now: int) -> int:
        delta, self._seen[key] = max(0, now - self._seen[key]), now
        return delta

    def export(self) -> None:
        m = self.exported
        for status, n in list(self.app.statuses.items()):
            m.requests.labels(str(status)).inc(self._grow(f"status:{status}", n))
        for key, outcome in _OUTCOMES.items():
            m.events.labels(outcome).inc(self._grow(key, self.app.counts[key]))
        # A 503 refuses the whole request: its messages were never numbered, so count requests here.
        m.events.labels("refused").inc(self._grow("refused_full", self.app.counts["refused_full"]))
        status = self.status()
        m.spool_bytes.set(status.get("depth_bytes", 0))
        m.spool_capacity_bytes.set(status.get("max_bytes", 0))
        m.drained_records.inc(self._grow("drained_records", int(status.get("drained_records", 0))))
        drainer = status.get("drainer") or {}
        m.put_errors.inc(self._grow("put_errors", int(drainer.get("failures", 0))))
        forward = status.get("forward")
        if forward:
            m.forwarded.inc(self._grow("forwarded", int(forward["forwarded"])))
            m.forward_failures.inc(self._grow("forward_failures", int(forward["failures"])))
            m.forward_rejected.inc(self._grow("forward_rejected", int(forward["rejected"])))
            m.forward_dropped.inc(self._grow("forward_dropped", int(forward["dropped"])))
            m.forward_bytes.set(forward["depth_bytes"])
            m.forward_lag.set(forward["lag_s"])
