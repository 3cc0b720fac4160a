"""Segment HTTP Tracking API messages -> the schema v1 envelope (pure: no I/O, no clock).

The collector calls :func:`map_message` once per message with the tenant its write key belongs to and
the request's ``received_at``; it gets an :class:`Envelope` (everything but ``source_id`` and
``source_seq``, which the spool assigns when the event is made durable) or a :class:`Refusal` (a reason
code of :class:`streaming.events.Reason` and a detail), which the collector dead-letters with the
message's raw bytes. The README's collector section has the mapping as a table.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streaming.events import Reason

#: The message types of the Segment HTTP Tracking API.
MESSAGE_TYPES = ("track", "page", "screen", "identify", "group", "alias")
#: UUIDv5 namespace for ``messageId``s that are not UUIDs (uuid5(NAMESPACE_URL, "https://tally/collector/messageId")).
MESSAGE_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://tally/collector/messageId")
_ID_MAX = 128
#: What a ``track`` may be mapped to by the tenant's event map.
TRACK_TARGETS = ("click", "form_submit")
_UTC = dt.timezone.utc


@dataclass(frozen=True, slots=True)
class Envelope:
    """A mapped event, waiting for its collector number."""

    doc: dict[str, Any]
    partition_key: str


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: Reason
    detail: str


class EventMap:
    """Per tenant, the ``track`` event names that are ``click`` or ``form_submit`` (else ``custom``).

    The file (``TALLY_COLLECTOR_EVENT_MAP``) is YAML: ``{tenant: {event name: click | form_submit}}``;
    the tenant ``"*"`` applies to every tenant that does not name the event itself.
    """

    def __init__(self, by_tenant: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._by_tenant = {t: dict(m) for t, m in (by_tenant or {}).items()}
        self._default = self._by_tenant.pop("*", {})
        for tenant, names in [("*", self._default), *self._by_tenant.items()]:
            for name, target in names.items():
                if target not in TRACK_TARGETS:
                    raise ValueError(f"event map: tenant {tenant!r} maps {name!r} to {target!r}; "
                                     f"allowed: {', '.join(TRACK_TARGETS)}")

    @classmethod
    def load(cls, path: str | Path | None) -> EventMap:
        if path is None:
            return cls()
        doc = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
            raise ValueError(f"event map {path}: expected {{tenant: {{event name: click | form_submit}}}}")
        return cls(doc)

    def event_type(self, tenant: str, name: str) -> str:
        target = self._by_tenant.get(tenant, {}).get(name)
        if target is None:
            target = self._default.get(name, "custom")
        return target


def _identifier(msg: Mapping[str, Any], name: str) -> str | None | Refusal:
    value = msg.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return Refusal(Reason.WRONG_TYPE, f"`{name}` is {type(value).__name__}, expected a string")
    value = str(value)
    if len(value) > _ID_MAX:
        return Refusal(Reason.INVALID_VALUE, f"`{name}` is longer than {_ID_MAX} characters")
    return value


_CANONICAL_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _timestamp(value: Any, received_at: str) -> str | Refusal:
    """The client's time as RFC 3339 UTC; a time without a zone is taken as UTC (as Segment does)."""
    if value is None:
        return received_at
    if not isinstance(value, str):
        return Refusal(Reason.WRONG_TYPE, f"`timestamp` is {type(value).__name__}, expected an ISO-8601 string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return Refusal(Reason.INVALID_VALUE, f"`timestamp` {value[:40]!r} is not an ISO-8601 time")
    if _CANONICAL_TS.fullmatch(value):
        return value  # valid, and already the envelope's form (what JavaScript's toISOString() sends)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_UTC)
    try:
        return parsed.astimezone(_UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, ValueError):
        return Refusal(Reason.INVALID_VALUE, f"`timestamp` {value[:40]!r} is out of range")


def _object(msg: Mapping[str, Any], name: str) -> dict[str, Any] | Refusal:
    value = msg.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        return Refusal(Reason.WRONG_TYPE, f"`{name}` is {type(value).__name__}, expected an object")
    return value


def event_id_for(tenant: str, message_id: Any) -> str | Refusal:
    """``messageId`` as the envelope's UUID: itself when it is one, else a UUIDv5 of tenant + messageId
    (stable, so an SDK's retry of the same message still de-duplicates)."""
    if message_id is None or message_id == "":
        return str(uuid.uuid4())
    if isinstance(message_id, bool) or not isinstance(message_id, (str, int)):
        return Refusal(Reason.WRONG_TYPE, f"`messageId` is {type(message_id).__name__}, expected a string")
    if message_id.__class__ is str and _CANONICAL_UUID.fullmatch(message_id):
        return message_id  # a canonical UUID already (what the SDKs send)
    text = str(message_id)
    if len(text) > 256:
        return Refusal(Reason.INVALID_VALUE, "`messageId` is longer than 256 characters")
    if len(text) == 36:
        try:
            return str(uuid.UUID(text))
        except ValueError:
            pass
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{tenant}\x00{text}"))


def map_message(msg: Any, tenant: str, received_at: str, event_map: EventMap,
                batch_context: Mapping[str, Any] | None = None, implied_type: str | None = None) -> Envelope | Refusal:
    """One Segment message as an envelope, or why it cannot be one."""
    if not isinstance(msg, dict):
        return Refusal(Reason.INVALID_JSON, f"a message is {type(msg).__name__}, not a JSON object")
    mtype = implied_type or msg.get("type")
    if mtype is None:
        return Refusal(Reason.MISSING_FIELD, "missing `type` (one of " + ", ".join(MESSAGE_TYPES) + ")")
    if mtype not in MESSAGE_TYPES:
        return Refusal(Reason.UNKNOWN_MESSAGE_TYPE,
                       f"type {str(mtype)[:40]!r} is not one of " + ", ".join(MESSAGE_TYPES))
    anonymous_id = _identifier(msg, "anonymousId")
    if isinstance(anonymous_id, Refusal):
        return anonymous_id
    user_id = _identifier(msg, "userId")
    if isinstance(user_id, Refusal):
        return user_id
    if anonymous_id is None and user_id is None:
        return Refusal(Reason.MISSING_FIELD, "missing `anonymousId` and `userId` (one is required)")
    event_id = event_id_for(tenant, msg.get("messageId"))
    if isinstance(event_id, Refusal):
        return event_id
    occurred_at = _timestamp(msg.get("timestamp", msg.get("originalTimestamp")), received_at)
    if isinstance(occurred_at, Refusal):
        return occurred_at
    context = _object(msg, "context")
    if isinstance(context, Refusal):
        return context
    if batch_context:
        context = {**batch_context, **context}

    if mtype in ("track", "page", "screen"):
        props = _object(msg, "properties")
        if isinstance(props, Refusal):
            return props
        properties: dict[str, Any] = dict(props)
    elif mtype in ("identify", "group"):
        traits = _object(msg, "traits")
        if isinstance(traits, Refusal):
            return traits
        properties = {"traits": traits}
    else:
        properties = {}

    if mtype == "track":
        name = msg.get("event")
        if name is None or name == "":
            return Refusal(Reason.MISSING_FIELD, "a track message needs `event` (its name)")
        if not isinstance(name, str):
            return Refusal(Reason.WRONG_TYPE, f"`event` is {type(name).__name__}, expected a string")
        event_type = event_map.event_type(tenant, name)
        properties["event"] = name
    elif mtype in ("page", "screen"):
        event_type = "page_view"
        page = context.get("page")
        path = properties.get("path")
        if not isinstance(path, str) and isinstance(page, dict):
            path = page.get("path")
        name = msg.get("name")
        if not isinstance(path, str) and mtype == "screen" and isinstance(name, str):
            path = name
        if isinstance(path, str):
            properties["path"] = path
        if isinstance(name, str):
            properties["name"] = name
    elif mtype == "identify":
        event_type = "identify"
    elif mtype == "group":
        group_id = _identifier(msg, "groupId")
        if isinstance(group_id, Refusal):
            return group_id
        if group_id is None:
            return Refusal(Reason.MISSING_FIELD, "a group message needs `groupId`")
        event_type = "custom"
        properties["group_id"] = group_id
    else:  # alias
        previous_id = _identifier(msg, "previousId")
        if isinstance(previous_id, Refusal):
            return previous_id
        if previous_id is None:
            return Refusal(Reason.MISSING_FIELD, "an alias message needs `previousId`")
        event_type = "custom"
        properties["previous_id"] = previous_id
    properties["message_type"] = mtype
    if context:
        properties["context"] = context
    visitor = anonymous_id if anonymous_id is not None else user_id
    assert visitor is not None
    return Envelope({
        "event_id": event_id, "tenant_id": tenant, "event_type": event_type, "anonymous_id": visitor,
        "user_id": user_id, "occurred_at": occurred_at, "received_at": received_at,
        "properties": properties, "schema_version": 1,
    }, visitor)
