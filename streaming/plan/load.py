"""What a plan is for: the load, the retention, and the traffic's shape; the presets.

Rates and retention are the user's to give. The traffic's shape (events per visitor-hour, the event-type
mix, segment members per visitor) is what the memory benchmark measured on the generator's traffic
(``memory_workload_*`` figures), unless given; the tenants' share of the traffic follows a Zipf curve
with the generator's exponent (1.1) unless given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from streaming.generator import GeneratorConfig
from streaming.settings import SettingError

ARCHITECTURES = ("arm64", "x86_64")


@dataclass(frozen=True)
class Load:
    events_per_day: float
    peak_multiplier: float = 10.0
    tenants: int = 500
    #: Bytes of one event record on the stream (the envelope tally's collector writes); None = the
    #: generator's mean record as the memory benchmark measured it (``archive_record_bytes_mean``).
    event_bytes: float | None = None
    dedup_horizon_s: int = 86_400
    archive_retention_days: int = 365
    refresh_minutes: int = 60
    tenant_skew: float = GeneratorConfig.zipf_s
    #: None = the benchmark's ``memory_workload_events_per_visitor_hour``.
    events_per_visitor_hour: float | None = None
    #: Distinct page paths a tenant's page views reach (the generator has 8).
    pages: int = 8
    #: Fraction of records that fail validation (dead letters).
    malformed_rate: float = 0.001
    #: Dead letters live in their tenant's slot for TALLY_DEAD_LETTER_TTL_S (7 days by default); entries
    #: are trimmed on every write, so one lives between one and two of these.
    dead_letter_days: int = 7
    speed_ttl_minute_s: int = 172_800
    speed_ttl_hour_s: int = 1_209_600
    speed_ttl_day_s: int = 7_776_000
    speed_segment_history_s: int = 86_400
    stream_retention_hours: int = 24
    architecture: str = "arm64"
    redis_replicas: int = 1
    name: str = "custom"


PRESETS: dict[str, dict[str, Any]] = {
    "startup": {"events_per_day": 1_000_000, "tenants": 50, "pages": 50},
    "growth": {"events_per_day": 50_000_000, "tenants": 500, "pages": 200},
    "enterprise": {"events_per_day": 1_000_000_000, "tenants": 5_000, "pages": 500},
}


def preset(name: str, **overrides: Any) -> Load:
    if name not in PRESETS:
        raise SettingError("--preset", name, "is not a preset",
                           f"use one of {', '.join(PRESETS)}, or give --events-per-day without --preset")
    return validate(Load(name=name, **{**PRESETS[name], **overrides}))


def _positive(name: str, value: float, what: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise SettingError(name, value, "must be greater than zero", f"give {name} a positive {what}")


def _fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise SettingError(name, value, "is not a fraction below 1", f"give {name} a number from 0 up to (not including) 1")


OPTION = {f.name: "--" + f.name.replace("_", "-") for f in fields(Load)}


def validate(load: Load) -> Load:
    """The load, or a :class:`SettingError` naming the option that is wrong and how to fix it."""
    _positive(OPTION["events_per_day"], load.events_per_day, "number of events a day, e.g. 50000000")
    if load.peak_multiplier < 1:
        raise SettingError(OPTION["peak_multiplier"], load.peak_multiplier, "is below 1 (a peak lower than the average)",
                           "give --peak-multiplier the peak rate over the day's average, e.g. 10")
    _positive(OPTION["tenants"], load.tenants, "whole number of tenants")
    if load.event_bytes is not None:
        _positive(OPTION["event_bytes"], load.event_bytes, "mean size of an event record in bytes, e.g. 400")
        if load.event_bytes > 1_048_576:
            raise SettingError(OPTION["event_bytes"], load.event_bytes, "is more than one Kinesis record can hold (1 MiB)",
                               "give --event-bytes the mean record size in bytes")
    for name in ("dedup_horizon_s", "archive_retention_days", "refresh_minutes", "pages", "dead_letter_days",
                 "speed_ttl_minute_s", "speed_ttl_hour_s", "speed_ttl_day_s", "speed_segment_history_s",
                 "stream_retention_hours"):
        _positive(OPTION[name], getattr(load, name), "whole number")
    _positive(OPTION["tenant_skew"], load.tenant_skew, "Zipf exponent, e.g. 1.1")
    if load.events_per_visitor_hour is not None:
        _positive(OPTION["events_per_visitor_hour"], load.events_per_visitor_hour, "number, e.g. 4")
    _fraction(OPTION["malformed_rate"], load.malformed_rate)
    if not 24 <= load.stream_retention_hours <= 8760:
        raise SettingError(OPTION["stream_retention_hours"], load.stream_retention_hours, "is outside Kinesis's 24-8760 hours",
                           "give --stream-retention-hours between 24 and 8760")
    if load.architecture not in ARCHITECTURES:
        raise SettingError("--arch", load.architecture, "is not a Lambda architecture", "use arm64 or x86_64")
    if load.redis_replicas < 0 or load.redis_replicas > 5:
        raise SettingError(OPTION["redis_replicas"], load.redis_replicas, "is not 0-5 (ElastiCache's replicas per shard)",
                           "give --redis-replicas 1 (a replica in another zone) or 0 (no failover)")
    return load


def scaled(load: Load, **changes: Any) -> Load:
    return validate(replace(load, **changes))
