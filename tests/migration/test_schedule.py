"""The parallel-run report's schedule: yesterday's partition once configured, a skip that says why before."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from assets.migration.schedules import CRON, build_schedule

pytestmark = [pytest.mark.dagster, pytest.mark.unit]


def test_the_schedule_asks_for_yesterday_once_a_legacy_is_configured() -> None:
    at = dt.datetime(2026, 1, 6, 2, 30, tzinfo=dt.timezone.utc)
    request = build_schedule(True)(dg.build_schedule_context(scheduled_execution_time=at))
    assert isinstance(request, dg.RunRequest) and request.partition_key == "2026-01-05"
    skipped = build_schedule(False)(dg.build_schedule_context(scheduled_execution_time=at))
    assert isinstance(skipped, dg.SkipReason) and "TALLY_MIGRATION_CONFIG is not set" in (skipped.skip_message or "")
    assert build_schedule(True).cron_schedule == CRON == "30 2 * * *"
