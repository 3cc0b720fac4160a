"""The parallel-run report against the real layers (the clean run through the stream, archive, warehouse,
dbt and the speed layer) and a legacy stand-in in a real PostgreSQL server."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis

from streaming.migration.config import load_config
from streaming.migration.legacy import LegacySource
from streaming.migration.report import MigrationReport, html, markdown
from streaming.migration.service import build_report
from streaming.migration.standin import LegacyLedger, StandInConfig, simulate, write_config, write_postgres
from streaming.settings import Settings
from tests.reconcile.conftest import Clients, PipelineRun, layers_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY = dt.date(2026, 1, 5)
TALLY_LAYERS = re.compile(r"\b(archive|warehouse|speed)\b")


def _legacy(run: PipelineRun, dsn: str, tmp_path: Path, config: StandInConfig) -> tuple[Path, LegacyLedger]:
    rows, ledger = simulate(run.records, config)
    write_postgres(dsn, rows)
    path = tmp_path / "migration.yaml"
    write_config(path, dsn, {json.loads(r.data)["tenant_id"] for r in run.records if r.kind == "valid"}, 0)
    return path, ledger


def _report(settings: Settings, config_path: Path, client: redis.Redis, clients: Clients, ready_days: int) -> MigrationReport:
    settings = dataclasses.replace(settings, migration_config=str(config_path), migration_tolerance=0.0,
                                   migration_ready_days=ready_days)
    return build_report(settings, layers_for(settings, client, clients), LegacySource(load_config(str(config_path))),
                        DAY, 1)


def test_the_report_finds_exactly_the_legacy_losses_and_names_no_tally_layer(
        clean_run: PipelineRun, run_settings: Settings, speed: Any, redis_client: redis.Redis, clients: Clients,
        postgres_dsn: str, tmp_path: Path) -> None:
    speed()
    path, ledger = _legacy(clean_run, postgres_dsn, tmp_path, StandInConfig(drop_rate=0.05, double_rate=0.004))
    assert ledger.lost and ledger.double_counted
    report = _report(run_settings, path, redis_client, clients, ready_days=14)
    cells = report.cells.set_index(["tenant_id", "event_type", "hour"])
    lost, doubled = ledger.lost_cells(), ledger.doubled_cells()
    assert (cells["verdict"] != "tally_loss").all()
    for cell, row in cells.iterrows():
        assert row["deviation"] == doubled[cell] - lost[cell], cell
    missing = cells[cells["verdict"] == "legacy_missing"]
    assert set(missing.index) == {c for c in set(lost) | set(doubled) if lost[c] > doubled[c]}
    lost_ids: dict[Any, set[str]] = {}
    for e in ledger.lost:
        lost_ids.setdefault((e["tenant_id"], e["event_type"], e["hour"]), set()).add(e["event_id"])
    for cell, row in missing.iterrows():
        assert set(row["missing_ids"]) == lost_ids[cell]  # the exact events, from tally's warehouse
    extra = cells[cells["verdict"] == "legacy_extra"]
    assert extra["explained"].all() and not any(row["unknown_ids"] for _, row in extra.iterrows())
    findings = report.findings
    assert not any(TALLY_LAYERS.search(why) for why in findings["why"]), list(findings["why"])
    assert report.days[0].good, report.days[0].reason
    assert not report.cutover.ready
    assert report.cutover.reason == ("only 1 of the 14 days needed (TALLY_MIGRATION_READY_DAYS) are in the range")
    text = markdown(report) + html(report)
    assert "not ready" in text and next(iter(lost_ids[missing.index[0]])) in html(report)


def test_a_loss_free_legacy_makes_the_cutover_ready(
        clean_run: PipelineRun, run_settings: Settings, speed: Any, redis_client: redis.Redis, clients: Clients,
        postgres_dsn: str, tmp_path: Path) -> None:
    speed()
    path, ledger = _legacy(clean_run, postgres_dsn, tmp_path, StandInConfig(drop_rate=0.0, double_rate=0.0))
    assert not ledger.lost and not ledger.double_counted
    report = _report(run_settings, path, redis_client, clients, ready_days=1)
    assert (report.cells["verdict"] == "ok").all()
    assert report.cutover.ready, report.cutover.reason


def test_a_loss_in_tallys_archive_is_reported_as_tallys(
        clean_run: PipelineRun, run_settings: Settings, speed: Any, redis_client: redis.Redis, clients: Clients,
        postgres_dsn: str, tmp_path: Path) -> None:
    from streaming.archive.store import ArchiveStore
    from tests.reconcile.conftest import with_bucket

    speed()
    settings = with_bucket(run_settings, clients)
    store = ArchiveStore(clients.s3, settings.bucket)
    manifest = store.read_manifest(store.manifest_keys(sorted(store.shard_ids())[0])[0])
    assert manifest is not None
    # an archive object gone: tally lost its events (the legacy, loss-free, still has them)
    clients.s3.delete_object(Bucket=settings.bucket, Key=manifest["objects"][0]["key"])
    path, _ = _legacy(clean_run, postgres_dsn, tmp_path, StandInConfig(drop_rate=0.0, double_rate=0.0))
    report = _report(settings, path, redis_client, clients, ready_days=1)
    lost = report.cells[report.cells["verdict"] == "tally_loss"]
    assert len(lost) and set(lost["tally_verdict"]) == {"archive_missing"}
    assert all("tally lost events" in why and "not the legacy's loss" in why for why in lost["why"])
    assert not (report.cells["verdict"] == "legacy_missing").any()
    assert not report.cutover.ready and "tally lost events" in report.cutover.reason


@pytest.mark.dagster
def test_the_daily_asset_reports_the_day_in_the_dagster_ui(
        clean_run: PipelineRun, run_settings: Settings, speed: Any, redis_client: redis.Redis, clients: Clients,
        postgres_dsn: str, tmp_path: Path) -> None:
    import dagster as dg

    from assets.migration.assets import REPORT_KEY, parallel_run_report
    from assets.migration.resources import MigrationSettings
    from tests.reconcile.test_dagster import _resources

    speed()
    path, ledger = _legacy(clean_run, postgres_dsn, tmp_path, StandInConfig(drop_rate=0.05, double_rate=0.0))
    migration = MigrationSettings(config_path=str(path), tolerance=0.0, ready_days=1)
    result = dg.materialize([parallel_run_report], partition_key=DAY.isoformat(),
                            resources={**_resources(run_settings), "migration": migration},
                            instance=dg.DagsterInstance.ephemeral())
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.event_specific_data.materialization.asset_key == REPORT_KEY]
    metadata = event.event_specific_data.materialization.metadata
    # legacy losses are explained (tally's layers reconcile): the day is good, one day is enough here
    assert metadata["cutover_ready"].value is True and metadata["day_good"].value is True
    assert metadata["legacy_missing_cells"].value == len(ledger.lost_cells())
    assert metadata["tally_events"].value - metadata["legacy_events"].value == len(ledger.lost)
    assert "**Cutover: ready**" in metadata["report"].value
    assert Path(str(metadata["report_path"].value)).read_text().startswith("<!doctype html>")


def test_tally_migrate_report_exits_1_while_not_ready_and_0_when_ready(
        clean_run: PipelineRun, run_settings: Settings, speed: Any, redis_client: redis.Redis, clients: Clients,
        postgres_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from orchestration.cli import main
    from tests.reconcile.test_cli import _env

    speed()
    path, _ = _legacy(clean_run, postgres_dsn, tmp_path, StandInConfig(drop_rate=0.05, double_rate=0.004))
    for key, value in {**_env(run_settings), "TALLY_MIGRATION_CONFIG": str(path), "TALLY_MIGRATION_TOLERANCE": "0",
                       "TALLY_METRICS_PORT": "off"}.items():
        monkeypatch.setenv(key, value)
    args = ["migrate", "report", "--days", "1", "--day", DAY.isoformat(), "--out", str(tmp_path / "out")]
    not_ready = CliRunner().invoke(main, args)
    assert not_ready.exit_code == 1, not_ready.output
    assert "cutover NOT READY: only 1 of the 14 days needed" in not_ready.output and "legacy_missing:" in not_ready.output
    monkeypatch.setenv("TALLY_MIGRATION_READY_DAYS", "1")  # the legacy's losses are explained: the day is good
    ready = CliRunner().invoke(main, [*args, "--format", "json"])
    assert ready.exit_code == 0, ready.output
    doc = json.loads(ready.output)
    assert doc["cutover"]["ready"] and doc["exit_status"] == 0 and Path(doc["report_paths"]["html"]).exists()
    assert {f["verdict"] for f in doc["findings"]} <= {"legacy_missing", "legacy_extra"}
