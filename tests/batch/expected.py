"""What the marts must hold, computed in Python from the records themselves (not from the warehouse)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from streaming.events import Event, EventDecoder
from streaming.generator import GeneratedRecord
from streaming.segments import load_rules


def valid_events(records: Iterable[GeneratedRecord]) -> list[Event]:
    """De-duplicated valid events (by event_id, earliest received_at)."""
    decoder = EventDecoder()
    kept: dict[str, Event] = {}
    for record in records:
        result = decoder.decode(record.data)
        if isinstance(result, Event):
            key = str(result.event_id)
            if key not in kept or result.received_at < kept[key].received_at:
                kept[key] = result
    return list(kept.values())


def _naive(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(dt.timezone.utc).replace(tzinfo=None)


def stitched_users(events: list[Event]) -> dict[tuple[str, str], str]:
    first: dict[tuple[str, str], tuple[dt.datetime, str]] = {}
    for e in events:
        if e.event_type.value == "identify" and e.user_id:
            key = (e.tenant_id, e.anonymous_id)
            if key not in first or (e.received_at, e.user_id) < first[key]:
                first[key] = (e.received_at, e.user_id)
    return {k: v[1] for k, v in first.items()}


def fct_event_rows(events: list[Event]) -> list[tuple[Any, ...]]:
    """(event_id, tenant, type, anonymous_id, stitched_user_id, received_at) sorted, like fct_events."""
    users = stitched_users(events)
    return sorted(
        (str(e.event_id), e.tenant_id, e.event_type.value, e.anonymous_id,
         e.user_id or users.get((e.tenant_id, e.anonymous_id)), _naive(e.received_at))
        for e in events
    )


def segment_memberships(events: list[Event]) -> set[tuple[str, str, str]]:
    """(tenant, anonymous_id, segment) at the newest received_at, from streaming/segments.yaml."""
    as_of = max(e.received_at for e in events)
    members: set[tuple[str, str, str]] = set()
    for rule in load_rules():
        counts: dict[tuple[str, str], int] = {}
        since = as_of - dt.timedelta(hours=rule.window_hours)
        for e in events:
            if since < e.received_at <= as_of and rule.matches(e.event_type.value, e.properties):
                key = (e.tenant_id, e.anonymous_id)
                counts[key] = counts.get(key, 0) + 1
        members.update((t, a, rule.name) for (t, a), n in counts.items() if n >= rule.min_count)
    return members
