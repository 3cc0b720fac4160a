"""The event envelope, schema v1: the one place that defines, encodes, decodes and rejects events.

Every layer calls :class:`EventDecoder` so that a record is judged the same way everywhere. A record
that fails becomes a :class:`Rejection` with a stable :class:`Reason` code and its raw bytes; callers
dead-letter it, never drop it.

Decoding has a fast path (one typed msgspec decode, ~1.5M events/s per core) and, only for records
that fail it, a slow path that works out *which* rule the record broke, so the reason codes do not
depend on msgspec's error wording.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

SCHEMA_VERSION = 1

#: Kinesis accepts 1 MiB per record; product events are a few hundred bytes. 64 KiB leaves room for
#: large ``properties`` while stopping a runaway payload long before the stream limit.
DEFAULT_MAX_EVENT_BYTES = 65_536
DEFAULT_MAX_FUTURE_SKEW_S = 300

#: Tenant ids end up inside Redis hash tags (``{tenant}``) and SQL parameters: no braces, colons,
#: quotes, spaces or upper case, so a tenant id can never change a key's slot or escape a string.
#: ``(?!\n)`` because ``$`` alone also matches before a trailing newline (msgspec and ``re.match``).
TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}(?!\n)$"
_TENANT_RE = re.compile(TENANT_ID_PATTERN)
_ID_MAX = 128


class EventType(str, enum.Enum):
    PAGE_VIEW = "page_view"
    CLICK = "click"
    FORM_SUBMIT = "form_submit"
    IDENTIFY = "identify"
    CUSTOM = "custom"


EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)


class Reason(str, enum.Enum):
    """Why a record was rejected. The values are stable: dead letters, ledgers and reports use them."""

    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_TENANT_ID = "bad_tenant_id"
    OVERSIZED = "oversized"
    FUTURE_RECEIVED_AT = "future_received_at"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    #: The collector's own: a Segment message whose ``type`` is not one the HTTP Tracking API defines.
    UNKNOWN_MESSAGE_TYPE = "unknown_message_type"


REASONS: tuple[str, ...] = tuple(r.value for r in Reason)

TenantId = Annotated[str, msgspec.Meta(pattern=TENANT_ID_PATTERN)]
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=_ID_MAX)]
Timestamp = Annotated[dt.datetime, msgspec.Meta(tz=True)]


class Event(msgspec.Struct, frozen=True, gc=False):
    """One product event (schema v1). ``received_at`` is the time every layer buckets by.

    ``gc=False``: an event holds only strings, numbers, timestamps, a UUID and JSON-decoded properties,
    none of which can refer back to it, so the cyclic collector need not track the ~10,000 a consumer
    batch decodes (cheaper to allocate and to free).
    """

    event_id: uuid.UUID
    tenant_id: TenantId
    event_type: EventType
    anonymous_id: Identifier
    occurred_at: Timestamp
    received_at: Timestamp
    source_id: Identifier
    source_seq: Annotated[int, msgspec.Meta(ge=0)]
    schema_version: Literal[1]
    user_id: Identifier | None = None
    properties: dict[str, Any] = {}

    @property
    def minute(self) -> int:
        """Epoch minute of ``received_at``: the window key every layer uses."""
        return int(self.received_at.timestamp()) // 60


REQUIRED_FIELDS: tuple[str, ...] = (
    "event_id", "tenant_id", "event_type", "anonymous_id", "occurred_at", "received_at",
    "source_id", "source_seq", "schema_version",
)


@dataclass(frozen=True)
class Rejection:
    """A record that is not a valid event: its reason code, a human detail, and the raw bytes."""

    reason: Reason
    detail: str
    raw: bytes


_encoder = msgspec.json.Encoder()

#: The marker of a message the collector refused (see :func:`encode_rejected`).
REJECTED_BY_COLLECTOR = "collector"


def encode_event(event: Event) -> bytes:
    """The canonical wire form of an event (JSON, UTC timestamps)."""
    return _encoder.encode(event)


def encode_rejected(reason: Reason, detail: str, message: bytes, tenant_id: str, source_id: str, source_seq: int,
                    received_at: str) -> bytes:
    """The stream record of a message the collector refused: every consumer's decoder dead-letters it
    with ``reason`` (see :func:`classify`), its raw bytes kept whole inside the record.

    ``message`` must be one JSON value (the collector has parsed the request body, so every message is):
    it is spliced in byte for byte under ``message``, so the dead letter holds the exact bytes the SDK
    sent. ``tenant_id``, ``source_id`` and ``source_seq`` are top-level fields, where
    :func:`sequence_position`-style partial parses read them: the refused message holds its collector
    number like an event does, so a refused message lost before the stream is a gap like any other.
    The record has no ``event_id``, so the typed decode always refuses it and the fast path is untouched.
    """
    head = _encoder.encode({
        "rejected_by": REJECTED_BY_COLLECTOR, "reason": reason.value, "detail": detail[:500],
        "tenant_id": tenant_id, "source_id": source_id, "source_seq": source_seq, "received_at": received_at,
        "schema_version": SCHEMA_VERSION,
    })
    return head[:-1] + b',"message":' + message + b"}"


def minute_start(minute: int) -> dt.datetime:
    """The UTC start of an epoch minute."""
    return dt.datetime.fromtimestamp(minute * 60, tz=dt.timezone.utc)


class EventDecoder:
    """Turns record bytes into an :class:`Event` or a :class:`Rejection`.

    ``max_bytes`` bounds a record's size; ``max_future_skew_s`` bounds how far ``received_at`` may be
    ahead of the decoder's clock (a collector with a broken clock would otherwise open windows in the
    future that never close).
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_future_skew_s: int = DEFAULT_MAX_FUTURE_SKEW_S,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_future_skew_s = max_future_skew_s
        self._typed = msgspec.json.Decoder(Event)
        #: The fast path alone (no size or clock check, raises on anything invalid): for hot loops
        #: that do those checks themselves and fall back to :meth:`decode` for the reason code.
        self.typed_decode = self._typed.decode

    def future_limit(self, now: float | None = None) -> dt.datetime:
        """The latest acceptable ``received_at`` at time ``now``; compute once per batch."""
        now = time.time() if now is None else now
        return dt.datetime.fromtimestamp(now + self.max_future_skew_s, tz=dt.timezone.utc)

    def decode(self, raw: bytes, future_limit: dt.datetime | None = None) -> Event | Rejection:
        if len(raw) > self.max_bytes:
            return Rejection(Reason.OVERSIZED, f"{len(raw)} bytes > limit {self.max_bytes}", raw)
        try:
            event = self._typed.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return classify(raw)
        limit = self.future_limit() if future_limit is None else future_limit
        if event.received_at > limit:
            return Rejection(
                Reason.FUTURE_RECEIVED_AT,
                f"received_at {event.received_at.isoformat()} is after {limit.isoformat()}",
                raw,
            )
        return event


