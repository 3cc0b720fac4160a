"""Positions: what each stream reader has had the chance to see, and the cells that are therefore held.

Pure: per shard, the speed layer's position (its lease checkpoint, read before its counters) and the
archive's (its last committed manifest, from the same snapshot as its counts), and the stream's records
after the lower of the two (:mod:`streaming.reconcile.sources.stream`), give

* each layer's *clock* on each shard: the arrival time of the first record after its position, or the
  time the read found the tip when there is none (a caught-up layer on a quiet or idle shard is caught
  up to the wall clock); a layer's clock is its slowest shard's;
* the *held* cells: every cell a record after the lower position touches is held, with the layer that
  has not read it named ("archive behind the speed layer by 41 s"), as is every cell of a record no
  layer has read yet;
* the *numbers* those records carry (valid or rejected), which count as held for the sequence analysis;
* *unbounded* lags: a layer whose unread records could not all be read (past the read bound, or trimmed
  from the stream before it read them); the engine then holds every cell where that layer has less.

See the *Positions* section of :mod:`streaming.reconcile.model` for how the engine uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from streaming.kinesis.processor import Position
from streaming.reconcile.model import HELD_CELL_COLUMNS
from streaming.reconcile.sequences import HELD_COLUMNS
from streaming.reconcile.sources.stream import ShardTail

SPEED = "speed layer"
ARCHIVE = "archive"


@dataclass(frozen=True)
class LayerPosition:
    """A layer's position on a shard: ``seq`` None = it has read nothing; ``ended`` = read to SHARD_END."""

    seq: int | None = None
    ended: bool = False
    recorded: Position | None = None

    def has(self, seq: int) -> bool:
        return self.ended or (self.seq is not None and seq <= self.seq)


@dataclass(frozen=True)
class ShardPositions:
    shard_id: str
    speed: LayerPosition
    archive: LayerPosition

    def lower(self) -> int | None:
        """Where the stream must be read from (None: from its oldest record)."""
        if self.speed.ended and self.archive.ended:
            return None
        seqs = [p.seq for p in (self.speed, self.archive) if not p.ended]
        return None if any(s is None for s in seqs) else min(s for s in seqs if s is not None)


@dataclass
class PositionsView:
    clocks: dict[str, float | None]
    held: pd.DataFrame
    numbers: pd.DataFrame
    shards: pd.DataFrame
    unbounded: dict[str, str] = field(default_factory=dict)
    #: The newest arrival time among the records read and the layers' recorded positions: when the stream
    #: last received a record, as far as this read can tell (the stream's freshness).
    newest_arrival: float | None = None


def _clock(position: LayerPosition, tail: ShardTail | None) -> float | None:
    """Every record that arrived on the shard before this time has been processed by the layer."""
    if tail is None:
        return _recorded_clock(position)
    if position.ended:
        return tail.read_at
    after = [r.arrival for r in tail.records if not position.has(r.seq)]
    if after:
        return min(after)
    if tail.complete:
        return tail.read_at
    return _recorded_clock(position)


def _recorded_clock(position: LayerPosition) -> float | None:
    recorded = position.recorded
    if recorded is None:
        return None
    if recorded.at_tip and recorded.observed_at is not None:
        return recorded.observed_at
    return recorded.arrival


def _lag(seconds: float) -> str:
    return "by under 1 s" if seconds < 1 else f"by {seconds:,.0f} s"


def _trim_lossy(position: LayerPosition, tail: ShardTail) -> bool:
    """The layer's position record is gone from the stream and nothing proves it read what went with it."""
    if not tail.trimmed or position.ended or position.seq is None or position.seq != tail.after:
        return False
    recorded = position.recorded
    proved = (recorded is not None and recorded.at_tip and recorded.observed_at is not None
              and tail.oldest_arrival is not None and recorded.observed_at >= tail.oldest_arrival)
    return not proved


