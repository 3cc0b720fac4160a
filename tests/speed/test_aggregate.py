"""The pure core: records -> per-tenant pre-aggregates and dead letters, no I/O."""

from __future__ import annotations

import copy
import dataclasses
import json
import uuid
from typing import Any

import pytest

from streaming.events import EventDecoder
from streaming.generator import GeneratorConfig
from streaming.kinesis.processor import StreamRecord
from streaming.segments import load_rules
from streaming.suppression import subject_hash
from streaming.speed.aggregate import aggregate
from streaming.speed.suppress import Suppressions
from tests.speed.conftest import as_stream_records, generated, ledger_minute_counts

pytestmark = pytest.mark.unit


def _event(tenant: str = "acme", etype: str = "page_view", path: str = "/pricing", anon: str = "a1",
           received: str = "2026-01-01T00:00:30.000Z", event_id: str | None = None) -> bytes:
    return json.dumps({
        "event_id": event_id or str(uuid.uuid4()), "tenant_id": tenant, "event_type": etype, "anonymous_id": anon,
        "user_id": None, "occurred_at": received, "received_at": received, "source_id": "c1", "source_seq": 1,
        "properties": {"path": path}, "schema_version": 1,
    }).encode()


def test_totals_equal_the_ledger_for_generated_traffic() -> None:
    datas, _, ledger = generated(GeneratorConfig(seed=3, duration_s=120, rate_per_s=200, duplicate_rate=0.05,
                                                 malformed_rate=0.02))
    batch = aggregate(as_stream_records(datas), EventDecoder(), load_rules())
    got: dict[tuple[str, str, int], int] = {}
    for tb in batch.tenants.values():
        for (minute, etype), n in tb.totals().items():
            got[(tb.tenant, etype, minute)] = n
    assert got == ledger_minute_counts(ledger)
    by_reason: dict[str, int] = {}
    for dl in batch.dead_letters:
        by_reason[dl.reason] = by_reason.get(dl.reason, 0) + 1
    assert by_reason == ledger.dead_letters
    assert batch.repeats_in_batch == ledger.duplicates


def test_repeat_inside_a_batch_is_dropped_and_bad_record_keeps_its_position() -> None:
    same = str(uuid.uuid4())
    records = [
        StreamRecord("shardId-1", "10", "k", _event(event_id=same), 1.0),
        StreamRecord("shardId-1", "11", "k", _event(event_id=same), 1.0),
        StreamRecord("shardId-1", "12", "k", b"{not json", 2.0),
    ]
    batch = aggregate(records, EventDecoder(), [])
    tb = batch.tenants["acme"]
    assert tb.seqs == ["10"] and tb.totals() == {(29_453_760, "page_view"): 1}
    [dl] = batch.dead_letters
    assert (dl.reason, dl.shard_id, dl.sequence_number, dl.raw, dl.entry_id) == (
        "invalid_json", "shardId-1", "12", b"{not json", "shardId-1/12")


def test_segment_hits_follow_the_rules_file() -> None:
    rules = load_rules()
    records = as_stream_records([
        _event(path="/pricing", anon="a1"), _event(path="/pricing", anon="a1"), _event(path="/docs", anon="a2"),
        _event(etype="click", path="/pricing", anon="a3"),
    ])
    tb = aggregate(records, EventDecoder(), rules).tenants["acme"]
    names = {rules[r].name: sorted(len(times) for (rr, _), times in tb.segments.items() if rr == r)
             for r in range(len(rules))}
    # Two /pricing views by a1, one /docs view by a2: pricing_intent sees a1 twice; engaged_reader sees all
    # page views; the click has no cta element, so no trial_starter hit.
    assert names == {"pricing_intent": [2], "engaged_reader": [1, 2], "trial_starter": []}

    # Rebuilt without the first event (as after the script reports it seen): a1 has one /pricing view left.
    rebuilt = tb.without({1}, rules)
    assert rebuilt.excluded == (1,) and rebuilt.ids == tb.ids
    assert sorted(len(t) for (r, _), t in rebuilt.segments.items() if rules[r].name == "pricing_intent") == [1]
    assert sum(rebuilt.cells.values()) == 3


