"""A person forgotten across every layer of a real run: stream, speed layer (public consumer), archiver,
loader, dbt, then `forget` and independent scans of S3, DuckDB and Redis."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from streaming.archive.processor import GROUP as ARCHIVE_GROUP
from streaming.archive.processor import FlushPolicy, processor_factory
from streaming.archive.store import ArchiveStore
from streaming.events import EventDecoder
from streaming.generator import GeneratedRecord
from streaming.kinesis.worker import Worker
from streaming.privacy import suppression
from streaming.privacy.forget import Eraser
from streaming.privacy.service import eraser_from_settings
from streaming.reconcile.sources.speed import SpeedReader
from tests.privacy.conftest import copy_run, fresh_layers, stitched_people
from tests.privacy.scan import archive_hits, redis_hits, warehouse_hits
from tests.reconcile import pipeline
from tests.reconcile.conftest import WINDOW, reconcile_run
from tests.reconcile.helpers import losses

pytestmark = [pytest.mark.integration, pytest.mark.dbt]

def _cells(result: Any) -> int:
    return int(result.summary.get("cells", 0))


def _run_archiver(settings: Any, clients: Any, client: redis.Redis) -> None:
    store = ArchiveStore(clients.s3, settings.bucket)
    factory = processor_factory(store, EventDecoder(), FlushPolicy(max_records=400, flush_s=3600),
                                lambda: suppression.SuppressionCache(client))
    Worker(clients.kinesis, clients.dynamodb, settings.stream_name, settings.lease_table, ARCHIVE_GROUP,
           factory).run_until_caught_up(120)


def _event(tenant: str, anonymous_id: str, user_id: str | None, received: dt.datetime, seq: int) -> GeneratedRecord:
    at = received.isoformat().replace("+00:00", "Z")
    doc = {"event_id": str(uuid.uuid4()), "tenant_id": tenant, "event_type": "page_view", "anonymous_id": anonymous_id,
           "user_id": user_id, "occurred_at": at, "received_at": at, "source_id": "privacy-test", "source_seq": seq,
           "properties": {"path": "/pricing"}, "schema_version": 1}
    return GeneratedRecord(anonymous_id, json.dumps(doc).encode(), 0, "valid")


def test_forget_removes_a_stitched_user_from_every_layer(privacy_run: Any, clients: Any, redis_client: redis.Redis,
                                                          speed_lease_table: str, tmp_path: Path) -> None:
    settings = copy_run(privacy_run, clients, tmp_path, speed_lease_table)
    pipeline.run_speed(settings, clients.kinesis, clients.dynamodb, redis_client)
    before = reconcile_run(settings, redis_client, clients)
    assert not before.result.unexplained_loss, losses(before.result)
    person = next(p for p in stitched_people(privacy_run) if len(p.anonymous_ids) >= 1 and p.events >= 4)
    assert redis_hits(redis_client, person.user_id, person.anonymous_ids), "the person has speed-layer state"
    assert warehouse_hits(settings.duckdb_path, person.user_id, person.anonymous_ids)
    assert archive_hits(clients.s3, settings.bucket, person.user_id, person.anonymous_ids)
    minutes = (WINDOW[0].timestamp() // 60, WINDOW[1].timestamp() // 60)
    counters_before = SpeedReader(redis_client).counts(int(minutes[0]), int(minutes[1]))

    t0 = time.monotonic()
    request = eraser_from_settings(settings, redis_client, clients.s3).forget(person.tenant, person.user_id)
    elapsed = time.monotonic() - t0
    assert request.status == "done", request.to_json()
    print(f"forget took {elapsed:.1f} s: " + json.dumps({k: v.get("seconds") for k, v in request.steps.items()}))

    # Nothing about them in any layer (independent scans), the audit record included.
    assert archive_hits(clients.s3, settings.bucket, person.user_id, person.anonymous_ids) == []
    assert warehouse_hits(settings.duckdb_path, person.user_id, person.anonymous_ids) == {}
    assert redis_hits(redis_client, person.user_id, person.anonymous_ids) == []
    removed = request.steps["archive"]["counts"]["lines_removed"]
    assert removed >= person.events  # duplicates included
    assert sum(r[3] for r in request.forgotten) == removed
    assert request.steps["warehouse"]["counts"]["tables"]["raw.events"] >= person.events
    assert request.steps["speed"]["counts"]["segst_entries"] > 0
    audit = json.dumps(request.to_json())
    assert person.user_id not in audit and not any(a in audit for a in person.anonymous_ids)

    # Counters keep their totals; reconciliation explains the missing rows and stays ok.
    assert SpeedReader(redis_client).counts(int(minutes[0]), int(minutes[1])).equals(counters_before)
    after = reconcile_run(settings, redis_client, clients)
    assert not after.result.unexplained_loss, (losses(after.result), after.result.sequences)
    assert _cells(after.result) == _cells(before.result)
    assert after.result.summary["ok"] == before.result.summary["ok"]
    assert int(after.result.cells["forgotten"].sum()) == removed

    # A second run of the same request is a no-op that finds nothing left.
    again = eraser_from_settings(settings, redis_client, clients.s3).forget(person.tenant, person.user_id)
    assert again.status == "done" and again.request_id != request.request_id
    assert again.steps["archive"]["counts"]["lines_removed"] == 0

    # New events about them: suppressed by the archiver (not counted, no line), counted as suppressed.
    now = dt.datetime.now(dt.timezone.utc)
    anon = sorted(person.anonymous_ids)[0]
    late = [_event(person.tenant, anon, None, now + dt.timedelta(seconds=5), 1),
            _event(person.tenant, anon, person.user_id, now + dt.timedelta(seconds=6), 2),
            _event(person.tenant, "anon-someone-else", None, now + dt.timedelta(seconds=6), 3)]
    later = fresh_layers(settings, clients)
    pipeline.send(clients.kinesis, later.stream_name, late)
    _run_archiver(later, clients, redis_client)
    store = ArchiveStore(clients.s3, later.bucket)
    newest = [store.read_manifest(k) for s in store.shard_ids() for k in store.manifest_keys(s)]
    suppressed = sum(n for m in newest if m for *_, n in m.get("suppressed", []))
    assert suppressed == 2
    assert archive_hits(clients.s3, later.bucket, person.user_id, person.anonymous_ids) == []
    assert archive_hits(clients.s3, later.bucket, "anon-someone-else", set())


def test_speed_layer_suppresses_new_events(privacy_run: Any, clients: Any, redis_client: redis.Redis,
                                           speed_lease_table: str, tmp_path: Path) -> None:
    """The public speed consumer reads the suppression list (contract in streaming/privacy/suppression.py):
    a suppressed subject's new event is counted under sup:m, not as an event, and leaves no visitor state."""
    settings = fresh_layers(privacy_run.settings, clients)
    person = stitched_people(privacy_run)[1]
    anon = sorted(person.anonymous_ids)[0]
    since = int(time.time() * 1000)
    suppression.add(redis_client, person.tenant,
                    [suppression.subject_hash(person.tenant, i) for i in (person.user_id, *person.anonymous_ids)], since)
    received = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)
    earlier = dt.datetime.fromtimestamp(since / 1000 - 120, dt.timezone.utc)
    pipeline.send(clients.kinesis, settings.stream_name, [
        _event(person.tenant, anon, None, received, 1),  # after the suppression started: suppressed
        *[_event(person.tenant, anon, person.user_id, earlier, 2 + i) for i in range(3)],  # before: counted
    ])
    pipeline.run_speed(settings, clients.kinesis, clients.dynamodb, redis_client)
    minute = int(received.timestamp()) // 60
    prefix = f"tally:{{{person.tenant}}}:"
    assert int(redis_client.hget(f"{prefix}sup:m:{minute}", "page_view") or 0) == 1
    assert int(redis_client.hget(f"{prefix}cnt:m:{minute}", "page_view") or 0) == 0
    assert int(redis_client.hget(f"{prefix}cnt:m:{int(earlier.timestamp()) // 60}", "page_view") or 0) == 3
    # Three /pricing views would make a visitor a pricing_intent member: nothing per visitor is kept.
    assert redis_hits(redis_client, person.user_id, person.anonymous_ids) == []


