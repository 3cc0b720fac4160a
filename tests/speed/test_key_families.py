"""The key families (streaming.speed.keys.FAMILIES) name every key the layout builds, once."""

from __future__ import annotations

import pytest

from streaming.privacy.suppression import suppress_key, suppress_version_key
from streaming.speed import keys

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
