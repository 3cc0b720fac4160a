"""Load committed archive objects into Snowflake's raw tables, an hour at a time.

The same contract as the DuckDB loader (:func:`streaming.warehouse.duckdb_load.load_hours`): ``RAW.EVENTS``
and ``RAW.DEAD_LETTERS`` with the same columns, and loading a set of hours replaces exactly those hours
in one transaction. Snowflake gets there in two steps:

1. **Land** each committed object of the hours once, line by line, in ``RAW.ARCHIVE_LINES`` (its key in
   ``RAW.ARCHIVE_FILES``); a valid record's JSON, whether the line embeds it as an ``event`` object or
   carries it as ``data`` text, lands as ``data`` text. Two ways, one table:

   - ``copy``: ``COPY INTO`` from an external stage on ``s3://<bucket>/raw/events/`` listing the objects.
     Snowflake's load history skips a file it already loaded into the table, so a retried or concurrent
     run never lands an object twice (and ``RAW.ARCHIVE_FILES`` lets tally skip it before asking).
   - ``insert``: tally reads the objects from S3 itself and inserts their lines in batches, in one
     transaction with their ``RAW.ARCHIVE_FILES`` rows; Snowflake needs no access to S3.

2. **Replace** the hours: delete them from the raw tables and insert them again from the landed lines
   of the hours' committed objects, de-duplicated on (shard, sequence number) like the DuckDB loader,
   in one transaction. Re-running an hour replaces exactly that hour; an object removed from the
   archive (an audited deletion) leaves the hour on its next load.

Schema and table names are constants; the stage name comes from a validated setting; every value is a
bound parameter (the connection's paramstyle is ``pyformat``).
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from streaming.archive.layout import EVENTS_PREFIX
from streaming.archive.store import ArchiveStore, CommittedObject
from streaming.warehouse.base import LoadResult, utc_naive

RAW_SCHEMA = "RAW"
LINES = f"{RAW_SCHEMA}.ARCHIVE_LINES"
FILES = f"{RAW_SCHEMA}.ARCHIVE_FILES"
EVENTS = f"{RAW_SCHEMA}.EVENTS"
DEAD_LETTERS = f"{RAW_SCHEMA}.DEAD_LETTERS"

_LINE_COLUMNS = ("shard_id", "sequence_number", "partition_key", "arrival_ts", "data", "data_b64", "reason", "detail",
                 "source_id", "tenant_id", "source_seq")
#: A rejected record's numbers (streaming.archive.batch.ArchiveLine), null where unreadable.
_NUMBER_COLUMNS = (("source_id", "varchar"), ("tenant_id", "varchar"), ("source_seq", "bigint"))

DDL = (
    f"create schema if not exists {RAW_SCHEMA}",
    f"""create table if not exists {LINES} (
        shard_id varchar, sequence_number varchar, partition_key varchar, arrival_ts double,
        data varchar, data_b64 varchar, reason varchar, detail varchar,
        _archive_key varchar, _landed_at timestamp_ntz, source_id varchar, tenant_id varchar, source_seq bigint)""",
    f"""create table if not exists {FILES} (
        archive_key varchar, archive_hour timestamp_ntz, records integer, landed_at timestamp_ntz)""",
    f"""create table if not exists {EVENTS} (
        event_id varchar, tenant_id varchar, event_type varchar, anonymous_id varchar, user_id varchar,
        occurred_at varchar, received_at varchar, source_id varchar, source_seq bigint,
        schema_version integer, properties varchar,
        _shard_id varchar, _sequence_number varchar, _partition_key varchar, _arrival_at timestamp_ntz,
        _archive_key varchar, _archive_hour timestamp_ntz, _loaded_at timestamp_ntz)""",
    f"""create table if not exists {DEAD_LETTERS} (
        reason varchar, detail varchar, raw_base64 varchar,
        _shard_id varchar, _sequence_number varchar, _partition_key varchar, _arrival_at timestamp_ntz,
        _archive_key varchar, _archive_hour timestamp_ntz, _loaded_at timestamp_ntz,
        source_id varchar, tenant_id varchar, source_seq bigint)""",
    # Tables made before dead letters carried their numbers.
    *(f"alter table {table} add column if not exists {name} {kind}"
      for table in (LINES, DEAD_LETTERS) for name, kind in _NUMBER_COLUMNS),
)

# An archive key goes into COPY's FILES list; the archive layout only makes keys like this one
# (``.r<N>``: an object rewritten by a deletion request).
_SAFE_KEY = re.compile(r"^raw/events/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/[A-Za-z0-9_.-]+/\d+-\d+(\.r\d+)?\.jsonl\.gz$")
_COPY_FILES_MAX = 1000  # Snowflake's limit on one COPY's FILES list
_INSERT_MAX_BYTES = 800_000  # one INSERT's text stays under Snowflake's 1 MB statement limit


def ensure_raw_tables(conn: Any) -> None:
    cur = conn.cursor()
    for statement in DDL:
        cur.execute(statement)


def _placeholders(n: int) -> str:
    return ", ".join(["%s"] * n)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _object_hour(obj: CommittedObject) -> dt.datetime:
    return dt.datetime.strptime(obj.entry["hour"], "%Y-%m-%dT%H:00:00Z")


def landed_keys(conn: Any, hours: Sequence[dt.datetime]) -> set[str]:
    cur = conn.cursor()
    values = [utc_naive(h) for h in hours]
    cur.execute(f"select archive_key from {FILES} where archive_hour in ({_placeholders(len(values))})", values)
    return {row[0] for row in cur.fetchall()}


def _transaction(conn: Any, statements: Iterable[tuple[str, Sequence[Any] | None]]) -> list[int]:
    """Run statements in one explicit transaction; their row counts."""
    cur = conn.cursor()
    counts: list[int] = []
    cur.execute("begin")
    try:
        for sql, params in statements:
            cur.execute(sql, params)
            counts.append(cur.rowcount or 0)
        cur.execute("commit")
    except BaseException:
        cur.execute("rollback")
        raise
    return counts


# -- step 1: land ---------------------------------------------------------------------------------

def land_by_copy(conn: Any, stage: str, objects: Sequence[CommittedObject]) -> None:
    """COPY INTO the lines of ``objects`` from the external stage on ``s3://<bucket>/raw/events/``."""
    for obj in objects:
        if not _SAFE_KEY.match(obj.key):
            raise ValueError(f"not an archive object key: {obj.key!r}")
    cur = conn.cursor()
    for chunk in _chunks(objects, _COPY_FILES_MAX):
        # metadata$filename is the path below the stage's URL; the stage starts at the events prefix.
        cur.execute(
            f"""copy into {LINES} (shard_id, sequence_number, partition_key, arrival_ts, data, data_b64,
                                    reason, detail, source_id, tenant_id, source_seq, _archive_key, _landed_at)
                from (select $1:shard_id::varchar, $1:sequence_number::varchar, $1:partition_key::varchar,
                             $1:arrival_ts::double, coalesce($1:data::varchar, to_json($1:event)),
                             $1:data_b64::varchar, $1:reason::varchar,
                             $1:detail::varchar, $1:source_id::varchar, $1:tenant_id::varchar,
                             $1:source_seq::bigint, '{EVENTS_PREFIX}' || metadata$filename, sysdate()
                      from @{stage})
                files = ({_placeholders(len(chunk))})
                file_format = (type = json, compression = gzip)""",
            [o.key[len(EVENTS_PREFIX):] for o in chunk],
        )
        _register(conn, chunk)


