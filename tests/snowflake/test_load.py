"""Loading the archive into Snowflake (the emulator, through the real connector): the same rows as the
DuckDB loader, each hour replaced exactly on a re-run, each object landed once."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from streaming.warehouse.duckdb_load import load_hours as duckdb_load_hours
from streaming.warehouse.snowflake_load import FILES, LINES, land_by_copy, load_hours, loaded_hours, raw_counts

from tests.snowflake.archive import ArchiveFixture

pytestmark = [pytest.mark.integration, pytest.mark.snowflake]

_KEY_COLUMNS = "event_id, tenant_id, event_type, anonymous_id, user_id, occurred_at, received_at, source_id, " \
               "source_seq, schema_version, _shard_id, _sequence_number, _partition_key, _archive_key, _archive_hour"
_DEAD_COLUMNS = "reason, detail, raw_base64, _shard_id, _sequence_number, _archive_key, _archive_hour"


def _rows(conn: Any, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    cur.execute(sql, params)
    return sorted(tuple(r) for r in cur.fetchall())


def _count(conn: Any, sql: str, params: list[Any] | None = None) -> int:
    cur = conn.cursor()
    cur.execute(sql, params)
    return int(cur.fetchone()[0])


def test_load_equals_duckdb_loader_and_rerun_replaces_exactly_the_hour(sf_conn: Any, archive: ArchiveFixture,
                                                                        tmp_path: Any) -> None:
    assert len(archive.hours) == 2, archive.hours
    result = load_hours(sf_conn, archive.store, archive.hours)

    duck = duckdb.connect(str(tmp_path / "w.duckdb"))
    expected = duckdb_load_hours(duck, archive.store, archive.hours)
    assert (result.events, result.dead_letters, result.objects, result.manifest_records) == \
        (expected.events, expected.dead_letters, expected.objects, expected.manifest_records)
    assert result.events > 3000 and result.dead_letters > 50
    # The zombie batch overlaps: manifests count its records again, the raw tables hold them once.
    assert result.events + result.dead_letters == archive.records < result.manifest_records

    events = _rows(sf_conn, f"select {_KEY_COLUMNS} from RAW.EVENTS")
    assert events == sorted(tuple(r) for r in duck.execute(f"select {_KEY_COLUMNS} from raw.events").fetchall())
    dead = _rows(sf_conn, f"select {_DEAD_COLUMNS} from RAW.DEAD_LETTERS")
    assert dead == sorted(tuple(r) for r in duck.execute(f"select {_DEAD_COLUMNS} from raw.dead_letters").fetchall())
    # What the raw_events check compares with the manifests: the same on both warehouses.
    assert loaded_hours(sf_conn) == archive.hours
    rows, dead_rows = raw_counts(sf_conn, archive.hours)
    naive = [h.replace(tzinfo=None) for h in archive.hours]
    duck_rows = duck.execute(
        "select tenant_id, event_type, strftime(date_trunc('minute', cast(cast(received_at as timestamptz) "
        "at time zone 'UTC' as timestamp)), '%Y-%m-%dT%H:%M:00Z'), count(*) from raw.events "
        "where _archive_hour in (select unnest($1::timestamp[])) group by all", [naive]).fetchall()
    duck_dead = duck.execute("select reason, count(*) from raw.dead_letters "
                             "where _archive_hour in (select unnest($1::timestamp[])) group by all", [naive]).fetchall()
    assert sorted(rows) == sorted(duck_rows) and sorted(dead_rows) == sorted(duck_dead)
    properties = _rows(sf_conn, "select event_id, parse_json(properties) from RAW.EVENTS limit 5")
    assert all(p is not None for _, p in properties)

    # Re-run only the second hour: that hour's rows are replaced (new _loaded_at), the first is untouched,
    # nothing is landed twice.
    first, second = archive.hours
    landed_lines = _count(sf_conn, f"select count(*) from {LINES}")
    loaded_before = _rows(sf_conn, "select _archive_hour, min(_loaded_at), max(_loaded_at), count(*) "
                                   "from RAW.EVENTS group by _archive_hour")
    again = load_hours(sf_conn, archive.store, [second])
    loaded_after = _rows(sf_conn, "select _archive_hour, min(_loaded_at), max(_loaded_at), count(*) "
                                  "from RAW.EVENTS group by _archive_hour")
    assert _count(sf_conn, f"select count(*) from {LINES}") == landed_lines
    assert _count(sf_conn, f"select count(*) from {FILES}") == result.objects
    assert loaded_after[0] == loaded_before[0]  # hour 00 untouched
    assert loaded_after[1][3] == loaded_before[1][3] == again.events
    assert loaded_after[1][1] > loaded_before[1][2]  # hour 01 loaded again
    assert _rows(sf_conn, f"select {_KEY_COLUMNS} from RAW.EVENTS") == events
    assert _count(sf_conn, "select count(*) from RAW.EVENTS where _archive_hour = %s",
                  [first.replace(tzinfo=None)]) == loaded_before[0][3]


def test_object_deleted_from_the_archive_leaves_its_hour_on_reload(sf_conn: Any, archive: ArchiveFixture) -> None:
    load_hours(sf_conn, archive.store, archive.hours)
    hour = archive.hours[0]
    victim = archive.store.committed_objects(hour)[0]
    in_victim = _count(sf_conn, "select count(*) from RAW.EVENTS where _archive_key = %s", [victim.key])
    assert in_victim > 0
    before = _count(sf_conn, "select count(*) from RAW.EVENTS")
    archive.store.s3.delete_object(Bucket=archive.store.bucket, Key=victim.key)  # an audited deletion
    load_hours(sf_conn, archive.store, [hour])
    assert _count(sf_conn, "select count(*) from RAW.EVENTS where _archive_key = %s", [victim.key]) == 0
    assert _count(sf_conn, f"select count(*) from {LINES} where _archive_key = %s", [victim.key]) == 0
    # Records of the deleted object that the zombie batch also holds stay, under the zombie's key.
    assert before - in_victim <= _count(sf_conn, "select count(*) from RAW.EVENTS") < before


def test_copy_refuses_a_key_the_archive_layout_cannot_produce(sf_conn: Any) -> None:
    from streaming.archive.layout import BatchRange
    from streaming.archive.store import CommittedObject

    bad = CommittedObject("raw/events/dt=2026-01-01/hour=00/s'); drop table x; --/1-2.jsonl.gz",
                          BatchRange("s", "1", "2"), {"hour": "2026-01-01T00:00:00Z", "records": 1})
    with pytest.raises(ValueError, match="not an archive object key"):
        land_by_copy(sf_conn, "RAW.TALLY_ARCHIVE", [bad])
