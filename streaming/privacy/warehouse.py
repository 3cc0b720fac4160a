"""The warehouse side of a deletion: every table that holds rows about the subject, then the aggregates.

Which tables: every base table (not view) that has a ``tenant_id`` column and at least one of
``user_id``, ``stitched_user_id``, ``anonymous_id``, found in ``information_schema`` at run time, so a
model added later is covered without a code change (raw events, the incremental ``fct_events``,
``int_identities_stitched``, ``dim_users``, ``fct_segment_memberships``, ...). A row is the subject's by
the rule of :class:`~streaming.privacy.subject.Subject`. All deletes run in one transaction; every value
is a bound parameter (only identifiers read from ``information_schema`` and checked against a strict
pattern appear in SQL text).

Then the derived tables (counts, unique visitors, users, identities, segments) are rebuilt by dbt with
``--full-refresh`` from what is left, so the warehouse's hour and day marts agree with its minutes
again: their incremental runs recount only windows with newly loaded events, and a deletion loads
nothing. The event-grain tables (``stg_kinesis__events``, ``fct_events``) are not rebuilt: their rows
were deleted in place, and an incremental run cannot bring them back (raw holds none of them).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streaming.privacy.subject import Subject
from streaming.warehouse.base import Warehouse, dml_rowcount

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$")
_SUBJECT_COLUMNS = ("user_id", "stitched_user_id", "anonymous_id")
#: dbt rebuilds (full refresh), after a deletion, every model table the warehouse holds except the raw
#: tables (not dbt's) and these event-grain tables, deleted in place: rebuilding them would re-read the
#: whole raw history, and their incremental runs cannot bring deleted rows back (raw has none left).
DBT_NOT_REBUILT = frozenset({"fct_events", "stg_kinesis__events"})
RAW_SCHEMAS = frozenset({"raw"})


@dataclass
class WarehouseErasure:
    rows_deleted: dict[str, int] = field(default_factory=dict)  # "schema.table" -> rows
    rebuilt: bool = False

    @property
    def total(self) -> int:
        return sum(self.rows_deleted.values())


def _quote(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"unexpected identifier in information_schema: {name!r}")
    return f'"{name}"'


class WarehouseEraser:
    """Deletes through a :class:`~streaming.warehouse.base.Warehouse` adapter (DuckDB or Snowflake): its
    connections, its parameter markers, and the tables only it keeps (:meth:`Warehouse.erase_landed`)."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.connect = warehouse.connect

    def _rows(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = conn.cursor()
        try:
            cur.execute(sql, list(params))
            return list(cur.fetchall())
        finally:
            cur.close()

    def subject_tables(self, conn: Any) -> list[tuple[str, str, set[str]]]:
        """(schema, table, subject columns) of every base table holding per-subject rows."""
        rows = self._rows(conn, """
            select c.table_schema, c.table_name, lower(c.column_name)
            from information_schema.columns c
            join information_schema.tables t
              on t.table_schema = c.table_schema and t.table_name = c.table_name
            where t.table_type = 'BASE TABLE' and lower(c.table_schema) <> 'information_schema'
        """)
        columns: dict[tuple[str, str], set[str]] = {}
        for schema, table, column in rows:
            columns.setdefault((schema, table), set()).add(column)
        return sorted((s, t, cols & set(_SUBJECT_COLUMNS)) for (s, t), cols in columns.items()
                      if "tenant_id" in cols and cols & set(_SUBJECT_COLUMNS))

    def _predicate(self, columns: set[str], subject: Subject) -> tuple[str, list[Any]]:
        m = self.warehouse.marks(1)
        anons = sorted(subject.anonymous_ids)
        terms: list[str] = []
        params: list[Any] = [subject.tenant]
        if "user_id" in columns:
            terms.append(f"user_id = {m}")
            params.append(subject.user_id)
        if "stitched_user_id" in columns:
            terms.append(f"stitched_user_id = {m}")
            params.append(subject.user_id)
        if "anonymous_id" in columns and anons:
            guard = "user_id is null and " if "user_id" in columns else ""
            terms.append(f"({guard}anonymous_id in ({self.warehouse.marks(len(anons))}))")
            params.extend(anons)
        if not terms:
            return "", []
        return f"tenant_id = {m} and ({' or '.join(terms)})", params

    def model_tables(self) -> list[str]:
        """Names of the dbt model tables present (lower case), fct_events and raw tables excluded."""
        with self.connect() as conn:
            rows = self._rows(conn, "select table_schema, table_name from information_schema.tables "
                                    "where table_type = 'BASE TABLE' and lower(table_schema) <> 'information_schema'")
        return sorted({t.lower() for s, t in rows if s.lower() not in RAW_SCHEMAS and t.lower() not in DBT_NOT_REBUILT
                       and _IDENT.match(t)})

    def discover(self, subject: Subject) -> set[str]:
        """Anonymous ids the warehouse links to the user (its events, and the stitched identities)."""
        found: set[str] = set()
        with self.connect() as conn:
            for schema, table, columns in self.subject_tables(conn):
                if "anonymous_id" not in columns or not columns & {"user_id", "stitched_user_id"}:
                    continue
                mark = self.warehouse.marks(1)
                by = " or ".join(f"{c} = {mark}" for c in ("user_id", "stitched_user_id") if c in columns)
                n = by.count(mark)
                found.update(a for (a,) in self._rows(
                    conn, f"select distinct anonymous_id from {_quote(schema)}.{_quote(table)} "
                          f"where tenant_id = {mark} and ({by}) and anonymous_id is not null",
                    [subject.tenant, *[subject.user_id] * n]))
        return found

    def count(self, subject: Subject) -> dict[str, int]:
        """Rows about the subject per table (all zero once the erasure is complete)."""
        out: dict[str, int] = {}
        with self.connect() as conn:
            for schema, table, columns in self.subject_tables(conn):
                where, params = self._predicate(columns, subject)
                if where:
                    (n,), = self._rows(conn, f"select count(*) from {_quote(schema)}.{_quote(table)} where {where}", params)
                    out[f"{schema}.{table}"] = int(n)
        return out

    def erase(self, subject: Subject) -> WarehouseErasure:
        """Delete the subject's rows everywhere, in one transaction (and what only the adapter keeps, e.g.
        Snowflake's landed archive lines)."""
        result = WarehouseErasure()
        with self.connect() as conn:
            tables = self.subject_tables(conn)
            cur = conn.cursor()
            try:
                cur.execute("begin")
                for schema, table, columns in tables:
                    where, params = self._predicate(columns, subject)
                    if not where:
                        continue
                    cur.execute(f"delete from {_quote(schema)}.{_quote(table)} where {where}", params)
                    result.rows_deleted[f"{schema}.{table}"] = dml_rowcount(cur)
                result.rows_deleted.update(self.warehouse.erase_landed(
                    cur, subject.tenant, subject.user_id, sorted(subject.anonymous_ids)))
                cur.execute("commit")
            except BaseException:
                cur.execute("rollback")
                raise
            finally:
                cur.close()
        return result


def dbt_rebuild(project_dir: Path, target: str, env: dict[str, str] | None = None,
                target_path: Path | None = None, timeout_s: float = 900) -> Callable[[list[str]], None]:
    """A callable that rebuilds the named models with the dbt CLI (what the forget step runs). Seeds and
    models the warehouse does not hold yet are left alone (a build that never made them runs first)."""

    def run(models: list[str]) -> None:
        if not models:
            return
        dbt = str(Path(sys.executable).with_name("dbt"))
        args = [dbt, "run", "--quiet", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir),
                "--target", target, "--full-refresh", "--select", *models]
        if target_path is not None:
            args += ["--target-path", str(target_path)]
        proc = subprocess.run(args, env={**os.environ, **(env or {}), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
                              capture_output=True, text=True, timeout=timeout_s, cwd=project_dir)
        if proc.returncode != 0:
            # dbt's own output names models and SQL errors, never row values of the subject.
            raise RuntimeError(f"dbt run of the derived models failed (exit {proc.returncode}):\n"
                               f"{proc.stdout[-4000:]}{proc.stderr[-2000:]}")

    return run