def _register(conn: Any, objects: Sequence[CommittedObject]) -> None:
    rows = [(o.key, _object_hour(o), int(o.entry["records"])) for o in objects]
    conn.cursor().executemany(f"insert into {FILES} (archive_key, archive_hour, records, landed_at) "
                              f"values (%s, %s, %s, sysdate())", rows)


def _text_chunks(body: bytes, max_bytes: int = _INSERT_MAX_BYTES) -> Iterable[str]:
    """The object's JSON lines as text, cut at line ends into pieces of at most ``max_bytes``."""
    text = gzip.decompress(body)
    start = 0
    while start < len(text):
        end = start + max_bytes
        if end < len(text):
            cut = text.rfind(b"\n", start, end)
            end = cut + 1 if cut >= start else text.find(b"\n", end) + 1 or len(text)
        yield text[start:end].decode("utf-8")
        start = end


def land_by_insert(conn: Any, store: ArchiveStore, objects: Sequence[CommittedObject], workers: int = 8) -> None:
    """Read ``objects`` from S3 here and insert their lines, with their ARCHIVE_FILES rows, in one transaction.

    Each statement carries a piece of an object's JSON-lines text as one bound string, which Snowflake
    splits and parses itself (``flatten(split(...))``), the way COPY reads the file: cheap to send and to
    parse, whatever the number of lines.
    """
    if not objects:
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        bodies = list(pool.map(lambda o: store.read_object(o.key), objects))
    insert = f"""
        insert into {LINES} ({', '.join(_LINE_COLUMNS)}, _archive_key, _landed_at)
        with lines as (
            select parse_json(f.value::varchar) as j
            from table(flatten(input => split(%s, %s))) f
            where f.value::varchar <> ''
        )
        select j:shard_id::varchar, j:sequence_number::varchar, j:partition_key::varchar, j:arrival_ts::double,
               coalesce(j:data::varchar, to_json(j:event)), j:data_b64::varchar, j:reason::varchar,
               j:detail::varchar, j:source_id::varchar, j:tenant_id::varchar, j:source_seq::bigint, %s, sysdate()
        from lines
    """
    cur = conn.cursor()
    cur.execute("begin")
    try:
        for obj, body in zip(objects, bodies):
            for piece in _text_chunks(body):
                cur.execute(insert, [piece, "\n", obj.key])
        _register(conn, objects)
        cur.execute("commit")
    except BaseException:
        cur.execute("rollback")
        raise


