"""Constructed layers for unit tests: a list of events, and per-layer faults applied to copies of it."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace

import pandas as pd

from streaming.reconcile.model import Inputs, Watermarks

BASE_MINUTE = 29_462_400  # 2026-01-07T00:00Z


@dataclass(frozen=True)
class Ev:
    event_id: str
    tenant_id: str
    event_type: str
    minute: int
    source_id: str
    source_seq: int
    late: bool = False


def traffic(tenants: int = 3, types: tuple[str, ...] = ("page_view", "click"), minutes: int = 120,
            per_cell: int = 2, sources: int = 2) -> list[Ev]:
    """Every tenant × type × minute gets ``per_cell`` events; sources number them per tenant in received
    order, as collectors do."""
    names = [f"collector-{i}" for i in range(sources)]
    seqs = {(src, f"tenant-{t}"): itertools.count(1) for src in names for t in range(tenants)}
    out: list[Ev] = []
    k = 0
    for m in range(minutes):
        for t in range(tenants):
            for et in types:
                for _ in range(per_cell):
                    src = names[k % sources]
                    k += 1
                    out.append(Ev(str(uuid.UUID(int=k)), f"tenant-{t}", et, BASE_MINUTE + m, src,
                                  next(seqs[(src, f"tenant-{t}")])))
    return out


@dataclass
class Layers:
    """The events each layer holds. ``archive`` = delivered (repeats allowed); ``archive_lost`` = the
    delivered events whose archive object is gone (the manifests still count them)."""

    archive: list[Ev]
    archive_lost: list[Ev] = field(default_factory=list)
    raw: list[Ev] = field(default_factory=list)
    mart: list[Ev] = field(default_factory=list)
    speed: list[Ev] = field(default_factory=list)

    @classmethod
    def clean(cls, events: list[Ev]) -> Layers:
        dedup = list({e.event_id: e for e in events}.values())
        return cls(archive=list(events), raw=list(events), mart=dedup, speed=dedup)


def _counts(events: list[Ev]) -> Counter[tuple[str, str, int]]:
    return Counter((e.tenant_id, e.event_type, e.minute) for e in events)


def _frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


class MemoryEventIds:
    """The drill-down source over the constructed layers (archive lines present, raw rows, mart rows)."""

    def __init__(self, layers: Layers) -> None:
        self.layers = layers
        self.calls: list[list[int]] = []

    @staticmethod
    def _events(events: list[Ev], hours: list[int]) -> pd.DataFrame:
        keep = set(hours)
        rows = {(e.event_id, e.tenant_id, e.event_type, e.minute, e.source_id, e.source_seq)
                for e in events if e.minute // 60 in keep}
        return _frame(sorted(rows), ["event_id", "tenant_id", "event_type", "minute", "source_id", "source_seq"])

    def archive_events(self, hours: list[int]) -> pd.DataFrame:
        self.calls.append(hours)
        lost = Counter(e.event_id for e in self.layers.archive_lost)
        present = []
        for e in self.layers.archive:
            if lost[e.event_id]:
                lost[e.event_id] -= 1
                continue
            present.append(e)
        return self._events(present, hours)

    def warehouse_events(self, hours: list[int], table: str) -> pd.DataFrame:
        return self._events(self.layers.raw if table == "raw" else self.layers.mart, hours)


def inputs(layers: Layers, watermark_minute: int | None = None, lateness_s: int = 300,
           with_ids: bool = True) -> Inputs:
    """Count tables of every layer; the watermark defaults to past every event + lateness."""
    delivered = _counts(layers.archive)
    lost = _counts(layers.archive_lost)
    archive = _frame([(t, et, m, n, n - lost.get((t, et, m), 0)) for (t, et, m), n in delivered.items()],
                     ["tenant_id", "event_type", "minute", "n", "n_present"])
    raw = _counts(layers.raw)
    distinct = _counts(list({e.event_id: e for e in layers.raw}.values()))
    mart = _counts(layers.mart)
    late = _counts([e for e in layers.raw if e.late])
    keys = set(raw) | set(mart)
    warehouse = _frame([(t, et, m, raw.get((t, et, m), 0), distinct.get((t, et, m), 0), mart.get((t, et, m), 0),
                         late.get((t, et, m), 0)) for (t, et, m) in sorted(keys)],
                       ["tenant_id", "event_type", "minute", "rows", "distinct_ids", "mart", "late"])
    speed = _frame([(t, et, m, n) for (t, et, m), n in _counts(layers.speed).items()],
                   ["tenant_id", "event_type", "minute", "n"])
    if watermark_minute is None:
        watermark_minute = max(e.minute for e in layers.archive) + 1 + lateness_s // 60 + 1
    mark = watermark_minute * 60
    seqs = _frame([(e.event_id, e.tenant_id, e.event_type, e.minute, e.source_id, e.source_seq) for e in layers.raw],
                  ["event_id", "tenant_id", "event_type", "minute", "source_id", "source_seq"])
    return Inputs(archive=archive, warehouse=warehouse, speed=speed, watermarks=Watermarks(mark, mark, mark),
                  event_ids=MemoryEventIds(layers) if with_ids else None, sequences=seqs)


def drop(events: list[Ev], *which: Ev) -> list[Ev]:
    ids = {e.event_id for e in which}
    return [e for e in events if e.event_id not in ids]


def mark_late(events: list[Ev], target: Ev) -> list[Ev]:
    return [replace(e, late=True) if e.event_id == target.event_id else e for e in events]
