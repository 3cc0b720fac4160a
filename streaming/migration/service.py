"""Build the parallel-run report for a range of days: tally's own reconciliation, the legacy source, the
event-id evidence, the comparison and the cutover verdict (what `tally migrate report` and the Dagster
asset call)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pandas as pd

from streaming.migration.compare import (
    CELL_KEY, Evidence, compare, cutover, day_verdicts, evidence_from,
)
from streaming.migration.legacy import ID_COLUMNS, LegacySource
from streaming.migration.report import MigrationReport
from streaming.reconcile.service import Layers, run_reconcile
from streaming.settings import Settings

UTC = dt.timezone.utc


def day_range(last_day: dt.date, days: int) -> tuple[dt.datetime, dt.datetime]:
    """``[00:00 of the first day, 00:00 after last_day)`` for ``days`` days ending with ``last_day``."""
    end = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), tzinfo=UTC)
    return end - dt.timedelta(days=days), end


def _evidence(layers: Layers, source: LegacySource, cells: pd.DataFrame, start: dt.datetime,
              end: dt.datetime) -> Evidence:
    """Event ids for the hours where the two sides differ (only those are read from the warehouse)."""
    differing = cells[(cells["tally"] != cells["legacy"]) & (cells["verdict"] != "pending")] if len(cells) else cells
    if not source.has_ids:
        return Evidence()
    hours = sorted({int(h) for h in differing["hour"]})
    if not hours:
        return Evidence(available=True)
    events = layers.warehouse.events(hours, "mart")
    tally_ids = pd.DataFrame({"tenant_id": events["tenant_id"].astype(str), "event_type": events["event_type"].astype(str),
                              "hour": (events["minute"].astype("int64") // 60),
                              "event_id": events["event_id"].astype(str).str.lower()})[ID_COLUMNS]
    legacy_ids = source.ids(start, end)
    legacy_ids = legacy_ids[legacy_ids["hour"].isin(hours)]
    keys = differing[CELL_KEY].drop_duplicates()
    return evidence_from(tally_ids.merge(keys, on=CELL_KEY), legacy_ids.merge(keys, on=CELL_KEY))


def build_report(settings: Settings, layers: Layers, source: LegacySource, last_day: dt.date, days: int,
                 now: float | None = None, legacy: pd.DataFrame | None = None) -> MigrationReport:
    """``legacy``: the source's counts for the range when already read (the CLI reads them first, so a wrong
    configuration is said before any tally service is asked)."""
    start, end = day_range(last_day, days)
    legacy = source.counts(start, end) if legacy is None else legacy
    run = run_reconcile(settings, layers, start, end, who="tally migrate", write=False)
    tally = run.result.hours
    gaps = upstream_gaps(run.result.sequences)
    lag = source.config.lag_minutes
    pending_from = int(((now or time.time()) - lag * 60) // 3600) if lag else None
    # First without ids (which cells differ), then with the evidence for exactly those cells.
    first = compare(tally, legacy, settings.migration_tolerance, legacy_pending_from_hour=pending_from, gaps=gaps)
    evidence = _evidence(layers, source, first, start, end)
    cells = compare(tally, legacy, settings.migration_tolerance, evidence, legacy_pending_from_hour=pending_from,
                    gaps=gaps) if evidence.available else first
    day_numbers = list(range(int(start.timestamp()) // 86_400, int(end.timestamp()) // 86_400))
    verdicts = day_verdicts(cells, day_numbers, gaps)
    return MigrationReport(cells, verdicts, cutover(verdicts, settings.migration_ready_days),
                           settings.migration_tolerance, source.has_ids, dt.datetime.now(UTC))


def upstream_gaps(sequences: pd.DataFrame) -> dict[tuple[str, int], int]:
    """Per (tenant, hour), the events tally's reconciliation says were lost before its stream."""
    out: dict[tuple[str, int], int] = {}
    if not len(sequences) or "verdict" not in sequences:
        return out
    for r in sequences[sequences["verdict"] == "upstream_gap"].itertuples():
        if pd.isna(r.min_minute) or pd.isna(r.max_minute):
            continue
        for hour in range(int(r.min_minute) // 60, int(r.max_minute) // 60 + 1):
            out[(str(r.tenant_id), hour)] = out.get((str(r.tenant_id), hour), 0) + int(r.missing)
    return out


def legacy_source(settings: Settings, s3: Any = None) -> LegacySource:
    from streaming.migration.config import config_from

    return LegacySource(config_from(settings), s3)
