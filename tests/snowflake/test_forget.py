"""The warehouse step of a deletion request on the Snowflake emulator: the real ``WarehouseEraser`` with
the Snowflake adapter (pyformat parameters, information_schema discovery, the landed lines in
``RAW.ARCHIVE_LINES``) over the tables the real code makes: the fixture archive loaded by the Snowflake
loader, then ``dbt build`` on the ``emulator`` target, as in test_pipeline.

Why: the DuckDB tests (tests/privacy) cannot catch a Snowflake-only mistake in this SQL (a parameter
marker, identifier case, JSON null against SQL NULL in the landed lines), and a deletion that misses rows
fails silently. Expected rows are worked out here in Python from the rows themselves, not by the
eraser's own predicate.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streaming.privacy.subject import Subject
from streaming.privacy.warehouse import WarehouseEraser, dbt_rebuild
from streaming.warehouse.snowflake import SnowflakeWarehouse
from streaming.settings import SnowflakeSettings
from streaming.warehouse.snowflake_connect import connect
from streaming.warehouse.snowflake_load import EVENTS, LINES, load_hours

from tests.snowflake.archive import ArchiveFixture
from tests.snowflake.conftest import LOGIN_TIMEOUT_S, NETWORK_TIMEOUT_S, emulator_env
from tests.snowflake.test_pipeline import DBT_PROJECT_DIR, DBT_TIMEOUT_S, run_dbt

pytestmark = [pytest.mark.integration, pytest.mark.dbt, pytest.mark.snowflake, pytest.mark.slow]

#: Quotes, pyformat markers, a statement separator, a comment and non-ASCII: it must only ever be a value.
HOSTILE_USER = "x' or '1'='1 %s %(user)s \"; delete from RAW.EVENTS; -- é 用户 🙂"
#: The event-grain and identity tables the eraser has to find (lower-case "schema.table").
MUST_FIND = {"raw.events", "marts.fct_events", "intermediate.int_identities_stitched", "marts.dim_users",
             "marts.fct_segment_memberships"}

Row = tuple[Any, ...]
Table = tuple[list[str], list[Row]]


def _rows(conn: Any, sql: str, params: list[Any] | None = None) -> list[Row]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return [tuple(r) for r in cur.fetchall()]
    finally:
        cur.close()


def _table(conn: Any, name: str) -> Table:
    """Every row of ``name`` ("SCHEMA.TABLE") with lower-case column names."""
    cur = conn.cursor()
    try:
        cur.execute(f"select * from {name}")
        return [d[0].lower() for d in cur.description], [tuple(r) for r in cur.fetchall()]
    finally:
        cur.close()


def _owned(columns: list[str], row: Row, subject: Subject) -> bool:
    """The subject's rule (README "Who is the subject") applied to one warehouse row, in Python."""
    value = dict(zip(columns, row))
    if value["tenant_id"] != subject.tenant:
        return False
    if "user_id" in value and value["user_id"] == subject.user_id:
        return True
    if "stitched_user_id" in value and value["stitched_user_id"] == subject.user_id:
        return True
    if "anonymous_id" in value and ("user_id" not in value or value["user_id"] is None):
        return value["anonymous_id"] in subject.anonymous_ids
    return False


def _line_owned(data: str | None, subject: Subject) -> bool:
    """Is a landed archive line (its ``data`` JSON text; dead letters have none) about the subject?"""
    if data is None:
        return False
    event = json.loads(data)
    return subject.owns(event.get("tenant_id"), event.get("user_id"), event.get("anonymous_id"))


def _multiset(rows: list[Row]) -> Counter[tuple[str, ...]]:
    """Rows as comparable values (repr: NaN and Decimal compare as written)."""
    return Counter(tuple(repr(v) for v in r) for r in rows)


def _snapshot(conn: Any, tables: list[str]) -> dict[str, Table]:
    return {t: _table(conn, t) for t in tables}


def _pick_subject(conn: Any) -> tuple[str, str]:
    """(tenant, user) whose identify stitches the most anonymous-only events in the loaded data."""
    rows = _rows(conn, f"""
        with links as (select distinct tenant_id, user_id, anonymous_id from {EVENTS}
                       where event_type = 'identify' and user_id is not null)
        select l.tenant_id, l.user_id, count(*) as anonymous_events
        from links l join {EVENTS} e
          on e.tenant_id = l.tenant_id and e.anonymous_id = l.anonymous_id and e.user_id is null
        group by l.tenant_id, l.user_id
        order by anonymous_events desc, l.tenant_id, l.user_id
        limit 1""")
    assert rows, "the fixture run has no identify with earlier anonymous events"
    tenant, user, n = rows[0]
    assert n >= 2
    return tenant, user


