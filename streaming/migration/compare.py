"""The parallel run's pure core: tally's counts and its own reconciliation verdicts against the legacy
pipeline's counts, per tenant x event type x hour; days; the cutover verdict.

Per cell (``tally`` = the warehouse mart's de-duplicated count, ``legacy`` = the legacy source's count,
``tol`` = ``tolerance * tally``):

=============== ========================================================================================
verdict         rule
=============== ========================================================================================
pending         tally's reconciliation holds the cell (window open, a layer behind), or the hour is within
                the legacy pipeline's lag (``lag_minutes``): nothing is judged yet
tally_loss      tally's own layers do not reconcile for the cell (``archive_missing``, ``warehouse_*``,
                ``speed_*``): whatever the legacy says, the deviation is **tally's** (the layer is named)
ok              ``|legacy - tally| <= tol``
legacy_missing  ``legacy < tally - tol`` and tally's layers reconcile: the legacy pipeline lost events
                (with ids: the exact event_ids tally has and the legacy lacks)
legacy_extra    ``legacy > tally + tol`` and tally's layers reconcile: the legacy counted more
=============== ========================================================================================

A deviation is *explained as legacy loss* when tally's layers reconcile for its cell and, for
``legacy_extra``, the legacy's event ids show the surplus is events it counted twice (every id it has is
one tally has too). Without ids a surplus cannot be explained: tally may have missed events before its
collector, and only ids could say which.

A day is *good* when it has events, no pending cell, no ``tally_loss`` and every deviation explained.
The cutover is ``ready`` once the last ``ready_days`` days are all good.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from streaming.reconcile.model import LOSS_VERDICTS

CELL_KEY = ["tenant_id", "event_type", "hour"]
#: Columns of tally's side: the reconciliation's hours (streaming.reconcile.model.Result.hours).
TALLY_COLUMNS = ["tenant_id", "event_type", "hour", "warehouse_mart", "verdict"]
CELL_COLUMNS = ["tenant_id", "event_type", "hour", "day", "tally", "legacy", "deviation", "tally_verdict",
                "verdict", "explained", "why", "missing_ids", "duplicate_ids", "unknown_ids"]


@dataclass(frozen=True)
class Evidence:
    """Event ids per cell: what tally has and the legacy lacks, ids the legacy counted twice, ids only it has."""

    missing: dict[tuple[str, str, int], list[str]] = field(default_factory=dict)
    duplicated: dict[tuple[str, str, int], list[str]] = field(default_factory=dict)
    unknown: dict[tuple[str, str, int], list[str]] = field(default_factory=dict)
    available: bool = False


def evidence_from(tally_ids: pd.DataFrame, legacy_ids: pd.DataFrame) -> Evidence:
    """Compare the two sides' event ids (``tenant_id, event_type, hour, event_id``; the legacy side has a row
    per counted event, so a double count is a repeated id)."""
    missing: dict[tuple[str, str, int], list[str]] = {}
    duplicated: dict[tuple[str, str, int], list[str]] = {}
    unknown: dict[tuple[str, str, int], list[str]] = {}
    legacy_by_cell = {k: g["event_id"].tolist() for k, g in legacy_ids.groupby(CELL_KEY)} if len(legacy_ids) else {}
    tally_by_cell = {k: set(g["event_id"]) for k, g in tally_ids.groupby(CELL_KEY)} if len(tally_ids) else {}
    for cell in set(legacy_by_cell) | set(tally_by_cell):
        key = (str(cell[0]), str(cell[1]), int(cell[2]))
        legacy_list = legacy_by_cell.get(cell, [])
        legacy_set = set(legacy_list)
        tally_set = tally_by_cell.get(cell, set())
        if tally_set - legacy_set:
            missing[key] = sorted(tally_set - legacy_set)
        twice = sorted(e for e, n in Counter(legacy_list).items() if n > 1)
        if twice:
            duplicated[key] = twice
        if legacy_set - tally_set:
            unknown[key] = sorted(legacy_set - tally_set)
    return Evidence(missing, duplicated, unknown, available=True)


def compare(tally: pd.DataFrame, legacy: pd.DataFrame, tolerance: float, evidence: Evidence | None = None,
            legacy_pending_from_hour: int | None = None,
            gaps: dict[tuple[str, int], int] | None = None) -> pd.DataFrame:
    """One row per cell either side has (CELL_COLUMNS), verdict and explanation per the rules above.

    ``gaps``: per (tenant, hour), the events tally's reconciliation found lost before its stream
    (``upstream_gap``: numbers no layer holds; their event type is unknown). Where the legacy has more than
    tally in such a tenant and hour, the surplus is tally's loss, not the legacy's double count."""
    evidence = evidence or Evidence()
    gaps = gaps or {}
    t = tally[TALLY_COLUMNS].rename(columns={"warehouse_mart": "tally", "verdict": "tally_verdict"})
    merged = t.merge(legacy[["tenant_id", "event_type", "hour", "n"]].rename(columns={"n": "legacy"}),
                     on=CELL_KEY, how="outer")
    merged["tally"] = merged["tally"].fillna(0).astype("int64")
    merged["legacy"] = merged["legacy"].fillna(0).astype("int64")
    merged["tally_verdict"] = merged["tally_verdict"].fillna("ok").astype(str)
    rows: list[dict[str, Any]] = []
    for r in merged.itertuples(index=False):
        key = (str(r.tenant_id), str(r.event_type), int(r.hour))
        deviation = int(r.legacy) - int(r.tally)
        missing = evidence.missing.get(key, [])
        duplicated = evidence.duplicated.get(key, [])
        unknown = evidence.unknown.get(key, [])
        verdict, explained, why = _judge(r.tally_verdict, int(r.tally), deviation, tolerance, evidence.available,
                                         missing, duplicated, unknown,
                                         legacy_pending_from_hour is not None and int(r.hour) >= legacy_pending_from_hour)
        lost_upstream = gaps.get((key[0], key[2]), 0)
        if lost_upstream and verdict == "legacy_extra":
            verdict, explained, why = ("tally_loss", False, f"tally lost {_n(lost_upstream)} of this tenant and hour "
                                       f"before its stream (its reconciliation says upstream_gap); the legacy has "
                                       f"{_n(deviation)} more: not the legacy's double count")
        judged = verdict in ("legacy_missing", "legacy_extra")
        rows.append({"tenant_id": key[0], "event_type": key[1], "hour": key[2], "day": key[2] // 24,
                     "tally": int(r.tally), "legacy": int(r.legacy), "deviation": deviation,
                     "tally_verdict": r.tally_verdict, "verdict": verdict, "explained": explained, "why": why,
                     "missing_ids": missing if judged else [], "duplicate_ids": duplicated if judged else [],
                     "unknown_ids": unknown if judged else []})
    out = pd.DataFrame(rows, columns=CELL_COLUMNS)
    return out.sort_values(CELL_KEY, ignore_index=True) if len(out) else out


def _judge(tally_verdict: str, tally: int, deviation: int, tolerance: float, with_ids: bool, missing: list[str],
           duplicated: list[str], unknown: list[str], legacy_lagging: bool) -> tuple[str, bool, str]:
    if tally_verdict == "pending":
        return "pending", True, "tally's reconciliation holds this cell (window open or a layer behind)"
    if tally_verdict in LOSS_VERDICTS:
        return ("tally_loss", False, f"tally lost events here: its own reconciliation says {tally_verdict} "
                f"(the legacy differs by {deviation:+d}); not the legacy's loss")
    if legacy_lagging:
        return "pending", True, "within the legacy pipeline's lag (lag_minutes): it may not have counted this hour yet"
    if abs(deviation) <= tolerance * tally:
        return "ok", True, ""
    twice = f" and counted {_n(len(duplicated))} twice" if duplicated else ""
    if deviation < 0:
        if with_ids:
            return ("legacy_missing", True, f"the legacy lacks {_n(len(missing))} tally has{twice}; tally's layers "
                    "reconcile")
        return "legacy_missing", True, f"the legacy has {_n(-deviation)} fewer; tally's layers reconcile"
    if not with_ids:
        return ("legacy_extra", False, f"the legacy counts {_n(deviation)} more than tally; without its event "
                "ids tally cannot show they are double counts")
    if unknown:
        return ("legacy_extra", False, f"the legacy has {_n(len(unknown))} tally never received (lost before "
                "tally's collector?)")
    lacks = f" (and lacks {_n(len(missing))} tally has)" if missing else ""
    return "legacy_extra", True, f"the legacy counted {_n(len(duplicated))} twice (repeated event_ids){lacks}"


def _n(count: int) -> str:
    return f"{count} event{'s' if count != 1 else ''}"


@dataclass(frozen=True)
class DayVerdict:
    day: int
    good: bool
    reason: str


def day_verdicts(cells: pd.DataFrame, days: list[int],
                 gaps: dict[tuple[str, int], int] | None = None) -> list[DayVerdict]:
    """Per day (epoch day, in ``days`` order): good, or the first reason it is not (``gaps``: see compare)."""
    out = []
    for day in days:
        gapped = sorted({t for (t, h) in (gaps or {}) if h // 24 == day})
        if gapped:
            out.append(DayVerdict(day, False, f"tally lost events before its stream (upstream_gap; tenants "
                                  f"{', '.join(gapped)})"))
            continue
        group = cells[cells["day"] == day] if len(cells) else cells
        if not len(group) or (group["tally"].sum() == 0 and group["legacy"].sum() == 0):
            out.append(DayVerdict(day, False, "no events on either side"))
            continue
        lost = group[group["verdict"] == "tally_loss"]
        if len(lost):
            layers = ", ".join(sorted(set(lost["tally_verdict"])))
            out.append(DayVerdict(day, False, f"tally lost events in {len(lost)} cells ({layers}; tenants "
                                  f"{', '.join(sorted(set(lost['tenant_id'])))})"))
            continue
        pending = group[group["verdict"] == "pending"]
        if len(pending):
            out.append(DayVerdict(day, False, f"{len(pending)} cells are still pending"))
            continue
        unexplained = group[~group["explained"].astype(bool)]
        if len(unexplained):
            out.append(DayVerdict(day, False, f"{len(unexplained)} deviations are not explained as legacy loss "
                                  f"({unexplained.iloc[0]['why']})"))
            continue
        out.append(DayVerdict(day, True, "tally's layers reconcile; every deviation is the legacy's"))
    return out


@dataclass(frozen=True)
class Cutover:
    ready: bool
    consecutive_good_days: int
    required_days: int
    reason: str


def cutover(verdicts: list[DayVerdict], required_days: int) -> Cutover:
    """Ready when the last ``required_days`` days are good (``verdicts`` oldest first)."""
    streak = 0
    for v in reversed(verdicts):
        if not v.good:
            break
        streak += 1
    if streak >= required_days:
        return Cutover(True, streak, required_days, f"the last {streak} days reconcile and every deviation is the "
                       "legacy's")
    bad = next((v for v in reversed(verdicts) if not v.good), None)
    if bad is None:
        reason = f"only {streak} of the {required_days} days needed (TALLY_MIGRATION_READY_DAYS) are in the range"
    else:
        from streaming.migration.report import day_label

        reason = (f"{streak} good days in a row, {required_days} needed (TALLY_MIGRATION_READY_DAYS); "
                  f"{day_label(bad.day)}: {bad.reason}")
    return Cutover(False, streak, required_days, reason)


def tenant_days(cells: pd.DataFrame) -> pd.DataFrame:
    """Per day and tenant: tally's and the legacy's totals and the deviation (absolute and relative)."""
    if not len(cells):
        return pd.DataFrame(columns=["day", "tenant_id", "tally", "legacy", "deviation", "deviation_rel",
                                     "legacy_missing", "legacy_extra", "tally_loss"])
    g = cells.groupby(["day", "tenant_id"], as_index=False).agg(tally=("tally", "sum"), legacy=("legacy", "sum"))
    for verdict in ("legacy_missing", "legacy_extra", "tally_loss"):
        counts = cells[cells["verdict"] == verdict].groupby(["day", "tenant_id"]).size().rename(verdict)
        g = g.merge(counts, on=["day", "tenant_id"], how="left")
        g[verdict] = g[verdict].fillna(0).astype("int64")
    g["deviation"] = g["legacy"] - g["tally"]
    g["deviation_rel"] = (g["deviation"] / g["tally"].where(g["tally"] > 0)).fillna(0.0).round(6)
    return g[["day", "tenant_id", "tally", "legacy", "deviation", "deviation_rel", "legacy_missing",
              "legacy_extra", "tally_loss"]]