def test_a_deletion_killed_half_way_completes_when_run_again(privacy_run: Any, clients: Any,
                                                            redis_client: redis.Redis, speed_lease_table: str,
                                                            tmp_path: Path, redis_url: str, aws_endpoint: str) -> None:
    settings = copy_run(privacy_run, clients, tmp_path, speed_lease_table)
    person = stitched_people(privacy_run)[2]
    env = {**os.environ, "TALLY_ENV": "local", "TALLY_HOME": str(settings.home), "TALLY_REDIS_URL": redis_url,
           "TALLY_AWS_ENDPOINT_URL": aws_endpoint, "TALLY_BUCKET": settings.bucket,
           "TALLY_DUCKDB_PATH": str(settings.duckdb_path), "TALLY_STREAM_NAME": settings.stream_name,
           "TALLY_LEASE_TABLE": settings.lease_table}
    child = subprocess.run([sys.executable, "-m", "tests.privacy.forget_child", person.tenant, person.user_id, "archive"],
                           env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == -signal.SIGKILL, child.stderr
    eraser: Eraser = eraser_from_settings(settings, redis_client, clients.s3, rebuild=False)
    (pending,) = eraser.requests.requests(person.tenant)
    assert pending.status == "running" and pending.steps["archive"]["status"] == "done"
    assert pending.steps["warehouse"]["status"] == "pending"
    assert warehouse_hits(settings.duckdb_path, person.user_id, person.anonymous_ids)
    assert archive_hits(clients.s3, settings.bucket, person.user_id, person.anonymous_ids) == [
        f"privacy/work/{person.tenant}/{pending.request_id}.json"]  # the resumable work record only

    time.sleep(3.5)  # the killed process's lock lapses (it can no longer renew it)
    done = eraser.forget(person.tenant, person.user_id)  # the same command again resumes the request
    assert done.request_id == pending.request_id and done.status == "done"
    assert done.steps["archive"]["started_at"] == pending.steps["archive"]["started_at"]  # not redone
    assert archive_hits(clients.s3, settings.bucket, person.user_id, person.anonymous_ids) == []
    assert warehouse_hits(settings.duckdb_path, person.user_id, person.anonymous_ids) == {}
    assert eraser.requests.load_work(person.tenant, done.request_id) is None
