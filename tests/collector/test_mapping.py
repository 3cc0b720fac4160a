"""Segment messages -> schema v1 envelope: the README's mapping table, row by row."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pytest

from streaming.collector.segment import MESSAGE_ID_NAMESPACE, Envelope, EventMap, Refusal, map_message
from streaming.events import Event, EventDecoder, Reason

pytestmark = pytest.mark.unit
AT = "2026-11-24T10:00:05.250Z"


def mapped(msg: object, tenant: str = "acme", event_map: EventMap | None = None) -> Envelope | Refusal:
    return map_message(msg, tenant, AT, event_map or EventMap())


def as_event(envelope: Envelope | Refusal, seq: int = 1) -> Event:
    assert isinstance(envelope, Envelope), envelope
    doc = {**envelope.doc, "source_id": "col-1", "source_seq": seq}
    event = EventDecoder().decode(json.dumps(doc).encode())
    assert isinstance(event, Event), event
    return event


def test_the_mapping_table() -> None:
    mid = str(uuid.uuid4())
    e = as_event(mapped({"type": "track", "event": "Signed Up", "messageId": mid, "anonymousId": "a", "userId": "u",
                         "timestamp": "2026-11-24T11:00:00+01:00", "properties": {"plan": "team"},
                         "context": {"ip": "1.2.3.4"}}))
    assert (str(e.event_id), e.event_type.value, e.anonymous_id, e.user_id) == (mid, "custom", "a", "u")
    assert e.occurred_at.isoformat() == "2026-11-24T10:00:00+00:00" and e.received_at.isoformat().startswith("2026-11-24T10:00:05.25")
    assert e.properties == {"plan": "team", "event": "Signed Up", "message_type": "track", "context": {"ip": "1.2.3.4"}}
    page = as_event(mapped({"type": "page", "anonymousId": "a", "name": "Pricing", "context": {"page": {"path": "/pricing"}}}))
    assert page.event_type.value == "page_view" and page.properties["path"] == "/pricing" and page.user_id is None
    own = as_event(mapped({"type": "page", "anonymousId": "a", "properties": {"path": "/docs"}, "context": {"page": {"path": "/x"}}}))
    assert own.properties["path"] == "/docs", "properties.path first, then context.page.path"
    screen = as_event(mapped({"type": "screen", "userId": "u", "name": "Home"}))
    assert screen.event_type.value == "page_view" and screen.properties["path"] == "Home" and screen.anonymous_id == "u"
    ident = as_event(mapped({"type": "identify", "anonymousId": "a", "userId": "u", "traits": {"plan": "x"}}))
    assert ident.event_type.value == "identify" and ident.properties["traits"] == {"plan": "x"}
    group = as_event(mapped({"type": "group", "userId": "u", "groupId": "g-1", "traits": {"n": 1}}))
    assert group.event_type.value == "custom" and group.properties["group_id"] == "g-1"
    alias = as_event(mapped({"type": "alias", "userId": "u", "previousId": "old"}))
    assert alias.event_type.value == "custom" and alias.properties["previous_id"] == "old"
    naive = as_event(mapped({"type": "track", "event": "E", "userId": 42, "timestamp": "2026-11-24T09:00:00"}))
    assert naive.occurred_at.isoformat() == "2026-11-24T09:00:00+00:00" and naive.user_id == "42"
    untimed = as_event(mapped({"type": "track", "event": "E", "userId": "u"}))
    assert untimed.occurred_at == untimed.received_at


def test_non_uuid_message_ids_become_a_stable_uuid5_per_tenant() -> None:
    one = mapped({"type": "track", "event": "E", "userId": "u", "messageId": "ajs-123"})
    two = mapped({"type": "track", "event": "E", "userId": "u", "messageId": "ajs-123"})
    other = mapped({"type": "track", "event": "E", "userId": "u", "messageId": "ajs-123"}, tenant="globex")
    assert isinstance(one, Envelope) and isinstance(two, Envelope) and isinstance(other, Envelope)
    assert one.doc["event_id"] == two.doc["event_id"] == str(uuid.uuid5(MESSAGE_ID_NAMESPACE, "acme\x00ajs-123"))
    assert other.doc["event_id"] != one.doc["event_id"]
    upper = mapped({"type": "track", "event": "E", "userId": "u", "messageId": str(uuid.UUID(int=5)).upper()})
    assert isinstance(upper, Envelope) and upper.doc["event_id"] == str(uuid.UUID(int=5))


def test_the_tenant_event_map(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text("'*': {Button Clicked: click}\nacme: {Form Sent: form_submit, Button Clicked: form_submit}\n")
    event_map = EventMap.load(path)
    kinds = {(t, n): as_event(mapped({"type": "track", "event": n, "userId": "u"}, t, event_map)).event_type.value
             for t in ("acme", "globex") for n in ("Button Clicked", "Form Sent", "Other")}
    assert kinds == {("acme", "Button Clicked"): "form_submit", ("acme", "Form Sent"): "form_submit",
                     ("acme", "Other"): "custom", ("globex", "Button Clicked"): "click",
                     ("globex", "Form Sent"): "custom", ("globex", "Other"): "custom"}
    path.write_text("acme: {X: purchase}\n")
    with pytest.raises(ValueError, match="click, form_submit"):
        EventMap.load(path)


@pytest.mark.parametrize("msg, reason", [
    ({"type": "buy", "userId": "u"}, Reason.UNKNOWN_MESSAGE_TYPE),
    ({"userId": "u"}, Reason.MISSING_FIELD),
    ({"type": "track", "userId": "u"}, Reason.MISSING_FIELD),
    ({"type": "track", "event": "E"}, Reason.MISSING_FIELD),
    ({"type": "group", "userId": "u"}, Reason.MISSING_FIELD),
    ({"type": "alias", "userId": "u"}, Reason.MISSING_FIELD),
    ({"type": "track", "event": 5, "userId": "u"}, Reason.WRONG_TYPE),
    ({"type": "track", "event": "E", "userId": {"id": 1}}, Reason.WRONG_TYPE),
    ({"type": "track", "event": "E", "userId": "u", "context": []}, Reason.WRONG_TYPE),
    ({"type": "identify", "userId": "u", "traits": "vip"}, Reason.WRONG_TYPE),
    ({"type": "track", "event": "E", "userId": "u" * 129}, Reason.INVALID_VALUE),
    ({"type": "track", "event": "E", "userId": "u", "timestamp": "soon"}, Reason.INVALID_VALUE),
    ({"type": "track", "event": "E", "userId": "u", "timestamp": 1700000000}, Reason.WRONG_TYPE),
    ({"type": "track", "event": "E", "userId": "u", "messageId": "m" * 300}, Reason.INVALID_VALUE),
    ([1, 2], Reason.INVALID_JSON),
])
def test_refusals(msg: object, reason: Reason) -> None:
    out = mapped(msg)
    assert isinstance(out, Refusal) and out.reason is reason, out


def test_every_accepted_message_is_a_valid_event() -> None:
    """Random messages of every shape: whatever the mapper accepts, the contract's decoder accepts too."""
    rng = random.Random(7)
    values = [None, "", "x", "ü-ñ", 0, 17, True, 1.5, [], {}, {"a": [1, {"b": None}]}, "2026-01-01T00:00:00Z",
              "2026-01-01", "9999-12-31T23:59:59-12:00", "u" * 128, str(uuid.uuid4())]
    keys = ["type", "event", "userId", "anonymousId", "messageId", "timestamp", "properties", "traits", "context",
            "name", "groupId", "previousId", "originalTimestamp"]
    accepted = 0
    for _ in range(3000):
        msg = {k: rng.choice(values) for k in rng.sample(keys, rng.randrange(len(keys)))}
        msg["type"] = rng.choice(["track", "page", "screen", "identify", "group", "alias"])
        if rng.random() < 0.7:
            msg["userId"] = "u-1"
        out = mapped(msg)
        if isinstance(out, Envelope):
            as_event(out)
            accepted += 1
    assert accepted > 300