def judge_positions(shards: list[ShardPositions], tails: dict[str, ShardTail]) -> PositionsView:
    held: dict[tuple[str, str, int], set[str]] = {}
    numbers: list[tuple[str, str, int, str | None, int]] = []
    rows: list[dict[str, object]] = []
    clocks: dict[str, list[float | None]] = {SPEED: [], ARCHIVE: []}
    unbounded: dict[str, str] = {}
    arrivals: list[float] = []
    for shard in shards:
        tail = tails.get(shard.shard_id)
        arrivals += [r.arrival for r in (tail.records[-1:] if tail is not None else [])]
        arrivals += [p.recorded.arrival for p in (shard.speed, shard.archive)
                     if p.recorded is not None and p.recorded.arrival is not None]
        clock_s, clock_a = _clock(shard.speed, tail), _clock(shard.archive, tail)
        clocks[SPEED].append(clock_s)
        clocks[ARCHIVE].append(clock_a)
        behind = {}
        if clock_s is not None and clock_a is not None:
            behind = {SPEED: _lag(max(0.0, clock_a - clock_s)), ARCHIVE: _lag(max(0.0, clock_s - clock_a))}
        for record in tail.records if tail is not None else ():
            in_speed, in_archive = shard.speed.has(record.seq), shard.archive.has(record.seq)
            if record.number is not None:  # a rejected record's number has no minute: it ends no bracket
                numbers.append((*record.number, record.event_id, record.cell[2] if record.cell else None))
            if record.cell is None or (in_speed and in_archive):
                continue
            if in_archive:
                reason = f"speed layer behind the archive {behind.get(SPEED, '')}".rstrip()
            elif in_speed:
                reason = f"archive behind the speed layer {behind.get(ARCHIVE, '')}".rstrip()
            else:
                reason = "not yet read by the speed layer or the archive"
            held.setdefault(record.cell, set()).add(reason)
        notes = []
        if tail is not None and not tail.complete:
            notes.append("read bound reached")
            for name, position in ((SPEED, shard.speed), (ARCHIVE, shard.archive)):
                if not position.ended and (position.seq is None or position.seq == shard.lower()):
                    unbounded[name] = (f"{name} behind by more than the stream read reaches "
                                       "(TALLY_RECONCILE_MAX_STREAM_READ)")
        if tail is not None:
            for name, position in ((SPEED, shard.speed), (ARCHIVE, shard.archive)):
                if _trim_lossy(position, tail):
                    notes.append(f"{name}'s position was trimmed from the stream")
                    unbounded[name] = (f"{name} behind beyond the stream's retention: records may have been "
                                       "trimmed before it read them")
        rows.append({
            "shard_id": shard.shard_id,
            "speed_seq": "SHARD_END" if shard.speed.ended else shard.speed.seq,
            "archive_seq": "SHARD_END" if shard.archive.ended else shard.archive.seq,
            "speed_clock": clock_s, "archive_clock": clock_a,
            "unread_records": len(tail.records) if tail is not None else None,
            "read_complete": bool(tail.complete) if tail is not None else None,
            "notes": "; ".join(notes),
        })
    held_rows = [(t, e, m, r) for (t, e, m), reasons in sorted(held.items()) for r in sorted(reasons)]
    return PositionsView(
        clocks={name: (None if not marks or any(m is None for m in marks) else min(m for m in marks if m is not None))
                for name, marks in clocks.items()},
        held=pd.DataFrame(held_rows, columns=list(HELD_CELL_COLUMNS)),
        numbers=pd.DataFrame(numbers, columns=["source_id", "tenant_id", "source_seq", "event_id", "minute"])
        .astype({"minute": "Int64"})[list(HELD_COLUMNS)],
        shards=pd.DataFrame(rows, columns=["shard_id", "speed_seq", "archive_seq", "speed_clock", "archive_clock",
                                           "unread_records", "read_complete", "notes"]),
        unbounded=unbounded,
        newest_arrival=max(arrivals) if arrivals else None,
    )
