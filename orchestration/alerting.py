"""The sensors that send tally's own alerts (running by default): loss verdicts, stale layers, failed runs
and failed blocking checks. Each kind of incident has one sensor that writes it, so the incident records
(:mod:`streaming.alerts.incidents`, in S3) never have two writers; every incident is announced once and
resolved once, through the channels ``TALLY_ALERT_URLS`` lists (read when a sensor ticks, never stored in
Dagster's resource config or run records).

What is not alerted twice: a blocking check on ``reconciliation/hourly_verdicts`` is the loss the loss
sensor announces with its tenant, event type, minute and culprit, so the check sensor leaves those checks
to it; a run that failed only because a blocking check failed is the check's incident, not a run's.
"""

from __future__ import annotations

import json
import time
from typing import Any

import dagster as dg

from assets.reconciliation.keys import LAYER_KEYS, VERDICTS_KEY

_RUNNING = dg.DefaultSensorStatus.RUNNING
_LAYER_OF = {key: layer for layer, key in LAYER_KEYS.items()}
_CHECK_FAILED = "DagsterAssetCheckFailedError"


def _alerter(s3: Any) -> Any:
    from streaming.alerts.incidents import Alerter, IncidentStore
    from streaming.alerts.notify import Notifier
    from streaming.settings import load_settings

    return Alerter(IncidentStore(s3.get_client(), s3.bucket), Notifier(load_settings().alert_urls))


def _scrubbed(text: str) -> str:
    from streaming.logs import Scrub
    from streaming.settings import load_settings

    settings = load_settings()
    return Scrub([settings.privacy_salt, settings.snowflake.password or "", *settings.alert_urls]).clean(text)


def _report(s3: Any, metadata: Any) -> tuple[dict[str, Any], str]:
    """The report JSON of a verdicts materialization, and the link to its HTML."""
    html_key = str(metadata["report_s3_key"].value)
    body = s3.get_client().get_object(Bucket=s3.bucket, Key=html_key.removesuffix(".html") + ".json")["Body"].read()
    local = metadata.get("report_path")
    link = f"s3://{s3.bucket}/{html_key}" + (f" (local copy: {local.value})" if local is not None else "")
    return json.loads(body), link


@dg.sensor(minimum_interval_seconds=60, default_status=_RUNNING,
           description="One alert per unexplained loss (or duplicate) found by reconciliation, naming tenant, event "
                       "type, minute and culprit layer; one 'resolved' once a later reconciliation of the hour is clean.")
def loss_alert_sensor(context: dg.SensorEvaluationContext, s3: dg.ResourceParam[Any]) -> dg.SensorResult:
    from streaming.alerts.loss import KIND, cleared_by, loss_incidents

    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=VERDICTS_KEY, after_storage_id=after), limit=20, ascending=True).records
    alerter = _alerter(s3)
    for record in records:
        if record.asset_materialization is None:
            continue
        report, link = _report(s3, record.asset_materialization.metadata)
        result = alerter.sync(KIND, loss_incidents(report, link), cleared_by(report))
        context.log.info(f"report {report.get('run_id')}: opened {result.opened}, resolved {result.resolved}")
    cursor = str(records[-1].storage_id) if records else context.cursor
    return dg.SensorResult(cursor=cursor)


def _freshness_incident(instance: dg.DagsterInstance, key: dg.AssetKey, policy: Any, since: float) -> Any:
    from streaming.alerts.incidents import Incident, utc

    layer = _LAYER_OF.get(key)
    name = f"the {layer} layer" if layer else key.to_user_string()
    window = int(policy.fail_window.to_timedelta().total_seconds())
    last = instance.get_latest_materialization_event(key)
    if last is None or last.asset_materialization is None:
        seen = "it has never been reported"
    else:
        clock = last.asset_materialization.metadata.get("clock")
        seen = f"last reported {utc(last.timestamp)}" + (f", its clock then at {clock.value}" if clock else "")
    todo = {"stream": "check the collectors and producers: no record is reaching Kinesis",
            "speed": "check the speed consumer (`tally consume`): running? its log (component speed) and "
                     "tally_shard_behind_latest_seconds{group=\"speed\"}",
            "archive": "check the archiver (`tally archive --follow`): running? its log (component archiver) and "
                       "tally_shard_behind_latest_seconds{group=\"archiver\"}",
            "warehouse": "check the batch_hourly_schedule's runs in the Dagster UI"}.get(
        layer or "", "check the runs that materialize it in the Dagster UI (schedules, sensors, failed runs)")
    return Incident(
        id=f"freshness/{key.to_user_string()}", kind="freshness", severity="warning",
        title=f"tally STALE: {name} is past its freshness SLA ({window} s)",
        body=(f"What: {name} ({key.to_user_string()}) has not advanced within its freshness SLA of {window} s; "
              f"reconciliation holds what it has not read as pending (not loss).\n"
              f"Where: {key.to_user_string()}; {seen}.\nSince: stale since {utc(since)}.\nWhat to do: {todo}."),
        since=since, detail={"asset": key.to_user_string()},
    )


@dg.sensor(minimum_interval_seconds=60, default_status=_RUNNING,
           description="One alert when an asset with a freshness policy goes stale (FAIL), one 'resolved' when it is "
                       "fresh again (the states Dagster's freshness daemon records).")
