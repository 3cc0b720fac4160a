"""The batch layer end to end: archive -> Dagster runs (raw_events, dbt build) -> marts, compared with
the generator's ledger and with rows computed in Python; re-runs and late data change nothing they
should not."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from orchestration.sensors import late_archive_sensor
from streaming.generator import GeneratedRecord, Ledger, read_run

from tests.batch.expected import fct_event_rows, segment_memberships, valid_events
from tests.batch.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.dagster, pytest.mark.dbt]

FCT_EVENTS = ("select event_id, tenant_id, event_type, anonymous_id, stitched_user_id, received_at "
              "from marts.fct_events order by 1")


@pytest.fixture
def pipeline(tally_env: dict[str, str]) -> Iterator[Pipeline]:
    yield Pipeline(tally_env)


def _assert_runs_ok(results: list[dg.ExecuteInProcessResult]) -> None:
    for result in results:
        assert result.success
        for evaluation in result.get_asset_check_evaluations():
            assert evaluation.passed, (evaluation.check_name, evaluation.metadata)


def test_marts_equal_the_ledger_exactly(pipeline: Pipeline, small_run: tuple[Path, Ledger]) -> None:
    out, ledger = small_run
    records = list(read_run(out))
    assert ledger.duplicates and ledger.late_events and ledger.dead_letters  # the run has every kind
    pipeline.send_and_archive(records)
    _assert_runs_ok(pipeline.load_hours(pipeline.store.hours_with_objects()))
    _assert_runs_ok([pipeline.dbt_build()])

    minutes = pipeline.query("select tenant_id, event_type, strftime(minute_at, '%Y-%m-%dT%H:%M:00Z'), event_count "
                             "from marts.fct_event_counts_minute order by 1, 2, 3")
    assert [tuple(r) for r in minutes] == ledger.count_rows()
    hours: dict[str, dict[str, int]] = {}
    days: dict[str, dict[str, int]] = {}
    for tenant, grain, start, n in pipeline.query("select tenant_id, grain, window_start, unique_visitors "
                                                  "from marts.fct_unique_visitors"):
        if grain == "hour":
            hours.setdefault(tenant, {})[start.strftime("%Y-%m-%dT%H:00:00Z")] = n
        else:
            days.setdefault(tenant, {})[start.strftime("%Y-%m-%d")] = n
    assert hours == ledger.uniques_hour
    assert days == ledger.uniques_day
    assert pipeline.query("select count(*) from marts.fct_events") == [(ledger.valid_events,)]
    hour_total = pipeline.query("select sum(event_count) from marts.fct_event_counts_hour")[0][0]
    day_total = pipeline.query("select sum(event_count) from marts.fct_event_counts_day")[0][0]
    assert hour_total == day_total == ledger.valid_events
    dead = dict(pipeline.query("select reason, count(*) from staging.stg_kinesis__dead_letters group by 1"))
    assert dead == ledger.dead_letters

    events = valid_events(records)
    assert [tuple(r) for r in pipeline.query(FCT_EVENTS)] == fct_event_rows(events)
    members = {tuple(r) for r in pipeline.query("select tenant_id, anonymous_id, segment_name "
                                                "from marts.fct_segment_memberships")}
    assert members == segment_memberships(events) and members
    users = {tuple(r) for r in pipeline.query("select tenant_id, user_id from marts.dim_users")}
    assert users == {(e.tenant_id, e.user_id) for e in events if e.event_type.value == "identify"}


def _sensor(pipeline: Pipeline, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=pipeline.instance, cursor=cursor,
                                      resources={"s3": pipeline.defs.resources["s3"]})
    return late_archive_sensor(context)


def _hour(record: GeneratedRecord) -> dt.datetime:
    received = json.loads(record.data)["received_at"]
    return dt.datetime.fromisoformat(received.replace("Z", "+00:00")).replace(minute=0, second=0, microsecond=0)


def test_rebuilds_are_idempotent_and_late_events_land_incrementally(
    pipeline: Pipeline, small_run: tuple[Path, Ledger]
) -> None:
    out, ledger = small_run
    records = list(read_run(out))
    cut = int(len(records) * 0.7)
    first, rest = records[:cut], records[cut:]
    first_hours = {_hour(r) for r in first if r.kind != "malformed"}
    late_into_built = [r for r in rest if r.kind == "late" and _hour(r) in first_hours]
    assert late_into_built, "the split must leave late events for hours built in phase 1"

    # Phase 1: build, snapshot, build again: the same rows, nothing doubled.
    pipeline.send_and_archive(first)
    hours = pipeline.store.hours_with_objects()
    _assert_runs_ok(pipeline.load_hours(hours) + [pipeline.dbt_build()])
    snapshot = pipeline.query(FCT_EVENTS)
    raw_rows = pipeline.query("select count(*), count(distinct event_id) from raw.events")
    assert [tuple(r) for r in snapshot] == fct_event_rows(valid_events(first))
    _assert_runs_ok(pipeline.load_hours(hours) + [pipeline.dbt_build()])
    assert pipeline.query(FCT_EVENTS) == snapshot
    assert pipeline.query("select count(*), count(distinct event_id) from raw.events") == raw_rows
    cursor = _sensor(pipeline, None).cursor  # the sensor has seen everything archived so far

    # Phase 2: the rest arrives, with late events for hours already built. The sensor asks for those.
    pipeline.send_and_archive(rest)
    result = _sensor(pipeline, cursor)
    requested = {r.partition_key for r in result.run_requests or []}
    late_keys = {_hour(r).strftime("%Y-%m-%d-%H:00") for r in late_into_built}
    assert late_keys <= requested
    assert all(r.tags.get("tally/reason") == "late-archive-objects" for r in result.run_requests or [])
    for key in sorted(requested):
        _assert_runs_ok([pipeline.build_range(*(2 * [dt.datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(
            tzinfo=dt.timezone.utc)]), job_name="raw_events_job")])
    new_hours = [h for h in pipeline.store.hours_with_objects() if h not in hours]
    _assert_runs_ok(pipeline.load_hours(new_hours) + [pipeline.dbt_build()])  # incremental fct_events

    events = valid_events(records)
    assert [tuple(r) for r in pipeline.query(FCT_EVENTS)] == fct_event_rows(events)
    minutes = pipeline.query("select tenant_id, event_type, strftime(minute_at, '%Y-%m-%dT%H:%M:00Z'), event_count "
                             "from marts.fct_event_counts_minute order by 1, 2, 3")
    assert [tuple(r) for r in minutes] == ledger.count_rows()
    assert _sensor(pipeline, result.cursor).run_requests == []  # nothing new since