def forget(conn: Any, keys: Sequence[str]) -> None:
    """Drop landed objects that are no longer committed (an audited deletion from the archive)."""
    for chunk in _chunks(list(keys), 500):
        _transaction(conn, [
            (f"delete from {LINES} where _archive_key in ({_placeholders(len(chunk))})", list(chunk)),
            (f"delete from {FILES} where archive_key in ({_placeholders(len(chunk))})", list(chunk)),
        ])


# -- step 2: replace the hours ---------------------------------------------------------------------

def _lines_of_hours(n_hours: int) -> str:
    """The landed lines of the hours' objects, one per (shard, sequence number), with their hour."""
    return f"""
        select l.*, f.archive_hour
        from {LINES} l
        join {FILES} f on f.archive_key = l._archive_key
        where f.archive_hour in ({_placeholders(n_hours)})
        qualify row_number() over (partition by l.shard_id, l.sequence_number order by l._archive_key) = 1
    """


def replace_hours(conn: Any, hours: Sequence[dt.datetime]) -> tuple[int, int]:
    """Delete ``hours`` from the raw tables and insert them from the landed lines (one transaction)."""
    values = [utc_naive(h) for h in hours]
    marks = _placeholders(len(values))
    lines = _lines_of_hours(len(values))
    events_sql = f"""
        insert into {EVENTS}
        with lines as ({lines}),
        parsed as (select lines.*, parse_json(data) as j from lines where data is not null)
        select j:event_id::varchar, j:tenant_id::varchar, j:event_type::varchar, j:anonymous_id::varchar,
               j:user_id::varchar, j:occurred_at::varchar, j:received_at::varchar, j:source_id::varchar,
               j:source_seq::bigint, j:schema_version::integer, coalesce(to_json(j:properties), '{{}}'),
               shard_id, sequence_number, partition_key,
               to_timestamp_ntz(round(arrival_ts * 1000000)::bigint, 6),
               _archive_key, archive_hour, sysdate()
        from parsed
    """
    dead_sql = f"""
        insert into {DEAD_LETTERS} (reason, detail, raw_base64, _shard_id, _sequence_number, _partition_key,
                                    _arrival_at, _archive_key, _archive_hour, _loaded_at,
                                    source_id, tenant_id, source_seq)
        with lines as ({lines})
        select reason, detail, data_b64, shard_id, sequence_number, partition_key,
               to_timestamp_ntz(round(arrival_ts * 1000000)::bigint, 6),
               _archive_key, archive_hour, sysdate(), source_id, tenant_id, source_seq
        from lines where data is null
    """
    counts = _transaction(conn, [
        (f"delete from {EVENTS} where _archive_hour in ({marks})", values),
        (f"delete from {DEAD_LETTERS} where _archive_hour in ({marks})", values),
        (events_sql, values),
        (dead_sql, values),
    ])
    return counts[2], counts[3]


