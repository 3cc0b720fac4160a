"""The Definitions are a public surface: asset keys, checks, jobs, schedules and sensors are listed
here so that a rename is a deliberate change of this test."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from assets.dbt.segment_seeds import (RULES_SEED, StaleSegmentSeeds, check_segment_seeds, render_segment_seeds,
                                      write_segment_seeds)

ROOT = Path(__file__).resolve().parents[2]

ASSET_KEYS = {
    "stream/kinesis_events",
    "archive/raw_events_archive",
    "speed_layer/redis_counters",
    "warehouse/raw_events",
    "reference/segment_rules",
    "reference/segment_rule_conditions",
    "staging/stg_kinesis__events",
    "staging/stg_kinesis__dead_letters",
    "intermediate/int_identities_stitched",
    "marts/fct_events",
    "marts/fct_event_counts_minute",
    "marts/fct_event_counts_hour",
    "marts/fct_event_counts_day",
    "marts/fct_unique_visitors",
    "marts/dim_users",
    "marts/dim_tenants",
    "marts/fct_segment_memberships",
    "reconciliation/hourly_verdicts",
    "reconciliation/published_report",
    "reconciliation/speed_heal",
    "reconciliation/archive_progress",
    "reconciliation/speed_progress",
    "reconciliation/stream_progress",
    "reconciliation/warehouse_progress",
    "migration/parallel_run_report",
}
GROUPS = {
    "stream/kinesis_events": "stream", "archive/raw_events_archive": "archive",
    "speed_layer/redis_counters": "speed_layer", "warehouse/raw_events": "warehouse_raw",
    "staging/stg_kinesis__events": "warehouse_staging", "intermediate/int_identities_stitched": "warehouse_intermediate",
    "marts/fct_events": "marts", "reference/segment_rules": "reference",
    "reconciliation/hourly_verdicts": "reconciliation",
    "migration/parallel_run_report": "migration",
}
SOME_CHECKS = {
    "warehouse/raw_events:raw_events_match_manifests",
    "staging/stg_kinesis__events:unique_stg_kinesis__events_event_id",
    "marts/fct_events:unique_fct_events_event_id",
    "marts/fct_event_counts_minute:assert_minute_counts_sum_to_events",
    "marts/fct_event_counts_day:assert_rollups_match_minutes",
    "marts/fct_events:assert_every_distinct_event_reaches_fct_events",
    "marts/fct_events:assert_stitched_events_keep_their_user",
    "reconciliation/hourly_verdicts:batch_layers_agree",
    "reconciliation/hourly_verdicts:speed_layer_agrees",
    "reconciliation/hourly_verdicts:no_upstream_loss",
}


@pytest.fixture
def definitions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    for key in [k for k in os.environ if k.startswith("TALLY_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TALLY_HOME", str(tmp_path / "home"))  # no stack: definitions must still load
    from orchestration.definitions import build_definitions

    return build_definitions()


@pytest.mark.dagster
def test_definitions_list_every_public_name(definitions: dg.Definitions) -> None:
    graph = definitions.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == ASSET_KEYS
    for key, group in GROUPS.items():
        assert graph.get(dg.AssetKey.from_user_string(key)).group_name == group
    checks = {c.to_user_string() for c in graph.asset_check_keys}
    assert SOME_CHECKS <= checks
    assert len(checks) == 50
    jobs = {j.name for j in definitions.resolve_all_job_defs()} - {"__ASSET_JOB"}
    assert jobs == {"batch_hourly_job", "raw_events_job", "dbt_build_job", "reconciliation_hourly_job", "forget_job",
                    "migration_daily_job"}
    batch_assets = definitions.resolve_job_def("batch_hourly_job").asset_layer.executable_asset_keys
    assert not any(k.path[0] == "reconciliation" for k in batch_assets), "reconciliation runs on its own schedule"
    assert {s.name for s in definitions.schedules or []} == {"batch_hourly_schedule", "reconciliation_hourly_schedule",
                                                            "migration_daily_schedule"}
    assert {s.name for s in definitions.sensors or []} == {"late_archive_sensor", "external_layers_observer",
                                                          "layer_progress_sensor", "loss_alert_sensor",
                                                          "freshness_alert_sensor", "run_failure_alert_sensor",
                                                          "run_success_alert_sensor", "check_failure_alert_sensor"}
    schedule = definitions.resolve_schedule_def("batch_hourly_schedule")
    assert schedule.cron_schedule == "6 * * * *"  # 300 s lateness + 30 s archiver flush
    assert set(definitions.resources or {}) >= {"s3", "redis", "warehouse", "dbt", "stream", "reconcile"}


@pytest.mark.dagster
def test_lineage_grows_both_layers_from_one_stream(definitions: dg.Definitions) -> None:
    graph = definitions.resolve_asset_graph()
    stream = dg.AssetKey(["stream", "kinesis_events"])
    assert graph.get(dg.AssetKey(["speed_layer", "redis_counters"])).parent_keys == {stream}
    assert graph.get(dg.AssetKey(["archive", "raw_events_archive"])).parent_keys == {stream}
    ancestors, todo = set(), [dg.AssetKey(["marts", "fct_segment_memberships"])]
    while todo:
        for parent in graph.get(todo.pop()).parent_keys:
            if parent not in ancestors:
                ancestors.add(parent)
                todo.append(parent)
    assert {stream, dg.AssetKey(["archive", "raw_events_archive"]), dg.AssetKey(["warehouse", "raw_events"])} <= ancestors
    upstream = graph.get(dg.AssetKey(["staging", "stg_kinesis__events"])).parent_keys
    assert upstream == {dg.AssetKey(["warehouse", "raw_events"])}


@pytest.mark.dagster
def test_workspace_loads_with_the_dagster_cli(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    env.update(TALLY_HOME=str(tmp_path / "home"), DAGSTER_HOME=str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    result = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.unit
def test_committed_segment_seeds_are_generated_from_the_speed_layer_rules() -> None:
    seeds = ROOT / "dbt_project" / "seeds"
    for name, text in render_segment_seeds().items():
        assert (seeds / name).read_text() == text, f"{name} drifted from streaming/segments.yaml"


@pytest.mark.unit
def test_stale_segment_seeds_are_refused_with_the_fix_and_never_rewritten(tmp_path: Path) -> None:
    assert write_segment_seeds(tmp_path) and not write_segment_seeds(tmp_path)  # the second run writes nothing
    check_segment_seeds(tmp_path)
    (tmp_path / RULES_SEED).write_text("segment_name\n")
    with pytest.raises(StaleSegmentSeeds, match=r"segment_rules\.csv not generated from .*segments\.yaml.*make seeds"):
        check_segment_seeds(tmp_path)
    assert (tmp_path / RULES_SEED).read_text() == "segment_name\n"  # checked, not rewritten


@pytest.mark.dagster
def test_every_schedule_and_sensor_runs_by_default(definitions: dg.Definitions) -> None:
    """`make ui` alone (its daemon) builds the hours, reconciles them and sends the alerts."""
    repo = definitions.get_repository_def()
    schedules = repo.schedule_defs
    sensors = repo.sensor_defs
    assert len(schedules) == 3 and len(sensors) == 8
    stopped = [s.name for s in [*schedules, *sensors]
               if s.default_status not in (dg.DefaultScheduleStatus.RUNNING, dg.DefaultSensorStatus.RUNNING)]
    assert stopped == []


@pytest.mark.dagster
def test_freshness_slas_per_layer(definitions: dg.Definitions, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 1.11+ FreshnessPolicy on the stream, the speed layer, the archive (their progress assets),
    raw_events and every mart, each window from its setting."""
    graph = definitions.resolve_asset_graph()
    windows = {n.key.to_user_string(): n.freshness_policy.fail_window.to_timedelta().total_seconds()
               for n in graph.asset_nodes if n.freshness_policy is not None}
    assert isinstance(graph.get(dg.AssetKey.from_user_string("warehouse/raw_events")).freshness_policy,
                      dg.FreshnessPolicy)
    assert {k: v for k, v in windows.items() if k.startswith("reconciliation/")} == {
        "reconciliation/stream_progress": 900, "reconciliation/speed_progress": 120,
        "reconciliation/archive_progress": 600, "reconciliation/warehouse_progress": 7200}
    marts = {k for k in ASSET_KEYS if k.startswith("marts/")}
    assert marts and all(windows[k] == 7200 for k in marts | {"warehouse/raw_events"})
    monkeypatch.setenv("TALLY_FRESHNESS_ARCHIVE_S", "75")
    monkeypatch.setenv("TALLY_FRESHNESS_WAREHOUSE_S", "3600")
    from orchestration.definitions import build_definitions

    graph = build_definitions().resolve_asset_graph()
    assert graph.get(dg.AssetKey.from_user_string("reconciliation/archive_progress")).freshness_policy.fail_window \
        .to_timedelta().total_seconds() == 75
    assert graph.get(dg.AssetKey.from_user_string("marts/fct_events")).freshness_policy.fail_window \
        .to_timedelta().total_seconds() == 3600


@pytest.mark.dagster
def test_the_reconciliation_schedules_tick_requests_the_closed_hour(definitions: dg.Definitions) -> None:
    """A tick of the reconciliation schedule, evaluated the way the daemon evaluates it (the schedule's
    own evaluation on an instance, at its cron time): one run of the reconciliation job for the hour
    before, nothing for the hour still open."""
    schedule = definitions.get_repository_def().get_schedule_def("reconciliation_hourly_schedule")
    minute = int(schedule.cron_schedule.split()[0])
    with dg.instance_for_test() as instance:
        at = dt.datetime(2026, 1, 5, 11, minute, tzinfo=dt.timezone.utc)
        data = schedule.evaluate_tick(dg.build_schedule_context(instance=instance, scheduled_execution_time=at))
    requests = data.run_requests or []
    assert [(r.partition_key, r.job_name or schedule.job_name) for r in requests] == [
        ("2026-01-05-10:00", "reconciliation_hourly_job")]
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
