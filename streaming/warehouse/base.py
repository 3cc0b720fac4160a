"""The warehouse seam: what tally asks of a warehouse, whichever it is.

:class:`Warehouse` is the one interface the batch layer, reconciliation and deletions use; the two
adapters (:class:`streaming.warehouse.duckdb.DuckDBWarehouse` locally,
:class:`streaming.warehouse.snowflake.SnowflakeWarehouse` in production) are the only code that knows a
SQL dialect. ``tests/warehouse/test_adapters.py`` runs one suite against both, so a behaviour
difference between them is a failing test.

Every time is UTC; an hour is an aware ``datetime`` at the start of the hour; a minute is an epoch
minute of ``received_at``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pandas as pd

#: Columns of event-level tables (archive lines, warehouse rows) used for drill-down and sequences.
EVENT_COLUMNS = ("event_id", "tenant_id", "event_type", "minute", "source_id", "source_seq")

#: (tenant, event type, minute as ``YYYY-MM-DDTHH:MM:00Z``, rows): the raw tables in the manifests' terms.
RawCell = tuple[str, str, str, int]
#: (dead-letter reason, rows).
RawDead = tuple[str, int]


@dataclass(frozen=True)
class LoadResult:
    hours: int
    objects: int
    events: int
    dead_letters: int
    manifest_records: int  # what the manifests say the loaded objects hold


def utc_naive(hour: dt.datetime) -> dt.datetime:
    """An aware hour as the naive UTC wall-clock time both warehouses store (timestamp / timestamp_ntz)."""
    return hour.astimezone(dt.timezone.utc).replace(tzinfo=None)


@runtime_checkable
class Warehouse(Protocol):
    """Raw tables, what reconciliation reads, and the dialect a deletion needs."""

    #: ``duckdb`` or ``snowflake``: for logs and asset kinds, never for branching outside an adapter.
    kind: str

    # -- connections ---------------------------------------------------------------------------------
    def connect(self) -> AbstractContextManager[Any]:
        """A DB-API connection (read-write), closed on exit."""
        ...

    def marks(self, n: int) -> str:
        """``n`` bound-parameter markers, comma-separated, in the driver's paramstyle."""
        ...

    # -- the raw tables (loaded from the archive) ----------------------------------------------------
    def ensure_raw_tables(self) -> None: ...

    def load_hours(self, store: Any, hours: Sequence[dt.datetime]) -> LoadResult:
        """Replace ``hours`` in the raw tables with their committed archive objects (one transaction)."""
        ...

    def loaded_hours(self) -> list[dt.datetime]:
        """Every archive hour present in the raw tables."""
        ...

    def raw_counts(self, hours: Sequence[dt.datetime]) -> tuple[list[RawCell], list[RawDead]]:
        """What the raw tables hold for ``hours``, in the manifests' terms (the raw_events check)."""
        ...

    # -- what reconciliation reads -------------------------------------------------------------------
    def counts(self, start_minute: int, end_minute: int, lateness_s: int) -> pd.DataFrame: ...

    def rollup_grains(self) -> set[tuple[str, str]]: ...

    def rollups(self, start_minute: int, end_minute: int) -> pd.DataFrame: ...

    def watermark(self) -> float | None: ...

    def events(self, hours: list[int], table: str) -> pd.DataFrame: ...

    def sequences(self, start_minute: int, end_minute: int) -> pd.DataFrame: ...

    def fingerprint(self) -> tuple[Any, ...]: ...

    def loaded_keys(self, start_minute: int, end_minute: int) -> set[str]: ...

    def unbuilt(self, start_minute: int, end_minute: int) -> pd.DataFrame: ...

    def dead_letter_numbers(self, start_minute: int, end_minute: int) -> pd.DataFrame: ...

    def visitor_counts(self, start_hour: int, end_hour: int) -> pd.DataFrame: ...

    def visitor_ids(self, tenant_id: str, hour: int) -> list[str]: ...

    def page_views(self, start_hour: int, end_hour: int) -> pd.DataFrame: ...

    def segment_hits(self, event_type: str, where: Mapping[str, str], start_ms: int, end_ms: int) -> pd.DataFrame: ...

    # -- erasure -------------------------------------------------------------------------------------
    def erase_landed(self, cur: Any, tenant: str, user_id: str, anonymous_ids: Sequence[str]) -> dict[str, int]:
        """Delete the subject's rows from tables only this warehouse keeps (inside the caller's
        transaction, on its cursor): rows deleted per table."""
        ...


def dml_rowcount(cur: Any) -> int:
    """Rows a DELETE removed: DuckDB and Snowflake return them as a result row, other DB-API drivers in
    ``rowcount``."""
    try:
        row = cur.fetchone()
    except Exception:  # noqa: BLE001 - drivers that return no result set for DML
        row = None
    if row is not None and len(row) == 1 and isinstance(row[0], int):
        return int(row[0])
    return max(int(getattr(cur, "rowcount", 0) or 0), 0)
