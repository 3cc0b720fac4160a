"""Dead letters per tenant on a real redis-server (and a real 3-master Cluster): each under its record's
tenant's hash tag or the unattributed one, carrying the numbers the bytes hold; global and per-tenant
counts, ``tally dead-letters list --tenant`` and ``replay --tenant``, and the retention
(``TALLY_DEAD_LETTER_TTL_S``) that bounds them."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from orchestration.cli import main
from streaming.events import EventDecoder
from streaming.kinesis.processor import StreamRecord
from streaming.speed import deadletters, keys
from streaming.speed.aggregate import DeadLetter, aggregate
from streaming.speed.store import Retention, SpeedStore

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _doc(tenant: Any, seq: Any = 1, **extra: Any) -> bytes:
    at = NOW.isoformat().replace("+00:00", "Z")
    doc = {"event_id": str(uuid.uuid4()), "tenant_id": tenant, "event_type": "click", "anonymous_id": "a-1",
           "occurred_at": at, "received_at": at, "source_id": "collector-9", "source_seq": seq,
           "properties": {}, "schema_version": 1, **extra}
    return json.dumps(doc).encode()


#: (raw record, the tag it must land under, its reason)
RECORDS = [
    (_doc("t-alpha", 11, event_type="purchase"), "t-alpha", "unknown_event_type"),
    (_doc("t-alpha", 12, event_id="nope"), "t-alpha", "invalid_value"),
    (_doc("t-beta", "13"), "t-beta", "wrong_type"),
    (_doc("Bad Tenant", 14), keys.UNATTRIBUTED_TAG, "bad_tenant_id"),
    (b'{"tenant_id": "t-alpha", "user_id": "u-1"', keys.UNATTRIBUTED_TAG, "invalid_json"),
]


def _letters(shard: str = "shardId-000000000001") -> list[DeadLetter]:
    records = [StreamRecord(shard, str(100 + i), "pk", raw, NOW.timestamp()) for i, (raw, _, _) in enumerate(RECORDS)]
    batch = aggregate(records, EventDecoder(), [])
    assert not batch.tenants and len(batch.dead_letters) == len(RECORDS)
    return batch.dead_letters


def _write(client: Any, letters: list[DeadLetter], now_ms: int, ttl_s: int = 604_800) -> int:
    return SpeedStore(client, "speed", retention=Retention(dead_letter_s=ttl_s)).write_dead_letters(letters, now_ms)


def _check_layout(client: Any) -> None:
    now_ms = int(NOW.timestamp() * 1000)
    assert _write(client, _letters(), now_ms) == len(RECORDS)
    assert _write(client, _letters(), now_ms) == 0  # a re-read writes and counts nothing
    assert deadletters.tags(client) == ["_unattributed", "t-alpha", "t-beta"]
    for i, (_, tag, reason) in enumerate(RECORDS):
        blob = client.hget(keys.dead_letter_entries(tag), f"shardId-000000000001/{100 + i}")
        assert blob is not None, (tag, reason)
        entry = deadletters._entry(tag, f"shardId-000000000001/{100 + i}", blob)
        assert entry.reason == reason
        assert entry.tenant_id == (None if tag == keys.UNATTRIBUTED_TAG else tag)
    alpha = deadletters.list_pending(client, tenant="t-alpha")
    assert [(e.source_id, e.source_seq, e.tenant_id) for e in alpha] == [("collector-9", 11, "t-alpha"),
                                                                          ("collector-9", 12, "t-alpha")]
    # The numbers are carried only where every one is of the contract's type (a string seq is not).
    assert [(e.source_id, e.source_seq) for e in deadletters.list_pending(client, tenant="t-beta")] == [(None, None)]
    assert deadletters.counts(client) == {r: 1 for _, _, r in RECORDS}
    assert deadletters.counts(client, "t-alpha") == {"invalid_value": 1, "unknown_event_type": 1}
    assert deadletters.counts(client, keys.UNATTRIBUTED_TAG) == {"bad_tenant_id": 1, "invalid_json": 1}
    assert len(deadletters.list_pending(client)) == len(RECORDS)
    assert len(deadletters.list_pending(client, limit=2)) == 2


def test_dead_letters_live_under_their_tenant(redis_client: redis.Redis) -> None:
    _check_layout(redis_client)


def test_dead_letters_spread_over_a_cluster_with_their_tenants(cluster_client: Any) -> None:
    _check_layout(cluster_client)
    slots = {cluster_client.keyslot(keys.dead_letter_entries(tag)) for tag in ("t-alpha", "t-beta", "_unattributed")}
    assert len(slots) == 3
    sent: list[tuple[bytes, str]] = []
    result = deadletters.replay(cluster_client, sent.extend, EventDecoder(), tenant="t-alpha", only_valid=False)
    assert result.sent == result.marked == 2 and len(sent) == 2
    assert deadletters.replayed_counts(cluster_client) == {"invalid_value": 1, "unknown_event_type": 1}


def test_retention_trims_old_entries_and_bounds_every_key(redis_client: redis.Redis) -> None:
    ttl_s = 3_600
    old_ms = int(NOW.timestamp() * 1000) - (ttl_s + 60) * 1000
    assert _write(redis_client, _letters("shardId-old"), old_ms, ttl_s) == len(RECORDS)
    assert _write(redis_client, _letters("shardId-new"), int(NOW.timestamp() * 1000), ttl_s) == len(RECORDS)
    for tag in ("t-alpha", "t-beta", keys.UNATTRIBUTED_TAG):
        ids = {k.decode() for k in redis_client.hkeys(keys.dead_letter_entries(tag))}
        assert ids and all(i.startswith("shardId-new/") for i in ids), (tag, ids)
        assert {k.decode() for k in redis_client.zrange(keys.dead_letter_pending(tag), 0, -1)} == ids
        assert {k.decode() for k in redis_client.zrange(keys.dead_letter_written(tag), 0, -1)} == ids
        for key in (keys.dead_letter_entries(tag), keys.dead_letter_pending(tag), keys.dead_letter_written(tag),
                    keys.dead_letter_counts(tag)):
            assert ttl_s - 5 <= redis_client.ttl(key) <= ttl_s, key
    assert ttl_s - 5 <= redis_client.ttl(keys.dead_letter_tags()) <= ttl_s
    # Counts per reason cover what was written while the tag's keys lived (both rounds).
    assert sum(deadletters.counts(redis_client).values()) == 2 * len(RECORDS)


def test_cli_lists_and_replays_one_tenant(tally_env: dict[str, str], redis_client: redis.Redis) -> None:
    _write(redis_client, _letters(), int(NOW.timestamp() * 1000))
    runner = CliRunner()
    result = runner.invoke(main, ["dead-letters", "list", "--tenant", "t-alpha"])
    assert result.exit_code == 0, result.output
    assert "2 dead letters" in result.output and "unknown_event_type" in result.output
    assert "wrong_type" not in result.output and "bad_tenant_id" not in result.output
    result = runner.invoke(main, ["dead-letters", "list", "--tenant", "_unattributed"])
    assert result.exit_code == 0 and "2 dead letters" in result.output and "bad_tenant_id" in result.output
    result = runner.invoke(main, ["dead-letters", "list", "--tenant", "Not A Tenant"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    from streaming.aws import aws_client
    from streaming.resources import ensure_stream
    from streaming.settings import load_settings

    settings = load_settings(tally_env)
    ensure_stream(aws_client("kinesis", settings.aws_region, settings.aws_endpoint_url), settings.stream_name, 1)
    result = runner.invoke(main, ["dead-letters", "replay", "--tenant", "t-beta", "--all"])
    assert result.exit_code == 0 and "re-fed 1 dead letters" in result.output, result.output
    assert deadletters.replayed_counts(redis_client) == {"wrong_type": 1}
    assert len(deadletters.list_pending(redis_client)) == len(RECORDS) - 1
