"""The whole batch path on the Snowflake emulator, through the real connector and dbt-snowflake:
load hour by hour, dbt build, load more (and an hour again), dbt build incrementally, dbt source
freshness, reconciliation through dagster-snowflake's SnowflakeResource. The same input goes through
the local path (DuckDB loader, dbt-duckdb), and the two warehouses must agree row for row.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest

from assets.warehouse.resources import WarehouseResource, build_snowflake_warehouse
from streaming.warehouse.duckdb_load import load_hours as duckdb_load_hours
from streaming.reconcile.engine import reconcile
from streaming.reconcile.service import Layers, collect
from streaming.warehouse.duckdb import DuckDBWarehouse
from streaming.segments import load_rules
from streaming.settings import SnowflakeSettings, load_settings

from tests.snowflake.archive import ArchiveFixture
from tests.snowflake.conftest import emulator_env

pytestmark = [pytest.mark.integration, pytest.mark.dbt, pytest.mark.snowflake, pytest.mark.slow]

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
DBT_TIMEOUT_S = 300  # an emulator 500 is retried by the connector: bound every dbt command
# Columns that say when a row was loaded: they differ between any two loads by design.
_LOAD_TIME_COLUMNS = {"loaded_at", "_loaded_at", "_landed_at", "landed_at"}


@dataclass
class Warehouses:
    archive: ArchiveFixture
    sf: SnowflakeSettings
    sf_env: dict[str, str]
    duckdb_path: Path
    builds: dict[str, list[subprocess.CompletedProcess[str]]]
    dbt_dirs: Path


def start_dbt(args: list[str], target: str, env: dict[str, str], work: Path) -> tuple[str, subprocess.Popen[str]]:
    argv = [str(Path(sys.executable).parent / "dbt"), *args, "--project-dir", str(DBT_PROJECT_DIR),
            "--profiles-dir", str(DBT_PROJECT_DIR), "--target", target,
            "--target-path", str(work / f"target-{target}"), "--log-path", str(work / f"logs-{target}")]
    full_env = {**os.environ, **env, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "TALLY_DBT_TARGET": target}
    proc = subprocess.Popen(argv, env=full_env, cwd=DBT_PROJECT_DIR, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    return f"dbt {' '.join(args)} --target {target}", proc


def finish_dbt(started: tuple[str, subprocess.Popen[str]]) -> subprocess.CompletedProcess[str]:
    what, proc = started
    try:
        out, err = proc.communicate(timeout=DBT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{what} did not finish in {DBT_TIMEOUT_S}s:\n{out[-6000:]}") from None
    assert proc.returncode == 0, f"{what} failed:\n{out[-6000:]}\n{err[-2000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_dbt(args: list[str], target: str, env: dict[str, str], work: Path) -> subprocess.CompletedProcess[str]:
    return finish_dbt(start_dbt(args, target, env, work))


@pytest.fixture
def warehouses(sf_settings: SnowflakeSettings, sf_conn: Any, archive: ArchiveFixture, tmp_path: Path) -> Warehouses:
    """Both warehouses after: load hour 0, build; load hours 0 (again) and 1, build incrementally."""
    from streaming.warehouse.snowflake_load import load_hours

    sf_env = emulator_env(sf_settings.host or "", sf_settings.port or 0, sf_settings.database)
    duck_path = tmp_path / "warehouse.duckdb"
    duck_env = {"TALLY_DUCKDB_PATH": str(duck_path)}
    builds: dict[str, list[subprocess.CompletedProcess[str]]] = {"emulator": [], "local": []}
    first, second = archive.hours
    for hours in ([first], [first, second]):
        load_hours(sf_conn, archive.store, hours)
        with duckdb.connect(str(duck_path)) as duck:
            duckdb_load_hours(duck, archive.store, hours)
        # Both warehouses build at once; the reference needs only the models and seeds (dbt's tests run
        # on the emulator).
        emulator = start_dbt(["build"], "emulator", sf_env, tmp_path)
        local = start_dbt(["build", "--resource-type", "model", "--resource-type", "seed"], "local", duck_env, tmp_path)
        builds["local"].append(finish_dbt(local))
        builds["emulator"].append(finish_dbt(emulator))
    return Warehouses(archive, sf_settings, sf_env, duck_path, builds, tmp_path)


def _normal(value: Any) -> Any:
    """One representation for a value either warehouse returns (VARIANT text vs DuckDB JSON, Decimal...)."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(json.loads(value), sort_keys=True)
        except ValueError:
            return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 9)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, bool):
        return int(value)
    return value


