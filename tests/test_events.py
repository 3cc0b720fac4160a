"""The event contract: valid events decode; each rejection reason is named for the rule broken."""

from __future__ import annotations

import json
import uuid

import pytest

from streaming.events import (
    REASONS, Event, EventDecoder, Reason, Rejection, SequencePosition, encode_event, encode_rejected, record_tenant,
    sequence_position,
)

pytestmark = pytest.mark.unit


def valid_doc(**overrides: object) -> dict:
    doc = {
        "event_id": str(uuid.uuid4()), "tenant_id": "acme", "event_type": "page_view",
        "anonymous_id": "anon-1", "user_id": None, "occurred_at": "2026-01-01T00:00:01.000Z",
        "received_at": "2026-01-01T00:00:02.500Z", "source_id": "collector-01", "source_seq": 7,
        "properties": {"path": "/pricing"}, "schema_version": 1,
    }
    doc.update(overrides)
    return doc


def encode(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def test_valid_event_decodes_with_its_minute() -> None:
    event = EventDecoder().decode(encode(valid_doc()))
    assert isinstance(event, Event)
    assert event.tenant_id == "acme" and event.event_type.value == "page_view"
    assert event.minute == 1767225600 // 60
    # the canonical encoding round-trips
    again = EventDecoder().decode(encode_event(event))
    assert again == event


def test_user_id_and_properties_are_optional() -> None:
    doc = valid_doc()
    del doc["user_id"], doc["properties"]
    event = EventDecoder().decode(encode(doc))
    assert isinstance(event, Event) and event.user_id is None and event.properties == {}


CASES = {
    Reason.NOT_UTF8: encode(valid_doc()).replace(b"/pricing", b"/pr\xff\xfeing"),
    Reason.INVALID_JSON: encode(valid_doc())[:-7],
    Reason.MISSING_FIELD: encode({k: v for k, v in valid_doc().items() if k != "tenant_id"}),
    Reason.WRONG_TYPE: encode(valid_doc(source_seq="7")),
    Reason.INVALID_VALUE: encode(valid_doc(event_id="not-a-uuid")),
    Reason.UNKNOWN_EVENT_TYPE: encode(valid_doc(event_type="purchase")),
    Reason.BAD_TENANT_ID: encode(valid_doc(tenant_id="Acme{1}")),
    Reason.OVERSIZED: encode(valid_doc(properties={"blob": "x" * 70_000})),
    Reason.FUTURE_RECEIVED_AT: encode(valid_doc(received_at="2099-01-01T00:00:00Z")),
    Reason.UNSUPPORTED_SCHEMA_VERSION: encode(valid_doc(schema_version=2)),
    Reason.UNKNOWN_MESSAGE_TYPE: encode_rejected(Reason.UNKNOWN_MESSAGE_TYPE, "type 'buy'", b'{"type":"buy"}',
                                                 "acme", "col-1", 3, "2026-01-01T00:00:02.500Z"),
}


def test_every_reason_has_a_case() -> None:
    assert {r.value for r in CASES} == set(REASONS)


@pytest.mark.parametrize("reason", list(CASES), ids=lambda r: r.value)
def test_each_rejection_reason(reason: Reason) -> None:
    raw = CASES[reason]
    result = EventDecoder().decode(raw)
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result.detail
    assert result.raw == raw and result.detail


@pytest.mark.parametrize(
    "doc, reason",
    [
        ([1, 2], Reason.INVALID_JSON),
        (valid_doc(schema_version="1"), Reason.WRONG_TYPE),
        (valid_doc(received_at="yesterday"), Reason.INVALID_VALUE),
        (valid_doc(received_at="2026-01-01T00:00:00"), Reason.INVALID_VALUE),  # no time zone
        (valid_doc(source_seq=-1), Reason.INVALID_VALUE),
        (valid_doc(source_seq=True), Reason.WRONG_TYPE),
        (valid_doc(tenant_id=None), Reason.MISSING_FIELD),
        (valid_doc(tenant_id="a" * 65), Reason.BAD_TENANT_ID),
        (valid_doc(tenant_id="ten:ant"), Reason.BAD_TENANT_ID),
        (valid_doc(tenant_id="ténant"), Reason.BAD_TENANT_ID),
        (valid_doc(anonymous_id=""), Reason.INVALID_VALUE),
        (valid_doc(properties=[1]), Reason.WRONG_TYPE),
    ],
)
def test_edge_cases(doc: object, reason: Reason) -> None:
    result = EventDecoder().decode(json.dumps(doc).encode())
    assert isinstance(result, Rejection) and result.reason is reason, result


@pytest.mark.parametrize("escape", ["\\ud800", "\\udc00", "\\ud800\\u0041"])
def test_a_lone_surrogate_escape_is_a_dead_letter_not_an_exception(escape: str) -> None:
    """json.loads takes a lone surrogate escape, msgspec does not: the record is invalid JSON, anywhere in it
    (an exception here would fail the whole batch again and again)."""
    base = encode(valid_doc())
    for raw in (base[:-1] + f', "extra": "{escape}"}}'.encode(), base.replace(b'"anon-1"', f'"{escape}"'.encode())):
        result = EventDecoder().decode(raw)
        assert isinstance(result, Rejection) and result.reason is Reason.INVALID_JSON, (raw, result)


def test_limits_are_configurable() -> None:
    raw = encode(valid_doc(properties={"blob": "x" * 2000}))
    assert isinstance(EventDecoder(max_bytes=1000).decode(raw), Rejection)
    assert isinstance(EventDecoder(max_bytes=10_000).decode(raw), Event)
    decoder = EventDecoder(max_future_skew_s=60)
    near = encode(valid_doc(received_at="2026-01-01T00:00:30Z"))
    limit = decoder.future_limit(now=1767225600.0)  # 2026-01-01T00:00:00Z
    assert isinstance(decoder.decode(near, limit), Event)
    far = encode(valid_doc(received_at="2026-01-01T00:02:00Z"))
    assert decoder.decode(far, limit).reason is Reason.FUTURE_RECEIVED_AT


@pytest.mark.parametrize("reason", [Reason.MISSING_FIELD, Reason.WRONG_TYPE, Reason.INVALID_VALUE, Reason.INVALID_JSON,
                                    Reason.OVERSIZED, Reason.UNKNOWN_MESSAGE_TYPE], ids=lambda r: r.value)
def test_a_collector_rejection_is_dead_lettered_with_its_reason_and_the_exact_message(reason: Reason) -> None:
    message = b'{ "type" : "track", "userId": "u-\\"1", "properties": [1, 2] }'
    raw = encode_rejected(reason, "why", message, "acme", "col-1", 41, "2026-01-01T00:00:02.500Z")
    result = EventDecoder().decode(raw)
    assert isinstance(result, Rejection) and result.reason is reason and result.detail == "collector: why"
    assert message in raw and result.raw == raw
    doc = json.loads(raw)
    assert (doc["tenant_id"], doc["source_id"], doc["source_seq"]) == ("acme", "col-1", 41)
    assert doc["message"] == json.loads(message)


def test_a_collector_rejection_with_an_unknown_reason_is_invalid_value() -> None:
    raw = encode_rejected(Reason.MISSING_FIELD, "x", b"{}", "acme", "col-1", 1, "2026-01-01T00:00:02Z")
    result = EventDecoder().decode(raw.replace(b'"missing_field"', b'"made_up"'))
    assert isinstance(result, Rejection) and result.reason is Reason.INVALID_VALUE


def test_the_warehouse_accepts_every_reason() -> None:
    """dbt's accepted_values test on the dead letters' reason lists exactly the contract's reasons."""
    from pathlib import Path

    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "dbt_project/models/staging/_kinesis__models.yml").read_text())
    model = next(m for m in doc["models"] if m["name"] == "stg_kinesis__dead_letters")
    column = next(c for c in model["columns"] if c["name"] == "reason")
    accepted = next(t["accepted_values"] for t in column["data_tests"] if isinstance(t, dict) and "accepted_values" in t)
    assert set(accepted["arguments"]["values"]) == set(REASONS)