def _copy_to_tenant(conn: Any, tenant: str, user: str, other_tenant: str) -> int:
    """Copy the user's raw events (identified and anonymous) and landed lines into another tenant, with
    new event ids: the same user id and anonymous ids there are someone else's and must stay."""
    columns, rows = _table(conn, EVENTS)
    anons = {r[columns.index("anonymous_id")] for r in rows
             if r[columns.index("tenant_id")] == tenant and r[columns.index("user_id")] == user}
    mine = [r for r in rows if r[columns.index("tenant_id")] == tenant
            and (r[columns.index("user_id")] == user
                 or (r[columns.index("user_id")] is None and r[columns.index("anonymous_id")] in anons))]
    copies = []
    for r in mine:
        values = dict(zip(columns, r))
        values.update(tenant_id=other_tenant, event_id=str(uuid.uuid4()), _sequence_number=f"x{values['_sequence_number']}")
        copies.append([values[c] for c in columns])
    cur = conn.cursor()
    cur.executemany(f"insert into {EVENTS} ({', '.join(columns)}) values ({', '.join(['%s'] * len(columns))})", copies)
    line_columns, lines = _table(conn, LINES)
    line_copies = []
    for r in lines:
        values = dict(zip(line_columns, r))
        if values["data"] is None:
            continue
        event = json.loads(values["data"])
        if event["tenant_id"] == tenant and (event.get("user_id") == user or
                                             (event.get("user_id") is None and event["anonymous_id"] in anons)):
            event.update(tenant_id=other_tenant, event_id=str(uuid.uuid4()))
            values.update(data=json.dumps(event), sequence_number=f"x{values['sequence_number']}")
            line_copies.append([values[c] for c in line_columns])
    cur.executemany(f"insert into {LINES} ({', '.join(line_columns)}) "
                    f"values ({', '.join(['%s'] * len(line_columns))})", line_copies)
    # A record two committed batches both hold is landed twice and loaded once (by shard and sequence number).
    landed = {(v[line_columns.index("shard_id")], v[line_columns.index("sequence_number")]) for v in line_copies}
    assert line_copies and len(landed) == len(copies), (len(landed), len(copies))
    return len(copies)


def _assert_same(now: dict[str, Table], then: dict[str, Table]) -> None:
    """No table changed (a run that should delete nothing)."""
    for name, (columns, rows) in then.items():
        assert now[name][0] == columns and _multiset(now[name][1]) == _multiset(rows), f"{name} changed"


def _assert_only_subject_removed(before: dict[str, Table], after: dict[str, Table], deleted: dict[str, int],
                                 owned: Callable[[list[str], Row], bool]) -> None:
    """Each table lost exactly the rows ``owned`` names (as many as the eraser reported), nothing else."""
    for name, (columns, rows) in before.items():
        after_columns, after_rows = after[name]
        assert after_columns == columns
        kept = [r for r in rows if not owned(columns, r)]
        assert _multiset(after_rows) == _multiset(kept), f"{name}: rows other than the subject's changed"
        assert len(rows) - len(after_rows) == deleted.get(name, 0), name


@dataclass(frozen=True)
class Built:
    tenant: str
    user: str
    other_tenant: str
    env: dict[str, str]  # TALLY_SNOWFLAKE_* of this test's database, for dbt's emulator target
    work: Path


@pytest.fixture
def built(sf_settings: SnowflakeSettings, sf_conn: Any, archive: ArchiveFixture, tmp_path: Path) -> Built:
    """The fixture archive loaded by the Snowflake loader (both hours) and ``dbt build`` on the emulator;
    the subject's raw events and lines are also copied into another tenant first, so dbt carries them
    into every model."""
    load_hours(sf_conn, archive.store, archive.hours)
    tenant, user = _pick_subject(sf_conn)
    (other_tenant,), *_ = _rows(sf_conn, f"select distinct tenant_id from {EVENTS} where tenant_id <> %s "
                                         f"order by tenant_id limit 1", [tenant])
    copied = _copy_to_tenant(sf_conn, tenant, user, other_tenant)
    assert copied > 0
    env = emulator_env(sf_settings.host or "", sf_settings.port or 0, sf_settings.database)
    build = run_dbt(["build"], "emulator", env, tmp_path)
    assert "ERROR=0" in build.stdout, build.stdout[-4000:]
    return Built(tenant, user, other_tenant, env, tmp_path)