def _table(rows: list[tuple[Any, ...]], columns: list[str]) -> tuple[list[str], list[tuple[Any, ...]]]:
    keep = [i for i, c in enumerate(columns) if c not in _LOAD_TIME_COLUMNS]
    out = [tuple(_normal(r[i]) for i in keep) for r in rows]
    return [columns[i] for i in keep], sorted(out, key=lambda r: tuple((v is None, str(v)) for v in r))


def _emulator_table(conn: Any, schema: str, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cur = conn.cursor()
    cur.execute(f"select * from {schema}.{table}")
    return _table([tuple(r) for r in cur.fetchall()], [d[0].lower() for d in cur.description])


def _duckdb_table(duck: Any, schema: str, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    rel = duck.execute(f"select * from {schema}.{table}")
    return _table([tuple(r) for r in rel.fetchall()], [d[0].lower() for d in rel.description])


def test_batch_path_on_the_emulator_matches_duckdb(warehouses: Warehouses, sf_conn: Any, redis_client: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    w = warehouses
    # dbt built twice on each target; the second emulator build ran fct_events incrementally.
    for target in ("emulator", "local"):
        assert all("ERROR=0" in b.stdout for b in w.builds[target])
    assert "incremental model marts.fct_events" in w.builds["emulator"][1].stdout
    second_run = (w.dbt_dirs / "target-emulator" / "run" / "tally" / "models" / "marts" / "fct_events.sql").read_text()
    assert "delete from" in second_run.lower() and "insert into" in second_run.lower()  # not a rebuild

    # The marts (and every other model dbt built), row for row.
    with duckdb.connect(str(w.duckdb_path), read_only=True) as duck:
        tables = duck.execute("select table_schema, table_name from information_schema.tables "
                              "where table_schema in ('marts', 'intermediate') order by 1, 2").fetchall()
        assert {t for _, t in tables} >= {"fct_events", "fct_event_counts_minute", "fct_event_counts_hour",
                                          "fct_event_counts_day", "dim_users", "dim_tenants"}
        for schema, table in tables:
            expected_columns, expected = _duckdb_table(duck, schema, table)
            columns, actual = _emulator_table(sf_conn, schema.upper(), table.upper())
            assert columns == expected_columns, (schema, table)
            assert len(actual) == len(expected) and actual == expected, f"{schema}.{table} differs"
        assert len(_duckdb_table(duck, "marts", "fct_events")[1]) > 3000

    # dbt source freshness: the raw tables were loaded moments ago.
    fresh = run_dbt(["source", "freshness"], "emulator", w.sf_env, w.dbt_dirs)
    assert "PASS" in fresh.stdout and "ERROR STALE" not in fresh.stdout

    # Reconciliation reads Snowflake through dagster-snowflake's SnowflakeResource and judges like DuckDB.
    start = min(w.archive.hours)
    start_minute = int(start.timestamp()) // 60
    end_minute = start_minute + 3 * 60
    local = DuckDBWarehouse(w.duckdb_path)
    results = {"duckdb": _reconcile(w, local, redis_client, start_minute, end_minute)}
    run = _reconcile_in_dagster(w, redis_client, start_minute, end_minute, monkeypatch)
    results["snowflake"] = run.result
    assert results["snowflake"].summary == results["duckdb"].summary and results["duckdb"].summary
    _same_frame(results["snowflake"].cells, results["duckdb"].cells)
    _same_frame(results["snowflake"].sequences, results["duckdb"].sequences)
    assert SECRET not in run.everything_dagster_recorded

    reader = run.reader
    _same_frame(reader.counts(start_minute, end_minute, 300), local.counts(start_minute, end_minute, 300))
    _same_frame(reader.rollups(start_minute, end_minute), local.rollups(start_minute, end_minute))
    _same_frame(reader.sequences(start_minute, end_minute), local.sequences(start_minute, end_minute))
    hours = [start_minute // 60, start_minute // 60 + 1]
    for table in ("raw", "mart"):
        _same_frame(reader.events(hours, table), local.events(hours, table))
    assert reader.watermark() == pytest.approx(local.watermark(), abs=1e-6)
    # What heal rebuilds unique visitors, top pages and segments from (streaming/reconcile/heal_structures.py).
    first_hour, end_hour = start_minute // 60, end_minute // 60
    visitors = local.visitor_counts(first_hour, end_hour)
    assert len(visitors) > 5
    _same_frame(reader.visitor_counts(first_hour, end_hour), visitors)
    busiest = visitors.sort_values("visitors").iloc[-1]
    assert sorted(reader.visitor_ids(busiest.tenant_id, int(busiest.hour))) == sorted(
        local.visitor_ids(busiest.tenant_id, int(busiest.hour)))
    pages = local.page_views(first_hour, end_hour)
    assert len(pages) > 5
    _same_frame(reader.page_views(first_hour, end_hour), pages)
    for rule in load_rules():
        hits = local.segment_hits(rule.event_type, rule.where, start_minute * 60_000, end_minute * 60_000)
        assert len(hits) > 0, rule.name
        _same_frame(reader.segment_hits(rule.event_type, rule.where, start_minute * 60_000, end_minute * 60_000), hits)


SECRET = "emulator-accepts-any-password-7f3a"


def _reconcile(w: Warehouses, reader: Any, redis_client: Any, start_minute: int, end_minute: int) -> Any:
    layers = Layers(s3=w.archive.store.s3, bucket=w.archive.store.bucket, redis=redis_client, warehouse=reader)
    inputs, _, _ = collect(layers, start_minute, end_minute, 300)
    return reconcile(inputs)


@dataclass
class DagsterRun:
    result: Any
    reader: Any
    everything_dagster_recorded: str


def _reconcile_in_dagster(w: Warehouses, redis_client: Any, start_minute: int, end_minute: int,
                          monkeypatch: pytest.MonkeyPatch) -> DagsterRun:
    """Reconcile inside a Dagster run whose `warehouse` resource is built for TALLY_ENV=prod (the
    password held as an EnvVar and resolved by Dagster), as the reconciliation assets use it."""
    env = {**w.sf_env, "TALLY_ENV": "prod", "TALLY_REDIS_URL": "redis://127.0.0.1:6379/0",
           "TALLY_SNOWFLAKE_PASSWORD": SECRET}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    captured: dict[str, Any] = {}

    # `context` is left bare: Dagster rejects its string annotation (postponed annotations).
    @dg.asset
    def reconciliation_on_snowflake(context, warehouse: WarehouseResource) -> dg.MaterializeResult:  # type: ignore[no-untyped-def]
        assert warehouse.kind == "snowflake"
        captured["reader"] = warehouse.reader()
        captured["result"] = _reconcile(w, captured["reader"], redis_client, start_minute, end_minute)
        context.log.info(f"reconciled {start_minute}..{end_minute} on {warehouse.database}")
        return dg.MaterializeResult(metadata={"summary": dg.MetadataValue.json(captured["result"].summary)})

    resource = build_snowflake_warehouse(load_settings(env), login_timeout_s=10, network_timeout_s=60)
    with dg.instance_for_test() as instance:
        outcome = dg.materialize([reconciliation_on_snowflake], resources={"warehouse": resource}, instance=instance)
        assert outcome.success
        records = instance.get_records_for_run(outcome.run_id).records
        recorded = repr(outcome.dagster_run) + "".join(repr(r.event_log_entry) for r in records)
    return DagsterRun(captured["result"], captured["reader"], recorded)


def _same_frame(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert sorted(actual.columns) == sorted(expected.columns)
    assert len(actual) == len(expected)
    columns = sorted(expected.columns)
    if expected.empty:
        return

    def rows(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
        values = [tuple(_normal(v.item() if hasattr(v, "item") else v) for v in row)
                  for row in frame[columns].itertuples(index=False)]
        return sorted(values, key=lambda r: tuple((v is None, str(v)) for v in r))

    assert rows(actual) == rows(expected)
