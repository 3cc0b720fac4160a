"""The Snowflake adapter of :class:`streaming.warehouse.base.Warehouse`: the production warehouse, with
the same interface and results as :class:`streaming.warehouse.duckdb.DuckDBWarehouse`, in Snowflake SQL.

``RAW.EVENTS`` (rows as delivered) and ``MARTS.FCT_EVENTS`` (de-duplicated), counted per tenant × event
type × minute of ``received_at``. A minute is ``datediff('minute', epoch, t)``, the floor of the epoch
seconds over 60 like DuckDB's ``floor(epoch(t) / 60)``. Every value is a bound parameter; only the fixed
names below appear in SQL text. Loading is :mod:`streaming.warehouse.snowflake_load`, connecting
:mod:`streaming.warehouse.snowflake_connect`.

``connect`` is a callable returning a context manager that yields a connection (dagster-snowflake's
``SnowflakeResource.get_connection``, or :func:`streaming.warehouse.snowflake_connect.connect` bound to
settings: :meth:`SnowflakeWarehouse.from_settings`), so each call opens and closes its own connection
like the DuckDB adapter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import pandas as pd

from streaming.settings import SnowflakeSettings
from streaming.warehouse import snowflake_load
from streaming.warehouse.base import EVENT_COLUMNS, LoadResult, RawCell, RawDead, dml_rowcount
from streaming.warehouse.snowflake_connect import connect as connect_snowflake

RAW = "RAW.EVENTS"
RAW_DEAD = "RAW.DEAD_LETTERS"
MART = "MARTS.FCT_EVENTS"
HOUR_MART = "MARTS.FCT_EVENT_COUNTS_HOUR"
DAY_MART = "MARTS.FCT_EVENT_COUNTS_DAY"
_TABLES = {"raw": RAW, "mart": MART}
_EPOCH = "'1970-01-01'::timestamp_ntz"
_RAW_TS = "convert_timezone('UTC', cast(received_at as timestamp_tz))::timestamp_ntz"
_RAW_MINUTE = f"datediff('minute', {_EPOCH}, {_RAW_TS})"
_MART_MINUTE = f"datediff('minute', {_EPOCH}, received_at)"
_MART_HOUR = f"floor(datediff('minute', {_EPOCH}, received_at) / 60)"
_MART_MS = f"datediff('millisecond', {_EPOCH}, received_at)"
#: A property as text, and "it is a JSON string" (the speed layer counts string values only). TO_JSON
#: of a VARIANT string starts with a quote; written so the Snowflake emulator (fakesnow) runs it too
#: (its TYPEOF answers JSON for every VARIANT, and its ::varchar keeps the quotes).
_PROP_TEXT = "json_extract_path_text(to_json(properties), %s)"
_PROP_IS_STRING = "left(to_json(get(properties, %s)), 1) = '\"'"
_RAW_EPOCH_S = f"(datediff('microsecond', {_EPOCH}, {_RAW_TS}) / 1000000)"
_MART_EPOCH_S = f"(datediff('microsecond', {_EPOCH}, received_at) / 1000000)"
_COUNT_COLUMNS = ["tenant_id", "event_type", "minute", "rows", "distinct_ids", "mart", "late"]


def _marks(n: int) -> str:
    return ", ".join(["%s"] * n)


class SnowflakeWarehouse:
    """``load_method`` is ``copy`` (from ``stage``, an external stage on the bucket) or ``insert``."""

    kind = "snowflake"

    def __init__(self, connect: Callable[[], AbstractContextManager[Any]], load_method: str = "insert",
                 stage: str | None = None, load_workers: int = 8) -> None:
        self._connect = connect
        self.load_method = load_method
        self.stage = stage
        self.load_workers = load_workers

    @classmethod
    def from_settings(cls, sf: SnowflakeSettings, login_timeout_s: int = 30,
                      network_timeout_s: int = 600) -> SnowflakeWarehouse:
        """The adapter connecting with tally's own settings (the CLI and services; Dagster uses the resource)."""
        return cls(lambda: connect_snowflake(sf, login_timeout_s, network_timeout_s),
                   load_method=sf.effective_load_method, stage=sf.stage)

    # -- connections ---------------------------------------------------------------------------------
    def connect(self) -> AbstractContextManager[Any]:
        """A snowflake-connector connection, closed on exit."""
        return self._connect()

    def marks(self, n: int) -> str:
        return _marks(n)

    # -- the raw tables ------------------------------------------------------------------------------
    def ensure_raw_tables(self) -> None:
        with self._connect() as conn:
            snowflake_load.ensure_raw_tables(conn)

    def load_hours(self, store: Any, hours: Sequence[dt.datetime]) -> LoadResult:
        """Replace ``hours`` in RAW.EVENTS / RAW.DEAD_LETTERS (see :mod:`streaming.warehouse.snowflake_load`)."""
        with self._connect() as conn:
            return snowflake_load.load_hours(conn, store, hours, method=self.load_method, stage=self.stage,
                                             workers=self.load_workers)

    def loaded_hours(self) -> list[dt.datetime]:
        with self._connect() as conn:
            return snowflake_load.loaded_hours(conn)

    def raw_counts(self, hours: Sequence[dt.datetime]) -> tuple[list[RawCell], list[RawDead]]:
        with self._connect() as conn:
            return snowflake_load.raw_counts(conn, hours)

    # -- erasure -------------------------------------------------------------------------------------
    def erase_landed(self, cur: Any, tenant: str, user_id: str, anonymous_ids: Sequence[str]) -> dict[str, int]:
        """The subject's archive lines the loader landed verbatim in ``RAW.ARCHIVE_LINES``
        (tests/snowflake/test_forget.py runs it on the emulator). An anonymous event's line carries
        ``"user_id": null``: a JSON null, which ``IS NULL`` does not match in Snowflake (only SQL NULL,
        e.g. a missing key, does), so ``strip_null_value`` turns it into SQL NULL first."""
        anons = sorted(anonymous_ids) or [""]
        cur.execute(f"""
            delete from {snowflake_load.LINES}
            where try_parse_json(data):tenant_id::varchar = %s
              and (try_parse_json(data):user_id::varchar = %s
                   or (strip_null_value(try_parse_json(data):user_id) is null
                       and try_parse_json(data):anonymous_id::varchar in ({_marks(len(anons))})))
        """, [tenant, user_id, *anons])
        return {snowflake_load.LINES: dml_rowcount(cur)}

    # -- what reconciliation reads -------------------------------------------------------------------

    def _run(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        with self._connect() as conn:
            cur = conn.cursor()
            try:
                cur.execute(sql, params or None)
                # ROWS is a reserved word in Snowflake: the SQL says row_count.
                columns = ["rows" if d[0].lower() == "row_count" else d[0].lower() for d in cur.description]
                return pd.DataFrame(cur.fetchall(), columns=columns)
            finally:
                cur.close()

    def _exists(self, qualified: str) -> bool:
        schema, table = qualified.split(".")
        frame = self._run("select count(*) as n from information_schema.tables "
                          "where table_schema = %s and table_name = %s", [schema, table])
        return bool(int(frame["n"].iloc[0]))

    @staticmethod
    def _ints(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        for c in columns:
            if c in frame.columns:
                frame[c] = frame[c].astype("int64")
        return frame

    def counts(self, start_minute: int, end_minute: int, lateness_s: int) -> pd.DataFrame:
        """WAREHOUSE_COLUMNS per cell in ``[start_minute, end_minute)``."""
        parts = []
        if self._exists(RAW):
            parts.append(self._run(f"""
                with ordered as (
                    select tenant_id, event_type, event_id, {_RAW_MINUTE} as minute,
                           max({_RAW_EPOCH_S}) over (
                               partition by _shard_id order by lpad(_sequence_number, 60, '0')
                               rows between unbounded preceding and 1 preceding) as shard_event_time
                    from {RAW}
                )
                select tenant_id, event_type, minute, count(*) as row_count, count(distinct event_id) as distinct_ids,
                       0 as mart,
                       count(distinct case when shard_event_time >= (minute + 1) * 60 + %s then event_id end) as late
                from ordered where minute >= %s and minute < %s
                group by tenant_id, event_type, minute
            """, [lateness_s, start_minute, end_minute]))
        if self._exists(MART):
            parts.append(self._run(f"""
                select tenant_id, event_type, {_MART_MINUTE} as minute, 0 as row_count, 0 as distinct_ids,
                       count(*) as mart, 0 as late
                from {MART} where {_MART_MINUTE} >= %s and {_MART_MINUTE} < %s
                group by tenant_id, event_type, minute
            """, [start_minute, end_minute]))
        parts = [p for p in parts if not p.empty]
        if not parts:
            return pd.DataFrame(columns=_COUNT_COLUMNS)
        both = self._ints(pd.concat(parts, ignore_index=True), _COUNT_COLUMNS[2:])
        return both.groupby(["tenant_id", "event_type", "minute"], as_index=False)[
            ["rows", "distinct_ids", "mart", "late"]].sum()

    def rollup_grains(self) -> set[tuple[str, str]]:
        """The roll-ups the warehouse serves: a count mart dbt has built."""
        return {("warehouse", grain) for grain, table in (("hour", HOUR_MART), ("day", DAY_MART)) if self._exists(table)}

    def rollups(self, start_minute: int, end_minute: int) -> pd.DataFrame:
        """ROLLUP_COLUMNS from the hour and day count marts (buckets starting inside the range)."""
        columns = ["layer", "grain", "tenant_id", "event_type", "bucket", "n"]
        parts = [pd.DataFrame(columns=columns)]
        hour = f"datediff('minute', {_EPOCH}, hour_at)"
        day = f"datediff('minute', {_EPOCH}, day_at::timestamp_ntz)"
        if self._exists(HOUR_MART):
            parts.append(self._run(f"""
                select 'warehouse' as layer, 'hour' as grain, tenant_id, event_type,
                       floor({hour} / 60)::bigint as bucket, event_count::bigint as n
                from {HOUR_MART} where {hour} >= %s and {hour} < %s
            """, [start_minute, end_minute]))
        if self._exists(DAY_MART):
            parts.append(self._run(f"""
                select 'warehouse' as layer, 'day' as grain, tenant_id, event_type,
                       floor({day} / 1440)::bigint as bucket, event_count::bigint as n
                from {DAY_MART} where {day} >= %s and {day} < %s
            """, [start_minute, end_minute]))
        parts = [p for p in parts if not p.empty] or parts[:1]
        return self._ints(pd.concat(parts, ignore_index=True), ["bucket", "n"])

    def watermark(self) -> float | None:
        if not (self._exists(RAW) and self._exists(MART)):
            return None
        frame = self._run(f"""
            select (select max({_RAW_EPOCH_S}) from {RAW}) as raw_mark,
                   (select max({_MART_EPOCH_S}) from {MART}) as mart_mark
        """)
        raw_mark, mart_mark = frame["raw_mark"].iloc[0], frame["mart_mark"].iloc[0]
        if raw_mark is None or mart_mark is None or pd.isna(raw_mark) or pd.isna(mart_mark):
            return None
        return float(min(float(raw_mark), float(mart_mark)))

    def events(self, hours: list[int], table: str) -> pd.DataFrame:
        """Distinct events of these epoch hours in ``raw`` or ``mart`` (EVENT_COLUMNS)."""
        qualified = _TABLES[table]
        if not hours or not self._exists(qualified):
            return pd.DataFrame(columns=list(EVENT_COLUMNS))
        minute = _RAW_MINUTE if table == "raw" else _MART_MINUTE
        frame = self._run(f"""
            select distinct event_id::varchar as event_id, tenant_id, event_type, {minute} as minute,
                   source_id, source_seq::bigint as source_seq
            from {qualified} where floor({minute} / 60) in ({_marks(len(hours))})
        """, [int(h) for h in hours])
        return self._ints(frame, ["minute", "source_seq"])

    def sequences(self, start_minute: int, end_minute: int) -> pd.DataFrame:
        """Every raw row's (event_id, cell, source_id, source_seq) in the range: the sequence evidence."""
        if not self._exists(RAW):
            return pd.DataFrame(columns=list(EVENT_COLUMNS))
        frame = self._run(f"""
            select event_id, tenant_id, event_type, {_RAW_MINUTE} as minute, source_id,
                   source_seq::bigint as source_seq
            from {RAW} where {_RAW_MINUTE} >= %s and {_RAW_MINUTE} < %s
        """, [start_minute, end_minute])
        return self._ints(frame, ["minute", "source_seq"])

    # -- what the warehouse has read of the archive (see streaming.reconcile.positions) ------------------
    def fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever a load or a build commits: reads taken between two equal fingerprints agree."""
        parts: list[Any] = []
        for table, column in ((RAW, "_loaded_at"), (RAW_DEAD, "_loaded_at"), (MART, "loaded_at")):
            if self._exists(table):
                frame = self._run(f"select count(*) as n, max({column})::varchar as m from {table}")
                parts += [int(frame["n"].iloc[0]), frame["m"].iloc[0]]
            else:
                parts += [None, None]
        return tuple(parts)

    def loaded_keys(self, start_minute: int, end_minute: int) -> set[str]:
        """Archive object keys the raw tables hold rows of, for the archive hours the range touches."""
        keys: set[str] = set()
        hour = f"datediff('hour', {_EPOCH}, _archive_hour)"
        for table in (RAW, RAW_DEAD):
            if self._exists(table):
                frame = self._run(f"select distinct _archive_key from {table} where {hour} >= %s and {hour} < %s",
                                  [start_minute // 60, -(-end_minute // 60)])
                keys.update(frame["_archive_key"].dropna())
        return keys

    def unbuilt(self, start_minute: int, end_minute: int) -> pd.DataFrame:
        """Cells of raw rows loaded after the newest row the mart holds (tenant_id, event_type, minute,
        rows, loaded_at)."""
        columns = ["tenant_id", "event_type", "minute", "rows", "loaded_at"]
        if not self._exists(RAW):
            return pd.DataFrame(columns=columns)
        built = f"(select max(loaded_at) from {MART})" if self._exists(MART) else "null::timestamp_ntz"
        frame = self._run(f"""
            select tenant_id, event_type, {_RAW_MINUTE} as minute, count(*) as row_count,
                   max(_loaded_at)::varchar as loaded_at
            from {RAW}
            where {built} is null or _loaded_at > {built}
            group by tenant_id, event_type, minute
            having minute >= %s and minute < %s
        """, [start_minute, end_minute])
        return self._ints(frame, ["minute", "rows"])[columns] if len(frame) else pd.DataFrame(columns=columns)

    def dead_letter_numbers(self, start_minute: int, end_minute: int) -> pd.DataFrame:
        """(source_id, tenant_id, source_seq) held by dead letters, for the (source, tenant) sequences the
        raw rows of the range have, within their numbers there."""
        columns = ["source_id", "tenant_id", "source_seq"]
        if not (self._exists(RAW) and self._exists(RAW_DEAD)):
            return pd.DataFrame(columns=columns)
        frame = self._run(f"""
            with spans as (
                select source_id, tenant_id, min(source_seq) as lo, max(source_seq) as hi from {RAW}
                where {_RAW_MINUTE} >= %s and {_RAW_MINUTE} < %s group by source_id, tenant_id
            )
            select distinct d.source_id, d.tenant_id, d.source_seq::bigint as source_seq
            from {RAW_DEAD} d join spans s on s.source_id = d.source_id and s.tenant_id = d.tenant_id
            where d.source_seq between s.lo and s.hi
        """, [start_minute, end_minute])
        return self._ints(frame, ["source_seq"]) if len(frame) else pd.DataFrame(columns=columns)

    # -- what the speed layer's other structures are healed from (``streaming/reconcile/heal.py``) ------
    def visitor_counts(self, start_hour: int, end_hour: int) -> pd.DataFrame:
        """(tenant_id, hour, visitors): distinct anonymous ids per tenant × epoch hour in [start, end)."""
        if not self._exists(MART):
            return pd.DataFrame(columns=["tenant_id", "hour", "visitors"])
        frame = self._run(f"""
            select tenant_id, {_MART_HOUR}::bigint as hour, count(distinct anonymous_id) as visitors
            from {MART} where {_MART_HOUR} >= %s and {_MART_HOUR} < %s
            group by tenant_id, hour
        """, [start_hour, end_hour])
        return self._ints(frame, ["hour", "visitors"])

    def visitor_ids(self, tenant_id: str, hour: int) -> list[str]:
        """The distinct anonymous ids of one tenant × epoch hour (a unique-visitor HyperLogLog's members)."""
        frame = self._run(f"select distinct anonymous_id from {MART} where tenant_id = %s and {_MART_HOUR} = %s",
                          [tenant_id, hour])
        return [str(a) for a in frame["anonymous_id"]] if not frame.empty else []

    def page_views(self, start_hour: int, end_hour: int) -> pd.DataFrame:
        """(tenant_id, hour, path, views): page views per tenant × epoch hour × ``properties.path`` (a
        string, as the speed layer counts them) in [start, end)."""
        if not self._exists(MART):
            return pd.DataFrame(columns=["tenant_id", "hour", "path", "views"])
        frame = self._run(f"""
            select tenant_id, {_MART_HOUR}::bigint as hour, {_PROP_TEXT} as path, count(*) as views
            from {MART}
            where event_type = 'page_view' and {_PROP_IS_STRING}
              and {_MART_HOUR} >= %s and {_MART_HOUR} < %s
            group by tenant_id, hour, path
        """, ["path", "path", start_hour, end_hour])
        return self._ints(frame, ["hour", "views"])

    def segment_hits(self, event_type: str, where: Mapping[str, str], start_ms: int, end_ms: int) -> pd.DataFrame:
        """(tenant_id, anonymous_id, received_ms): the events a segment rule counts (its event type, each
        ``where`` property a string equal to its value) received in [start_ms, end_ms)."""
        if not self._exists(MART):
            return pd.DataFrame(columns=["tenant_id", "anonymous_id", "received_ms"])
        conditions, params = "", [event_type, start_ms, end_ms]
        for key, value in sorted(where.items()):
            conditions += f" and {_PROP_IS_STRING} and {_PROP_TEXT} = %s"
            params += [key, key, value]
        frame = self._run(f"""
            select tenant_id, anonymous_id, {_MART_MS} as received_ms
            from {MART}
            where event_type = %s and {_MART_MS} >= %s and {_MART_MS} < %s{conditions}
        """, params)
        return self._ints(frame, ["received_ms"])