def test_erase_on_the_emulator_removes_the_subject_everywhere_and_nothing_else(
        built: Built, sf_settings: SnowflakeSettings, sf_conn: Any) -> None:
    def open_snowflake() -> AbstractContextManager[Any]:
        return connect(sf_settings, LOGIN_TIMEOUT_S, NETWORK_TIMEOUT_S)

    eraser = WarehouseEraser(SnowflakeWarehouse(open_snowflake))
    tenant, user = built.tenant, built.user

    # discover: every anonymous id the user was seen with in this tenant, and no other tenant's.
    expected_anons = {a for (a,) in _rows(sf_conn, f"select distinct anonymous_id from {EVENTS} "
                                                   f"where tenant_id = %s and user_id = %s", [tenant, user])}
    subject = Subject(tenant, user)
    subject.anonymous_ids = eraser.discover(subject)
    assert subject.anonymous_ids == expected_anons and expected_anons

    # The tables it works on: found in information_schema, with the model tables dbt built.
    with open_snowflake() as conn:
        found = {f"{s}.{t}".lower(): f"{s}.{t}" for s, t, _ in eraser.subject_tables(conn)}
    assert MUST_FIND <= set(found), sorted(found)
    tables = sorted(found.values())

    # count before: non-zero, and what the rows say in Python, table by table.
    before = _snapshot(sf_conn, [*tables, LINES])
    counts = eraser.count(subject)
    expected_counts = {t: sum(_owned(before[t][0], r, subject) for r in before[t][1]) for t in tables}
    assert counts == expected_counts
    assert all(counts[found[t]] > 0 for t in MUST_FIND), counts
    line_columns, lines = before[LINES]
    data_at = line_columns.index("data")
    subject_lines = sum(_line_owned(r[data_at], subject) for r in lines)
    assert subject_lines > 0
    # The other tenant holds copies of every one of these rows: same user id, same anonymous ids.
    other = Subject(built.other_tenant, user, set(subject.anonymous_ids))
    other_counts = eraser.count(other)
    assert other_counts[found["raw.events"]] == counts[found["raw.events"]]

    # erase: exactly the subject's rows and lines, in every table.
    result = eraser.erase(subject)
    assert result.rows_deleted == {**counts, "RAW.ARCHIVE_LINES": subject_lines}
    assert set(eraser.count(subject).values()) == {0}
    after = _snapshot(sf_conn, [*tables, LINES])
    _assert_only_subject_removed(
        before, after, result.rows_deleted,
        lambda columns, row: (_line_owned(row[data_at], subject) if columns == line_columns
                              else _owned(columns, row, subject)))
    assert not any(_line_owned(r[data_at], subject) for r in after[LINES][1])
    assert eraser.count(other) == other_counts  # the other tenant's copies are all there

    # Idempotent: a second run finds nothing left to delete.
    again = eraser.erase(subject)
    assert again.total == 0 and set(again.rows_deleted) == set(result.rows_deleted)
    _assert_same(_snapshot(sf_conn, [*tables, LINES]), after)

    # The forget step's rebuild (dbt run --full-refresh of the derived models) on the emulator: rebuilt
    # from what is left, the models hold nothing of the subject, and the other tenant's copies are there.
    models = eraser.model_tables()
    assert {"int_identities_stitched", "dim_users", "fct_segment_memberships"} <= set(models), models
    dbt_rebuild(DBT_PROJECT_DIR, "emulator", built.env, target_path=built.work / "target-rebuild",
                timeout_s=DBT_TIMEOUT_S)(models)
    assert set(eraser.count(subject).values()) == {0}
    assert eraser.count(other) == other_counts

    # A hostile user id is a bound value: it deletes its own row and line, and nothing else.
    _assert_hostile_user_id_is_a_value(eraser, sf_conn, tenant, tables, found)


def _assert_hostile_user_id_is_a_value(eraser: WarehouseEraser, conn: Any, tenant: str, tables: list[str],
                                       found: dict[str, str]) -> None:
    """A user id that would break string-built SQL (on Snowflake's pyformat binding too) matches only itself."""
    columns, rows = _table(conn, EVENTS)
    template = dict(zip(columns, rows[0]))
    anon = f"anon-{HOSTILE_USER}"
    template.update(tenant_id=tenant, user_id=HOSTILE_USER, anonymous_id=anon, event_id=str(uuid.uuid4()))
    cur = conn.cursor()
    cur.execute(f"insert into {EVENTS} ({', '.join(columns)}) values ({', '.join(['%s'] * len(columns))})",
                [template[c] for c in columns])
    line = {"tenant_id": tenant, "user_id": HOSTILE_USER, "anonymous_id": anon, "event_id": template["event_id"]}
    cur.execute(f"insert into {LINES} (shard_id, sequence_number, data) values (%s, %s, %s)",
                ["shardId-hostile", "1", json.dumps(line, ensure_ascii=False)])
    hostile = Subject(tenant, HOSTILE_USER)
    hostile.anonymous_ids = eraser.discover(hostile)
    assert hostile.anonymous_ids == {anon}
    before = _snapshot(conn, [*tables, LINES])
    result = eraser.erase(hostile)
    assert result.rows_deleted[found["raw.events"]] == 1 and result.rows_deleted["RAW.ARCHIVE_LINES"] == 1
    assert result.total == 2, result.rows_deleted
    after = _snapshot(conn, [*tables, LINES])
    data_at = before[LINES][0].index("data")
    _assert_only_subject_removed(
        before, after, result.rows_deleted,
        lambda columns, row: (_line_owned(row[data_at], hostile) if columns == before[LINES][0]
                              else _owned(columns, row, hostile)))
    # Hostile text in the anonymous ids too (the IN list), for a user who is not there: nothing at all.
    nobody = Subject(tenant, "'; drop table RAW.EVENTS; --", {HOSTILE_USER, "%s", "' or 1=1 --"})
    assert eraser.erase(nobody).total == 0
    _assert_same(_snapshot(conn, [*tables, LINES]), after)
