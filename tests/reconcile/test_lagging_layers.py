"""Verdicts that hold on a busy machine: a paused consumer, a saturated CPU, 500 tenants, rejected records
from real collectors, and a stream that goes quiet. Real processes (the speed consumer and the archiver
run as `python -m streaming.speed.run` and `tally archive --follow`), the emulator, Redis, DuckDB, dbt.

A lagging layer must never be blamed, nor make another layer look wrong: the cells its unread records
touch are pending with the lagging layer named, and everything else is judged (and ok)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import redis

from streaming.generator import GeneratedRecord, GeneratorConfig
from tests.reconcile.conftest import Clients, generated
from tests.reconcile.helpers import ledger_cells, losses, minute_of_iso
from tests.reconcile.live import Live, busy_cores, live

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UTC = dt.timezone.utc
LOSS = ("archive_missing", "warehouse_missing", "warehouse_extra", "speed_missing", "speed_extra", "upstream_gap",
        "upstream_duplicate", "speed_rollup_mismatch", "warehouse_rollup_mismatch")
#: Ten minutes of traffic in January, with late events (30-200 s) and duplicates.
PAUSED = GeneratorConfig(seed=31, tenants=6, start="2026-01-07T08:00:00Z", duration_s=600, rate_per_s=6.0,
                         duplicate_rate=0.02, late_rate=0.05, late_delay_s=(30, 200), malformed_rate=0.01)
RANGE = (dt.datetime(2026, 1, 7, 7, 0, tzinfo=UTC), dt.datetime(2026, 1, 7, 10, 0, tzinfo=UTC))


def _cell(record: GeneratedRecord) -> tuple[str, str, int] | None:
    try:
        doc = json.loads(record.data)
        return doc["tenant_id"], doc["event_type"], minute_of_iso(doc["received_at"])
    except (ValueError, KeyError, TypeError):
        return None


def _no_loss(summary: dict[str, int]) -> dict[str, int]:
    return {v: summary.get(v, 0) for v in LOSS if summary.get(v, 0)}


def _paused_layer_is_pending_not_blamed(run: Live, paused: str, name: str) -> None:
    records, ledger = generated(PAUSED)
    cut = int(len(records) * 0.6)
    run.start("speed")
    run.start("archiver")
    run.wait_for_tip(run.send(records[:cut]))
    run.pause(paused)
    # The rest, late events for windows that are already closed among them, reach only the other layer.
    sent = run.send(records[cut:])
    other = "archive" if name == "speed layer" else "speed layer"
    run.wait_for_tip(sent, only=other)
    run.batch()
    before = run.reconcile(*RANGE).result
    assert _no_loss(before.summary) == {}, losses(before)
    assert losses(before).empty
    unread = {c for c in map(_cell, records[cut:]) if c is not None and c in ledger_cells(ledger)}
    late = {c for r in records[cut:] if r.kind == "late" and (c := _cell(r)) is not None}
    assert late, "some late events arrive while the layer is paused"
    pending = {(r.tenant_id, r.event_type, r.minute): r.pending_reason
               for r in before.cells.itertuples() if r.verdict == "pending"}
    assert unread <= set(pending)
    assert {pending[c].split(" by ")[0] for c in unread} == {f"{name} behind the {other}"}
    # Windows close on the layers' clocks: cells no unread record touches are judged, and ok.
    assert before.summary["ok"] > 0
    assert len(pending) == len({c for c in pending if c in unread or pending[c].startswith("window not closed")})

    run.resume(paused)
    run.wait_for_tip(sent)
    run.batch()
    after = run.reconcile(*RANGE).result
    assert _no_loss(after.summary) == {} and not after.unexplained_loss
    assert after.summary["pending"] == 0  # both layers are at the tip and the windows are long closed
    assert after.summary["ok"] == len(ledger_cells(ledger))
    assert after.sequences.empty


def test_a_paused_archiver_is_pending_then_ok_once_resumed(tmp_path: Path, aws_endpoint: str, redis_url: str,
                                                           clients: Clients, redis_client: redis.Redis) -> None:
    with live(tmp_path, aws_endpoint, redis_url, clients, redis_client) as run:
        _paused_layer_is_pending_not_blamed(run, "archiver", "archive")


def test_a_paused_speed_consumer_is_pending_then_ok_once_resumed(tmp_path: Path, aws_endpoint: str, redis_url: str,
                                                                 clients: Clients, redis_client: redis.Redis) -> None:
    with live(tmp_path, aws_endpoint, redis_url, clients, redis_client) as run:
        _paused_layer_is_pending_not_blamed(run, "speed", "speed layer")


SATURATED = GeneratorConfig(seed=41, tenants=500, start="2026-01-08T12:00:00Z", duration_s=900, rate_per_s=20.0,
                            duplicate_rate=0.02, late_rate=0.01, late_delay_s=(30, 600), malformed_rate=0.01)


def test_500_tenants_on_a_saturated_machine_equal_the_ledger(tmp_path: Path, aws_endpoint: str, redis_url: str,
                                                             clients: Clients, redis_client: redis.Redis) -> None:
    """Two processes spin on both cores for the whole run; ~1% of records (every reason) are rejected
    from the same collectors' numbering: every layer equals the ledger and nothing but ok is found."""
    records, ledger = generated(SATURATED)
    assert set(ledger.dead_letters) == set(PAUSED.malformed_reasons)
    assert len(ledger.counts) >= 400
    with busy_cores(2), live(tmp_path, aws_endpoint, redis_url, clients, redis_client) as run:
        run.start("speed")
        run.start("archiver")
        run.wait_for_tip(run.send(records), timeout_s=600)
        run.batch()
        result = run.reconcile(dt.datetime(2026, 1, 8, 11, tzinfo=UTC), dt.datetime(2026, 1, 8, 14, tzinfo=UTC))
        cli = subprocess.run([sys.executable, "-m", "orchestration.cli", "reconcile", "--from", "2026-01-08T11:00:00",
                              "--to", "2026-01-08T14:00:00", "--format", "json"], env=run.env, capture_output=True,
                             text=True, timeout=600)
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]  # cron and CI see no loss
    summary = result.result.summary
    assert _no_loss(summary) == {}, (losses(result.result), result.result.sequences)
    assert summary["pending"] == 0 and summary["ok"] == len(ledger_cells(ledger))
    assert result.result.sequences.empty  # rejected records hold their numbers: no upstream_gap
    counts = result.inputs.speed.set_index(["tenant_id", "event_type", "minute"])["n"].to_dict()
    assert {k: int(v) for k, v in counts.items()} == ledger_cells(ledger)
    assert int(result.inputs.warehouse["mart"].sum()) == ledger.valid_events
    assert int(result.inputs.archive["n"].sum()) == ledger.valid_events + ledger.duplicates
    assert summary["late_events"] > 0