def test_sequence_position_reads_the_numbers_of_a_rejected_record() -> None:
    """A dead letter's numbers are read as far as they are readable (unknown type, bad tenant...)."""
    assert sequence_position(encode(valid_doc())) == SequencePosition("collector-01", "acme", 7)
    assert sequence_position(encode(valid_doc(event_type="nope", tenant_id="Bad Tenant!"))) == (
        "collector-01", "Bad Tenant!", 7)
    assert sequence_position(encode(valid_doc(source_seq=0, event_id="not-a-uuid"))) == ("collector-01", "acme", 0)


@pytest.mark.parametrize("raw", [
    b"\xff\xfe", b"not json", b"[1, 2]", b'"a string"', b"{" * 5000,
    encode(valid_doc(source_seq=-1)), encode(valid_doc(source_seq=True)), encode(valid_doc(source_seq=7.0)),
    encode(valid_doc(source_seq="7")), encode(valid_doc(source_seq=None)), encode(valid_doc(source_id="")),
    encode(valid_doc(source_id="x" * 129)), encode(valid_doc(source_id=3)), encode(valid_doc(tenant_id="")),
    encode(valid_doc(tenant_id=["acme"])), encode({k: v for k, v in valid_doc().items() if k != "source_seq"}),
])
def test_sequence_position_is_none_unless_every_value_has_the_contracts_type(raw: bytes) -> None:
    assert sequence_position(raw) is None


def test_record_tenant_only_names_a_valid_tenant_id() -> None:
    assert record_tenant(encode(valid_doc(event_type="nope", source_seq="x"))) == "acme"
    for bad in ("Acme", "a{b}", "_dl", "", "a" * 65, "acme\n", 7, None):
        assert record_tenant(encode(valid_doc(tenant_id=bad))) is None
    assert record_tenant(b"\xff") is None and record_tenant(b"[]") is None and record_tenant(b"{" * 5000) is None
