"""A legacy pipeline stand-in for the demo and the tests: what a late, lossy pipeline would have counted
of the same events, written into PostgreSQL, with its own ledger of what it lost and double counted.

It sees each event once (an SDK's re-send is not re-counted), drops ``drop_rate`` of the events of its
peak minutes (the busiest ``1 - peak_quantile`` of minutes: where a struggling pipeline sheds load),
counts ``double_rate`` of the rest twice, and stamps every row ``late_minutes`` after the event
(``counted_at``: it runs behind). Its names are not tally's (``acct-<tenant>``, ``Page Viewed``...):
the configuration it writes maps them back, as a real parallel run must.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streaming.generator import GeneratedRecord

TABLE = "legacy_events"
EVENT_NAMES = {"page_view": "Page Viewed", "click": "Clicked", "form_submit": "Form Submitted",
               "identify": "Identify", "custom": "Custom Event"}
COUNTS_QUERY = f"""select account as tenant, event_name as event_type,
       date_trunc('hour', received_at at time zone 'UTC') as hour, count(*) as count
from {TABLE} where received_at >= %(start)s and received_at < %(end)s group by 1, 2, 3"""
IDS_QUERY = f"""select account as tenant, event_name as event_type,
       date_trunc('hour', received_at at time zone 'UTC') as hour, event_id::text as event_id
from {TABLE} where received_at >= %(start)s and received_at < %(end)s"""


def legacy_tenant(tenant: str) -> str:
    return f"acct-{tenant}"


@dataclass(frozen=True)
class StandInConfig:
    seed: int = 7
    drop_rate: float = 0.05
    peak_quantile: float = 0.8
    double_rate: float = 0.003
    late_minutes: int = 20


@dataclass
class LegacyLedger:
    """What the stand-in did: per event it lost or double counted, its tally cell (tenant, type, epoch hour)."""

    config: dict[str, Any]
    counted: int = 0
    lost: list[dict[str, Any]] = field(default_factory=list)
    double_counted: list[dict[str, Any]] = field(default_factory=list)

    def lost_cells(self) -> Counter[tuple[str, str, int]]:
        return Counter((e["tenant_id"], e["event_type"], e["hour"]) for e in self.lost)

    def doubled_cells(self) -> Counter[tuple[str, str, int]]:
        return Counter((e["tenant_id"], e["event_type"], e["hour"]) for e in self.double_counted)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> LegacyLedger:
        return cls(**json.loads(path.read_text()))


def _events(records: Iterable[GeneratedRecord]) -> list[dict[str, Any]]:
    """The distinct valid events, oldest first (what the legacy collector received)."""
    seen: set[str] = set()
    out = []
    for r in records:
        if r.kind not in ("valid", "late"):
            continue
        doc = json.loads(r.data)
        if doc["event_id"] in seen:
            continue
        seen.add(doc["event_id"])
        out.append(doc)
    out.sort(key=lambda d: d["received_at"])
    return out


def _when(iso: str) -> dt.datetime:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))


def simulate(records: Iterable[GeneratedRecord], config: StandInConfig) -> tuple[list[tuple[Any, ...]], LegacyLedger]:
    """The rows the legacy would hold (event_id, account, event_name, received_at, counted_at) and its ledger."""
    rng = random.Random(config.seed)
    events = _events(records)
    per_minute = Counter(e["received_at"][:16] for e in events)
    volumes = sorted(per_minute.values())
    threshold = volumes[min(len(volumes) - 1, int(len(volumes) * config.peak_quantile))] if volumes else 0
    ledger = LegacyLedger(asdict(config))
    rows: list[tuple[Any, ...]] = []
    late = dt.timedelta(minutes=config.late_minutes)
    for e in events:
        at = _when(e["received_at"])
        cell = {"event_id": e["event_id"], "tenant_id": e["tenant_id"], "event_type": e["event_type"],
                "hour": int(at.timestamp()) // 3600}
        if per_minute[e["received_at"][:16]] >= threshold and rng.random() < config.drop_rate:
            ledger.lost.append(cell)
            continue
        row = (e["event_id"], legacy_tenant(e["tenant_id"]), EVENT_NAMES[e["event_type"]], at, at + late)
        rows.append(row)
        if rng.random() < config.double_rate:
            rows.append(row)
            ledger.double_counted.append(cell)
    ledger.counted = len(rows)
    return rows, ledger


def write_postgres(dsn: str, rows: list[tuple[Any, ...]]) -> None:
    """Create the legacy table (if missing) and append the rows with COPY."""
    import psycopg

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"""create table if not exists {TABLE} (event_id uuid not null, account text not null,
                        event_name text not null, received_at timestamptz not null, counted_at timestamptz not null)""")
        cur.execute(f"create index if not exists {TABLE}_received_at on {TABLE} (received_at)")
        with cur.copy(f"copy {TABLE} (event_id, account, event_name, received_at, counted_at) from stdin") as copy:
            for row in rows:
                copy.write_row(row)


def write_config(path: Path, dsn: str, tenants: Iterable[str], late_minutes: int) -> None:
    """The TALLY_MIGRATION_CONFIG file for this stand-in (the DSN as given: use ${VAR} for a password)."""
    doc = {"legacy": {"postgres": {"dsn": dsn, "query": COUNTS_QUERY, "ids_query": IDS_QUERY}},
           "tenants": {legacy_tenant(t): t for t in sorted(set(tenants))},
           "event_types": {v: k for k, v in EVENT_NAMES.items()},
           "lag_minutes": late_minutes}
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=200))


def run_standin(records: list[GeneratedRecord], dsn: str, out_dir: Path, config: StandInConfig) -> LegacyLedger:
    """Simulate, write into PostgreSQL, save ``legacy_ledger.json`` and ``migration.yaml`` in ``out_dir``."""
    rows, ledger = simulate(records, config)
    write_postgres(dsn, rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger.save(out_dir / "legacy_ledger.json")
    tenants = {json.loads(r.data)["tenant_id"] for r in records if r.kind in ("valid", "late")}
    write_config(out_dir / "migration.yaml", dsn, tenants, config.late_minutes)
    return ledger