def load_hours(conn: Any, store: ArchiveStore, hours: Sequence[dt.datetime], method: str = "insert",
               stage: str | None = None, workers: int = 8) -> LoadResult:
    """Replace ``hours`` in the raw tables with their committed archive objects.

    ``method`` is ``copy`` (needs ``stage``: an external stage on the bucket's root) or ``insert``.
    """
    if method not in ("copy", "insert"):
        raise ValueError(f"unknown load method {method!r}")
    if method == "copy" and not stage:
        raise ValueError("the copy method needs an external stage (TALLY_SNOWFLAKE_STAGE)")
    ensure_raw_tables(conn)
    if not hours:
        return LoadResult(0, 0, 0, 0, 0)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        objects = [o for per_hour in pool.map(store.committed_objects, hours) for o in per_hour]
    landed = landed_keys(conn, hours)
    committed = {o.key for o in objects}
    if stale := sorted(landed - committed):
        forget(conn, stale)
    missing = [o for o in objects if o.key not in landed]
    if method == "copy":
        land_by_copy(conn, stage or "", missing)
    else:
        land_by_insert(conn, store, missing, workers)
    events, dead = replace_hours(conn, hours)
    return LoadResult(len(hours), len(objects), int(events), int(dead),
                      sum(int(o.entry["records"]) for o in objects))


def create_stage(conn: Any, stage: str, bucket: str, storage_integration: str) -> None:
    """The external stage on ``s3://<bucket>/raw/events/`` that the copy method reads (run once by an
    operator whose role may use the storage integration)."""
    conn.cursor().execute(
        f"create stage if not exists {stage} url = %s storage_integration = {storage_integration} "
        f"file_format = (type = json, compression = gzip)",
        [f"s3://{bucket}/{EVENTS_PREFIX}"],
    )



def loaded_hours(conn: Any) -> list[dt.datetime]:
    """Every archive hour present in the raw tables (UTC)."""
    cur = conn.cursor()
    cur.execute(f"select distinct _archive_hour from {EVENTS} union select distinct _archive_hour from {DEAD_LETTERS}")
    return sorted(r[0].replace(tzinfo=dt.timezone.utc) for r in cur.fetchall())


def raw_counts(conn: Any, hours: Sequence[dt.datetime]) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, int]]]:
    """What the raw tables hold for ``hours``, in the manifests' terms: (tenant, event type, minute as
    ``YYYY-MM-DDTHH:MM:00Z``, rows) and (dead-letter reason, rows). For the raw_events check."""
    if not hours:
        return [], []
    values = [utc_naive(h) for h in hours]
    marks = _placeholders(len(values))
    cur = conn.cursor()
    cur.execute(f"""
        select tenant_id, event_type,
               date_trunc('minute', convert_timezone('UTC', cast(received_at as timestamp_tz))::timestamp_ntz) as m,
               count(*)
        from {EVENTS} where _archive_hour in ({marks}) group by tenant_id, event_type, m
    """, values)
    rows = [(t, e, m.strftime("%Y-%m-%dT%H:%M:00Z"), int(n)) for t, e, m, n in cur.fetchall()]
    cur.execute(f"select reason, count(*) from {DEAD_LETTERS} where _archive_hour in ({marks}) group by reason", values)
    return rows, [(r, int(n)) for r, n in cur.fetchall()]
