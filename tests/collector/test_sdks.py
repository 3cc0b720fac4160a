"""Segment's and RudderStack's official Python SDKs, pointed at a running collector, send every message
type for three tenants; after flush, the speed layer's counters, the archive and the warehouse's minute
mart hold exactly what was sent, per tenant × event type × minute. dbt runs once for the module."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from streaming.settings import load_settings
from tests.collector.conftest import make_collector, wait_drained
from tests.collector.layers import archive_contents, distinct_cells, run_layers, speed_cells, warehouse_cells

pytestmark = [pytest.mark.integration, pytest.mark.dbt]

EVENT_MAP = "'*': {Button Clicked: click, Form Submitted: form_submit}\n"


def send_everything(client: Any, tenant: str, rng_seed: int) -> Counter[str]:
    """Every Segment message type (and both mapped track names); returns the envelope types sent."""
    sent: Counter[str] = Counter()
    for i in range(rng_seed, rng_seed + 12):
        user, anon = f"user-{tenant}-{i}", f"anon-{tenant}-{i}"
        client.page(anonymous_id=anon, name="Pricing", properties={"path": "/pricing"})
        client.screen(user_id=user, name="Home")
        client.track(anonymous_id=anon, event="Button Clicked", properties={"element": "cta"})
        client.track(anonymous_id=anon, event="Form Submitted", properties={"form": "trial"})
        client.track(user_id=user, anonymous_id=anon, event="Video Played", properties={"seconds": i})
        client.identify(user_id=user, anonymous_id=anon, traits={"plan": "team"})
        client.group(user_id=user, group_id=f"org-{i % 3}", traits={"name": "Org"})
        client.alias(previous_id=anon, user_id=user)
        sent.update({"page_view": 2, "click": 1, "form_submit": 1, "custom": 3, "identify": 1})
    return sent


def wait_for_quiet_minute() -> int:
    """Start sending early in a minute, so every event of the burst is received in it."""
    while dt.datetime.now(dt.timezone.utc).second > 35:
        time.sleep(0.5)
    return int(time.time()) // 60


def test_sdks_through_every_layer(collector_env: dict[str, str], tmp_path: Path, dynamodb: Any, kinesis: Any,
                                  s3: Any, redis_client: Any) -> None:
    event_map = tmp_path / "event_map.yaml"
    event_map.write_text(EVENT_MAP)
    collector = make_collector({**collector_env, "TALLY_COLLECTOR_EVENT_MAP": str(event_map)}, tmp_path, dynamodb)
    collector.start()
    errors: list[Any] = []
    try:
        minute = wait_for_quiet_minute()
        expected: dict[tuple[str, str, int], int] = {}
        clients = {
            "acme": SegmentClient(collector.keys["acme"], host=collector.url, upload_size=25, gzip=True,
                                  on_error=lambda e, b: errors.append(e)),
            "globex": RudderClient(collector.keys["globex"], host=collector.url, upload_size=25,
                                   on_error=lambda e, b: errors.append(e)),
            "initech": SegmentClient(collector.keys["initech"], host=collector.url, sync_mode=True,
                                     on_error=lambda e, b: errors.append(e)),
        }
        for seed, (tenant, client) in enumerate(clients.items()):
            for etype, n in send_everything(client, tenant, seed * 100).items():
                expected[(tenant, etype, minute)] = n
        for client in clients.values():
            client.flush()
        assert int(time.time()) // 60 == minute, "the burst stayed inside one minute"
        assert not errors, errors
        wait_drained(collector)
        health = collector.health()
    finally:
        collector.stop()
        for client in clients.values():
            if not getattr(client, "sync_mode", False):
                client.join()
    settings = load_settings(collector_env)
    run_layers(settings, kinesis, dynamodb, s3, redis_client, tmp_path)
    assert sum(expected.values()) == 3 * 12 * 8
    assert speed_cells(redis_client) == expected
    archived, rejected = archive_contents(s3, settings.bucket)
    assert not rejected
    assert distinct_cells(archived) == expected
    assert warehouse_cells(settings.duckdb_path) == expected
    assert {e.source_id for e in archived} == {health["source_id"]}
    by_tenant: dict[str, set[int]] = {}
    for e in archived:
        by_tenant.setdefault(e.tenant_id, set()).add(e.source_seq)
    assert {t: sorted(s) for t, s in by_tenant.items()} == {t: list(range(1, 97)) for t in clients}
    libraries = {e.properties["context"]["library"]["name"] for e in archived}
    assert {"analytics-python"} <= libraries, libraries
