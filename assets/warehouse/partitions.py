"""Hourly partitions of received_at (the hour prefix of the archive)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

#: The first hour tally keeps; the generator's default start.
FIRST_HOUR = "2026-01-01-00:00"

hourly = dg.HourlyPartitionsDefinition(start_date=FIRST_HOUR, timezone="UTC")


def partition_hour(key: str) -> dt.datetime:
    """The UTC hour a partition key names."""
    return dt.datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(tzinfo=dt.timezone.utc)


def hour_key(hour: dt.datetime) -> str:
    return hour.astimezone(dt.timezone.utc).strftime("%Y-%m-%d-%H:%M")
