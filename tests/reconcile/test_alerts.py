"""tally's own alerts through apprise to real channels: a loopback HTTP server (``json://``) and a loopback
SMTP server (aiosmtpd). A loss injected into the speed layer gives exactly one alert on each channel naming
the tenant, event type, minute and culprit; the next reconciliations of the same loss give none; once
healed, one "resolved". Driven by the real loss sensor over real Dagster materializations of the hour."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import dagster as dg
import pytest
import redis

from assets.reconciliation.assets import hourly_verdicts, speed_heal
from assets.reconciliation.checks import CHECKS
from orchestration.alerting import loss_alert_sensor
from streaming.settings import Settings
from tests.channels import Received, smtp, webhook
from tests.reconcile.conftest import Clients, PipelineRun
from tests.reconcile.helpers import minute_of_iso, pick_closed_event
from tests.reconcile.test_dagster import PARTITION, _resources
from tests.reconcile.test_faults import CLOSED_BY

pytestmark = [pytest.mark.dagster, pytest.mark.integration]


def _reconcile(settings: Settings, instance: dg.DagsterInstance, heal: bool = False) -> None:
    assets = [hourly_verdicts, *CHECKS, *([speed_heal] if heal else [])]
    dg.materialize(assets, partition_key=PARTITION, resources=_resources(settings), instance=instance,
                   raise_on_error=False)


def _tick(settings: Settings, instance: dg.DagsterInstance, cursor: str | None) -> str | None:
    resources = {"s3": _resources(settings)["s3"]}
    with dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        return loss_alert_sensor(context).cursor


def _bodies(channel: Received) -> list[str]:
    return [f"{title}\n{body}" for title, body in channel.messages]


def test_injected_loss_alerts_once_per_channel_then_resolves_once(
        clean_run: PipelineRun, run_settings: Settings, speed: Any, redis_client: redis.Redis, clients: Clients,
        monkeypatch: pytest.MonkeyPatch) -> None:
    victim = pick_closed_event(clean_run.records, CLOSED_BY, index=3)
    marker = victim["event_id"].encode()
    speed(skip=lambda record: marker in record.data)  # the speed layer never counts this one event
    minute = dt.datetime.fromtimestamp(minute_of_iso(victim["received_at"]) * 60, tz=dt.timezone.utc)
    instance = dg.DagsterInstance.ephemeral()
    with webhook() as hook, smtp() as mail:
        monkeypatch.setenv("TALLY_ALERT_URLS", f"{hook.url} {mail.url}")
        _reconcile(run_settings, instance)
        cursor = _tick(run_settings, instance, None)
        for channel in (hook, mail):
            assert len(channel.messages) == 1, _bodies(channel)
            title, body = channel.messages[0]
            assert title.startswith("tally LOSS: speed_missing in the speed layer (Redis)")
            assert victim["tenant_id"] in title and victim["event_type"] in title
            assert f"minute {minute:%Y-%m-%d %H:%M} UTC" in title
            assert f"tenant {victim['tenant_id']}, {victim['event_type']}, minute {minute:%Y-%m-%d %H:%M} UTC" in body
            assert "What to do: `tally heal`" in body and "Report: s3://" in body
        incidents = clients.s3.list_objects_v2(Bucket=run_settings.bucket, Prefix="reports/incidents/open/")
        assert [o["Key"] for o in incidents["Contents"]] == [
            f"reports/incidents/open/loss/speed_missing/{minute:%Y-%m-%dT%H}.json"]

        # The same loss seen again (the next hourly run, a re-run, a run that then heals): no new message.
        _reconcile(run_settings, instance)
        cursor = _tick(run_settings, instance, cursor)
        _reconcile(run_settings, instance, heal=True)
        cursor = _tick(run_settings, instance, cursor)
        assert len(hook.messages) == 1 and len(mail.messages) == 1

        # Healed: the next reconciliation of the hour is clean, one "resolved" per channel, then nothing.
        _reconcile(run_settings, instance)
        cursor = _tick(run_settings, instance, cursor)
        _reconcile(run_settings, instance)
        _tick(run_settings, instance, cursor)
        for channel in (hook, mail):
            assert len(channel.messages) == 2, _bodies(channel)
            title, body = channel.messages[1]
            assert title == "RESOLVED: " + channel.messages[0][0]
            assert f"finds no speed_missing in hour {minute:%Y-%m-%dT%H}:00 UTC any more" in body
    assert "Contents" not in clients.s3.list_objects_v2(Bucket=run_settings.bucket, Prefix="reports/incidents/open/")
    resolved = clients.s3.list_objects_v2(Bucket=run_settings.bucket, Prefix="reports/incidents/resolved/")["Contents"]
    record = json.loads(clients.s3.get_object(Bucket=run_settings.bucket, Key=resolved[0]["Key"])["Body"].read())
    assert len(record["delivered"]) == 2 and len(record["resolved_delivered"]) == 2


def test_a_channel_that_was_down_gets_the_alert_later_and_the_other_only_once(
        clean_run: PipelineRun, run_settings: Settings, speed: Any, redis_client: redis.Redis, clients: Clients,
        monkeypatch: pytest.MonkeyPatch) -> None:
    victim = pick_closed_event(clean_run.records, CLOSED_BY, index=4)
    marker = victim["event_id"].encode()
    speed(skip=lambda record: marker in record.data)
    instance = dg.DagsterInstance.ephemeral()
    with webhook() as hook:
        with smtp() as mail:
            down = mail.url
        monkeypatch.setenv("TALLY_ALERT_URLS", f"{hook.url} {down}")  # the SMTP server has stopped
        _reconcile(run_settings, instance)
        cursor = _tick(run_settings, instance, None)
        assert len(hook.messages) == 1
        with smtp() as mail:
            monkeypatch.setenv("TALLY_ALERT_URLS", f"{hook.url} {mail.url}")
            _reconcile(run_settings, instance)
            _tick(run_settings, instance, cursor)
        assert len(hook.messages) == 1, _bodies(hook)
    assert len(mail.messages) == 1 and mail.messages[0][0] == hook.messages[0][0]
