"""The key families (streaming.speed.keys.FAMILIES) name every key the layout builds, once."""

from __future__ import annotations

from pathlib import Path

import pytest

import redis

from streaming.speed import keys
from streaming.speed.keys import suppression as suppress_key
from streaming.speed.keys import suppression_version as suppress_version_key

pytestmark = pytest.mark.unit

BUILT = [
    (keys.applied_marker("t-1", "speed", "shardId-000000000001"), "applied_markers"),
    (keys.counts("t-1", "m", 29_000_000), "counts_minute"),
    (keys.counts("t-1", "h", 490_000), "counts_hour"),
    (keys.counts("t-1", "d", 20_000), "counts_day"),
    (keys.uniques("t-1", "h", 490_000), "uniques_hour"),
    (keys.top_pages("t-1", "h", 490_000), "top_pages_hour"),
    (keys.top_pages("t-1", "d", 20_000), "top_pages_day"),
    (keys.segment_members("t-1", "pricing_intent"), "segment_members"),
    (keys.tenant_prefix("t-1") + "segst:pricing_intent:20000", "segment_state"),  # built in apply.lua
    (keys.tenant_prefix("t-1") + "seen:118800", "dedup"),  # built in apply.lua
    (keys.tenant_prefix("t-1") + "sup:m:29000000", "suppressed_counts"),  # built in apply.lua
    (suppress_key("t-1"), "suppression"),
    (suppress_version_key("t-1"), "suppression"),
    (keys.dead_letter_entries("t-1"), "dead_letters"),
    (keys.dead_letter_pending(keys.UNATTRIBUTED_TAG), "dead_letters"),
    (keys.dead_letter_written("t-1"), "dead_letters"),
    (keys.dead_letter_counts("t-1"), "dead_letters"),
    (keys.dead_letter_replayed("t-1"), "dead_letters"),
    (keys.dead_letter_tags(), "dead_letters"),
    (keys.shard_position("_pos0", "speed", "shardId-000000000001"), "positions"),
    (keys.consumer_lag(), "ops"),
    (keys.latency_histogram(29_000_000), "ops"),
    (keys.api_keys(), "api_keys"),
]


@pytest.mark.parametrize(("key", "family"), BUILT)
def test_every_built_key_has_exactly_its_family(key: str, family: str) -> None:
    matching = [f.name for f in keys.FAMILIES if f.pattern.match(key)]
    assert matching == [family]
    assert keys.family_of(key.encode()) == family


def test_unknown_keys_are_other_and_every_family_is_used() -> None:
    assert keys.family_of("tally:{_privacy}:lock") == keys.OTHER_FAMILY
    assert keys.family_of("something-else") == keys.OTHER_FAMILY
    assert {f.name for f in keys.FAMILIES} == {family for _, family in BUILT}


def test_only_the_key_module_spells_the_key_prefix() -> None:
    """Every key and SCAN pattern is built by streaming.speed.keys: no other module (docstrings included)
    writes the ``tally:{...}`` prefix, so a layout change is made in one place (and the Lua files)."""
    root = Path(__file__).resolve().parents[2]
    owner = root / "streaming" / "speed" / "keys.py"
    spelled = [f"{path.relative_to(root)}:{n}" for folder in ("streaming", "orchestration", "assets", "bench")
               for path in sorted((root / folder).rglob("*.py")) if path != owner
               for n, line in enumerate(path.read_text().splitlines(), 1)
               if "tally:{" in line or "tally:\\{" in line]
    assert spelled == []


def test_counter_keys_parse_back_and_nothing_else_does() -> None:
    assert keys.parse_counts(keys.counts("t-1", "h", 490_000)) == ("t-1", "h", 490_000)
    assert keys.parse_counts(keys.counts("t-1", "m", 29_000_000).encode()) == ("t-1", "m", 29_000_000)
    assert keys.parse_counts(keys.uniques("t-1", "h", 490_000)) is None
    assert keys.parse_counts(keys.dead_letter_counts("t-1")) is None
    with pytest.raises(ValueError, match="m, h and d"):
        keys.counts_pattern("s")


@pytest.mark.integration
def test_each_scan_pattern_finds_exactly_its_keys(redis_client: redis.Redis) -> None:
    built = {
        "counts_m": [keys.counts(t, "m", 29_000_000) for t in ("t-1", "t-2")],
        "counts_h": [keys.counts(t, "h", 490_000) for t in ("t-1", "t-2")],
        "counts_d": [keys.counts("t-1", "d", 20_000)],
        "members_t1": [keys.segment_members("t-1", "pricing_intent"), keys.segment_members("t-1", "churn")],
        "members_t2": [keys.segment_members("t-2", "pricing_intent")],
        "state_t1": [keys.segment_state("t-1", "pricing_intent", 20_000), keys.segment_state("t-1", "churn", 3)],
        "state_t2": [keys.segment_state("t-2", "pricing_intent", 20_000)],
        "latency": [keys.latency_histogram(29_000_000), keys.latency_histogram(29_000_001)],
        "other": [keys.uniques("t-1", "h", 490_000), keys.consumer_lag(), keys.suppression("t-1"), keys.heal_log()],
    }
    for names in built.values():
        for key in names:
            redis_client.set(key, 1)

    def scan(pattern: str) -> set[str]:
        return {k.decode() for k in redis_client.scan_iter(match=pattern, count=1000)}

    assert scan(keys.counts_pattern("m")) == set(built["counts_m"])
    assert scan(keys.counts_pattern("h")) == set(built["counts_h"])
    assert scan(keys.counts_pattern("d")) == set(built["counts_d"])
    assert scan(keys.segment_members_pattern("t-1")) == set(built["members_t1"])
    assert scan(keys.segment_state_pattern("t-1")) == set(built["state_t1"])
    assert scan(keys.segment_members_pattern(segment="pricing_intent")) == {built["members_t1"][0], *built["members_t2"]}
    assert scan(keys.segment_state_pattern(segment="pricing_intent")) == {built["state_t1"][0], *built["state_t2"]}
    assert scan(keys.latency_histograms_pattern()) == set(built["latency"])
