"""Late events and loss before the stream, through the real layers.

Late inside the allowed lateness: pending while outstanding, ok once arrived. Late beyond it: counted by
every layer and reported as late, never as loss. Records dropped between producer and stream: a
``source_seq`` gap no layer holds, reported as ``upstream_gap`` with its source, numbers and minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from streaming.generator import GeneratorConfig
from tests.reconcile import pipeline
from streaming.reconcile.service import run_reconcile
from tests.reconcile.conftest import (Clients, batch_layer, generated, layers_for, new_settings, prepare,
                                      reconcile_run)
from tests.reconcile.helpers import closed_minute, losses, minute_of_iso

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LATE_INSIDE = GeneratorConfig(seed=5, tenants=4, start="2026-01-05T10:00:00Z", duration_s=900, rate_per_s=4.0,
                              late_rate=0.03, late_delay_s=(30, 200))
#: Real gaps among ~1% rejected records of every reason from the same collectors: only the real ones count.
MESSY = GeneratorConfig(seed=9, tenants=4, start="2026-01-05T10:00:00Z", duration_s=900, rate_per_s=5.0,
                        duplicate_rate=0.02, upstream_loss_rate=0.003, late_rate=0.01, late_delay_s=(400, 480),
                        malformed_rate=0.01)


def _cell(data: bytes) -> tuple[str, str, int]:
    doc = json.loads(data)
    return doc["tenant_id"], doc["event_type"], minute_of_iso(doc["received_at"])


def test_late_events_inside_the_lateness_are_pending_then_ok(
        tmp_path: Path, aws_endpoint: str, redis_url: str, redis_client: redis.Redis, clients: Clients) -> None:
    """Live time: windows close on the layers' clocks (arrival on the stream), so the test runs at the wall
    clock with a short lateness. Late events still outstanding leave their windows pending (open); once
    they arrived and the lateness has passed, the same cells are closed and ok."""
    # The events arrive in the last 15 s and the lateness is 120 s, so every window the late events touch
    # closes at least 105 s after they are generated: room for both layers on a loaded machine.
    lateness = 120
    settings = replace(new_settings(aws_endpoint, redis_url, tmp_path), allowed_lateness_s=lateness)
    prepare(settings, clients)
    now = time.time()
    config = replace(LATE_INSIDE, start=dt.datetime.fromtimestamp(now - 15, tz=dt.timezone.utc).isoformat()
                     .replace("+00:00", "Z"), duration_s=10, rate_per_s=40.0, late_delay_s=(20, 30))
    records, _ = generated(config)
    held_back = [r for r in records if r.kind == "late"]
    on_time = [r for r in records if r.kind != "late"]
    outstanding = {_cell(r.data) for r in held_back}
    assert outstanding

    def layers() -> None:
        pipeline.run_speed(settings, clients.kinesis, clients.dynamodb, redis_client)
        batch_layer(settings, clients, tmp_path)

    window = (dt.datetime.fromtimestamp(now - 600, tz=dt.timezone.utc), dt.datetime.fromtimestamp(now + 600, tz=dt.timezone.utc))
    pipeline.send(clients.kinesis, settings.stream_name, on_time)
    layers()
    before = run_reconcile(settings, layers_for(settings, redis_client, clients), *window, who="pytest").result
    first_close = (min(c[2] for c in outstanding) + 1) * 60 + lateness
    assert time.time() < first_close, f"the layers took {time.time() - now:.0f} s: a window closed before judging"
    reasons = {(r.tenant_id, r.event_type, r.minute): r.pending_reason for r in before.cells.itertuples()
               if r.verdict == "pending"}
    assert outstanding <= set(reasons)
    assert {reasons[c].split(":")[0] for c in outstanding} == {"window not closed"}
    assert losses(before).empty and not before.unexplained_loss
    assert before.summary["upstream_gap"] == 0  # their source numbers are missing, but the window is open

    pipeline.send(clients.kinesis, settings.stream_name, held_back)
    layers()
    last_end = (max(c[2] for c in outstanding) + 1) * 60
    time.sleep(max(0.0, last_end + lateness + 1 - time.time()))
    after = run_reconcile(settings, layers_for(settings, redis_client, clients), *window, who="pytest").result
    closed = closed_minute(after)
    assert all(c[2] + 1 <= closed for c in outstanding)
    assert losses(after).empty and not after.unexplained_loss
    judged = {(r.tenant_id, r.event_type, r.minute): r.verdict for r in after.cells.itertuples()}
    assert {judged.get(c, "ok") for c in outstanding} == {"ok"}
    assert after.sequences.empty


def test_upstream_gaps_and_late_events_beyond_the_lateness(
        tmp_path: Path, aws_endpoint: str, redis_url: str, redis_client: redis.Redis, clients: Clients) -> None:
    settings = new_settings(aws_endpoint, redis_url, tmp_path)
    prepare(settings, clients)
    records, ledger = generated(MESSY)
    pipeline.send(clients.kinesis, settings.stream_name, records)
    pipeline.run_speed(settings, clients.kinesis, clients.dynamodb, redis_client)
    batch_layer(settings, clients, tmp_path)
    result = reconcile_run(settings, redis_client, clients).result
    closed = closed_minute(result)

    # Every layer agrees on every closed cell: nothing was lost after the stream.
    assert losses(result).empty, losses(result)

    # Loss before the stream: each lost number that has a later number from its source and tenant is a
    # gap, reported with that tenant.
    gaps = result.sequences

    def gap_of(lost: dict) -> Any:
        return gaps[(gaps.source_id == lost["source_id"]) & (gaps.tenant_id == lost["tenant_id"])
                    & (gaps.first_missing <= lost["source_seq"]) & (gaps.last_missing >= lost["source_seq"])]

    detectable = [lost for lost in ledger.upstream_lost
                  if lost["source_seq"] < ledger.sources[lost["source_id"]][lost["tenant_id"]]]
    assert len(detectable) >= 2
    for lost in detectable:
        minute = minute_of_iso(lost["minute"])
        hit = gap_of(lost)
        assert len(hit) == 1, lost
        row = hit.iloc[0]
        assert row.min_minute <= minute <= row.max_minute
        assert row.verdict == ("upstream_gap" if row.max_minute + 1 <= closed else "pending")
    assert sum(ledger.dead_letters.values()) >= 30  # numbers held by rejected records fill no false gap:
    assert int(gaps[gaps.verdict.isin(["upstream_gap", "pending"])].missing.sum()) == len(detectable)
    assert result.summary["upstream_gap"] == sum(1 for lost in detectable if gap_of(lost).iloc[0].verdict == "upstream_gap")
    assert result.unexplained_loss

    # Late beyond the lateness: counted (the cells are ok) and reported as late.
    late_cells = {_cell(r.data) for r in records if r.kind == "late" and r.emit_ms <= 880_000}
    assert late_cells
    reported = {(r.tenant_id, r.event_type, r.minute) for r in result.late.itertuples()}
    assert late_cells <= reported
    assert len(late_cells) <= result.summary["late_events"] <= ledger.late_events
    bad = {(r.tenant_id, r.event_type, r.minute) for r in losses(result).itertuples()}
    assert not (late_cells & bad)
