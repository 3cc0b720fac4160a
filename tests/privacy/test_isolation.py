"""Tenant isolation and hostile input: tenant A's key reads nothing of tenant B (counters, segments,
deletion requests); hostile tenant ids, user ids and event types are rejected or stored safely."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pytest
import redis
from starlette.testclient import TestClient

from streaming.archive.batch import build_batch, decode_lines
from streaming.archive.store import ArchiveStore
from streaming.events import EventDecoder
from streaming.kinesis.processor import StreamRecord
from streaming.privacy.forget import Eraser
from streaming.privacy.requests import RequestStore
from streaming.privacy.subject import BadRequest, Subject
from streaming.privacy.warehouse import WarehouseEraser
from streaming.warehouse.duckdb import DuckDBWarehouse
from streaming.query.apikeys import create_key
from streaming.query.http import Privacy, create_app, openapi_spec

pytestmark = pytest.mark.integration

HOSTILE = ["a'b", 'a"b', "{tenant-b}", "tenant-b}", "{", "*", "tenant-*", "a:b", "tenant-b:cnt", "x" * 300,
           "ténant", "租户", "tenant-b\n", " tenant-b", "../tenant-b", "tenant-b%00", "TENANT-B", "a;drop table x"]


@pytest.fixture
def api(redis_client: redis.Redis, s3: Any, bucket: str) -> tuple[TestClient, dict[str, str], Eraser]:
    eraser = Eraser(redis=redis_client, store=ArchiveStore(s3, bucket), requests=RequestStore(s3, bucket),
                    warehouse=None)
    keys = {t: create_key(redis_client, t) for t in ("tenant-a", "tenant-b")}
    return TestClient(create_app(redis_client, Privacy(eraser))), keys, eraser


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_tenants_key_reads_nothing_of_another_tenant(api: Any) -> None:
    client, keys, eraser = api
    accepted = client.post("/v1/tenants/tenant-b/forget", json={"user_id": "user-b1"}, headers=_auth(keys["tenant-b"]))
    assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["request_id"]
    own = client.get(f"/v1/tenants/tenant-b/forget/{request_id}", headers=_auth(keys["tenant-b"]))
    assert own.status_code == 200 and own.json()["status"] == "done", own.json()
    assert "user-b1" not in own.text
    # Every tenant-scoped route of the API, with tenant A's key on tenant B: 403, and no data.
    for path, ops in openapi_spec()["paths"].items():
        if "{tenant}" not in path:
            continue
        url = path.replace("{tenant}", "tenant-b").replace("{segment}", "pricing_intent").replace(
            "{request_id}", request_id)
        for method in ops:
            answer = client.request(method.upper(), url, headers=_auth(keys["tenant-a"]),
                                    json={"user_id": "user-b1"} if method == "post" else None)
            assert answer.status_code == 403, (method, url, answer.text)
            assert "user-b1" not in answer.text and request_id not in answer.text
            assert client.request(method.upper(), url).status_code == 401
    # Tenant A asking for B's request id under its own tenant: not found, not B's record.
    assert client.get(f"/v1/tenants/tenant-a/forget/{request_id}", headers=_auth(keys["tenant-a"])).status_code == 404
    assert len(eraser.requests.requests("tenant-b")) == 1  # A's forbidden POST recorded nothing


def test_hostile_tenant_ids_and_request_ids_are_refused_through_http(api: Any, redis_client: redis.Redis) -> None:
    client, keys, _ = api
    before = set(redis_client.keys("*"))
    for tenant in HOSTILE:
        for path in (f"/v1/tenants/{quote(tenant, safe='')}/counts", f"/v1/tenants/{quote(tenant, safe='')}/forget/x"):
            answer = client.get(path, headers=_auth(keys["tenant-a"]))
            assert answer.status_code in (403, 404), (tenant, answer.status_code, answer.text)
        answer = client.post(f"/v1/tenants/{quote(tenant, safe='')}/forget", json={"user_id": "u"},
                             headers=_auth(keys["tenant-a"]))
        assert answer.status_code in (403, 404)
    for request_id in ("../../tenant-b/fr_x", "fr_" + "0" * 31 + "*", "fr_%2F..", "*"):
        answer = client.get(f"/v1/tenants/tenant-a/forget/{quote(request_id, safe='')}", headers=_auth(keys["tenant-a"]))
        assert answer.status_code == 404, (request_id, answer.text)
    for user_id in ("", "x" * 600, "a\0b", 12, None):
        answer = client.post("/v1/tenants/tenant-a/forget", json={"user_id": user_id}, headers=_auth(keys["tenant-a"]))
        assert answer.status_code == 400, (user_id, answer.text)
    assert set(redis_client.keys("*")) == before  # nothing was written for any of them


def test_hostile_tenant_ids_are_refused_by_forget_cli_and_subject(tally_env: dict[str, str]) -> None:
    for tenant in HOSTILE[:6]:
        with pytest.raises(BadRequest):
            Subject(tenant, "user-1")
    proc = subprocess.run([str(Path(sys.executable).with_name("tally")), "forget", "--tenant", "{t}:*'", "--user", "u"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "tenant id does not match" in proc.stderr


def test_hostile_user_ids_are_bound_parameters_in_the_warehouse(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("create schema raw")
    con.execute("create table raw.events (tenant_id varchar, user_id varchar, anonymous_id varchar, n int)")
    rows = [("t1", "x' or '1'='1", "a1", 1), ("t1", "bob", "a2", 2), ("t1", None, "a1", 3), ("t1", None, "a3", 4),
            ("t2", "x' or '1'='1", "a1", 5)]
    con.executemany("insert into raw.events values (?, ?, ?, ?)", rows)
    con.close()
    eraser = WarehouseEraser(DuckDBWarehouse(path))
    hostile = Subject("t1", "x' or '1'='1")
    hostile.anonymous_ids = eraser.discover(hostile)
    assert hostile.anonymous_ids == {"a1"}
    assert eraser.erase(hostile).rows_deleted == {"raw.events": 2}
    con = duckdb.connect(str(path))
    assert sorted(r[0] for r in con.execute("select n from raw.events").fetchall()) == [2, 4, 5]
    con.close()
    assert eraser.erase(Subject("t1", "'; drop table raw.events; --")).total == 0


def test_a_tenant_id_with_a_trailing_newline_is_a_dead_letter() -> None:
    from streaming.events import Rejection

    doc = {"event_id": "2b0f3c1e-8a3f-4f1e-9d7e-0a1b2c3d4e5f", "tenant_id": "tenant-b\n", "event_type": "click",
           "anonymous_id": "a1", "occurred_at": dt.datetime.now(dt.timezone.utc).isoformat(),
           "received_at": dt.datetime.now(dt.timezone.utc).isoformat(), "source_id": "s", "source_seq": 1,
           "properties": {}, "schema_version": 1}
    assert isinstance(EventDecoder().decode(json.dumps(doc).encode()), Rejection)


def test_hostile_tenant_ids_and_event_types_in_events_become_dead_letters() -> None:
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    base = {"event_id": "2b0f3c1e-8a3f-4f1e-9d7e-0a1b2c3d4e5f", "tenant_id": "tenant-a", "event_type": "click",
            "anonymous_id": "a1", "occurred_at": now, "received_at": now, "source_id": "s", "source_seq": 1,
            "properties": {}, "schema_version": 1}
    docs = [{**base, "tenant_id": t} for t in HOSTILE] + [
        {**base, "event_type": e} for e in ("click'", "{x}", "*", "a:b", "é", "x" * 300)]
    records = [StreamRecord("shardId-0", str(i + 1), "pk", json.dumps(d).encode(), 0.0) for i, d in enumerate(docs)]
    batch = build_batch("shardId-0", records, EventDecoder())
    lines = [line for obj in batch.objects for line in decode_lines(obj.body)]
    assert len(lines) == len(docs) and all(line.reason in ("bad_tenant_id", "unknown_event_type") for line in lines)
    assert not any(o["counts"] for o in batch.manifest["objects"])
