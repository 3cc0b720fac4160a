"""The traffic generator is reproducible from its seed and its ledger equals what it wrote."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from streaming.events import REASONS, Event, EventDecoder, Rejection, sequence_position
from streaming.generator import GeneratorConfig, Ledger, Spike, TrafficGenerator, read_run, write_run

pytestmark = pytest.mark.unit

KNOBS = dict(duplicate_rate=0.03, late_rate=0.02, malformed_rate=0.02, upstream_loss_rate=0.005)


def digest(config: GeneratorConfig) -> tuple[str, Ledger]:
    generator = TrafficGenerator(config)
    h = hashlib.sha256()
    for record in generator.records():
        h.update(record.partition_key.encode() + b"\0" + record.data + b"\0")
    return h.hexdigest(), generator.ledger


def test_same_seed_same_records_and_ledger() -> None:
    config = GeneratorConfig(seed=7, duration_s=60, rate_per_s=200, **KNOBS)
    a, ledger_a = digest(config)
    b, ledger_b = digest(config)
    assert a == b and ledger_a == ledger_b
    c, _ = digest(GeneratorConfig(seed=8, duration_s=60, rate_per_s=200, **KNOBS))
    assert c != a


def recount(records) -> tuple[Counter, Counter, dict, int, int]:
    """Count what the records really hold, the way a correct pipeline would."""
    decoder = EventDecoder()
    counts: Counter = Counter()
    dead: Counter = Counter()
    seen: set = set()
    hourly: dict = defaultdict(set)
    repeats = 0
    total = 0
    for record in records:
        total += 1
        result = decoder.decode(record.data)
        if isinstance(result, Rejection):
            dead[result.reason.value] += 1
            assert result.reason.value == record.reason
            continue
        assert isinstance(result, Event)
        if result.event_id in seen:
            repeats += 1
            continue
        seen.add(result.event_id)
        minute = result.received_at.strftime("%Y-%m-%dT%H:%M:00Z")
        counts[(result.tenant_id, result.event_type.value, minute)] += 1
        hourly[(result.tenant_id, result.received_at.strftime("%Y-%m-%dT%H:00:00Z"))].add(result.anonymous_id)
    return counts, dead, hourly, repeats, total


def test_ledger_equals_what_was_written(tmp_path: Path) -> None:
    config = GeneratorConfig(seed=11, duration_s=180, rate_per_s=150, spikes=(Spike(60, 10, 10),), **KNOBS)
    ledger = write_run(config, tmp_path)
    counts, dead, hourly, repeats, total = recount(read_run(tmp_path))
    assert Counter({(t, e, m): n for t, e, m, n in ledger.count_rows()}) == counts
    assert dict(dead) == ledger.dead_letters
    assert set(dead) == set(REASONS), "every rejection reason is produced"
    assert repeats == ledger.duplicates > 0
    assert total == ledger.records_total
    assert ledger.valid_events == sum(counts.values())
    assert ledger.late_events > 0 and ledger.upstream_lost
    for tenant, hours in ledger.uniques_hour.items():
        for hour, n in hours.items():
            assert len(hourly[(tenant, hour)]) == n
    assert Ledger.load(tmp_path / "ledger.json") == ledger


def test_spike_multiplies_rate() -> None:
    generator = TrafficGenerator(GeneratorConfig(duration_s=30, rate_per_s=50, spikes=(Spike(10, 5, 10),)))
    per_second = Counter(r.emit_ms // 1000 for r in generator.records())
    assert per_second[5] == 50 and per_second[12] == 500


def test_upstream_loss_leaves_source_seq_gaps_per_collector_and_tenant() -> None:
    generator = TrafficGenerator(GeneratorConfig(seed=3, duration_s=60, rate_per_s=100, upstream_loss_rate=0.01))
    decoder = EventDecoder()
    held: dict[tuple[str, str], set[int]] = defaultdict(set)
    for record in generator.records():
        event = decoder.decode(record.data)
        assert isinstance(event, Event)
        held[(event.source_id, event.tenant_id)].add(event.source_seq)
    lost = {(x["source_id"], x["tenant_id"], x["source_seq"]) for x in generator.ledger.upstream_lost}
    missing = {(s, t, n) for s, tenants in generator.ledger.sources.items() for t, top in tenants.items()
               for n in range(1, top + 1) if n not in held[(s, t)]}
    assert lost == missing and lost
    assert len({t for _, t, _ in lost}) > 1  # numbering is per tenant: losses name several tenants


def test_rejected_records_hold_their_numbers() -> None:
    """Malformed records come from the same collectors; where their numbers stay readable they take the
    next number of their (source, tenant) sequence, so valid events plus dead letters leave no hole."""
    generator = TrafficGenerator(GeneratorConfig(seed=5, duration_s=120, rate_per_s=100, malformed_rate=0.05))
    decoder = EventDecoder()
    held: dict[tuple[str, str], set[int]] = defaultdict(set)
    rejected_with_numbers = 0
    for record in generator.records():
        position = sequence_position(record.data)
        if isinstance(decoder.decode(record.data), Event):
            assert position is not None
        elif position is not None:
            rejected_with_numbers += 1
            assert position.source_id.startswith("collector-")
        if position is not None:
            held[(position.source_id, position.tenant_id)].add(position.source_seq)
    assert rejected_with_numbers > 50
    for key, numbers in held.items():
        assert numbers == set(range(1, len(numbers) + 1)), key
        assert generator.ledger.sources[key[0]][key[1]] == len(numbers)


def test_500_tenants_on_a_zipf_curve() -> None:
    generator = TrafficGenerator(GeneratorConfig(tenants=500, duration_s=120, rate_per_s=500))
    for _ in generator.records():
        pass
    totals = Counter()
    for (tenant, _), n in generator.ledger.totals_by_tenant_type().items():
        totals[tenant] += n
    ranked = [n for _, n in totals.most_common()]
    assert len(totals) > 250
    assert totals["tenant-001"] == ranked[0]
    assert ranked[0] > 20 * ranked[len(ranked) // 2]


def test_funnel_links_identity() -> None:
    generator = TrafficGenerator(GeneratorConfig(duration_s=120, rate_per_s=100, tenants=5))
    decoder = EventDecoder()
    identified = {}
    anonymous_first = set()
    for record in generator.records():
        event = decoder.decode(record.data)
        if event.event_type.value == "identify":
            assert event.user_id
            identified[event.anonymous_id] = event.user_id
        elif event.user_id is None:
            anonymous_first.add(event.anonymous_id)
    assert identified and anonymous_first & set(identified)


def test_bad_knobs_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate_rate"):
        GeneratorConfig(duplicate_rate=1.5)
    with pytest.raises(ValueError, match="unknown malformed reasons"):
        GeneratorConfig(malformed_reasons=("nope",))
