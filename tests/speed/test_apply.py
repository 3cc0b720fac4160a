"""Exactly-once apply on a real redis-server: markers, straddling re-reads, dedup horizon, fencing, segments,
and waiting (never skipping) while Redis is down."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from streaming.events import Event, EventDecoder
from streaming.generator import GeneratorConfig
from streaming.kinesis.processor import ShardContext, StreamRecord
from streaming.query.api import SpeedQueries
from streaming.segments import load_rules
from streaming.speed import deadletters, keys
from streaming.speed.aggregate import aggregate
from streaming.speed.consumer import LeaseLost, RedisUnavailable, RetryPolicy, SpeedProcessor
from streaming.speed.ops import OpsRecorder
from streaming.speed.store import Retention, SpeedStore
from streaming.stack.redis_local import RedisServer
from tests.speed.conftest import as_stream_records, assert_matches_ledger, generated, read_minute_counts, recent_start

pytestmark = pytest.mark.integration
SHARD = "shardId-000000000000"


def _processor(client: Any, horizon_s: int = 86_400, retry: RetryPolicy | None = None, overlap: bool = False) -> SpeedProcessor:
    rules = load_rules()
    return SpeedProcessor(SpeedStore(client, "speed", rules, horizon_s), EventDecoder(), rules,
                          OpsRecorder(client, "speed"), retry, overlap=overlap)


def _ctx(token: int = 1, shard: str = SHARD) -> ShardContext:
    return ShardContext("s", shard, "w1", token)


def _feed(proc: SpeedProcessor, records: list[StreamRecord], size: int, token: int = 1) -> None:
    """Feed ``records`` in batches of ``size``; each call returns what is safe to checkpoint: its own batch,
    or with ``overlap`` the batch before (the last one is settled by an empty tick)."""
    previous = None
    for i in range(0, len(records), size):
        last = records[min(i + size, len(records)) - 1].sequence_number
        assert proc.process_batch(_ctx(token), records[i:i + size], 0) == (previous if proc.overlap else last)
        previous = last
    if proc.overlap:
        assert proc.process_batch(_ctx(token), [], 0) == previous


@pytest.fixture(scope="module")
def run() -> tuple[list[StreamRecord], Any]:
    datas, _, ledger = generated(GeneratorConfig(seed=11, duration_s=240, rate_per_s=150, tenants=12,
                                                 duplicate_rate=0.05, late_rate=0.02, malformed_rate=0.02))
    return as_stream_records(datas), ledger


def test_counters_equal_ledger_and_rereads_with_other_batch_boundaries_change_nothing(redis_client: redis.Redis, run: Any) -> None:
    records, ledger = run
    proc = _processor(redis_client)
    _feed(proc, records, 500)
    assert_matches_ledger(redis_client, ledger)
    before = read_minute_counts(redis_client)
    # A restarted consumer re-reads from an older checkpoint with different batch boundaries, so batches
    # straddle the markers: everything up to a marker is skipped, nothing after it is lost.
    _feed(_processor(redis_client), records[1000:], 777)
    _feed(_processor(redis_client), records, 4096)
    assert read_minute_counts(redis_client) == before
    assert_matches_ledger(redis_client, ledger)


def test_half_applied_straddling_batch(redis_client: redis.Redis, run: Any) -> None:
    records, ledger = run
    proc = _processor(redis_client)
    _feed(proc, records[:3000], 3000)
    _feed(proc, records[1500:], 2000)
    assert_matches_ledger(redis_client, ledger)


def _page_view(event_id: str, tenant: str = "acme", anon: str = "v1", path: str = "/pricing",
               received: str | None = None) -> bytes:
    received = received or time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return json.dumps({
        "event_id": event_id, "tenant_id": tenant, "event_type": "page_view", "anonymous_id": anon, "user_id": None,
        "occurred_at": received, "received_at": received, "source_id": "c", "source_seq": 1,
        "properties": {"path": path}, "schema_version": 1,
    }).encode()


def _total(client: Any, tenant: str = "acme") -> int:
    return sum(n for (t, _, _), n in read_minute_counts(client).items() if t == tenant)


def test_repeated_event_id_counted_once_inside_the_horizon_and_again_after_it(redis_client: redis.Redis) -> None:
    proc = _processor(redis_client, horizon_s=4)  # 4 dedup buckets of 1 s
    eid = str(uuid.uuid4())
    data = _page_view(eid)
    proc.process_batch(_ctx(), [StreamRecord(SHARD, "1", "k", data, 0.0)], 0)
    proc.process_batch(_ctx(), [StreamRecord(SHARD, "2", "k", data, 0.0)], 0)  # a producer retry
    assert _total(redis_client) == 1
    time.sleep(6.5)  # past the horizon and every bucket that could still hold the id
    proc.process_batch(_ctx(), [StreamRecord(SHARD, "3", "k", data, 0.0)], 0)
    assert _total(redis_client) == 2


def test_repeat_in_another_shard_is_counted_once(redis_client: redis.Redis) -> None:
    proc = _processor(redis_client)
    data = _page_view(str(uuid.uuid4()))
    proc.process_batch(_ctx(shard="shardId-a"), [StreamRecord("shardId-a", "5", "k", data, 0.0)], 0)
    proc.process_batch(_ctx(shard="shardId-b"), [StreamRecord("shardId-b", "9", "k", data, 0.0)], 0)
    assert _total(redis_client) == 1


def test_a_fenced_writer_cannot_write(redis_client: redis.Redis) -> None:
    new_owner, old_owner = _processor(redis_client), _processor(redis_client)
    new_owner.process_batch(_ctx(token=2), [StreamRecord(SHARD, "1", "k", _page_view(str(uuid.uuid4())), 0.0)], 0)
    with pytest.raises(LeaseLost):
        old_owner.process_batch(_ctx(token=1), [StreamRecord(SHARD, "2", "k", _page_view(str(uuid.uuid4())), 0.0)], 0)
    # Once fenced the processor refuses every later batch too, even for other tenants.
    with pytest.raises(LeaseLost):
        old_owner.process_batch(_ctx(token=1), [StreamRecord(SHARD, "3", "k", _page_view(str(uuid.uuid4()), tenant="other"), 0.0)], 0)
    assert _total(redis_client) == 1 and _total(redis_client, "other") == 0


def test_an_overlapped_writer_fenced_in_flight_stops_at_its_next_call(redis_client: redis.Redis) -> None:
    """Overlapped, the old owner's batch is fenced while in flight: its next call (a tick) raises
    LeaseLost, nothing of it is counted, and the processor refuses every later batch."""
    new_owner, old_owner = _processor(redis_client), _processor(redis_client, overlap=True)
    new_owner.process_batch(_ctx(token=2), [StreamRecord(SHARD, "1", "k", _page_view(str(uuid.uuid4())), 0.0)], 0)
    assert old_owner.process_batch(_ctx(token=1), [StreamRecord(SHARD, "2", "k", _page_view(str(uuid.uuid4())), 0.0)], 0) is None
    with pytest.raises(LeaseLost):
        old_owner.process_batch(_ctx(token=1), [], 0)
    with pytest.raises(LeaseLost):
        old_owner.process_batch(_ctx(token=1), [StreamRecord(SHARD, "3", "k", _page_view(str(uuid.uuid4()), tenant="other"), 0.0)], 0)
    assert _total(redis_client) == 1 and _total(redis_client, "other") == 0


def test_overlapped_shard_end_commits_the_batch_in_flight_even_after_it_failed(tmp_path: Path) -> None:
    """The worker checkpoints SHARD_END once ``shard_ended`` returns: the batch in flight must be in Redis
    by then, also when its first attempt failed (Redis was down) and it has to be sent again."""
    server = RedisServer(workdir=tmp_path, appendonly=True, appendfsync="always").start()
    port = server.port
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    proc = _processor(client, retry=RetryPolicy(base_s=0.05, max_s=0.2, max_wait_s=30), overlap=True)
    records = [StreamRecord(SHARD, str(i + 1), "k", _page_view(str(uuid.uuid4()), anon=f"v{i}"), 0.0) for i in range(50)]
    try:
        _feed(proc, records[:25], 25)
        server.kill()
        assert proc.process_batch(_ctx(), records[25:], 0) is None  # sent: its first attempt fails
        time.sleep(0.5)
        server = RedisServer(workdir=tmp_path, port=port, appendonly=True, appendfsync="always").start()
        proc.shard_ended(_ctx())
        assert _total(client) == 50
    finally:
        server.stop()


def test_lease_lost_stops_writes(redis_client: redis.Redis) -> None:
    proc = _processor(redis_client)
    proc.lease_lost(_ctx())
    with pytest.raises(LeaseLost):
        proc.process_batch(_ctx(), [StreamRecord(SHARD, "1", "k", _page_view(str(uuid.uuid4())), 0.0)], 0)
    assert _total(redis_client) == 0


def test_segment_membership_is_live_from_the_rules(redis_client: redis.Redis) -> None:
    proc = _processor(redis_client)
    now = time.time()

    def at(offset_s: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now + offset_s))

    views = [("thrice", -3000, "/pricing"), ("thrice", -2000, "/pricing"), ("thrice", -10, "/pricing"),
             ("twice", -50, "/pricing"), ("twice", -40, "/pricing"),
             ("stale", -90_000, "/pricing"), ("stale", -89_000, "/pricing"), ("stale", -20, "/pricing")]
    records = [StreamRecord(SHARD, str(i + 1), "k", _page_view(str(uuid.uuid4()), anon=a, path=p, received=at(off)), 0.0)
               for i, (a, off, p) in enumerate(views)]
    proc.process_batch(_ctx(), records[:4], 0)
    proc.process_batch(_ctx(), records[4:], 0)
    q = SpeedQueries(redis_client)
    assert q.segment_members("acme", "pricing_intent") == ["thrice"]
    # engaged_reader: 5 page views within 1 hour; "thrice"+"twice" have 3 and 2 in the last hour.
    assert q.segment_members("acme", "engaged_reader") == []


def test_bad_records_become_dead_letters_once(redis_client: redis.Redis) -> None:
    proc = _processor(redis_client)
    records = [StreamRecord(SHARD, "7", "k", b"\xff\xfe", 0.0), StreamRecord(SHARD, "8", "k", b"[1]", 0.0)]
    proc.process_batch(_ctx(), records, 0)
    proc.process_batch(_ctx(), records, 0)  # re-read after a crash
    assert deadletters.counts(redis_client) == {"not_utf8": 1, "invalid_json": 1}
    listed = {(e.entry_id, e.reason, e.raw, e.shard_id, e.sequence_number) for e in deadletters.list_pending(redis_client)}
    assert listed == {(f"{SHARD}/7", "not_utf8", b"\xff\xfe", SHARD, "7"), (f"{SHARD}/8", "invalid_json", b"[1]", SHARD, "8")}


def test_redis_down_waits_and_retries_without_returning_a_checkpoint(tmp_path: Path, run: Any) -> None:
    records, ledger = run
    server = RedisServer(workdir=tmp_path, appendonly=True, appendfsync="always").start()
    port = server.port
    # No retries inside redis-py: the processor's own wait-and-retry is what is under test.
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    retries: list[float] = []
    proc = _processor(client, retry=RetryPolicy(base_s=0.05, max_s=0.2, max_wait_s=120, sleep=lambda s: (retries.append(s), time.sleep(s))[1]))
    try:
        half = len(records) // 2
        _feed(proc, records[:half], 1000)
        server.kill()
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.setdefault("seq", proc.process_batch(_ctx(), records[half:], 0)))
        thread.start()
        time.sleep(1.5)
        assert thread.is_alive() and "seq" not in result, "must keep waiting while Redis is down"
        server = RedisServer(workdir=tmp_path, port=port, appendonly=True, appendfsync="always").start()
        thread.join(60)
        assert result["seq"] == records[-1].sequence_number
        assert retries and proc.stats.redis_retries > 0
        assert_matches_ledger(client, ledger)
    finally:
        server.stop()


def test_overlapped_batch_that_fails_is_sent_again_before_the_next_and_nothing_is_lost(tmp_path: Path, run: Any) -> None:
    """Overlapped: Redis dies with a batch in flight. The next call sends that batch again first, waits, and
    gives up with RedisUnavailable (the worker then offers the same records again); once Redis is back the
    retried call commits both in order and the checkpoint only ever names committed batches."""
    records, ledger = run
    server = RedisServer(workdir=tmp_path, appendonly=True, appendfsync="always").start()
    port = server.port
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    proc = _processor(client, retry=RetryPolicy(base_s=0.05, max_s=0.2, max_wait_s=1.0), overlap=True)
    batches = [records[i:i + 1000] for i in range(0, len(records), 1000)]
    k = len(batches) // 2
    try:
        _feed(proc, [r for b in batches[:k] for r in b], 1000)
        server.kill()
        assert proc.process_batch(_ctx(), batches[k], 0) is None  # nothing settled: batch k is in flight
        with pytest.raises(RedisUnavailable):
            proc.process_batch(_ctx(), batches[k + 1], 0)  # batch k failed; sent again, still no Redis
        assert proc.stats.redis_retries > 0
        server = RedisServer(workdir=tmp_path, port=port, appendonly=True, appendfsync="always").start()
        # the worker offers batch k + 1 again: batch k commits first, then k + 1 is sent
        assert proc.process_batch(_ctx(), batches[k + 1], 0) == batches[k][-1].sequence_number
        rest = [r for b in batches[k + 2:] for r in b]
        assert proc.process_batch(_ctx(), rest[:1000], 0) == batches[k + 1][-1].sequence_number
        assert proc.process_batch(_ctx(), [], 0) == rest[999].sequence_number
        _feed(proc, rest[1000:], 1000)
        assert_matches_ledger(client, ledger)
    finally:
        server.stop()


def test_dead_letter_replay_after_a_fix(redis_client: redis.Redis, aws_endpoint: str, stream_name: str) -> None:
    small = _page_view(str(uuid.uuid4()))
    big = _page_view(str(uuid.uuid4()))[:-1] + b', "pad": "' + b"x" * 400 + b'"}'
    strict = SpeedProcessor(SpeedStore(redis_client, "speed"), EventDecoder(max_bytes=len(small) + 10))
    strict.process_batch(_ctx(), [StreamRecord(SHARD, "1", "k", big, 0.0), StreamRecord(SHARD, "2", "k", small, 0.0),
                                  StreamRecord(SHARD, "3", "k", b"nope", 0.0)], 0)
    assert deadletters.counts(redis_client) == {"oversized": 1, "invalid_json": 1}
    assert _total(redis_client) == 1
    sent: list[tuple[bytes, str]] = []
    fixed = EventDecoder(max_bytes=65_536)
    result = deadletters.replay(redis_client, sent.extend, fixed)
    assert (result.sent, result.still_invalid, result.marked) == (1, 1, 1)
    assert [d for d, _ in sent] == [big]
    # The re-fed record comes back through the stream at a new position and is counted by the fixed consumer.
    relaxed = SpeedProcessor(SpeedStore(redis_client, "speed"), fixed)
    relaxed.process_batch(_ctx(), [StreamRecord(SHARD, "4", "k", sent[0][0], 0.0)], 0)
    assert _total(redis_client) == 2
    assert deadletters.replayed_counts(redis_client) == {"oversized": 1}
    assert [e.reason for e in deadletters.list_pending(redis_client)] == ["invalid_json"]
    # Replaying again re-feeds nothing (the entry is no longer pending).
    assert deadletters.replay(redis_client, sent.extend, fixed).sent == 0


def _expected_members(records: list[StreamRecord], at_ms: int) -> dict[tuple[str, str], set[str]]:
    """The rules evaluated from scratch over every event: a visitor is a member at ``at_ms`` when it has at
    least ``min_count`` matching events in the window ending then (``at_ms`` after the last event)."""
    rules = load_rules()
    decoder = EventDecoder()
    hits: dict[tuple[str, str, str], list[int]] = {}
    seen: set[str] = set()
    for record in records:
        event = decoder.decode(record.data)
        if not hasattr(event, "event_id") or str(event.event_id) in seen:
            continue
        seen.add(str(event.event_id))
        for rule in rules:
            if rule.matches(event.event_type.value, event.properties):
                ms = int(event.received_at.timestamp() * 1000)
                hits.setdefault((event.tenant_id, rule.name, event.anonymous_id), []).append(ms)
    window = {r.name: r.window_hours * 3_600_000 for r in rules}
    need = {r.name: r.min_count for r in rules}
    out: dict[tuple[str, str], set[str]] = {}
    for (tenant, name, anon), times in hits.items():
        if sum(1 for t in times if at_ms - window[name] < t <= at_ms) >= need[name]:
            out.setdefault((tenant, name), set()).add(anon)
    return out


@pytest.mark.parametrize("overlap", [False, True], ids=["in-turn", "overlapped"])
def test_segments_equal_the_rules_evaluated_from_scratch_for_any_batching(redis_client: redis.Redis, overlap: bool) -> None:
    """Segment state merged over many batches of random sizes, by processors in turn (each restarted one
    starts from the stored state only), equals the rules evaluated over all the events; also when each
    batch is applied while the next is aggregated."""
    datas, _, _ = generated(GeneratorConfig(seed=23, duration_s=600, rate_per_s=40, tenants=3,
                                            new_visitor_p=0.05, duplicate_rate=0.03, late_rate=0.05, late_delay_s=(60, 900),
                                            start=recent_start(1500)))
    records = as_stream_records(datas)
    rng = random.Random(5)
    i = 0
    while i < len(records):
        proc = _processor(redis_client, overlap=overlap)  # a restart: no state but what Redis holds
        for _ in range(rng.randint(1, 6)):
            size = rng.choice([1, 7, 60, 300, 3000])
            _feed(proc, records[i:i + size], size)
            i += size
    decoder = EventDecoder()
    valid = [e for e in (decoder.decode(r.data) for r in records) if isinstance(e, Event)]
    last_ms = max(int(e.received_at.timestamp() * 1000) for e in valid)
    q = SpeedQueries(redis_client)
    for at_ms in (last_ms + 1, last_ms + 20 * 60_000, last_ms + 50 * 60_000):
        expected = _expected_members(records, at_ms)
        at = dt.datetime.fromtimestamp(at_ms / 1000, dt.timezone.utc)
        for tenant in {e.tenant_id for e in valid}:
            for rule in load_rules():
                got = set(q.segment_members(tenant, rule.name, at=at, limit=100_000))
                assert got == expected.get((tenant, rule.name), set()), (tenant, rule.name, at_ms - last_ms)
    assert sum(len(v) for v in _expected_members(records, last_ms + 1).values()) > 20  # the test has members to find



@pytest.mark.parametrize("rule_name", ["pricing_intent", "engaged_reader"])
def test_a_late_hit_before_a_bucket_boundary_joins_the_state_a_newer_hit_moved_past_it(
        redis_client: redis.Redis, rule_name: str) -> None:
    """Segment state lives in window-long buckets (UTC days for a 24 h rule, hours for a 1 h rule). Hits
    just after a boundary are applied first; then a late hit just before it, then one more after it: the
    visitor has ``min_count`` hits inside the window and is a member, as the rules say from scratch."""
    rule = next(r for r in load_rules() if r.name == rule_name)
    window_ms = rule.window_hours * 3_600_000
    boundary_ms = ((int(time.time() * 1000) - 120_000) // window_ms) * window_ms  # a boundary 2+ minutes ago

    def iso(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    after = [boundary_ms + 1_000 * (i + 1) for i in range(rule.min_count - 2)]
    late, newest = boundary_ms - 2_000, boundary_ms + 60_000
    proc = _processor(redis_client)
    seq = 0
    for times in ([*after], [late], [newest]):  # three batches: the middle one is late
        records = []
        for ms in times:
            seq += 1
            records.append(StreamRecord(SHARD, str(seq), "k", _page_view(str(uuid.uuid4()), anon="v-late", received=iso(ms)), 0.0))
        proc.process_batch(_ctx(), records, 0)
    at = dt.datetime.fromtimestamp((newest + 1) / 1000, dt.timezone.utc)
    members = set(SpeedQueries(redis_client).segment_members("acme", rule.name, at=at, limit=100))
    assert members == {"v-late"}
    # one hit fewer than min_count is not a member: the boundary does not invent hits either
    proc2 = _processor(redis_client)
    seq = 100
    for times in ([*after], [newest]):
        records = []
        for ms in times:
            seq += 1
            records.append(StreamRecord(SHARD, str(seq), "k", _page_view(str(uuid.uuid4()), anon="v-short", received=iso(ms)), 0.0))
        proc2.process_batch(_ctx(), records, 0)
    assert "v-short" not in set(SpeedQueries(redis_client).segment_members("acme", rule.name, at=at, limit=100))


def test_segment_members_whose_membership_ended_past_the_history_are_removed(redis_client: redis.Redis) -> None:
    """TALLY_SPEED_SEGMENT_HISTORY_S bounds a membership set: a member whose membership ended more than the
    history before its rule's newest hit goes, one that ended within it stays, and a live query at any time
    inside the history answers as before. engaged_reader is 5 page views in 1 h, pricing_intent 3 of /pricing
    in 24 h (its memberships have not ended, so nobody leaves it)."""
    rules = load_rules()
    hour = 3_600_000
    base = (int(time.time() * 1000) // hour - 10) * hour  # an hour boundary 10 h ago
    proc = SpeedProcessor(SpeedStore(redis_client, "speed", rules, retention=Retention(segment_history_s=7_200)),
                          EventDecoder(), rules, OpsRecorder(redis_client, "speed"))

    def iso(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    seq = 0

    def visit(anon: str, start_ms: int) -> None:
        nonlocal seq
        records = []
        for i in range(5):
            seq += 1
            records.append(StreamRecord(SHARD, str(seq), "k", _page_view(str(uuid.uuid4()), anon=anon,
                                                                          received=iso(start_ms + i * 60_000)), 0.0))
        proc.process_batch(_ctx(), records, 0)

    engaged = keys.segment_members("acme", "engaged_reader")
    visit("v-old", base + 10 * 60_000)           # a member until ~1:10
    visit("v-mid", base + 3 * hour + 10 * 60_000)  # until ~4:10
    assert redis_client.zscore(engaged, "v-old") is not None, "the old member is there before a newer hit trims"
    visit("v-new", base + 5 * hour + 1 * 60_000)   # bucket 5:00, so memberships that ended before 3:00 go
    assert redis_client.zscore(engaged, "v-old") is None
    assert {m.decode() for m in redis_client.zrange(engaged, 0, -1)} == {"v-mid", "v-new"}
    q = SpeedQueries(redis_client)

    def at(ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)

    # a membership is stored as its end: "members at T" are those whose membership ends after T, which
    # the trim leaves alone for every T from the cut (3:00) on
    assert set(q.segment_members("acme", "engaged_reader", at=at(base + 3 * hour))) == {"v-mid", "v-new"}
    assert set(q.segment_members("acme", "engaged_reader", at=at(base + 5 * hour + 10 * 60_000))) == {"v-new"}
    assert set(q.segment_members("acme", "pricing_intent", at=at(base + 5 * hour + 10 * 60_000))) == {"v-old", "v-mid", "v-new"}


def test_suppressed_subjects_are_counted_apart_and_leave_no_per_visitor_state(redis_client: redis.Redis) -> None:
    """The counting rule of streaming/privacy/suppression.py, applied by the speed layer: an event of a
    suppressed subject received at or after the suppression started counts as suppressed, not as an
    event; one received before counts, but leaves no unique-visitor entry, segment state or membership.
    The processor learns of the list inside the atomic apply (its version), with no extra round trip."""
    from streaming.privacy import suppression

    proc = _processor(redis_client)
    now = time.time()
    since_ms = int((now - 100) * 1000)
    suppression.add(redis_client, "acme", [suppression.subject_hash("acme", "gone")], since_ms)

    def at(offset_s: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now + offset_s))

    views = [("gone", -300), ("gone", -200), ("gone", -150), ("gone", -50), ("gone", -40), ("gone", -30),
             ("kept", -300), ("kept", -200), ("kept", -150), ("kept", -50), ("kept", -40)]
    records = [StreamRecord(SHARD, str(i + 1), "k", _page_view(str(uuid.uuid4()), anon=a, received=at(off)), 0.0)
               for i, (a, off) in enumerate(views)]
    proc.process_batch(_ctx(), records, 0)
    assert _total(redis_client) == 3 + 5  # gone's 3 earlier views count, its 3 later ones do not
    suppressed = sum(int(n) for key in redis_client.scan_iter(match="tally:{acme}:sup:m:*")
                     for n in redis_client.hvals(key))
    assert suppressed == 3
    q = SpeedQueries(redis_client)
    for rule in ("pricing_intent", "engaged_reader"):
        assert "gone" not in q.segment_members("acme", rule)
    assert q.segment_members("acme", "pricing_intent") == ["kept"]
    states = [f.decode() for key in redis_client.scan_iter(match="tally:{acme}:segst:*") for f in redis_client.hkeys(key)]
    assert "gone" not in states and "kept" in states
    uv = [k for k in redis_client.scan_iter(match="tally:{acme}:uv:h:*")]
    assert redis_client.pfcount(*uv) == 1  # only "kept"

    # Lifting the suppression bumps the version: the next batch sees it without a restart.
    suppression.lift(redis_client, "acme", [suppression.subject_hash("acme", "gone")])
    later = [StreamRecord(SHARD, str(100 + i), "k", _page_view(str(uuid.uuid4()), anon="gone", received=at(-5 + i)), 0.0)
             for i in range(3)]
    proc.process_batch(_ctx(), later, 0)
    assert _total(redis_client) == 3 + 5 + 3
    assert "gone" in q.segment_members("acme", "pricing_intent")


@pytest.mark.parametrize("overlap", [False, True], ids=["in-turn", "overlapped"])
def test_a_repeat_of_an_id_applied_here_a_moment_ago_is_dropped_before_redis(redis_client: redis.Redis, overlap: bool) -> None:
    """Producer retries repeat an event seconds later: the processor drops the repeat itself, so the
    tenant's share is sent once (the script would otherwise refuse it and ask for a rebuild). Overlapped,
    the repeat is dropped while the first batch may still be in flight."""
    proc = _processor(redis_client, overlap=overlap)
    ids = [str(uuid.uuid4()) for _ in range(5)]
    first = [StreamRecord(SHARD, str(i + 1), "k", _page_view(e, anon=f"v{i}"), 0.0) for i, e in enumerate(ids)]
    _feed(proc, first, len(first))
    redis_client.config_resetstat()
    again = [StreamRecord(SHARD, str(10 + i), "k", _page_view(e, anon=f"v{i}"), 0.0) for i, e in enumerate(ids[:3])]
    fresh = [StreamRecord(SHARD, "20", "k", _page_view(str(uuid.uuid4()), anon="v9"), 0.0)]
    _feed(proc, again + fresh, 4)
    assert _total(redis_client) == 6
    assert redis_client.info("commandstats")["cmdstat_evalsha"]["calls"] == 1
    # A new processor (another lease) knows nothing: the script finds the repeats, and still counts once.
    other = _processor(redis_client)
    other.process_batch(_ctx(), [StreamRecord(SHARD, "30", "k", _page_view(ids[4], anon="v4"), 0.0)], 0)
    assert _total(redis_client) == 6


def test_recent_ids_forget_the_oldest_and_stay_inside_the_horizon() -> None:
    from streaming.speed.recent import RecentIds

    recent = RecentIds(horizon_s=3_600, max_entries=10)
    recent.add([bytes([i]) * 16 for i in range(25)], now=1_000.0)
    assert len(recent.applied_at) <= 10 and recent.is_repeat(bytes([24]) * 16, 1_001.0)
    assert not recent.is_repeat(bytes([0]) * 16, 1_001.0)  # evicted
    assert not recent.is_repeat(bytes([24]) * 16, 1_000.0 + 3_600)  # beyond the horizon (minus margin)
    assert not RecentIds(horizon_s=30).is_repeat(b"x" * 16, 0.0)  # a horizon under the margin: disabled


def test_a_tenant_share_larger_than_the_scripts_chunks_is_applied_whole(redis_client: redis.Redis) -> None:
    """The script passes one argument per id, visitor or state to Redis in chunks of 1,000 (Lua's unpack
    has a limit): a tenant's share of 1,300 visitors x 4 views crosses it for the seen-set, the states and
    the memberships; one more view each in the next batch makes them ``engaged_reader`` (5 in an hour) only
    if every stored state is read back and merged; that batch also repeats ids, so the seen-set takes
    only the fresh ones. Counts and memberships equal the rules evaluated from scratch."""
    now = time.time()

    def at(offset_s: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now + offset_s))

    visitors = [f"v{i:04d}" for i in range(1300)]
    first = [StreamRecord(SHARD, str(i + 1), "k", _page_view(str(uuid.uuid4()), anon=v, received=at(-60 + n)), 0.0)
             for i, (n, v) in enumerate((n, v) for n in range(4) for v in visitors)]
    _processor(redis_client).process_batch(_ctx(), first, 0)
    repeats = [StreamRecord(SHARD, str(10_000 + i), "k", r.data, 0.0) for i, r in enumerate(first[:3])]
    second = repeats + [StreamRecord(SHARD, str(20_000 + i), "k", _page_view(str(uuid.uuid4()), anon=v, received=at(-10)), 0.0)
                        for i, v in enumerate(visitors)]
    _processor(redis_client).process_batch(_ctx(), second, 0)  # a new processor: the script finds the repeats
    assert _total(redis_client) == 5 * len(visitors)
    assert sum(redis_client.scard(k) for k in redis_client.scan_iter(match="tally:{acme}:seen:*")) == 5 * len(visitors)
    at_ms = int(now * 1000) + 1
    expected = _expected_members(first + second, at_ms)
    q = SpeedQueries(redis_client)
    when = dt.datetime.fromtimestamp(at_ms / 1000, dt.timezone.utc)
    for rule in ("pricing_intent", "engaged_reader"):
        got = set(q.segment_members("acme", rule, at=when, limit=100_000))
        assert got == expected[("acme", rule)] == set(visitors), rule


def test_error_replies_inside_a_pipeline_keep_the_connection_in_step(redis_client: redis.Redis) -> None:
    """The store reads a pipeline's replies itself: an error reply takes its place in the answers and the
    replies after it stay matched to their calls; a script cache flushed between batches (a restarted
    Redis) is reloaded and every tenant's call sent again, counted once."""
    from redis.exceptions import ResponseError

    store = SpeedStore(redis_client, "speed", load_rules())
    replies = store._send_raw([("PING",), ("NO-SUCH-COMMAND",), ("ECHO", "after")])
    assert replies[0] in (b"PONG", True) and isinstance(replies[1], ResponseError) and replies[2] == b"after"
    assert redis_client.echo("next") == b"next"
    proc = _processor(redis_client)
    batch = [StreamRecord(SHARD, str(i + 1), "k", _page_view(str(uuid.uuid4()), tenant=f"t{i % 4}"), 0.0)
             for i in range(40)]
    proc.process_batch(_ctx(), batch[:20], 0)
    redis_client.script_flush()
    proc.process_batch(_ctx(), batch[20:], 0)  # every call answers NOSCRIPT first
    assert sum(_total(redis_client, f"t{t}") for t in range(4)) == 40
