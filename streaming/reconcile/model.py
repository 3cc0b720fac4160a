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
pending                the window is not closed: min(layer watermarks) < minute end + lateness
archive_missing        ``A - Ap > tol``: a manifest lists records whose object is gone
warehouse_missing      ``Wr + F < Ap - tol`` (load lost rows) or ``Wm < E - tol`` (the mart lacks events);
                       the exact event_ids are listed (archive ids not in raw / not in the mart)
warehouse_extra        ``Wr > A + tol`` or ``Wm > E + F + (A - Ap) + tol`` (``F``: a deletion half done)
speed_missing          ``S < E - tol``
speed_extra            ``S > E + F + (A - Ap) + tol`` (Redis may hold what a deleted object held)
upstream_gap           a ``source_seq`` held by no layer (separate findings, see :mod:`sequences`)
*_rollup_mismatch      an hour or day counter a layer serves (Redis ``cnt:h``/``cnt:d``, the warehouse's
                       hour/day marts) differs from the sum of that layer's own minutes (separate
                       findings; closed buckets wholly inside the range only)
ok                     none of the above
=====================  ==========================================================================

Precedence of the primary verdict follows the direction of data flow, so the first layer that lost
something is named: pending > archive_missing > warehouse_missing > warehouse_extra > speed_missing >
speed_extra > ok. ``Wr`` between ``Ap`` and ``A`` is consistent (the warehouse loaded the object before
it was deleted). Events that arrived after their window closed are counted like any other and reported
in the ``late`` column and summary, never as loss.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd
import pyarrow as pa


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
#: Columns of event-level tables (archive lines, warehouse rows) used for drill-down and sequences.
EVENT_COLUMNS = ("event_id", "tenant_id", "event_type", "minute", "source_id", "source_seq")


@dataclass(frozen=True)
class Tolerance:
    """A difference ``d`` is tolerated when ``|d| <= max(absolute, relative * expected)``. Exact by default."""

    absolute: int = 0
    relative: float = 0.0


@dataclass(frozen=True)
class Watermarks:
    """Event-time watermarks (epoch seconds of ``received_at``) per layer; ``None`` = the layer has nothing."""

    archive: float | None
    warehouse: float | None
    speed: float | None

    def closed_before(self, lateness_s: int) -> float:
        """Windows ending at or before this epoch second are closed in every layer."""
        marks = [self.archive, self.warehouse, self.speed]
        if any(m is None for m in marks):
            return float("-inf")
        return min(m for m in marks if m is not None) - lateness_s


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