def test_windows_close_on_a_quiet_stream_with_an_idle_shard(tmp_path: Path, aws_endpoint: str, redis_url: str,
                                                            clients: Clients, redis_client: redis.Redis) -> None:
    """Live traffic to one shard of two, then nothing: once the allowed lateness has passed on the wall
    clock, every window is closed and judged."""
    with live(tmp_path, aws_endpoint, redis_url, clients, redis_client, TALLY_ALLOWED_LATENESS_S="15") as run:
        run.start("speed")
        run.start("archiver")
        shards = [s["ShardId"] for s in clients.kinesis.list_shards(StreamName=run.settings.stream_name)["Shards"]]
        assert len(shards) == 2
        low = [s for s in clients.kinesis.list_shards(StreamName=run.settings.stream_name)["Shards"]
               if int(s["HashKeyRange"]["StartingHashKey"]) == 0][0]["ShardId"]
        start = dt.datetime.fromtimestamp(time.time(), tz=UTC)
        config = GeneratorConfig(seed=51, tenants=4, start=start.isoformat().replace("+00:00", "Z"),
                                 duration_s=20, rate_per_s=10.0)
        records, ledger = generated(config)
        # Every record on the low shard (explicit hash key 0): the other shard stays idle from the start.
        for i in range(0, len(records), 100):
            chunk = records[i:i + 100]
            clients.kinesis.put_records(StreamName=run.settings.stream_name, Records=[
                {"Data": r.data, "PartitionKey": r.partition_key, "ExplicitHashKey": "0"} for r in chunk])
        last = time.time()
        run.wait_for_tip(last)
        run.batch()
        end_minute = max(m for _, _, m in ledger_cells(ledger))
        # The last window ends at (end_minute + 1) * 60; it closes 15 s (the lateness) later.
        time.sleep(max(0.0, (end_minute + 1) * 60 + 15 + 2 - time.time()))
        run.wait_for_tip(time.time())
        done = run.reconcile(start - dt.timedelta(minutes=5), start + dt.timedelta(minutes=10))
    result = done.result
    assert result.summary["pending"] == 0, result.cells[result.cells.verdict == "pending"]
    assert _no_loss(result.summary) == {}
    assert result.summary["ok"] == len(ledger_cells(ledger))
    assert done.positions is not None
    idle = done.positions.shards.set_index("shard_id").drop(index=low)
    assert len(idle) == 1 and pd.isna(idle.iloc[0].speed_seq) and pd.isna(idle.iloc[0].archive_seq)  # never a record


def test_a_stopped_archiver_commits_what_it_has_read(tmp_path: Path, aws_endpoint: str, redis_url: str,
                                                     clients: Clients, redis_client: redis.Redis) -> None:
    """SIGTERM: the archiver flushes its buffer (an hour's flush interval, so only the stop commits it)."""
    from streaming.kinesis.leases import LeaseTable
    from streaming.reconcile.sources.archive import ArchiveReader
    from tests.batch.streams import read_shard

    records, _ = generated(GeneratorConfig(seed=61, tenants=3, start="2026-01-09T00:00:00Z", duration_s=60,
                                           rate_per_s=20.0))
    with live(tmp_path, aws_endpoint, redis_url, clients, redis_client, TALLY_ARCHIVE_FLUSH_S="3600") as run:
        run.start("archiver")
        sent = run.send(records)
        leases = LeaseTable(clients.dynamodb, run.settings.lease_table, "archiver", run.settings.stream_name)
        deadline = time.time() + 60
        # Its positions say it has polled past the last record (nothing committed yet: not at the tip).
        while not (len(found := leases.leases()) == 2 and all(
                (lease.position.observed_at or 0) > sent and not lease.position.at_tip for lease in found.values())):
            assert time.time() < deadline, found
            time.sleep(0.5)
        assert ArchiveReader(clients.s3, run.settings.bucket).snapshot(0, 0).positions() == {}
        run.procs["archiver"].terminate()
        assert run.procs["archiver"].wait(timeout=60) == 0
    last = {shard: int(read_shard(clients.kinesis, run.settings.stream_name, shard)[-1].sequence_number)
            for shard in found}
    assert ArchiveReader(clients.s3, run.settings.bucket).snapshot(0, 0).positions() == last