def test_after_keeps_only_records_past_the_marker() -> None:
    records = [StreamRecord("s", str(seq), "k", _event(anon=f"a{seq}"), 0.0) for seq in (98, 99, 100, 101)]
    tb = aggregate(records, EventDecoder(), []).tenants["acme"]
    rest = tb.after("99", [])
    assert rest is not None and rest.seqs == ["100", "101"] and sum(rest.cells.values()) == 2
    assert tb.after("101", []) is None


def test_the_compiled_fold_equals_the_python_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled path (what the consumer runs: ``_scan.c`` scans the plainest records, the contract's
    decoder judges the rest, one C fold over both) and the Python reference give the same batch (ids,
    stamps, records per tenant, aggregates, dead letters, repeats), for generated traffic over many
    tenants, for the edge cases of the rules and paths, and for a tenant whose records go both ways,
    a repeated id whose first copy the scanner declines, and a tenant with suppressed subjects."""
    from streaming.segments import SegmentRule
    from streaming.speed import aggregate as agg

    assert agg._native is not None, "streaming.speed._native is not built: `make install` compiles it"
    datas, _, _ = generated(GeneratorConfig(seed=11, duration_s=300, rate_per_s=100, tenants=40,
                                            duplicate_rate=0.05, malformed_rate=0.02, late_rate=0.1))
    odd = [json.loads(_event(tenant="acme", anon=f"a{i}")) for i in range(6)]
    odd[0]["properties"] = {"path": 5}  # not a string: no page entry
    odd[1]["properties"] = {}  # no path
    odd[2].update(event_type="click", properties={"element": "cta-start-trial", "variant": "b"})
    odd[3].update(event_type="click", properties={"element": "cta-start-trial", "variant": ["b"]})
    odd[4]["received_at"] = "2026-01-01T02:00:30.000+02:00"  # same instant as the others, another offset
    odd[5].update(event_type="custom", properties={"path": "/pricing"})
    mixed = [json.loads(_event(tenant="mixed", anon=f"m{i % 3}", path="/pricing")) for i in range(6)]
    mixed[1]["properties"] = {"path": "/pr\u00e9cios"}  # non-ASCII: escaped by json.dumps, declined
    mixed[4]["anonymous_id"] = "m\"1"  # an escape in a field: declined
    mixed[5]["event_id"] = mixed[4]["event_id"]  # a repeat of the declined one: the first copy wins
    forgotten = [json.loads(_event(tenant="forgets", anon=f"f{i % 2}", path="/pricing")) for i in range(4)]
    records = as_stream_records(datas + [json.dumps(e).encode() for e in odd + mixed + forgotten])
    rules = load_rules() + [
        SegmentRule("two_keys", "", "click", 2, 1, {"element": "cta-start-trial", "variant": "b"}),
        SegmentRule("missing_key", "", "page_view", 1, 1, {"absent": "x"}),
    ]

    suppressions = Suppressions(None)
    suppressions._lists["forgets"] = (1, {subject_hash("forgets", "f1"): 0})  # f1 forgotten since 1970

    def shapes(batch: agg.Batch) -> Any:
        return ({t: (tb.seqs, tb.ids, tb.received, tb.cells, tb.visitors, tb.pages, tb.segments, tb.sup,
                     tb.sup_version) for t, tb in batch.tenants.items()},
                batch.dead_letters, batch.repeats_in_batch, batch.records)

    compiled = aggregate(records, EventDecoder(), rules, now=1.9e9, suppressions=suppressions)
    monkeypatch.setattr(agg, "_native", None)
    reference = aggregate(records, EventDecoder(), rules, now=1.9e9, suppressions=suppressions)
    assert shapes(compiled) == shapes(reference)
    assert compiled.tenants["mixed"].seqs == [str(n) for n in range(len(datas) + 7, len(datas) + 12)]
    assert compiled.tenants["forgets"].sup and {a for _, a in compiled.tenants["forgets"].visitors} == {"f0"}
    acme = compiled.tenants["acme"]
    assert acme.pages == {(29_453_760 // 60, "/pricing"): 1}  # odd[4] only: path 5 and no path count no page
    assert sorted(len(v) for (r, _), v in acme.segments.items() if r == len(rules) - 2) == [1]  # two_keys: odd[2] only
    assert not [k for k in acme.segments if k[0] == len(rules) - 1]
    assert len(reference.tenants) > 30 and sum(len(tb.segments) for tb in reference.tenants.values()) > 500


def test_the_compiled_payload_sections_equal_the_python_reference_byte_for_byte() -> None:
    """The payload's visitors ("v") and segment entries ("s") as ``_payload.c`` encodes them equal the
    reference's msgpack, for generated traffic and for hits that need sorting and cutting to the window."""
    import msgspec

    from streaming.speed import aggregate as agg

    assert agg._native is not None, "streaming.speed._native is not built: `make install` compiles it"
    datas, _, _ = generated(GeneratorConfig(seed=13, duration_s=600, rate_per_s=50, tenants=4, late_rate=0.2,
                                            late_delay_s=(60, 7200)))
    rules = load_rules()
    shapes = [(r.min_count, r.window_hours * 3_600_000) for r in rules]
    batch = aggregate(as_stream_records(datas), EventDecoder(), rules, now=1.9e9)
    tb = next(iter(batch.tenants.values()))
    hour = 3_600_000
    # Out of order, more than min_count, some a window older than the newest, and ints of every width.
    tb.segments[(0, "late-visitor")] = [5 * hour, 3, 30 * hour, 29 * hour, 31 * hour + 7, 2 * hour, 10**14]
    tb.segments[(2, "nö-ascii")] = [7 * hour, 7 * hour - 1, 6 * hour + 1, 6 * hour]
    tb.segments[(1, "x" * 40)] = [70_000, 65_536, 255]
    # Each from its own copy of the hits: both sort them in place.
    reference = {t: tuple(msgspec.msgpack.encode(part) for part in
                          dataclasses.replace(b, segments=copy.deepcopy(b.segments))._sections_python(shapes))
                 for t, b in batch.tenants.items()}
    compiled = {t: (agg._native.visitor_groups(b.visitors),
                    agg._native.segment_groups(copy.deepcopy(b.segments), shapes))
                for t, b in batch.tenants.items()}
    assert compiled == reference
    assert sum(len(b.segments) for b in batch.tenants.values()) > 200


@pytest.mark.parametrize("n_keys", [20, 70])
def test_rules_naming_many_properties_give_the_reference_aggregates(n_keys: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scanner extracts up to 64 property keys (20: scanned; 70: the reference path takes the batch):
    either way the segments equal the reference's."""
    from streaming.segments import SegmentRule
    from streaming.speed import aggregate as agg

    rules = [SegmentRule(f"r{k}", "", "click", 2, 1, {f"k{k}": "v"}) for k in range(n_keys)]
    docs = []
    for i in range(200):
        doc = json.loads(_event(etype="click", anon=f"a{i % 7}"))
        doc["properties"] = {f"k{k}": "v" for k in range(i % n_keys, n_keys, 3)}
        docs.append(json.dumps(doc).encode())
    records = as_stream_records(docs)
    compiled = aggregate(records, EventDecoder(), rules, now=1.9e9).tenants["acme"]
    monkeypatch.setattr(agg, "_native", None)
    reference = aggregate(records, EventDecoder(), rules, now=1.9e9).tenants["acme"]
    assert compiled.segments == reference.segments and len({r for r, _ in reference.segments}) == n_keys
