"""Healing: make the speed layer of closed windows equal to batch truth, and record it.

A cell is healed only when its window is closed, the archive and warehouse agree on it (no archive or
warehouse finding), and Redis differs (``speed_missing`` or ``speed_extra``). The new value is the
expected de-duplicated count. Each tenant's cells are written by one Lua call (one hash tag) that is a
compare-and-set: a counter that changed since reconciliation read it (a late event applied meanwhile) is
left alone and reported as skipped. The hour and day roll-ups move by the same difference, so every
resolution stays consistent. Given the warehouse reader, the unique visitors, top pages and live
segments of the closed windows are healed too (:mod:`streaming.reconcile.heal_structures`): after Redis
came back empty, the consumer rebuilds what the stream still holds and one heal restores the rest. Every
heal is recorded (who, when, which cells and structures, old and new values) in a Redis list and in
``heals.jsonl`` next to the reports.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from streaming.reconcile.heal_structures import HealedItem, Scope, heal_segments, heal_top_pages, heal_uniques
from streaming.reconcile.model import Result, Verdict
from streaming.segments import SegmentRule
from streaming.speed import keys, scripts
from streaming.speed.store import Retention

HEAL_LOG_KEY = keys.heal_log()


_LOSS_UPSTREAM_OF_SPEED = {Verdict.ARCHIVE_MISSING.value, Verdict.WAREHOUSE_MISSING.value,
                           Verdict.WAREHOUSE_EXTRA.value, Verdict.PENDING.value}


@dataclass(frozen=True)
class HealedCell:
    tenant_id: str
    event_type: str
    minute: int
    old: int
    new: int
    status: str  # healed | skipped (changed since it was read)


@dataclass
class HealRecord:
    heal_id: str
    who: str
    at: str
    run_id: str | None
    cells: list[HealedCell] = field(default_factory=list)
    #: unique visitors, top pages and segments healed (streaming/reconcile/heal_structures.py)
    items: list[HealedItem] = field(default_factory=list)

    @property
    def healed(self) -> int:
        return sum(1 for c in self.cells if c.status == "healed")

    @property
    def skipped(self) -> int:
        return sum(1 for c in self.cells if c.status == "skipped")

    def to_json(self) -> dict[str, Any]:
        return {"heal_id": self.heal_id, "who": self.who, "at": self.at, "run_id": self.run_id,
                "healed": self.healed, "skipped": self.skipped, "cells": [asdict(c) for c in self.cells],
                "items_healed": sum(1 for i in self.items if i.status == "healed"),
                "items_skipped": sum(1 for i in self.items if i.status == "skipped"),
                "items": [asdict(i) for i in self.items]}


def healable(result: Result) -> pd.DataFrame:
    """Closed cells where batch truth is complete and Redis differs."""
    cells = result.cells
    if cells.empty:
        return cells
    findings = cells["findings"].fillna("").str.split(",")
    clean_batch = findings.map(lambda fs: not (set(fs) & _LOSS_UPSTREAM_OF_SPEED))
    differs = cells["verdict"].isin([Verdict.SPEED_MISSING.value, Verdict.SPEED_EXTRA.value])
    return cells[clean_batch & differs & (cells["speed"] != cells["expected"])]


def blocked(result: Result) -> tuple[frozenset[tuple[str, int]], frozenset[tuple[str, int]]]:
    """(tenant × minutes, tenant × hours) whose batch truth is incomplete or still open: no structure
    there is healed. Minutes: cells with an archive or warehouse finding, or pending; hours: hours
    judged with an archive or warehouse finding."""
    minutes: set[tuple[str, int]] = set()
    cells = result.cells
    if not cells.empty:
        findings = cells["findings"].fillna("").str.split(",")
        bad = findings.map(lambda fs: bool(set(fs) & _LOSS_UPSTREAM_OF_SPEED)) | (cells["verdict"] == Verdict.PENDING.value)
        minutes |= {(str(t), int(m)) for t, m in zip(cells[bad]["tenant_id"], cells[bad]["minute"], strict=True)}
    hours: set[tuple[str, int]] = set()
    if not result.hours.empty:
        bad_h = result.hours["verdict"].isin(_LOSS_UPSTREAM_OF_SPEED - {Verdict.PENDING.value})
        hours |= {(str(t), int(h)) for t, h in zip(result.hours[bad_h]["tenant_id"], result.hours[bad_h]["hour"],
                                                   strict=True)}
    return frozenset(minutes), frozenset(hours)


def heal(client: Any, result: Result, who: str, reports_dir: Path | None = None, run_id: str | None = None,
         retention: Retention = Retention(), dry_run: bool = False, warehouse: Any | None = None,
         window: tuple[int, int] | None = None, rules: list[SegmentRule] | None = None) -> HealRecord:
    """Overwrite the differing closed cells with batch truth; with ``warehouse`` (the reconciliation's
    reader) and ``window`` (its [start, end) epoch minutes), heal unique visitors, top pages and the
    ``rules``' segments of the closed windows too; return (and record) what was done."""
    record = HealRecord(uuid.uuid4().hex[:12], who, dt.datetime.now(dt.timezone.utc).isoformat(), run_id)
    if warehouse is not None and window is not None:
        minutes, hours = blocked(result)
        scope = Scope(window[0], window[1], result.closed_before, hours, minutes,
                      int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000))
        tenants = set(result.hours["tenant_id"].astype(str)) if not result.hours.empty else set()
        record.items = [*heal_uniques(client, warehouse, scope, retention, dry_run),
                        *heal_top_pages(client, warehouse, scope, tenants, retention, dry_run),
                        *heal_segments(client, warehouse, scope, list(rules or []), retention, dry_run)]
    todo = healable(result)
    by_tenant: dict[str, list[tuple[str, int, int, int]]] = defaultdict(list)
    for row in todo.itertuples(index=False):
        by_tenant[str(row.tenant_id)].append((str(row.event_type), int(row.minute), int(row.speed), int(row.expected)))
    if dry_run:
        record.cells = [HealedCell(t, e, m, old, new, "planned") for t, cells in by_tenant.items()
                        for e, m, old, new in cells]
        return record
    script = scripts.register(client, "heal_counts")
    for tenant, cells in sorted(by_tenant.items()):
        args: list[Any] = [keys.tenant_prefix(tenant), retention.minute_s, retention.hour_s, retention.day_s]
        for etype, minute, old, new in cells:
            args.extend((minute, etype, old, new))
        # One call per tenant: every key carries the tenant's hash tag. A hash-tagged key is passed so
        # Redis Cluster routes the call to the tenant's slot.
        replies = script(keys=[keys.counts(tenant, "m", cells[0][1])], args=args)
        for (etype, minute, _, new), (status, old) in zip(cells, replies, strict=True):
            status = status.decode() if isinstance(status, bytes) else status
            record.cells.append(HealedCell(tenant, etype, minute, int(old), new, status))
    if record.cells or record.items:
        entry = json.dumps(record.to_json(), separators=(",", ":"))
        client.rpush(HEAL_LOG_KEY, entry)
        if reports_dir is not None:
            reports_dir.mkdir(parents=True, exist_ok=True)
            with open(reports_dir / "heals.jsonl", "a") as fh:
                fh.write(entry + "\n")
    return record


def heal_log(client: Any, last: int = 20) -> list[dict[str, Any]]:
    """The newest heal records from Redis, oldest first."""
    return [json.loads(x) for x in client.lrange(HEAL_LOG_KEY, -last, -1)]