def _is_type(value: Any, expected: type | tuple[type, ...]) -> bool:
    # bool is an int in Python but not in the envelope.
    if isinstance(value, bool) and bool not in (expected if isinstance(expected, tuple) else (expected,)):
        return False
    return isinstance(value, expected)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "event_id": (str,),
    "tenant_id": (str,),
    "event_type": (str,),
    "anonymous_id": (str,),
    "user_id": (str, type(None)),
    "occurred_at": (str,),
    "received_at": (str,),
    "source_id": (str,),
    "source_seq": (int,),
    "properties": (dict,),
    "schema_version": (int,),
}


def _parse_timestamp(value: str) -> dt.datetime | None:
    try:
        parsed = msgspec.json.decode(json.dumps(value).encode(), type=dt.datetime)
    except msgspec.ValidationError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _collector_rejection(doc: dict[str, Any], raw: bytes) -> Rejection:
    """A record :func:`encode_rejected` wrote: the collector's reason, its detail, the whole record."""
    try:
        reason = Reason(doc.get("reason"))
    except ValueError:
        return Rejection(Reason.INVALID_VALUE, f"collector rejection with unknown reason {str(doc.get('reason'))[:64]!r}", raw)
    detail = doc.get("detail")
    return Rejection(reason, f"collector: {detail}" if isinstance(detail, str) else "collector", raw)


