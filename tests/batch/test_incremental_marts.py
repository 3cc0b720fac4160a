"""The incremental models equal a full rebuild, row for row, after the kinds of change that reach an
already-built warehouse: events loaded late into hours already built (inside the lookback and far
before it), an identify arriving late that re-attributes a visitor's earlier anonymous events (to a
first user, and away from a user it was stitched to), a retried copy of an event, a new hour, and an
archive hour loaded again. Real DuckDB, the real dbt CLI (the build Dagster runs: data tests included).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest

from assets.dbt.assets import PRODUCTION_BUILD_ARGS
from streaming.warehouse.duckdb_load import ensure_raw_tables

pytestmark = [pytest.mark.integration, pytest.mark.dbt]

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
DAY = dt.datetime(2026, 4, 2, tzinfo=dt.timezone.utc)
MODEL_SCHEMAS = ("staging", "intermediate", "marts")


class RawTable:
    """raw.events rows written the way the loader writes them (fields as text, where they came from)."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.seq = 0
        with duckdb.connect(str(db)) as conn:
            ensure_raw_tables(conn)

    def row(self, tenant: str, anon: str, event_type: str, at: dt.datetime, *, user: str | None = None,
            props: dict[str, str] | None = None, event_id: str | None = None) -> tuple[Any, ...]:
        self.seq += 1
        received = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return (event_id or str(uuid.uuid4()), tenant, event_type, anon, user, received, received, "collector-1",
                self.seq, 1, json.dumps(props or {}), "shardId-000000000000", str(self.seq), anon,
                at.replace(tzinfo=None), f"raw/{at:%H}", at.replace(minute=0, second=0, tzinfo=None))

    def retried(self, row: tuple[Any, ...], later: dt.timedelta) -> tuple[Any, ...]:
        """The same event delivered again: a new stream position, a later arrival."""
        self.seq += 1
        return (*row[:12], str(self.seq), row[13], row[14] + later, *row[15:])

    def load(self, rows: list[tuple[Any, ...]], loaded_at: dt.datetime, replace_hour: dt.datetime | None = None) -> None:
        with duckdb.connect(str(self.db)) as conn:
            if replace_hour is not None:
                conn.execute("delete from raw.events where _archive_hour = ?", [replace_hour.replace(tzinfo=None)])
            conn.executemany("insert into raw.events values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             [(*r, loaded_at.replace(tzinfo=None)) for r in rows])

    def hour_rows(self, hour: dt.datetime) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.db), read_only=True) as conn:
            return [tuple(r[:-1]) for r in conn.execute(
                "select * from raw.events where _archive_hour = ? order by _sequence_number",
                [hour.replace(tzinfo=None)]).fetchall()]