def freshness_alert_sensor(context: dg.SensorEvaluationContext, s3: dg.ResourceParam[Any]) -> dg.SensorResult:
    from dagster._core.definitions.freshness import FreshnessState

    graph = context.repository_def.asset_graph  # type: ignore[union-attr]
    policies = {node.key: node.freshness_policy for node in graph.asset_nodes if node.freshness_policy}
    states = context.instance.get_freshness_state_records(list(policies))
    current = {}
    fresh: set[str] = set()
    for key, record in states.items():
        if record.freshness_state == FreshnessState.FAIL:
            incident = _freshness_incident(context.instance, key, policies[key], record.updated_at.timestamp())
            current[incident.id] = incident
        elif record.freshness_state in (FreshnessState.PASS, FreshnessState.WARN):
            fresh.add(key.to_user_string())

    def cleared(rec: Any) -> str | None:
        asset = rec.incident.detail.get("asset")
        return f"{asset} is fresh again" if asset in fresh else None

    _alerter(s3).sync("freshness", current, cleared)
    return dg.SensorResult()


def _failed_only_by_checks(context: dg.RunFailureSensorContext) -> bool:
    failures = context.get_step_failure_events()
    return bool(failures) and all(
        getattr(getattr(e.event_specific_data, "error", None), "cls_name", "") == _CHECK_FAILED for e in failures)


@dg.run_failure_sensor(name="run_failure_alert_sensor", default_status=_RUNNING, minimum_interval_seconds=30,
                       description="One alert while a job's runs fail, one 'resolved' when a later run of it succeeds.")
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, s3: dg.ResourceParam[Any]) -> None:
    from streaming.alerts.incidents import Incident

    run = context.dagster_run
    if _failed_only_by_checks(context):
        return  # a failed blocking check: check_failure_alert_sensor (or, for reconciliation, the loss sensor)
    partition = run.tags.get("dagster/partition") or run.tags.get("dagster/asset_partition_range_start") or "-"
    message = _scrubbed(context.failure_event.message or "")
    steps = [f"- {e.step_key}: {_scrubbed(getattr(e.event_specific_data.error, 'message', '') or '').strip()[:500]}"
             for e in context.get_step_failure_events()[:5]]
    incident = Incident(
        id=f"run/{run.job_name}", kind="run",
        title=f"tally RUN FAILED: {run.job_name} (partition {partition})",
        body=(f"What: a Dagster run of {run.job_name} failed: {message[:500]}\n" + "\n".join(steps) + "\n"
              f"Where: run {run.run_id}, partition {partition}.\n"
              f"Since: {run.run_id[:8]} is the first failure of {run.job_name} since its last success.\n"
              "What to do: open the run in the Dagster UI (Runs), fix the cause, re-execute it from failure; "
              "this incident resolves when a run of the job succeeds."),
        since=time.time(),
        detail={"job": run.job_name, "run_id": run.run_id, "partition": partition},
    )
    _alerter(s3).sync("run", {incident.id: incident}, lambda rec: None)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="run_success_alert_sensor",
                      default_status=_RUNNING, minimum_interval_seconds=30,
                      description="Resolves a job's failed-run incident when a run of that job succeeds.")
def run_success_alert_sensor(context: dg.RunStatusSensorContext, s3: dg.ResourceParam[Any]) -> None:
    run = context.dagster_run

    def cleared(rec: Any) -> str | None:
        if rec.incident.detail.get("job") != run.job_name:
            return None
        return f"run {run.run_id} of {run.job_name} succeeded"

    _alerter(s3).sync("run", {}, cleared)


@dg.sensor(minimum_interval_seconds=60, default_status=_RUNNING,
           description="One alert when a blocking asset check's latest evaluation fails, one 'resolved' when it passes "
                       "(reconciliation's own checks are alerted as loss by loss_alert_sensor).")
def check_failure_alert_sensor(context: dg.SensorEvaluationContext, s3: dg.ResourceParam[Any]) -> dg.SensorResult:
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    from streaming.alerts.incidents import Incident

    graph = context.repository_def.asset_graph  # type: ignore[union-attr]
    keys = [k for k in graph.asset_check_keys if graph.get_check_spec(k).blocking and k.asset_key != VERDICTS_KEY]
    latest = context.instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    current, passed = {}, set()
    for key, record in latest.items():
        name = f"{key.asset_key.to_user_string()}:{key.name}"
        if record.status == AssetCheckExecutionRecordStatus.SUCCEEDED:
            passed.add(name)
        elif record.status == AssetCheckExecutionRecordStatus.FAILED:
            evaluation = record.event.asset_check_evaluation if record.event is not None else None
            described = _scrubbed(getattr(evaluation, "description", None) or "")
            current[f"check/{name}"] = Incident(
                id=f"check/{name}", kind="check",
                title=f"tally CHECK FAILED: {key.name} on {key.asset_key.to_user_string()}",
                body=(f"What: the blocking check {key.name} failed{': ' + described if described else ''}; what "
                      "depends on the asset was not built.\n"
                      f"Where: {key.asset_key.to_user_string()}, partition {record.partition or '-'}, run {record.run_id}.\n"
                      f"Since: {record.create_timestamp:.0f} (Unix seconds).\n"
                      "What to do: read the check's metadata in the Dagster UI (Assets > Checks), fix the data, "
                      "re-run the asset; this resolves when the check passes."),
                since=record.create_timestamp, detail={"check": name})

    def cleared(rec: Any) -> str | None:
        return "the check passes again" if rec.incident.detail.get("check") in passed else None

    _alerter(s3).sync("check", current, cleared)
    return dg.SensorResult()


SENSORS = [loss_alert_sensor, freshness_alert_sensor, run_failure_alert_sensor, run_success_alert_sensor,
           check_failure_alert_sensor]