def classify(raw: bytes) -> Rejection:
    """Name the first rule a record breaks. Only called for records the typed decode refused."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(Reason.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}", raw)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return Rejection(Reason.INVALID_JSON, f"not JSON: {exc.msg} at position {exc.pos}", raw)
    if not isinstance(doc, dict):
        return Rejection(Reason.INVALID_JSON, f"top level is {type(doc).__name__}, not an object", raw)
    if doc.get("rejected_by") == REJECTED_BY_COLLECTOR:
        return _collector_rejection(doc, raw)

    if "schema_version" in doc and _is_type(doc["schema_version"], int) and doc["schema_version"] != SCHEMA_VERSION:
        return Rejection(
            Reason.UNSUPPORTED_SCHEMA_VERSION,
            f"schema_version {doc['schema_version']} is not supported (this build reads {SCHEMA_VERSION})",
            raw,
        )
    for name in REQUIRED_FIELDS:
        if name not in doc or (doc[name] is None):
            return Rejection(Reason.MISSING_FIELD, f"missing required field `{name}`", raw)
    for name, expected in _FIELD_TYPES.items():
        if name in doc and not _is_type(doc[name], expected):
            got = type(doc[name]).__name__
            return Rejection(Reason.WRONG_TYPE, f"`{name}` is {got}, expected {expected[0].__name__}", raw)

    if doc["event_type"] not in EVENT_TYPES:
        return Rejection(Reason.UNKNOWN_EVENT_TYPE, f"event_type {doc['event_type'][:64]!r} is not one of {', '.join(EVENT_TYPES)}", raw)
    if not _TENANT_RE.match(doc["tenant_id"]):
        return Rejection(Reason.BAD_TENANT_ID, f"tenant_id {doc['tenant_id'][:80]!r} does not match {TENANT_ID_PATTERN}", raw)
    try:
        uuid.UUID(doc["event_id"])
    except ValueError:
        return Rejection(Reason.INVALID_VALUE, "event_id is not a UUID", raw)
    for name in ("occurred_at", "received_at"):
        if _parse_timestamp(doc[name]) is None:
            return Rejection(Reason.INVALID_VALUE, f"`{name}` is not an RFC 3339 timestamp with a time zone", raw)
    if doc["source_seq"] < 0:
        return Rejection(Reason.INVALID_VALUE, "source_seq is negative", raw)
    for name in ("anonymous_id", "source_id", "user_id"):
        value = doc.get(name)
        if value is not None and not (1 <= len(value) <= _ID_MAX):
            return Rejection(Reason.INVALID_VALUE, f"`{name}` must be 1-{_ID_MAX} characters", raw)
    # The typed decode refused it for a rule not listed above; keep msgspec's words as the detail.
    try:
        msgspec.json.decode(raw, type=Event)
    except msgspec.ValidationError as exc:
        return Rejection(Reason.INVALID_VALUE, str(exc), raw)
    except msgspec.DecodeError as exc:  # JSON that json.loads takes but msgspec does not: a lone surrogate escape
        return Rejection(Reason.INVALID_JSON, f"not JSON: {exc}", raw)
    return Rejection(Reason.INVALID_VALUE, "rejected by the schema", raw)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    """A record's top-level JSON object as far as JSON reads it (the partial parse of a rejected record)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


class SequencePosition(NamedTuple):
    """Where a record sits in its collector's numbering: ``source_seq`` counts per (source_id, tenant_id)."""

    source_id: str
    tenant_id: str
    source_seq: int


def sequence_position(raw: bytes) -> SequencePosition | None:
    """The numbers a record carries, read as far as they are readable, also from a record the contract
    rejects (a dead letter still *holds* its number, so it is not an upstream gap).

    Only values of the contract's types count: ``source_id`` a string of 1-128 characters, ``tenant_id``
    a non-empty string of at most 128 (any such string: a bad tenant id numbers its own sequence),
    ``source_seq`` an integer >= 0 (not a bool, not a numeric string). Anything else, or bytes that are
    not a JSON object, gives None: a record with no readable numbers can neither fill nor open a gap.
    """
    doc = _json_object(raw)
    if doc is None:
        return None
    source_id, tenant_id, seq = doc.get("source_id"), doc.get("tenant_id"), doc.get("source_seq")
    if not (isinstance(source_id, str) and 1 <= len(source_id) <= _ID_MAX):
        return None
    if not (isinstance(tenant_id, str) and 1 <= len(tenant_id) <= _ID_MAX):
        return None
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0):
        return None
    return SequencePosition(source_id, tenant_id, seq)


def record_tenant(raw: bytes) -> str | None:
    """The tenant a record names, when it parses far enough to a **valid** tenant id (any other record
    reason aside): the speed layer keeps a dead letter under its tenant's hash tag, never under a string
    that could not be one."""
    doc = _json_object(raw)
    tenant = doc.get("tenant_id") if doc is not None else None
    return tenant if isinstance(tenant, str) and _TENANT_RE.match(tenant) else None