def _dbt(args: list[str], db: Path, target: Path) -> str:
    env = {**os.environ, "TALLY_DUCKDB_PATH": str(db), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    proc = subprocess.run([str(Path(sys.executable).parent / "dbt"), *args, "--profiles-dir", ".",
                           "--target", "local", "--target-path", str(target), "--log-path", str(target / "logs")],
                          cwd=DBT_DIR, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return proc.stdout


def _tables(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every model table, its rows sorted (NULLs and JSON compared as text)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with duckdb.connect(str(db), read_only=True) as conn:
        names = conn.execute("select schema_name, table_name from duckdb_tables() where schema_name in "
                             f"({', '.join('?' * len(MODEL_SCHEMAS))}) order by 1, 2", list(MODEL_SCHEMAS)).fetchall()
        for schema, table in names:
            rows = conn.execute(f'select * from "{schema}"."{table}"').fetchall()
            out[f"{schema}.{table}"] = sorted(rows, key=lambda r: tuple(str(v) for v in r))
    return out


def _assert_equal_to_full_rebuild(db: Path, target: Path, tmp_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    incremental = _tables(db)
    rebuilt_db = tmp_path / "rebuilt.duckdb"
    shutil.copy(db, rebuilt_db)
    _dbt(["run", "--full-refresh"], rebuilt_db, tmp_path / "target-rebuilt")
    rebuilt = _tables(rebuilt_db)
    assert incremental.keys() == rebuilt.keys()
    for name in rebuilt:
        assert incremental[name] == rebuilt[name], f"{name}: incremental build differs from a full rebuild"
    return incremental


def test_incremental_marts_equal_a_full_rebuild(tmp_path: Path) -> None:
    db = tmp_path / "warehouse.duckdb"
    target = tmp_path / "target"
    raw = RawTable(db)
    h = [DAY + dt.timedelta(hours=i) for i in range(4)]  # h[0..3]: 00:00 .. 03:00
    minute = dt.timedelta(minutes=1)

    # Load 1 (hours 0-1): anonymous visitors, one identified (a2 -> u1 at 01:30), a retried event, segments.
    first = [
        raw.row("t1", "a1", "page_view", h[0] + 5 * minute, props={"path": "/pricing"}),
        raw.row("t1", "a1", "page_view", h[0] + 6 * minute, props={"path": "/pricing"}),
        raw.row("t1", "a1", "click", h[1] + 10 * minute, props={"element": "cta-start-trial"}),
        raw.row("t1", "a2", "page_view", h[0] + 20 * minute, props={"path": "/"}),
        raw.row("t1", "a2", "identify", h[1] + 30 * minute, user="u1"),
        raw.row("t1", "a2", "page_view", h[1] + 31 * minute, user="u1", props={"path": "/pricing"}),
        raw.row("t2", "b1", "form_submit", h[1] + 1 * minute),
        raw.row("t2", "b1", "custom", h[1] + 2 * minute, props={"k": "v"}),
    ]
    first += [raw.row("t1", "a3", "page_view", h[1] + i * minute, props={"path": f"/p{i}"}) for i in range(6)]
    first.append(raw.retried(first[3], dt.timedelta(seconds=2)))
    raw.load(first, loaded_at=h[2])
    _dbt(["build", *PRODUCTION_BUILD_ARGS], db, target)

    # Load 2: a new hour; late events in hours already built (hour 0, and the day before: both before the
    # lookback, so only the loaded_at watermark finds them);
    # a late identify of a1 (-> u2) before its anonymous events; a late identify of a2 -> u3 that is
    # earlier than its identify as u1 (u1 loses the visitor); a retried copy of a built event.
    late_identify_a1 = raw.row("t1", "a1", "identify", h[0] + 1 * minute, user="u2")
    second = [
        raw.row("t1", "a1", "page_view", h[2] + 1 * minute, props={"path": "/pricing"}),
        raw.row("t1", "a4", "page_view", h[2] + 2 * minute, props={"path": "/"}),
        raw.row("t2", "b2", "click", h[2] + 3 * minute, props={"element": "cta-start-trial"}),
        raw.row("t1", "a5", "click", h[0] + 7 * minute, props={"element": "nav"}),
        raw.row("t3", "c1", "page_view", DAY - dt.timedelta(hours=20), props={"path": "/old"}),
        late_identify_a1,
        raw.row("t1", "a2", "identify", h[0] + 15 * minute, user="u3"),
        raw.retried(first[6], dt.timedelta(minutes=30)),
    ]
    raw.load(second, loaded_at=h[3])
    out = _dbt(["build", *PRODUCTION_BUILD_ARGS], db, target)
    assert "incremental model marts.fct_event_counts_minute" in out

    tables = _assert_equal_to_full_rebuild(db, target, tmp_path)
    users = {(r[1], r[2]): r for r in tables["marts.dim_users"]}
    assert users[("t1", "u2")][4] == 1 and users[("t1", "u2")][7] == 5  # a1's events, the earlier ones too
    assert ("t1", "u3") in users and users[("t1", "u1")][4] == 0  # a2 moved from u1 to u3

    # Load 3: hour 0 loaded again (the same objects, a new load time), then nothing new at all.
    raw.load(raw.hour_rows(h[0]), loaded_at=h[3] + minute, replace_hour=h[0])
    _dbt(["build", *PRODUCTION_BUILD_ARGS], db, target)
    tables = _assert_equal_to_full_rebuild(db, target, tmp_path)
    _dbt(["build", *PRODUCTION_BUILD_ARGS], db, target)
    assert _tables(db) == tables
