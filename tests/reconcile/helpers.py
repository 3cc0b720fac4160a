"""Small readers used by the fault-injection tests."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd

from streaming.generator import GeneratedRecord, Ledger
from streaming.reconcile.model import Result


def minute_of_iso(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()) // 60


def ledger_cells(ledger: Ledger) -> dict[tuple[str, str, int], int]:
    return {(t, e, minute_of_iso(m)): n for t, e, m, n in ledger.count_rows()}


def closed_minute(result: Result) -> int:
    """Minutes m with m + 1 <= this are closed."""
    return int(result.closed_before // 60)


def losses(result: Result) -> pd.DataFrame:
    """Non-ok, non-pending cells."""
    cells = result.cells
    return cells[~cells["verdict"].isin(["ok", "pending"])]


def event_doc(record: GeneratedRecord) -> dict[str, Any]:
    return json.loads(record.data)


def valid_docs(records: list[GeneratedRecord]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        if r.kind == "valid":
            out.append(json.loads(r.data))
    return out


def pick_closed_event(records: list[GeneratedRecord], result_closed_min: int, index: int = 0) -> dict[str, Any]:
    """A valid, never-duplicated event in a closed minute (the ``index``-th such one)."""
    counts: dict[str, int] = {}
    docs = []
    for r in records:
        try:
            doc = json.loads(r.data)
        except ValueError:
            continue
        if not isinstance(doc, dict) or "event_id" not in doc:
            continue
        counts[doc["event_id"]] = counts.get(doc["event_id"], 0) + 1
        if r.kind == "valid":
            docs.append(doc)
    eligible = [d for d in docs if counts[d["event_id"]] == 1 and minute_of_iso(d["received_at"]) + 1 <= result_closed_min
                and minute_of_iso(d["received_at"]) % 60 >= 2]
    return eligible[index]
