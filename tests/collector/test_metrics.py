"""The collector's /metrics: answers by status, messages by outcome, its spool and the drainer's position."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from streaming.stack.process import free_port
from tests.collector.conftest import make_collector, wait_drained

pytestmark = pytest.mark.integration


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_collector_exports_what_it_answered_and_drained(collector_env: dict[str, str], tmp_path: Path,
                                                            dynamodb: Any) -> None:
    port = free_port()
    c = make_collector(collector_env, tmp_path, dynamodb).start({"TALLY_METRICS_PORT": str(port)})
    try:
        batch = [{"type": "track", "event": "E", "anonymousId": f"a{i}", "messageId": f"m{i}"} for i in range(7)]
        batch.append({"type": "purchase", "anonymousId": "x"})  # refused: unknown_message_type
        assert c.post("/v1/batch", {"batch": batch}).status_code == 200
        assert c.post("/v1/track", {"type": "track", "event": "E"}, tenant=None).status_code == 401
        wait_drained(c)
        deadline = time.time() + 10
        while True:
            got = _samples(port)
            if got.get(("tally_collector_spool_drained_records_total", ()), 0) >= 8 or time.time() > deadline:
                break
            time.sleep(0.5)
    finally:
        c.stop()
    assert got[("tally_collector_requests_total", (("status", "200"),))] == 1
    assert got[("tally_collector_requests_total", (("status", "401"),))] == 1
    assert got[("tally_collector_events_total", (("outcome", "spooled"),))] == 7
    assert got[("tally_collector_events_total", (("outcome", "rejected"),))] == 1
    assert got[("tally_collector_spool_drained_records_total", ())] == 8  # the rejection travels as a dead letter
    assert got[("tally_collector_spool_bytes", ())] == 0
    assert got[("tally_collector_spool_capacity_bytes", ())] > 0


def test_the_collector_exports_its_forwarding(collector_env: dict[str, str], tmp_path: Path, dynamodb: Any) -> None:
    from tests.collector.test_forward import Legacy

    legacy = Legacy().start()
    port = free_port()
    env = {**collector_env, "TALLY_COLLECTOR_FORWARD_URL": legacy.url, "TALLY_COLLECTOR_FORWARD_MAX_BACKOFF_S": "1"}
    c = make_collector(env, tmp_path, dynamodb).start({"TALLY_METRICS_PORT": str(port)})
    try:
        for i in range(3):
            assert c.post("/v1/track", {"type": "track", "event": "E", "anonymousId": f"a{i}"}).status_code == 200
        # Forwarding is asynchronous: the legacy collector goes away only once it has had all three.
        deadline = time.time() + 20
        while _samples(port).get(("tally_collector_forward_requests_total", ()), 0) < 3 and time.time() < deadline:
            time.sleep(0.2)
        legacy.stop()
        assert c.post("/v1/track", {"type": "track", "event": "E", "anonymousId": "late"}).status_code == 200
        deadline = time.time() + 20
        while True:
            got = _samples(port)
            if (got.get(("tally_collector_forward_requests_total", ()), 0) >= 3
                    and got.get(("tally_collector_forward_failures_total", ()), 0) >= 1) or time.time() > deadline:
                break
            time.sleep(0.5)
    finally:
        c.stop()
        legacy.stop()
    assert got[("tally_collector_forward_requests_total", ())] == 3
    assert got[("tally_collector_forward_failures_total", ())] >= 1
    assert got[("tally_collector_forward_spool_bytes", ())] > 0  # the fourth waits for the legacy collector
    assert got[("tally_collector_forward_lag_seconds", ())] > 0
    assert got[("tally_collector_forward_dropped_total", ())] == 0
