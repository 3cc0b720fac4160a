"""The reconciliation domain in Dagster: the definitions graph, and an hour materialized in process
against the real layers (checks pass/fail as the faults say; the blocking check stops publishing)."""

from __future__ import annotations

import json
from typing import Any

import dagster as dg
import duckdb
import pytest
import redis

from assets.reconciliation.assets import HEAL_KEY, PUBLISHED_KEY, VERDICTS_KEY, hourly_verdicts, published_report, speed_heal
from assets.reconciliation.checks import CHECKS
from assets.reconciliation.progress import LAYER_KEYS, advanced
from assets.reconciliation.resources import ReconcileResource
from assets.warehouse.resources import WarehouseResource
from orchestration.resources import RedisResource, TallyS3Resource
from streaming.settings import Settings
from tests.reconcile.conftest import Clients, PipelineRun
from tests.reconcile.helpers import pick_closed_event
from tests.reconcile.test_faults import CLOSED_BY

PARTITION = "2026-01-05-09:00"  # the clean run's closed hour


@pytest.mark.dagster
def test_the_root_includes_the_domain_and_names_every_public_piece() -> None:
    from orchestration.definitions import build_definitions

    repo = build_definitions().get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"reconciliation/hourly_verdicts", "reconciliation/published_report", "reconciliation/speed_heal",
            *(k.to_user_string() for k in LAYER_KEYS.values())} <= keys
    checks = {c.name for c in repo.asset_graph.asset_check_keys if c.asset_key == VERDICTS_KEY}
    assert checks == {"batch_layers_agree", "speed_layer_agrees", "no_upstream_loss"}
    assert repo.get_job("reconciliation_hourly_job") is not None
    assert repo.get_schedule_def("reconciliation_hourly_schedule").cron_schedule == "16 * * * *"
    assert repo.get_sensor_def("layer_progress_sensor") is not None
    freshness = repo.asset_graph.get(LAYER_KEYS["speed"]).freshness_policy
    assert freshness is not None


@pytest.mark.unit
def test_progress_is_reported_only_when_a_clock_moves_within_its_sla() -> None:
    assert advanced({"archive": 10.0, "speed": 5.0}, {"archive": 10.0, "speed": 6.0, "warehouse": None}) == {"speed": 6.0}
    slas = {"archive": 60, "speed": 60}
    assert advanced({}, {"archive": 100.0, "speed": 30.0}, slas, now=120.0) == {"archive": 100.0}


def _resources(settings: Settings) -> dict[str, Any]:
    return {
        "s3": TallyS3Resource(bucket=settings.bucket, region_name=settings.aws_region,
                              endpoint_url=settings.aws_endpoint_url, aws_access_key_id="tally-local",
                              aws_secret_access_key="tally-local"),
        "redis": RedisResource(url=settings.redis_url),
        "warehouse": WarehouseResource(path=str(settings.duckdb_path)),
        "reconcile": ReconcileResource.from_settings(settings, settings.aws_endpoint_url),
    }


def _materialize(settings: Settings, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return dg.materialize([hourly_verdicts, published_report, speed_heal, *CHECKS], partition_key=PARTITION,
                          resources=_resources(settings), instance=instance, raise_on_error=False)


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


@pytest.mark.dagster
@pytest.mark.integration
def test_hour_with_flushed_redis_heals_and_publishes(run_settings: Settings, speed: Any, redis_client: redis.Redis,
                                                      clients: Clients) -> None:
    speed()
    redis_client.flushall()
    instance = dg.DagsterInstance.ephemeral()
    first = _materialize(run_settings, instance)
    assert _checks(first) == {"batch_layers_agree": True, "speed_layer_agrees": False, "no_upstream_loss": True}
    materialized = {e.event_specific_data.materialization.asset_key for e in first.get_asset_materialization_events()}
    assert {VERDICTS_KEY, PUBLISHED_KEY, HEAL_KEY} <= materialized
    verdicts = instance.get_latest_materialization_event(VERDICTS_KEY).asset_materialization.metadata
    assert verdicts["cells_speed_missing"].value > 0 and "speed_missing" in verdicts["report"].value
    heal = instance.get_latest_materialization_event(HEAL_KEY).asset_materialization.metadata
    assert heal["healed_cells"].value == verdicts["cells_speed_missing"].value
    published = clients.s3.list_objects_v2(Bucket=run_settings.bucket, Prefix="reports/published/")["Contents"]
    assert [o["Key"] for o in published] == ["reports/published/2026-01-05-0900.html"]

    second = _materialize(run_settings, instance)
    assert _checks(second) == {"batch_layers_agree": True, "speed_layer_agrees": True, "no_upstream_loss": True}


@pytest.mark.dagster
@pytest.mark.integration
def test_warehouse_loss_blocks_publishing_and_healing(clean_run: PipelineRun, run_settings: Settings, speed: Any,
                                                     redis_client: redis.Redis, clients: Clients) -> None:
    speed()
    victim = pick_closed_event(clean_run.records, CLOSED_BY, index=5)
    con = duckdb.connect(str(run_settings.duckdb_path))
    con.execute("delete from raw.events where event_id = ?", [victim["event_id"]])
    con.close()
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(run_settings, instance)
    assert _checks(result)["batch_layers_agree"] is False
    materialized = {e.event_specific_data.materialization.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {VERDICTS_KEY}  # the blocking check stopped the report and the heal
    check = [e for e in result.get_asset_check_evaluations() if e.check_name == "batch_layers_agree"][0]
    assert check.metadata["warehouse_missing"].value == 1


@pytest.mark.dagster
@pytest.mark.integration
def test_progress_sensor_reports_a_layer_only_when_its_clock_moves(
        run_settings: Settings, speed: Any, redis_client: redis.Redis) -> None:
    from assets.reconciliation.sensors import layer_progress_sensor

    speed()
    resources = _resources(run_settings)
    with dg.build_sensor_context(resources=resources) as context:
        first = layer_progress_sensor(context)
    # The stream readers' clocks are at their tips (now); the warehouse holds January's events, far past its
    # SLA: a clock that old is no progress, so the warehouse stays unreported (stale).
    reported = {e.asset_key for e in first.asset_events}
    assert {LAYER_KEYS["speed"], LAYER_KEYS["archive"]} <= reported and LAYER_KEYS["warehouse"] not in reported
    with dg.build_sensor_context(resources=resources, cursor=first.cursor) as context:
        second = layer_progress_sensor(context)
    # A layer at the tip is caught up to the read itself: its clock moves with the wall clock, so it stays
    # fresh; the warehouse's clock did not move: still nothing, so its freshness goes stale.
    assert {e.asset_key for e in second.asset_events} == {LAYER_KEYS["speed"], LAYER_KEYS["archive"]}
    assert json.loads(second.cursor)["archive"] > json.loads(first.cursor)["archive"]
