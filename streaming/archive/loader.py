"""Load committed archive objects into the DuckDB warehouse's raw tables, an hour at a time.

``raw.events`` gets one row per archived valid record (its envelope fields as delivered, plus where it
came from); ``raw.dead_letters`` one row per rejected record (reason, detail, the raw bytes). Both are
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streaming.archive.store import ArchiveStore, CommittedObject

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
        _archive_key varchar, _archive_hour timestamp, _loaded_at timestamp)""",
)

_FIELDS = ("event_id", "tenant_id", "event_type", "anonymous_id", "user_id", "occurred_at", "received_at",
           "source_id", "source_seq", "schema_version", "properties")
_LINE_COLUMNS = ("{'shard_id': 'VARCHAR', 'sequence_number': 'VARCHAR', 'partition_key': 'VARCHAR', "
                 "'arrival_ts': 'DOUBLE', 'data': 'VARCHAR', 'data_b64': 'VARCHAR', 'reason': 'VARCHAR', "
                 "'detail': 'VARCHAR'}")


@dataclass(frozen=True)
class LoadResult:
    hours: int
    objects: int
    events: int
    dead_letters: int
    manifest_records: int  # what the manifests say the loaded objects hold


def ensure_raw_tables(conn: Any) -> None:
    for statement in DDL:
        conn.execute(statement)


def _utc_naive(hour: dt.datetime) -> dt.datetime:
    return hour.astimezone(dt.timezone.utc).replace(tzinfo=None)


def load_hours(conn: Any, store: ArchiveStore, hours: Sequence[dt.datetime], workers: int = 8) -> LoadResult:
    """Replace ``hours`` in the raw tables with their committed archive objects (one transaction)."""
    conn.execute("set TimeZone = 'UTC'")
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


def _replace(conn: Any, hours: Sequence[dt.datetime], objects: list[CommittedObject], paths: list[Path]) -> LoadResult:
    hour_values = [_utc_naive(h) for h in hours]
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
            conn.execute(f"""
                create or replace temp table _load_lines as
                select l.*, f.archive_key, f.archive_hour
                from read_json($1::varchar[], format = 'newline_delimited', compression = 'gzip',
                               filename = true, columns = {_LINE_COLUMNS}) l
                join _load_files f on f.path = l.filename
                qualify row_number() over (partition by l.shard_id, l.sequence_number order by f.archive_key) = 1
            """, [[str(p) for p in paths]])
            paths_sql = ", ".join(f"'$.{f}'" for f in _FIELDS)
            events = conn.execute(f"""
                insert into {RAW_SCHEMA}.events
                with parsed as (
                    select *, json_extract_string(data, [{paths_sql}]) as f,
                           json_extract(data, '$.properties')::varchar as props
                    from _load_lines where data is not null
                )
                select f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]::bigint, f[10]::integer,
                       coalesce(props, '{{}}'),
                       shard_id, sequence_number, partition_key, to_timestamp(arrival_ts)::timestamp,
                       archive_key, archive_hour, now()::timestamp
                from parsed
            """).fetchone()[0]
            dead = conn.execute(f"""
                insert into {RAW_SCHEMA}.dead_letters
                select reason, detail, data_b64, shard_id, sequence_number, partition_key,
                       to_timestamp(arrival_ts)::timestamp, archive_key, archive_hour, now()::timestamp
                from _load_lines where data is null
            """).fetchone()[0]
            conn.execute("drop table _load_lines")
            conn.execute("drop table _load_files")
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return LoadResult(len(hours), len(objects), int(events), int(dead),
                      sum(int(o.entry["records"]) for o in objects))
