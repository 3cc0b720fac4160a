"""Positions: the clocks and held cells that keep a lagging layer from being blamed (pure, no servers)."""

from __future__ import annotations

import pandas as pd
import pytest

from streaming.events import SequencePosition
from streaming.kinesis.processor import Position
from streaming.reconcile.positions import LayerPosition, ShardPositions, judge_positions
from streaming.reconcile.sources.stream import ShardTail, TailRecord

pytestmark = pytest.mark.unit

T0 = 1_800_000_000.0  # arrival time of record 1
NOW = T0 + 600


def record(seq: int, minute: int | None = 30_000_000, tenant: str = "t1", number: int | None = None) -> TailRecord:
    cell = (tenant, "click", minute) if minute is not None else None
    pos = SequencePosition("c1", tenant, number if number is not None else seq)
    return TailRecord(seq, T0 + seq, cell, pos, f"id-{seq}" if cell else None)


def shard(speed: int | None, archive: int | None, **kw: LayerPosition) -> ShardPositions:
    return ShardPositions("s1", kw.get("speed_pos") or LayerPosition(speed), kw.get("archive_pos") or LayerPosition(archive))


def tail(after: int | None, seqs: list[int], complete: bool = True, **kw: object) -> ShardTail:
    return ShardTail("s1", after, [record(s) for s in seqs], complete=complete, read_at=NOW,
                     oldest_arrival=T0, **kw)  # type: ignore[arg-type]


def held(view) -> dict[tuple[str, str, int], str]:  # type: ignore[no-untyped-def]
    return {(r.tenant_id, r.event_type, r.minute): r.reason for r in view.held.itertuples()}


def test_records_the_archive_has_not_read_are_held_naming_the_archive() -> None:
    view = judge_positions([shard(speed=12, archive=10)], {"s1": tail(10, [11, 12])})
    assert held(view) == {("t1", "click", 30_000_000): "archive behind the speed layer by 589 s"}
    # the archive has processed what arrived before record 11; the speed layer is at the tip
    assert view.clocks == {"speed layer": NOW, "archive": T0 + 11}
    assert set(view.numbers.source_seq) == {11, 12}


def test_records_the_speed_layer_has_not_read_are_held_naming_it() -> None:
    view = judge_positions([shard(speed=10, archive=13)], {"s1": tail(10, [11, 12, 13])})
    assert set(held(view).values()) == {"speed layer behind the archive by 589 s"}
    assert view.clocks["speed layer"] == T0 + 11


def test_records_no_layer_has_read_are_held_too() -> None:
    view = judge_positions([shard(speed=10, archive=10)], {"s1": tail(10, [11])})
    assert set(held(view).values()) == {"not yet read by the speed layer or the archive"}
    assert view.clocks == {"speed layer": T0 + 11, "archive": T0 + 11}


def test_layers_at_the_tip_of_a_quiet_or_idle_shard_are_caught_up_to_the_read() -> None:
    quiet = judge_positions([shard(speed=10, archive=10)], {"s1": tail(10, [])})
    assert quiet.held.empty and quiet.clocks == {"speed layer": NOW, "archive": NOW}
    idle = judge_positions([shard(speed=None, archive=None)], {"s1": ShardTail("s1", None, complete=True, read_at=NOW)})
    assert idle.clocks == {"speed layer": NOW, "archive": NOW}


def test_the_slowest_shard_sets_a_layers_clock() -> None:
    shards = [ShardPositions("s1", LayerPosition(10), LayerPosition(10)),
              ShardPositions("s2", LayerPosition(5), LayerPosition(7))]
    tails = {"s1": tail(10, []), "s2": ShardTail("s2", 5, [record(6), record(7)], complete=True, read_at=NOW)}
    view = judge_positions(shards, tails)
    assert view.clocks == {"speed layer": T0 + 6, "archive": NOW}


def test_a_rejected_records_number_is_held_without_a_minute() -> None:
    rejected = TailRecord(11, T0 + 11, None, SequencePosition("c1", "t1", 4), None)
    view = judge_positions([shard(speed=10, archive=11)], {"s1": ShardTail("s1", 10, [rejected], complete=True, read_at=NOW)})
    assert view.held.empty  # a dead letter touches no cell
    row = view.numbers.iloc[0]
    assert (row.source_id, row.tenant_id, row.source_seq) == ("c1", "t1", 4) and pd.isna(row.minute)


def test_a_read_cut_at_its_bound_makes_the_lagging_layer_unbounded() -> None:
    view = judge_positions([shard(speed=20, archive=10)], {"s1": tail(10, [11, 12], complete=False)})
    assert set(view.unbounded) == {"archive"}
    assert "TALLY_RECONCILE_MAX_STREAM_READ" in view.unbounded["archive"]


def test_a_trimmed_position_is_unbounded_unless_the_layer_proved_it_read_past_it() -> None:
    lost = judge_positions([shard(speed=20, archive=10)], {"s1": tail(10, [15, 16, 20], trimmed=True)})
    assert "retention" in lost.unbounded["archive"]
    proved = LayerPosition(10, recorded=Position(arrival=T0 + 10, at_tip=True, observed_at=T0 + 14))
    ok = judge_positions([shard(speed=20, archive=None, archive_pos=proved)], {"s1": tail(10, [15, 16, 20], trimmed=True)})
    assert ok.unbounded == {}


def test_shard_end_is_read_to_the_end() -> None:
    ended = LayerPosition(ended=True)
    view = judge_positions([shard(speed=None, archive=None, speed_pos=ended, archive_pos=LayerPosition(10))],
                           {"s1": tail(10, [11])})
    assert set(held(view).values()) == {"archive behind the speed layer by 589 s"}
