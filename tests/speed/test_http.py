"""The HTTP query API: per-tenant keys (401/403), answers from real counters, OpenAPI served."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from streaming.events import Event, EventDecoder
from streaming.generator import GeneratorConfig
from streaming.kinesis.processor import ShardContext
from streaming.query.api import SpeedQueries
from streaming.query.apikeys import create_key
from streaming.query.http import create_app
from streaming.segments import load_rules
from streaming.speed.consumer import SpeedProcessor
from streaming.speed.ops import OpsRecorder
from streaming.speed.store import SpeedStore
from tests.speed.conftest import as_stream_records, generated, recent_start

pytestmark = pytest.mark.integration


@pytest.fixture
def loaded(redis_client: redis.Redis) -> tuple[TestClient, Any, dt.datetime, dt.datetime, int]:
    start = recent_start(120)
    datas, _, ledger = generated(GeneratorConfig(seed=5, tenants=3, duration_s=120, rate_per_s=50, start=start,
                                                 duplicate_rate=0.05))
    rules = load_rules()
    proc = SpeedProcessor(SpeedStore(redis_client, "speed", rules), EventDecoder(), rules, OpsRecorder(redis_client, "speed"))
    records = as_stream_records(datas)
    proc.process_batch(ShardContext("s", "shardId-000000000000", "w", 1), records, 1234)
    begin = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
    # Distinct visitors of tenant-002 over the whole run: the ledger's hourly figures would count a visitor
    # twice when the run crosses an hour boundary, while the API answers the union over the range.
    decoder = EventDecoder()
    visitors = {e.anonymous_id for e in map(decoder.decode, datas)
                if isinstance(e, Event) and e.tenant_id == "tenant-002"}
    return TestClient(create_app(redis_client)), ledger, begin, begin + dt.timedelta(seconds=180), len(visitors)


def test_missing_or_wrong_key_is_401_and_other_tenant_is_403(loaded: Any, redis_client: redis.Redis) -> None:
    http, *_ = loaded
    key = create_key(redis_client, "tenant-001")
    assert http.get("/v1/tenants/tenant-001/counts").status_code == 401
    assert http.get("/v1/tenants/tenant-001/counts", headers={"Authorization": "Bearer tly_wrong"}).status_code == 401
    assert http.get("/v1/ops/lag").status_code == 401
    for path in ("counts", "uniques", "top-pages", "segments/pricing_intent/members"):
        assert http.get(f"/v1/tenants/tenant-002/{path}", headers={"X-API-Key": key}).status_code == 403
        assert http.get(f"/v1/tenants/tenant-001/{path}", headers={"X-API-Key": key}).status_code == 200
    assert http.get("/v1/tenants/Bad{x}/counts", headers={"X-API-Key": key}).status_code == 403
    # Only the hash is stored.
    assert key.encode() not in b"".join(k + v for k, v in redis_client.hgetall("tally:{_keys}:api").items())


def test_answers_match_the_ledger(loaded: Any, redis_client: redis.Redis) -> None:
    http, ledger, begin, end, want_uniques = loaded
    key = create_key(redis_client, "tenant-002")
    headers = {"Authorization": f"Bearer {key}"}
    params = {"start": begin.isoformat(), "end": end.isoformat()}
    body = http.get("/v1/tenants/tenant-002/counts", headers=headers, params={**params, "resolution": "m"}).json()
    want = {e: sum(by_min.values()) for e, by_min in ledger.counts["tenant-002"].items()}
    assert {e: n for e, n in body["by_event_type"].items() if n} == want
    assert sum(sum(r["by_event_type"].values()) for r in body["series"]) == sum(want.values())
    uniques = http.get("/v1/tenants/tenant-002/uniques", headers=headers, params=params).json()["unique_visitors"]
    assert abs(uniques - want_uniques) <= max(2, 0.05 * want_uniques)
    pages = http.get("/v1/tenants/tenant-002/top-pages", headers=headers, params={**params, "limit": 3}).json()["pages"]
    assert len(pages) == 3 and pages[0]["views"] >= pages[1]["views"] >= pages[2]["views"] > 0
    lag = http.get("/v1/ops/lag", headers=headers).json()["shards"]
    assert lag["speed/shardId-000000000000"]["millis_behind_latest"] == 1234
    latency = http.get("/v1/ops/latency", headers=headers).json()
    assert latency["events"] == ledger.valid_events and latency["p99_s"] is not None
    assert SpeedQueries(redis_client).counts("tenant-002", begin, end).total == sum(want.values())


def test_openapi_is_served(loaded: Any) -> None:
    http, *_ = loaded
    spec = http.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert "/v1/tenants/{tenant}/counts" in spec["paths"] and "/v1/ops/latency" in spec["paths"]


def test_bad_parameters_are_400(loaded: Any, redis_client: redis.Redis) -> None:
    http, *_ = loaded
    key = create_key(redis_client, "tenant-001")
    headers = {"X-API-Key": key}
    assert http.get("/v1/tenants/tenant-001/counts", headers=headers, params={"start": "yesterday"}).status_code == 400
    assert http.get("/v1/tenants/tenant-001/segments/nope/members", headers=headers).status_code == 400
    assert http.get("/v1/tenants/tenant-001/top-pages", headers=headers, params={"limit": "0"}).status_code == 400
