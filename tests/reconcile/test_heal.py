"""Healing against a real redis-server: compare-and-set per cell, roll-ups moved, every heal recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from streaming.reconcile.engine import reconcile
from streaming.reconcile.heal import HEAL_LOG_KEY, heal, heal_log, healable
from streaming.reconcile.sources.speed import SpeedReader, parse_minute_key
from streaming.speed import keys
from tests.reconcile.builders import Layers, drop, inputs, traffic

pytestmark = pytest.mark.integration


def _write_speed(client: redis.Redis, counts: dict[tuple[str, str, int], int]) -> None:
    for (tenant, etype, minute), n in counts.items():
        for resolution, bucket in (("m", minute), ("h", minute // 60), ("d", minute // 1440)):
            client.hincrby(keys.counts(tenant, resolution, bucket), etype, n)


def test_heal_sets_batch_truth_skips_cells_that_moved_and_records_everything(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    events = traffic(tenants=2, minutes=90)
    layers = Layers.clean(events)
    lost_a, lost_b = events[30], events[200]
    extra = events[402]  # tenant-0 click: no other fault in its hour
    layers.speed = drop(layers.speed, lost_a, lost_b) + [extra]
    inp = inputs(layers)
    _write_speed(redis_client, {(r.tenant_id, r.event_type, r.minute): r.n for r in inp.speed.itertuples()})
    result = reconcile(inp)
    assert len(healable(result)) == 3
    # A late event reaches lost_b's cell after reconciliation read it: that cell must not be overwritten.
    redis_client.hincrby(keys.counts(lost_b.tenant_id, "m", lost_b.minute), lost_b.event_type, 1)

    record = heal(redis_client, result, who="alice", reports_dir=tmp_path, run_id="run-9")
    by_cell = {(c.tenant_id, c.event_type, c.minute): c for c in record.cells}
    a = by_cell[(lost_a.tenant_id, lost_a.event_type, lost_a.minute)]
    assert (a.old, a.new, a.status) == (1, 2, "healed")
    b = by_cell[(lost_b.tenant_id, lost_b.event_type, lost_b.minute)]
    assert (b.old, b.status) == (2, "skipped")
    x = by_cell[(extra.tenant_id, extra.event_type, extra.minute)]
    assert (x.old, x.new, x.status) == (3, 2, "healed")

    reader = SpeedReader(redis_client)
    assert reader.cell(lost_a.tenant_id, lost_a.event_type, lost_a.minute) == 2
    assert reader.cell(extra.tenant_id, extra.event_type, extra.minute) == 2
    hour = redis_client.hget(keys.counts(extra.tenant_id, "h", extra.minute // 60), extra.event_type)
    assert int(hour) == 2 * 60  # the roll-up moved with the minute: 2 events in each of 60 minutes

    logged = heal_log(redis_client)
    assert len(logged) == 1 and logged[0]["who"] == "alice" and logged[0]["healed"] == 2
    assert logged[0]["skipped"] == 1 and logged[0]["run_id"] == "run-9"
    on_disk = [json.loads(line) for line in (tmp_path / "heals.jsonl").read_text().splitlines()]
    assert on_disk == logged
    # Healing again changes nothing that is already right (and records nothing new for them).
    again = heal(redis_client, reconcile(inputs(layers)), who="alice", dry_run=True)
    assert {(c.tenant_id, c.event_type, c.minute) for c in again.cells} >= {(a.tenant_id, a.event_type, a.minute)}
    assert redis_client.llen(HEAL_LOG_KEY) == 1  # a dry run records nothing


@pytest.mark.unit
def test_minute_keys_parse_back() -> None:
    assert parse_minute_key(keys.counts("tenant-7", "m", 29_460_120)) == ("tenant-7", 29_460_120)
    assert parse_minute_key("tally:{tenant-7}:cnt:h:491002") is None
