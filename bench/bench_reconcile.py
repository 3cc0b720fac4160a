"""Reconciling one day at minute grain: 500 tenants × 20 event types × 1,440 minutes = 14.4M cells.

The three layers' count tables are built in memory (Arrow with dictionary-encoded keys, not timed); one
event is lost from the speed layer in one random cell (and, in a second run, nothing is lost). A third
run times the lossy day with plain string keys. The timed part is
:func:`streaming.reconcile.engine.reconcile` end to end: hour totals + checksums over all three layers,
minute drill-down of the hours that differ, verdicts, hour and day roll-ups.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from streaming.reconcile.engine import reconcile
from streaming.reconcile.model import Config, Inputs, Watermarks

TENANTS = 500
TYPES = 20
MINUTES = 1_440
DAY_START_MINUTE = 29_462_400  # 2026-01-07T00:00Z as an epoch minute
SEED = 11


def day_tables(rng: np.random.Generator) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(archive, warehouse, speed) count tables where every layer agrees (duplicates in archive/raw only)."""
    cells = TENANTS * TYPES * MINUTES
    tenant_names = pa.array([f"tenant-{i:03d}" for i in range(TENANTS)])
    type_names = pa.array([f"event_{j:02d}" for j in range(TYPES)])
    tenant_idx = np.repeat(np.arange(TENANTS, dtype=np.int32), TYPES * MINUTES)
    type_idx = np.tile(np.repeat(np.arange(TYPES, dtype=np.int32), MINUTES), TENANTS)
    minute = np.tile(np.arange(MINUTES, dtype=np.int64), TENANTS * TYPES) + DAY_START_MINUTE
    # Keys dictionary-encoded, as a columnar reader hands low-cardinality strings over (Arrow/pandas
    # categoricals); :func:`plain` turns them into plain strings for the second figure.
    tenant = pa.DictionaryArray.from_arrays(pa.array(tenant_idx), tenant_names)
    etype = pa.DictionaryArray.from_arrays(pa.array(type_idx), type_names)
    distinct = rng.integers(1, 40, size=cells, dtype=np.int64)
    dups = (rng.random(cells) < 0.02).astype(np.int64)
    delivered = distinct + dups
    keys = {"tenant_id": tenant, "event_type": etype, "minute": pa.array(minute)}
    archive = pa.table({**keys, "n": delivered, "n_present": delivered})
    warehouse = pa.table({**keys, "rows": delivered, "distinct_ids": distinct, "mart": distinct})
    speed = pa.table({**keys, "n": distinct})
    return archive, warehouse, speed


def plain(table: pa.Table) -> pa.Table:
    """The same table with plain string keys."""
    for key in ("tenant_id", "event_type"):
        i = table.schema.get_field_index(key)
        table = table.set_column(i, key, table.column(key).cast(pa.string()))
    return table


def _timed(inputs: Inputs) -> tuple[float, object]:
    started = time.perf_counter()
    result = reconcile(inputs, Config(lateness_s=300))
    return time.perf_counter() - started, result


def run() -> dict[str, float]:
    rng = np.random.default_rng(SEED)
    archive, warehouse, speed = day_tables(rng)
    end = (DAY_START_MINUTE + MINUTES) * 60
    marks = Watermarks(archive=end + 600, warehouse=end + 600, speed=end + 600)
    agree_s, agree = _timed(Inputs(archive, warehouse, speed, marks))
    assert agree.summary["ok"] == archive.num_rows, agree.summary  # type: ignore[attr-defined]

    lost_at = int(rng.integers(0, archive.num_rows))
    n = speed.column("n").to_numpy().copy()
    n[lost_at] -= 1
    lossy = speed.set_column(speed.schema.get_field_index("n"), "n", pa.array(n))
    lost_s, lost = _timed(Inputs(archive, warehouse, lossy, marks))
    findings = lost.findings()  # type: ignore[attr-defined]
    expected = (speed.column("tenant_id")[lost_at].as_py(), speed.column("event_type")[lost_at].as_py(),
                speed.column("minute")[lost_at].as_py())
    found = (len(findings) == 1 and findings.iloc[0]["verdict"] == "speed_missing"
             and tuple(findings.iloc[0][["tenant_id", "event_type", "minute"]]) == expected)
    plain_s, plain_result = _timed(Inputs(plain(archive), plain(warehouse), plain(lossy), marks))
    assert plain_result.findings().equals(findings)  # type: ignore[attr-defined]
    return {
        "reconcile_day_plain_string_keys_s": round(plain_s, 2),
        "reconcile_day_s": round(lost_s, 2),
        "reconcile_day_all_agree_s": round(agree_s, 2),
        "reconcile_found_lost_event": 1.0 if found else 0.0,
    }
