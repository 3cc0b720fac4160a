"""Load committed archive objects into the DuckDB warehouse's raw tables, an hour at a time (the loading
half of the DuckDB adapter, :class:`streaming.warehouse.duckdb.DuckDBWarehouse`).

``raw.events`` gets one row per archived valid record (its envelope fields as delivered, plus where it
came from); ``raw.dead_letters`` one row per rejected record (reason, detail, the raw bytes, and the numbers it still
carries: ``source_id``, ``tenant_id``, ``source_seq``, null where unreadable). Both are
partitioned by ``_archive_hour`` (the hour prefix the object lives under). Loading a set of hours
deletes exactly those hours and inserts their committed objects in one transaction, so re-loading an
hour replaces it and never duplicates it.

A record that two committed batches both contain (possible only if two archivers wrote the same shard
range, e.g. a zombie after a lease was stolen) is loaded once: rows are unique on
(``_shard_id``, ``_sequence_number``).

The files are parsed by DuckDB itself (``read_json`` over the gzip JSON lines), which is what keeps a
million-event load to a few seconds.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from streaming.archive.store import ArchiveStore, CommittedObject
from streaming.warehouse.base import LoadResult, utc_naive

RAW_SCHEMA = "raw"

DDL = (
    f"create schema if not exists {RAW_SCHEMA}",
    f"""create table if not exists {RAW_SCHEMA}.events (
        event_id varchar, tenant_id varchar, event_type varchar, anonymous_id varchar, user_id varchar,
        occurred_at varchar, received_at varchar, source_id varchar, source_seq bigint,
        schema_version integer, properties varchar,
        _shard_id varchar, _sequence_number varchar, _partition_key varchar, _arrival_at timestamp,
        _archive_key varchar, _archive_hour timestamp, _loaded_at timestamp)""",
    f"""create table if not exists {RAW_SCHEMA}.dead_letters (
        reason varchar, detail varchar, raw_base64 varchar,
        _shard_id varchar, _sequence_number varchar, _partition_key varchar, _arrival_at timestamp,
        _archive_key varchar, _archive_hour timestamp, _loaded_at timestamp,
        source_id varchar, tenant_id varchar, source_seq bigint)""",
    # Tables made before dead letters carried their numbers.
    f"alter table {RAW_SCHEMA}.dead_letters add column if not exists source_id varchar",
    f"alter table {RAW_SCHEMA}.dead_letters add column if not exists tenant_id varchar",
    f"alter table {RAW_SCHEMA}.dead_letters add column if not exists source_seq bigint",
)

#: The envelope as DuckDB parses it, straight from the archive line (one parse per event).
_EVENT_STRUCT = ("STRUCT(event_id VARCHAR, tenant_id VARCHAR, event_type VARCHAR, anonymous_id VARCHAR, "
                 "user_id VARCHAR, occurred_at VARCHAR, received_at VARCHAR, source_id VARCHAR, source_seq BIGINT, "
                 "schema_version INTEGER, properties JSON)")
_LINE_COLUMNS = ("{'shard_id': 'VARCHAR', 'sequence_number': 'VARCHAR', 'partition_key': 'VARCHAR', "
                 f"'arrival_ts': 'DOUBLE', 'event': '{_EVENT_STRUCT}', 'data': 'VARCHAR', 'data_b64': 'VARCHAR', "
                 "'reason': 'VARCHAR', 'detail': 'VARCHAR', "
                 "'source_id': 'VARCHAR', 'tenant_id': 'VARCHAR', 'source_seq': 'BIGINT'}")
_JSON_STRUCT = ('{"event_id":"VARCHAR","tenant_id":"VARCHAR","event_type":"VARCHAR","anonymous_id":"VARCHAR",'
                '"user_id":"VARCHAR","occurred_at":"VARCHAR","received_at":"VARCHAR","source_id":"VARCHAR",'
                '"source_seq":"BIGINT","schema_version":"INTEGER","properties":"JSON"}')


def ensure_raw_tables(conn: Any) -> None:
    for statement in DDL:
        conn.execute(statement)


def load_hours(conn: Any, store: ArchiveStore, hours: Sequence[dt.datetime], workers: int = 8) -> LoadResult:
    """Replace ``hours`` in the raw tables with their committed archive objects (one transaction)."""
    conn.execute("set TimeZone = 'UTC'")
    # Rows of the raw tables have no order; DuckDB parallelizes the insert more freely without it.
    conn.execute("set preserve_insertion_order = false")
    ensure_raw_tables(conn)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        listed: list[list[CommittedObject]] = list(pool.map(store.committed_objects, hours))
        objects = [o for per_hour in listed for o in per_hour]
        with tempfile.TemporaryDirectory(prefix="tally-load-") as tmp:
            paths = [Path(tmp) / f"{i:06d}.jsonl.gz" for i in range(len(objects))]

            def fetch(i: int) -> None:
                paths[i].write_bytes(store.read_object(objects[i].key))

            list(pool.map(fetch, range(len(objects))))
            return _replace(conn, hours, objects, paths)


def _overlapping(objects: list[CommittedObject]) -> bool:
    """Do two committed batches of one shard cover a common sequence number?"""
    by_shard: dict[str, list[tuple[int, int]]] = {}
    for obj in {o.batch for o in objects}:
        by_shard.setdefault(obj.shard_id, []).append((int(obj.first_seq), int(obj.last_seq)))
    for ranges in by_shard.values():
        ranges.sort()
        if any(b[0] <= a[1] for a, b in zip(ranges, ranges[1:])):
            return True
    return False


def _replace(conn: Any, hours: Sequence[dt.datetime], objects: list[CommittedObject], paths: list[Path]) -> LoadResult:
    hour_values = [utc_naive(h) for h in hours]
    conn.execute("begin transaction")
    try:
        conn.execute(f"delete from {RAW_SCHEMA}.events where _archive_hour in (select unnest($1::timestamp[]))",
                     [hour_values])
        conn.execute(f"delete from {RAW_SCHEMA}.dead_letters where _archive_hour in (select unnest($1::timestamp[]))",
                     [hour_values])
        events = dead = 0
        if objects:
            conn.execute("create or replace temp table _load_files (path varchar, archive_key varchar, archive_hour timestamp)")
            conn.executemany("insert into _load_files values (?, ?, ?)", [
                (str(p), o.key, dt.datetime.strptime(o.entry["hour"], "%Y-%m-%dT%H:00:00Z")) for p, o in zip(paths, objects)
            ])
            # Overlapping batches of one shard exist only if two archivers wrote the same range; only
            # then is the (costly) de-duplication by (shard, sequence number) needed.
            dedup = ("qualify row_number() over (partition by l.shard_id, l.sequence_number "
                     "order by f.archive_key) = 1") if _overlapping(objects) else ""
            conn.execute(f"""
                create or replace temp table _load_lines as
                select l.*, f.archive_key, f.archive_hour
                from read_json($1::varchar[], format = 'newline_delimited', compression = 'gzip',
                               filename = true, columns = {_LINE_COLUMNS}) l
                join _load_files f on f.path = l.filename
                {dedup}
            """, [[str(p) for p in paths]])
            events = conn.execute(f"""
                insert into {RAW_SCHEMA}.events
                with parsed as (
                    select *, coalesce(event, json_transform(data, '{_JSON_STRUCT}')) as e
                    from _load_lines where data_b64 is null
                )
                select e.event_id, e.tenant_id, e.event_type, e.anonymous_id, e.user_id, e.occurred_at,
                       e.received_at, e.source_id, e.source_seq, e.schema_version,
                       coalesce(e.properties::varchar, '{{}}'),
                       shard_id, sequence_number, partition_key, to_timestamp(arrival_ts)::timestamp,
                       archive_key, archive_hour, now()::timestamp
                from parsed
            """).fetchone()[0]
            dead = conn.execute(f"""
                insert into {RAW_SCHEMA}.dead_letters
                    (reason, detail, raw_base64, _shard_id, _sequence_number, _partition_key, _arrival_at,
                     _archive_key, _archive_hour, _loaded_at, source_id, tenant_id, source_seq)
                select reason, detail, data_b64, shard_id, sequence_number, partition_key,
                       to_timestamp(arrival_ts)::timestamp, archive_key, archive_hour, now()::timestamp,
                       source_id, tenant_id, source_seq
                from _load_lines where data_b64 is not null
            """).fetchone()[0]
            conn.execute("drop table _load_lines")
            conn.execute("drop table _load_files")
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return LoadResult(len(hours), len(objects), int(events), int(dead),
                      sum(int(o.entry["records"]) for o in objects))
