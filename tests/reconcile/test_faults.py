"""Fault injection through the real layers: each fault is caught and attributed to the right layer,
tenant, event type and minute (or source and sequence numbers, for loss before the stream)."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pytest
import redis

from streaming.archive.store import ArchiveStore
from streaming.reconcile.heal import HEAL_LOG_KEY, heal
from streaming.settings import Settings
from streaming.speed import keys
from tests.reconcile.conftest import CLEAN_START_MINUTE, Clients, PipelineRun, reconcile_run, with_bucket
from tests.reconcile.helpers import closed_minute, ledger_cells, losses, minute_of_iso, pick_closed_event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Minutes before this are closed in the clean run (15 minutes of traffic, 5 minutes of lateness).
CLOSED_BY = CLEAN_START_MINUTE + 8


def _cell(doc: dict[str, Any]) -> tuple[str, str, int]:
    return doc["tenant_id"], doc["event_type"], minute_of_iso(doc["received_at"])


def test_clean_run_every_closed_cell_is_ok(clean_run: PipelineRun, run_settings: Settings, speed: Any,
                                           redis_client: redis.Redis, clients: Clients) -> None:
    speed()
    run = reconcile_run(run_settings, redis_client, clients)
    result = run.result
    expected = ledger_cells(clean_run.ledger)
    closed = closed_minute(result)
    assert closed > min(m for _, _, m in expected) + 5  # most of the run is judged
    assert losses(result).empty, losses(result)
    assert result.sequences.empty
    assert not result.unexplained_loss
    pending = {(r.tenant_id, r.event_type, r.minute) for r in result.cells.itertuples() if r.verdict == "pending"}
    assert pending == {c for c in expected if c[2] + 1 > closed}
    assert result.summary["ok"] == len([c for c in expected if c[2] + 1 <= closed])
    # the layers agree with the ground truth, not just with each other
    speed_counts = run.inputs.speed.set_index(["tenant_id", "event_type", "minute"])["n"].to_dict()
    assert {k: int(v) for k, v in speed_counts.items()} == expected
    assert run.report_path is not None and run.report_path.exists()


def test_records_skipped_by_the_speed_layer_are_speed_missing(clean_run: PipelineRun, run_settings: Settings,
                                                              speed: Any, redis_client: redis.Redis,
                                                              clients: Clients) -> None:
    victim = pick_closed_event(clean_run.records, CLOSED_BY, index=40)
    marker = f'"event_id":"{victim["event_id"]}"'.encode()
    speed(skip=lambda record: marker in record.data)
    result = reconcile_run(run_settings, redis_client, clients).result
    found = losses(result)
    assert len(found) == 1, found
    row = found.iloc[0]
    assert (row.verdict, row.tenant_id, row.event_type, row.minute) == ("speed_missing", *_cell(victim))
    assert row.expected - row.speed == 1
    assert result.unexplained_loss


def test_records_applied_twice_are_speed_extra(clean_run: PipelineRun, run_settings: Settings, speed: Any,
                                               redis_client: redis.Redis, clients: Clients) -> None:
    speed()
    victim = pick_closed_event(clean_run.records, CLOSED_BY, index=7)
    tenant, etype, minute = _cell(victim)
    # A second application of the event's increments (what a consumer without markers would do).
    for resolution, bucket in (("m", minute), ("h", minute // 60), ("d", minute // 1440)):
        redis_client.hincrby(keys.counts(tenant, resolution, bucket), etype, 1)
    found = losses(reconcile_run(run_settings, redis_client, clients).result)
    assert len(found) == 1, found
    row = found.iloc[0]
    assert (row.verdict, row.tenant_id, row.event_type, row.minute) == ("speed_extra", tenant, etype, minute)


def test_deleted_archive_object_is_archive_missing_for_exactly_its_cells(
        clean_run: PipelineRun, run_settings: Settings, speed: Any, redis_client: redis.Redis,
        clients: Clients) -> None:
    speed()
    settings = with_bucket(run_settings, clients)
    store = ArchiveStore(clients.s3, settings.bucket)
    shard = sorted(store.shard_ids())[0]
    manifest = store.read_manifest(store.manifest_keys(shard)[0])
    assert manifest is not None
    entry = manifest["objects"][0]
    clients.s3.delete_object(Bucket=settings.bucket, Key=entry["key"])
    result = reconcile_run(settings, redis_client, clients).result
    closed = closed_minute(result)
    expected = {(t, e, minute_of_iso(m)): n for t, e, m, n in entry["counts"] if minute_of_iso(m) + 1 <= closed}
    assert expected  # the object holds closed minutes
    found = losses(result)
    assert set(found.verdict) == {"archive_missing"}
    assert {(r.tenant_id, r.event_type, r.minute): r.archive - r.archive_present for r in found.itertuples()} == expected
    assert result.summary["upstream_gap"] == 0  # the warehouse still holds those source numbers


def test_warehouse_rows_deleted_after_load_are_warehouse_missing_with_their_ids(
        clean_run: PipelineRun, run_settings: Settings, speed: Any, redis_client: redis.Redis,
        clients: Clients) -> None:
    speed()
    victims = [pick_closed_event(clean_run.records, CLOSED_BY, index=i) for i in (3, 150, 600)]
    con = duckdb.connect(str(run_settings.duckdb_path))
    try:
        con.execute("delete from raw.events where event_id in (select unnest($1::varchar[]))",
                    [[v["event_id"] for v in victims]])
    finally:
        con.close()
    result = reconcile_run(run_settings, redis_client, clients).result
    found = losses(result)
    assert set(found.verdict) == {"warehouse_missing"}
    assert {(r.tenant_id, r.event_type, r.minute) for r in found.itertuples()} == {_cell(v) for v in victims}
    ids = result.event_ids
    assert set(ids[(ids["table"] == "raw") & (ids["kind"] == "missing")]["event_id"]) == {v["event_id"] for v in victims}
    assert ids[ids["kind"] == "extra"].empty
    assert result.sequences.empty  # the archive still holds their source numbers


def test_redis_flushed_is_speed_missing_everywhere_then_heal_makes_it_ok(
        clean_run: PipelineRun, run_settings: Settings, speed: Any, redis_client: redis.Redis,
        clients: Clients) -> None:
    speed()
    redis_client.flushall()
    run = reconcile_run(run_settings, redis_client, clients)
    closed = closed_minute(run.result)
    expected = ledger_cells(clean_run.ledger)
    closed_cells = {c: n for c, n in expected.items() if c[2] + 1 <= closed}
    found = losses(run.result)
    assert set(found.verdict) == {"speed_missing"}
    assert {(r.tenant_id, r.event_type, r.minute) for r in found.itertuples()} == set(closed_cells)

    record = heal(redis_client, run.result, who="pytest", reports_dir=run_settings.home / "reports",
                  run_id=run.info.run_id)
    assert record.healed == len(closed_cells) and record.skipped == 0
    assert {(c.tenant_id, c.event_type, c.minute): (c.old, c.new) for c in record.cells} == {
        c: (0, n) for c, n in closed_cells.items()}
    logged = json.loads(redis_client.lrange(HEAL_LOG_KEY, -1, -1)[0])
    assert logged["who"] == "pytest" and logged["healed"] == len(closed_cells)
    assert (run_settings.home / "reports" / "heals.jsonl").read_text().count(record.heal_id) == 1

    after = reconcile_run(run_settings, redis_client, clients).result
    assert losses(after).empty and not after.unexplained_loss
    assert after.summary["ok"] == len(closed_cells)
    # roll-ups moved with the minutes: an hour counter equals the sum of its healed minutes
    tenant, etype, minute = next(iter(closed_cells))
    hour_total = sum(n for (t, e, m), n in closed_cells.items() if (t, e, m // 60) == (tenant, etype, minute // 60))
    assert int(redis_client.hget(keys.counts(tenant, "h", minute // 60), etype)) == hour_total


def test_stalled_speed_consumer_is_pending_not_loss(clean_run: PipelineRun, run_settings: Settings, speed: Any,
                                                    redis_client: redis.Redis, clients: Clients) -> None:
    stall_minute = CLEAN_START_MINUTE + 9

    def stall_at(record: Any) -> bool:
        try:
            doc = json.loads(record.data)
        except ValueError:
            return False
        return isinstance(doc, dict) and minute_of_iso(str(doc.get("received_at", "2000-01-01T00:00:00Z"))) >= stall_minute

    speed(stall_at=stall_at)
    result = reconcile_run(run_settings, redis_client, clients).result
    assert losses(result).empty, losses(result)
    assert not result.unexplained_loss
    pending = {(r.tenant_id, r.event_type, r.minute): r.pending_reason for r in result.cells.itertuples()
               if r.verdict == "pending"}
    never_applied = {c for c in ledger_cells(clean_run.ledger) if c[2] >= stall_minute}
    assert never_applied <= set(pending)
    # The records the stalled consumer never reached are still in the stream: their cells are held, and
    # the reason names the layer that lags (the archive read them).
    assert {pending[c].split(" by ")[0] for c in never_applied} == {"speed layer behind the archive"}


def test_served_hour_counter_that_disagrees_with_its_minutes(clean_run: PipelineRun, run_settings: Settings,
                                                             speed: Any, redis_client: redis.Redis,
                                                             clients: Clients) -> None:
    speed()
    hour = CLEAN_START_MINUTE // 60  # 09:00, closed
    tenant, etype = sorted(ledger_cells(clean_run.ledger))[0][:2]
    clean = reconcile_run(run_settings, redis_client, clients).result
    assert clean.rollups.empty and clean.summary["speed_rollup_mismatch"] == 0
    redis_client.hincrby(keys.counts(tenant, "h", hour), etype, 3)  # a roll-up bug: the minutes are right
    result = reconcile_run(run_settings, redis_client, clients).result
    assert losses(result).empty
    rows = result.rollups
    assert list(rows[["layer", "grain", "tenant_id", "event_type", "bucket"]].itertuples(index=False, name=None)) == [
        ("speed", "hour", tenant, etype, hour)]
    assert int(rows.iloc[0].served) - int(rows.iloc[0].minutes_sum) == 3
    assert result.unexplained_loss
