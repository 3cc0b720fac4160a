"""The DuckDB adapter of :class:`streaming.warehouse.base.Warehouse`: one DuckDB file, the local
warehouse (dbt's ``local`` target writes the same file).

``raw.events`` (rows as delivered) and ``marts.fct_events`` (de-duplicated), counted per tenant × event
type × minute of ``received_at``; loading is :mod:`streaming.warehouse.duckdb_load`.

Every query is parameterised; only the fixed schema and table names below appear in SQL text.
``late`` counts rows that reached their shard after the shard's event time had passed the window's end
plus the allowed lateness (stream order = sequence number order): counted like any event, reported as
late. The warehouse watermark is the older of the newest ``received_at`` in raw and in the mart (a mart
that dbt has not rebuilt yet makes windows pending, not missing).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from streaming.warehouse import duckdb_load
from streaming.warehouse.base import EVENT_COLUMNS, LoadResult, RawCell, RawDead, utc_naive

RAW = "raw.events"
RAW_DEAD = "raw.dead_letters"
MART = "marts.fct_events"
HOUR_MART = "marts.fct_event_counts_hour"
DAY_MART = "marts.fct_event_counts_day"
_TABLES = {"raw": RAW, "mart": MART}
_RAW_MINUTE = "(floor(epoch(received_at::timestamptz) / 60))::bigint"
_MART_MINUTE = "(floor(epoch(received_at) / 60))::bigint"
_MART_HOUR = "(floor(epoch(received_at) / 3600))::bigint"


class DuckDBWarehouse:
    """Reads open the file read-only, one connection per call (or use the ``connection`` given);
    :meth:`connect` opens it read-write for loads and deletions."""

    kind = "duckdb"

    def __init__(self, path: Path | str | None = None, connection: Any | None = None, load_workers: int = 8) -> None:
        if connection is None and path is None:
            raise ValueError("give a DuckDB path or a connection")
        self.path = path
        self._given = connection
        self.load_workers = load_workers

    # -- connections ---------------------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A read-write connection (the given one, left open; or the file's, made and closed here)."""
        if self._given is not None:
            yield self._given
            return
        Path(str(self.path)).parent.mkdir(parents=True, exist_ok=True)
        conn = duckdb.connect(str(self.path))
        try:
            yield conn
        finally:
            conn.close()

    def marks(self, n: int) -> str:
        return ", ".join(["?"] * n)

    # -- the raw tables ------------------------------------------------------------------------------
    def ensure_raw_tables(self) -> None:
        with self.connect() as conn:
            duckdb_load.ensure_raw_tables(conn)

    def load_hours(self, store: Any, hours: Sequence[dt.datetime]) -> LoadResult:
        """Replace ``hours`` in the raw tables with their committed archive objects (one transaction)."""
        with self.connect() as conn:
            return duckdb_load.load_hours(conn, store, hours, workers=self.load_workers)

    def loaded_hours(self) -> list[dt.datetime]:
        """Every archive hour present in the raw tables (UTC)."""
        with self.connect() as conn:
            return sorted(r[0].replace(tzinfo=dt.timezone.utc) for r in
                          conn.execute(f"select distinct _archive_hour from {RAW} union "
                                       f"select distinct _archive_hour from {RAW_DEAD}").fetchall())

    def raw_counts(self, hours: Sequence[dt.datetime]) -> tuple[list[RawCell], list[RawDead]]:
        """What the raw tables hold for ``hours``, in the manifests' terms: (tenant, event type, minute as
        ``YYYY-MM-DDTHH:MM:00Z``, rows) and (dead-letter reason, rows). For the raw_events check."""
        if not hours:
            return [], []
        naive = [utc_naive(h) for h in hours]
        with self.connect() as conn:
            rows = conn.execute(
                "select tenant_id, event_type, strftime(date_trunc('minute', cast(cast(received_at as timestamptz) "
                "at time zone 'UTC' as timestamp)), '%Y-%m-%dT%H:%M:00Z'), count(*) "
                f"from {RAW} where _archive_hour in (select unnest($1::timestamp[])) group by all", [naive]).fetchall()
            dead = conn.execute(
                f"select reason, count(*) from {RAW_DEAD} where _archive_hour in (select unnest($1::timestamp[])) "
                "group by all", [naive]).fetchall()
        return [(t, e, m, int(n)) for t, e, m, n in rows], [(r, int(n)) for r, n in dead]

    # -- erasure -------------------------------------------------------------------------------------
    def erase_landed(self, cur: Any, tenant: str, user_id: str, anonymous_ids: Sequence[str]) -> dict[str, int]:
        """Nothing: DuckDB keeps no copy of the archive lines besides the raw tables."""
        return {}

    # -- what reconciliation reads -------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._given is not None:
            return self._given
        return duckdb.connect(str(self.path), read_only=True)

    def _run(self, sql: str, params: list[Any]) -> pd.DataFrame:
        con = self._connect()
        try:
            con.execute("set TimeZone = 'UTC'")
            return con.execute(sql, params).df()
        finally:
            if self._given is None:
                con.close()

    def _exists(self, qualified: str) -> bool:
        schema, table = qualified.split(".")
        frame = self._run("select count(*) as n from information_schema.tables where table_schema = ? and table_name = ?",
                          [schema, table])
        return bool(frame["n"].iloc[0])

    def counts(self, start_minute: int, end_minute: int, lateness_s: int) -> pd.DataFrame:
        """WAREHOUSE_COLUMNS per cell in ``[start_minute, end_minute)``."""
        parts = []
        if self._exists(RAW):
            parts.append(self._run(f"""
                with ordered as (
                    select tenant_id, event_type, event_id, {_RAW_MINUTE} as minute,
                           max(epoch(received_at::timestamptz)) over (
                               partition by _shard_id order by lpad(_sequence_number, 60, '0')
                               rows between unbounded preceding and 1 preceding) as shard_event_time
                    from {RAW}
                )
                select tenant_id, event_type, minute, count(*) as rows, count(distinct event_id) as distinct_ids,
                       0 as mart,
                       count(distinct event_id) filter (where shard_event_time >= (minute + 1) * 60 + $3) as late
                from ordered where minute >= $1 and minute < $2 group by all
            """, [start_minute, end_minute, lateness_s]))
        if self._exists(MART):
            parts.append(self._run(f"""
                select tenant_id, event_type, {_MART_MINUTE} as minute, 0 as rows, 0 as distinct_ids,
                       count(*) as mart, 0 as late
                from {MART} where {_MART_MINUTE} >= $1 and {_MART_MINUTE} < $2 group by all
            """, [start_minute, end_minute]))
        if not parts:
            return pd.DataFrame(columns=["tenant_id", "event_type", "minute", "rows", "distinct_ids", "mart", "late"])
        both = pd.concat(parts, ignore_index=True)
        return both.groupby(["tenant_id", "event_type", "minute"], as_index=False)[
            ["rows", "distinct_ids", "mart", "late"]].sum()

    def rollup_grains(self) -> set[tuple[str, str]]:
        """The roll-ups the warehouse serves: a count mart dbt has built."""
        return {("warehouse", grain) for grain, table in (("hour", HOUR_MART), ("day", DAY_MART)) if self._exists(table)}

    def rollups(self, start_minute: int, end_minute: int) -> pd.DataFrame:
        """ROLLUP_COLUMNS from the hour and day count marts (buckets starting inside the range)."""
        parts = [pd.DataFrame(columns=["layer", "grain", "tenant_id", "event_type", "bucket", "n"])]
        if self._exists(HOUR_MART):
            parts.append(self._run(f"""
                select 'warehouse' as layer, 'hour' as grain, tenant_id, event_type,
                       (floor(epoch(hour_at) / 3600))::bigint as bucket, event_count::bigint as n
                from {HOUR_MART} where epoch(hour_at) >= $1 * 60 and epoch(hour_at) < $2 * 60
            """, [start_minute, end_minute]))
        if self._exists(DAY_MART):
            parts.append(self._run(f"""
                select 'warehouse' as layer, 'day' as grain, tenant_id, event_type,
                       (floor(epoch(day_at::timestamp) / 86400))::bigint as bucket, event_count::bigint as n
                from {DAY_MART} where epoch(day_at::timestamp) >= $1 * 60 and epoch(day_at::timestamp) < $2 * 60
            """, [start_minute, end_minute]))
        return pd.concat(parts, ignore_index=True)

    def watermark(self) -> float | None:
        if not (self._exists(RAW) and self._exists(MART)):
            return None
        frame = self._run(f"""
            select (select max(epoch(received_at::timestamptz)) from {RAW}) as raw_mark,
                   (select max(epoch(received_at)) from {MART}) as mart_mark
        """, [])
        raw_mark, mart_mark = frame["raw_mark"].iloc[0], frame["mart_mark"].iloc[0]
        if pd.isna(raw_mark) or pd.isna(mart_mark):
            return None
        return float(min(raw_mark, mart_mark))

    def events(self, hours: list[int], table: str) -> pd.DataFrame:
        """Distinct events of these epoch hours in ``raw`` or ``mart`` (EVENT_COLUMNS)."""
        qualified = _TABLES[table]
        if not self._exists(qualified):
            return pd.DataFrame(columns=list(EVENT_COLUMNS))
        minute = _RAW_MINUTE if table == "raw" else _MART_MINUTE
        return self._run(f"""
            select distinct event_id::varchar as event_id, tenant_id, event_type, {minute} as minute,
                   source_id, source_seq::bigint as source_seq
            from {qualified} where {minute} // 60 in (select unnest($1::bigint[]))
        """, [hours])

    def sequences(self, start_minute: int, end_minute: int) -> pd.DataFrame:
        """Every raw row's (event_id, cell, source_id, source_seq) in the range: the sequence evidence."""
        if not self._exists(RAW):
            return pd.DataFrame(columns=list(EVENT_COLUMNS))
        return self._run(f"""
            select event_id, tenant_id, event_type, {_RAW_MINUTE} as minute, source_id, source_seq::bigint as source_seq
            from {RAW} where {_RAW_MINUTE} >= $1 and {_RAW_MINUTE} < $2
        """, [start_minute, end_minute])

    # -- what the warehouse has read of the archive (see streaming.reconcile.positions) ------------------
    def fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever a load or a build commits: reads taken between two equal fingerprints agree."""
        parts: list[Any] = []
        for table, column in ((RAW, "_loaded_at"), (RAW_DEAD, "_loaded_at"), (MART, "loaded_at")):
            if self._exists(table):
                frame = self._run(f"select count(*) as n, max({column})::varchar as m from {table}", [])
                parts += [int(frame["n"].iloc[0]), frame["m"].iloc[0]]
            else:
                parts += [None, None]
        return tuple(parts)

    def loaded_keys(self, start_minute: int, end_minute: int) -> set[str]:
        """Archive object keys the raw tables hold rows of, for the archive hours the range touches."""
        keys: set[str] = set()
        for table in (RAW, RAW_DEAD):
            if self._exists(table):
                frame = self._run(f"""
                    select distinct _archive_key from {table}
                    where _archive_hour >= to_timestamp($1 * 3600)::timestamp
                      and _archive_hour < to_timestamp($2 * 3600)::timestamp
                """, [start_minute // 60, -(-end_minute // 60)])
                keys.update(frame["_archive_key"].dropna())
        return keys

    def unbuilt(self, start_minute: int, end_minute: int) -> pd.DataFrame:
        """Cells of raw rows loaded after the newest row the mart holds: dbt has not built them yet
        (columns tenant_id, event_type, minute, rows, loaded_at)."""
        columns = ["tenant_id", "event_type", "minute", "rows", "loaded_at"]
        if not self._exists(RAW):
            return pd.DataFrame(columns=columns)
        built = f"(select max(loaded_at) from {MART})" if self._exists(MART) else "null::timestamp"
        return self._run(f"""
            select tenant_id, event_type, {_RAW_MINUTE} as minute, count(*) as rows,
                   max(_loaded_at)::varchar as loaded_at
            from {RAW}
            where ({built}) is null or _loaded_at > ({built})
            group by tenant_id, event_type, minute having minute >= $1 and minute < $2
        """, [start_minute, end_minute])

    def dead_letter_numbers(self, start_minute: int, end_minute: int) -> pd.DataFrame:
        """(source_id, tenant_id, source_seq) held by dead letters, for the (source, tenant) sequences the
        raw rows of the range have, within their numbers there: the sequence evidence of rejected records
        (whose hour is their arrival's, not their events')."""
        columns = ["source_id", "tenant_id", "source_seq"]
        if not (self._exists(RAW) and self._exists(RAW_DEAD)):
            return pd.DataFrame(columns=columns)
        return self._run(f"""
            with spans as (
                select source_id, tenant_id, min(source_seq) as lo, max(source_seq) as hi from {RAW}
                where {_RAW_MINUTE} >= $1 and {_RAW_MINUTE} < $2 group by all
            )
            select distinct d.source_id, d.tenant_id, d.source_seq::bigint as source_seq
            from {RAW_DEAD} d join spans s on s.source_id = d.source_id and s.tenant_id = d.tenant_id
            where d.source_seq between s.lo and s.hi
        """, [start_minute, end_minute])

    # -- what the speed layer's other structures are healed from (``streaming/reconcile/heal.py``) ------
    def visitor_counts(self, start_hour: int, end_hour: int) -> pd.DataFrame:
        """(tenant_id, hour, visitors): distinct anonymous ids per tenant × epoch hour in [start, end)."""
        if not self._exists(MART):
            return pd.DataFrame(columns=["tenant_id", "hour", "visitors"])
        return self._run(f"""
            select tenant_id, {_MART_HOUR} as hour, count(distinct anonymous_id) as visitors
            from {MART} where {_MART_HOUR} >= $1 and {_MART_HOUR} < $2 group by all
        """, [start_hour, end_hour])

    def visitor_ids(self, tenant_id: str, hour: int) -> list[str]:
        """The distinct anonymous ids of one tenant × epoch hour (a unique-visitor HyperLogLog's members)."""
        frame = self._run(f"select distinct anonymous_id from {MART} where tenant_id = $1 and {_MART_HOUR} = $2",
                          [tenant_id, hour])
        return [str(a) for a in frame["anonymous_id"]]

    def page_views(self, start_hour: int, end_hour: int) -> pd.DataFrame:
        """(tenant_id, hour, path, views): page views per tenant × epoch hour × ``properties.path`` (a
        string, as the speed layer counts them) in [start, end)."""
        if not self._exists(MART):
            return pd.DataFrame(columns=["tenant_id", "hour", "path", "views"])
        return self._run(f"""
            select tenant_id, {_MART_HOUR} as hour, json_extract_string(properties, 'path') as path, count(*) as views
            from {MART}
            where event_type = 'page_view' and json_type(properties, 'path') = 'VARCHAR'
              and {_MART_HOUR} >= $1 and {_MART_HOUR} < $2
            group by all
        """, [start_hour, end_hour])

    def segment_hits(self, event_type: str, where: Mapping[str, str], start_ms: int, end_ms: int) -> pd.DataFrame:
        """(tenant_id, anonymous_id, received_ms): the events a segment rule counts (its event type, each
        ``where`` property a string equal to its value) received in [start_ms, end_ms)."""
        if not self._exists(MART):
            return pd.DataFrame(columns=["tenant_id", "anonymous_id", "received_ms"])
        conditions, params = "", [event_type, start_ms, end_ms]
        for key, value in sorted(where.items()):
            n = len(params)
            conditions += (f" and json_type(properties, ${n + 1}) = 'VARCHAR'"
                           f" and json_extract_string(properties, ${n + 1}) = ${n + 2}")
            params += [key, value]
        return self._run(f"""
            select tenant_id, anonymous_id, epoch_ms(received_at) as received_ms
            from {MART}
            where event_type = $1 and epoch_ms(received_at) >= $2 and epoch_ms(received_at) < $3{conditions}
        """, params)
