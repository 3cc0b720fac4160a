"""The vocabulary of reconciliation: verdicts, configuration, inputs and results.

Attribution rules (one primary verdict per tenant × event type × minute cell; every finding is kept in
``findings``). Notation, per cell: ``A`` = records the committed manifests say the stream delivered
(duplicates included), ``Ap`` = the part of ``A`` whose archive objects still exist, ``Wr`` = rows in the
warehouse raw table (duplicates included), ``Wd`` = distinct event_ids among them, ``Wm`` = the mart's
de-duplicated count, ``S`` = the Redis counter, ``E`` = the expected de-duplicated count (``Wd``, or the
distinct archive event_ids where the hour was drilled to event level), ``F`` = records the manifests
count as ``forgotten`` (removed by an audited deletion request, or never written for a suppressed
subject): the speed layer counted them, the warehouse cannot hold them.

=====================  ==========================================================================
verdict                rule
=====================  ==========================================================================
pending                the window is not closed (see *Positions*), or the cell is *held*: a record
                       that touches it lies where one compared layer has read and another has not
                       (``pending_reason`` names the lagging layer and by how much)
archive_missing        ``A - Ap > tol``: a manifest lists records whose object is gone
warehouse_missing      ``Wr + F < Ap - tol`` (load lost rows) or ``Wm < E - tol`` (the mart lacks events);
                       the exact event_ids are listed (archive ids not in raw / not in the mart)
warehouse_extra        ``Wr > A + tol`` or ``Wm > E + F + (A - Ap) + tol`` (``F``: a deletion half done)
speed_missing          ``S < E - tol``
speed_extra            ``S > E + F + (A - Ap) + tol`` (Redis may hold what a deleted object held)
upstream_gap           a ``source_seq`` of a (source, tenant) held by no layer, no dead letter and no
                       unread stream record (separate findings, see :mod:`sequences`)
*_rollup_mismatch      an hour or day counter a layer serves (Redis hour/day counters, the warehouse's
                       hour/day marts) differs from the sum of that layer's own minutes (separate
                       findings; closed buckets wholly inside the range only)
ok                     none of the above
=====================  ==========================================================================

Precedence of the primary verdict follows the direction of data flow, so the first layer that lost
something is named: pending > archive_missing > warehouse_missing > warehouse_extra > speed_missing >
speed_extra > ok. ``Wr`` between ``Ap`` and ``A`` is consistent (the warehouse loaded the object before
it was deleted). Events that arrived after their window closed are counted like any other and reported
in the ``late`` column and summary, never as loss.

Positions (how a lagging layer is kept from being blamed, or from making another layer look wrong).
Each stream reader records, per shard, the last sequence number it applied or committed (the speed
consumer's lease checkpoint; the archive's last committed manifest), that record's arrival time and
whether it was at the stream's tip. Reconciliation compares only what every compared layer has had the
chance to see:

1. *Closing.* A layer has read shard ``s`` *as of* time ``t`` when it has processed every record that
   arrived on ``s`` before ``t``: the arrival time of the first record after its position, read from
   the stream, or the time of that read when there is none (a layer at the tip of a quiet or idle
   shard is caught up to the wall clock). A layer's clock is the minimum over shards; a minute window
   is closed when every stream reader's clock has passed its end plus the allowed lateness.
2. *Held cells.* Counters cannot be cut at a position, but the records between two layers' positions
   are still in the stream (within its retention): reconciliation reads them (from the lower of the
   speed and archive positions up to the higher of them and of the Redis applied markers, which bound
   what the counters read may contain) and every cell they touch, and only those, is held: ``pending``,
   with the lagging layer named ("archive behind the speed layer by 41 s"). Records no layer has read
   yet hold their cells too. The warehouse is held where it has not loaded a committed archive object
   (the manifests give each object's cells) and where its marts were not rebuilt since rows were loaded.
   A layer that is ahead is therefore never called ``*_extra``, and one that is behind never
   ``*_missing``. When a range cannot be read whole (trimmed past retention, or longer than the read
   bound), every cell of the range in which the lagging layer holds less than the leading one is held.
3. *Sequences.* The numbers of the records read in (2) count as held; a gap whose bracket contains a
   pending cell of its tenant is pending, so no ``upstream_gap`` is reported for numbers whose
   neighbours a lagging layer has not reached. Late events a lagging layer has not read are not late
   for it yet: they are simply held.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd
import pyarrow as pa

from streaming.warehouse.base import EVENT_COLUMNS as WAREHOUSE_EVENT_COLUMNS


class Verdict(str, enum.Enum):
    OK = "ok"
    PENDING = "pending"
    ARCHIVE_MISSING = "archive_missing"
    WAREHOUSE_MISSING = "warehouse_missing"
    WAREHOUSE_EXTRA = "warehouse_extra"
    SPEED_MISSING = "speed_missing"
    SPEED_EXTRA = "speed_extra"
    UPSTREAM_GAP = "upstream_gap"
    UPSTREAM_DUPLICATE = "upstream_duplicate"
    SPEED_ROLLUP_MISMATCH = "speed_rollup_mismatch"
    WAREHOUSE_ROLLUP_MISMATCH = "warehouse_rollup_mismatch"


#: Primary-verdict order, first wins (data-flow order: the earliest layer that lost something).
PRECEDENCE: tuple[Verdict, ...] = (
    Verdict.PENDING, Verdict.ARCHIVE_MISSING, Verdict.WAREHOUSE_MISSING, Verdict.WAREHOUSE_EXTRA,
    Verdict.SPEED_MISSING, Verdict.SPEED_EXTRA, Verdict.OK,
)

#: Verdicts that mean data was lost or duplicated somewhere (``tally reconcile`` exits non-zero on them).
LOSS_VERDICTS: frozenset[str] = frozenset(v.value for v in (
    Verdict.ARCHIVE_MISSING, Verdict.WAREHOUSE_MISSING, Verdict.WAREHOUSE_EXTRA, Verdict.SPEED_MISSING,
    Verdict.SPEED_EXTRA, Verdict.UPSTREAM_GAP, Verdict.UPSTREAM_DUPLICATE, Verdict.SPEED_ROLLUP_MISMATCH,
    Verdict.WAREHOUSE_ROLLUP_MISMATCH,
))

Table = pd.DataFrame | pa.Table

#: Columns of each layer's count table (minute = epoch minute of ``received_at``).
ARCHIVE_COLUMNS = ("tenant_id", "event_type", "minute", "n", "n_present", "forgotten")
WAREHOUSE_COLUMNS = ("tenant_id", "event_type", "minute", "rows", "distinct_ids", "mart", "late")
SPEED_COLUMNS = ("tenant_id", "event_type", "minute", "n")
#: Columns of the served roll-ups (layer speed|warehouse, grain hour|day, bucket = epoch hour|day).
ROLLUP_COLUMNS = ("layer", "grain", "tenant_id", "event_type", "bucket", "n")
#: Columns of the held cells: (cell, why), a cell may be held for several reasons.
HELD_CELL_COLUMNS = ("tenant_id", "event_type", "minute", "reason")
#: Columns of event-level tables (archive lines, warehouse rows) used for drill-down and sequences.
EVENT_COLUMNS = WAREHOUSE_EVENT_COLUMNS


@dataclass(frozen=True)
class Tolerance:
    """A difference ``d`` is tolerated when ``|d| <= max(absolute, relative * expected)``. Exact by default."""

    absolute: int = 0
    relative: float = 0.0


@dataclass(frozen=True)
class Watermarks:
    """Per layer, the time (epoch seconds) up to which it has read the stream: every record that arrived
    before it has been processed (see *Positions* above; the warehouse's is the archive's, its own lag is
    held cell by cell). ``None`` = the layer has read nothing that can be placed."""

    archive: float | None
    warehouse: float | None
    speed: float | None

    def closed_before(self, lateness_s: int) -> float:
        """Windows ending at or before this epoch second are closed in every layer."""
        marks = [self.archive, self.warehouse, self.speed]
        if any(m is None for m in marks):
            return float("-inf")
        return min(m for m in marks if m is not None) - lateness_s

    def open_reason(self, lateness_s: int) -> str:
        """Why windows after :meth:`closed_before` are pending: the slowest layer and how far it has read."""
        marks = {"archive": self.archive, "warehouse": self.warehouse, "speed layer": self.speed}
        unknown = [name for name, mark in marks.items() if mark is None]
        if unknown:
            return f"window not closed: the {' and the '.join(unknown)} has read nothing of the stream yet"
        name, mark = min(((n, m) for n, m in marks.items() if m is not None), key=lambda nm: nm[1])
        when = _utc(mark)
        return f"window not closed: the {name} has read the stream up to {when} (allowed lateness {lateness_s} s)"


def _utc(epoch_s: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch_s, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class EventIds(Protocol):
    """Event-level reads for the hours whose archive and warehouse counts differ (drill-down)."""

    def archive_events(self, hours: list[int]) -> Table:
        """Distinct events (EVENT_COLUMNS) in the existing archive objects of these epoch hours."""

    def warehouse_events(self, hours: list[int], table: str) -> Table:
        """Distinct events (EVENT_COLUMNS) of these epoch hours in the warehouse ``raw`` or ``mart`` table."""


@dataclass
class Inputs:
    """Per-layer count tables at minute grain, the watermarks, and optional event-level sources."""

    archive: Table
    warehouse: Table
    speed: Table
    watermarks: Watermarks
    event_ids: EventIds | None = None
    sequences: Table | None = None  # EVENT_COLUMNS rows from the warehouse raw table
    rollups: Table | None = None  # ROLLUP_COLUMNS: the hour and day counters each layer serves
    #: The (layer, grain) pairs a layer serves at all (a mart dbt never built serves nothing); None = every
    #: pair that has a row in ``rollups``.
    rollup_grains: set[tuple[str, str]] | None = None
    held: Table | None = None  # HELD_CELL_COLUMNS: cells a lagging layer has not reached (see Positions)
    numbers: Table | None = None  # sequences.HELD_COLUMNS: numbers held by dead letters and unread records
    #: Layers ("speed layer", "archive") whose unread records could not all be read, with why: every
    #: cell where such a layer holds less than the others is held (see Positions).
    unbounded: dict[str, str] = field(default_factory=dict)
    start_minute: int | None = None
    end_minute: int | None = None  # exclusive


@dataclass(frozen=True)
class Config:
    lateness_s: int = 300
    tolerance: Tolerance = Tolerance()
    max_listed_ids: int = 10_000


@dataclass
class Result:
    """What reconciliation found. ``cells`` holds only minutes of hours that differ or are open."""

    cells: pd.DataFrame
    hours: pd.DataFrame
    days: pd.DataFrame
    event_ids: pd.DataFrame
    sequences: pd.DataFrame
    late: pd.DataFrame
    rollups: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary: dict[str, int] = field(default_factory=dict)
    closed_before: float = float("-inf")

    @property
    def unexplained_loss(self) -> bool:
        """True if any cell or sequence finding is a loss or duplicate verdict."""
        return any(self.summary.get(v, 0) for v in LOSS_VERDICTS)

    def findings(self) -> pd.DataFrame:
        """Every cell whose verdict is not ok (pending included); sequence and roll-up findings are in
        :attr:`sequences` and :attr:`rollups`."""
        cells = self.cells[self.cells["verdict"] != Verdict.OK.value]
        return cells
