"""The lease worker: every record reaches a processor, parents before children, leases fenced."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from streaming.kinesis.leases import SHARD_END, LeaseLost, LeaseTable
from streaming.kinesis.processor import ShardContext, StreamRecord
from streaming.kinesis.worker import Worker, WorkerConfig

pytestmark = pytest.mark.integration


class Collector:
    """A processor that records what it was given; optionally fails its first ``fail`` calls with data."""

    log: list[tuple[str, bytes, int]] = []

    def __init__(self, sink: list[tuple[str, bytes, int]], fail: int = 0) -> None:
        self.sink = sink
        self.fail = fail
        self.offered: list[list[str]] = []

    def initialize(self, ctx: ShardContext, checkpoint: str | None) -> str | None:
        return checkpoint

    def process_batch(self, ctx: ShardContext, records: list[StreamRecord], lag: int) -> str | None:
        if not records:
            return None
        self.offered.append([r.sequence_number for r in records])
        if self.fail:
            self.fail -= 1
            raise ConnectionError("sink down")
        self.sink.extend((r.shard_id, r.data, ctx.lease_token) for r in records)
        return records[-1].sequence_number

    def lease_lost(self, ctx: ShardContext) -> None: ...
    def shard_ended(self, ctx: ShardContext) -> None: ...
    def shutdown(self, ctx: ShardContext) -> None: ...


def put(kinesis: Any, stream: str, items: list[bytes]) -> None:
    for i in range(0, len(items), 500):
        chunk = items[i:i + 500]
        kinesis.put_records(StreamName=stream, Records=[{"Data": d, "PartitionKey": d.decode()} for d in chunk])


def make_worker(kinesis: Any, dynamodb: Any, stream: str, table: str, sink: list, **kw: Any) -> Worker:
    fail = kw.pop("fail", 0)
    return Worker(kinesis, dynamodb, stream, table, "test", lambda: Collector(sink, fail),
                  config=WorkerConfig(lease_duration_s=kw.pop("lease_s", 3.0), idle_poll_interval_s=0.05), **kw)


def test_reads_everything_once_and_resumes_from_checkpoint(kinesis, dynamodb, stream_name, lease_table) -> None:
    items = [f"a{i}".encode() for i in range(1500)]
    put(kinesis, stream_name, items)
    sink: list = []
    make_worker(kinesis, dynamodb, stream_name, lease_table, sink).run_until_caught_up(30)
    assert Counter(d for _, d, _ in sink) == Counter(items)
    more = [f"b{i}".encode() for i in range(300)]
    put(kinesis, stream_name, more)
    sink2: list = []
    make_worker(kinesis, dynamodb, stream_name, lease_table, sink2).run_until_caught_up(30)
    assert Counter(d for _, d, _ in sink2) == Counter(more), "a new worker resumes after the checkpoints"
    assert all(token == 2 for _, _, token in sink2), "each new owner gets a larger fencing token"


def test_failing_processor_is_retried_with_same_records_and_no_checkpoint(kinesis, dynamodb, stream_name, lease_table) -> None:
    put(kinesis, stream_name, [f"x{i}".encode() for i in range(50)])
    sink: list = []
    processors: list[Collector] = []

    def factory() -> Collector:
        processors.append(Collector(sink, fail=3))
        return processors[-1]

    worker = Worker(kinesis, dynamodb, stream_name, lease_table, "test", factory,
                    config=WorkerConfig(lease_duration_s=3, idle_poll_interval_s=0.05, max_backoff_s=0.2))
    worker.run_until_caught_up(30)
    assert len(sink) == 50
    for p in processors:
        if p.offered:
            assert p.offered[0] == p.offered[1] == p.offered[3], "the failed batch is offered again, unchanged"


def test_parents_finish_before_children(kinesis, dynamodb, stream_name, lease_table) -> None:
    before = [f"p{i}".encode() for i in range(200)]
    put(kinesis, stream_name, before)
    shards = kinesis.list_shards(StreamName=stream_name)["Shards"]
    parent = shards[0]
    mid = (int(parent["HashKeyRange"]["StartingHashKey"]) + int(parent["HashKeyRange"]["EndingHashKey"])) // 2
    kinesis.split_shard(StreamName=stream_name, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(mid))
    after = [f"c{i}".encode() for i in range(200)]
    put(kinesis, stream_name, after)
    sink: list = []
    make_worker(kinesis, dynamodb, stream_name, lease_table, sink).run_until_caught_up(30)
    assert Counter(d for _, d, _ in sink) == Counter(before + after)
    order = [(sid, d) for sid, d, _ in sink]
    children = {s["ShardId"] for s in kinesis.list_shards(StreamName=stream_name)["Shards"] if s.get("ParentShardId") == parent["ShardId"]}
    last_parent = max(i for i, (sid, _) in enumerate(order) if sid == parent["ShardId"])
    first_child = min(i for i, (sid, _) in enumerate(order) if sid in children)
    assert last_parent < first_child
    table = LeaseTable(dynamodb, lease_table, "test", stream_name)
    assert table.leases()[parent["ShardId"]].checkpoint == SHARD_END


def test_three_workers_share_shards_and_survive_one_dying(kinesis, dynamodb, lease_table) -> None:
    from streaming.resources import ensure_stream

    stream = f"ws-{time.time_ns()}"
    ensure_stream(kinesis, stream, 4)
    sink: list = []
    lock = threading.Lock()

    class Locked(Collector):
        def process_batch(self, ctx, records, lag):  # type: ignore[override]
            with lock:
                return super().process_batch(ctx, records, lag)

    workers = [Worker(kinesis, dynamodb, stream, lease_table, "test", lambda: Locked(sink),
                      config=WorkerConfig(lease_duration_s=2.0, idle_poll_interval_s=0.05)) for _ in range(3)]
    stops = [threading.Event() for _ in workers]
    dead = threading.Event()

    def loop(i: int) -> None:
        while not stops[i].is_set():
            if i == 0 and dead.is_set():
                return  # crash: no shutdown, no release; its leases must expire
            workers[i].run_once()
            time.sleep(0.02)
        workers[i].shutdown()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        items = [f"w{i}".encode() for i in range(4000)]
        put(kinesis, stream, items[:2000])
        time.sleep(5)  # leases balance (fair share of 4 shards over 3 workers)
        owners = Counter(lease.owner for lease in LeaseTable(dynamodb, lease_table, "test", stream).leases().values())
        assert len(owners) == 3 and max(owners.values()) == 2, f"every worker works: {owners}"
        dead.set()
        put(kinesis, stream, items[2000:])
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len({d for _, d, _ in sink}) < len(items):
            time.sleep(0.2)
    finally:
        for s in stops:
            s.set()
        for t in threads:
            t.join(timeout=30)
    assert {d for _, d, _ in sink} == set(items), "nothing lost when a worker dies"
    leases = LeaseTable(dynamodb, lease_table, "test", stream).leases()
    assert all(lease.owner != workers[0].worker_id for lease in leases.values())


def test_a_worker_that_lost_its_lease_cannot_checkpoint(dynamodb, lease_table) -> None:
    table = LeaseTable(dynamodb, lease_table, "g", "s")
    a = table.take("shard-1", "A", 0.01, None)
    time.sleep(0.05)
    b = table.take("shard-1", "B", 10, table.leases()["shard-1"])
    assert b.token == a.token + 1
    with pytest.raises(LeaseLost):
        table.checkpoint(a, "123")
    with pytest.raises(LeaseLost):
        table.renew(a, 10)
    assert table.checkpoint(b, "456").checkpoint == "456"
    with pytest.raises(LeaseLost):
        table.take("shard-1", "C", 10, a), "a stale view cannot take the lease either"


def test_concurrent_takes_have_one_winner(aws_endpoint, lease_table) -> None:
    """Conditional writes are atomic in the emulator, as in DynamoDB: lease fencing depends on it."""
    from concurrent.futures import ThreadPoolExecutor

    from streaming.aws import aws_client

    def attempt(i: int) -> bool:
        table = LeaseTable(aws_client("dynamodb", "us-east-1", aws_endpoint), lease_table, "race", "s")
        try:
            table.take("shard-9", f"w{i}", 30, None)
            return True
        except LeaseLost:
            return False

    with ThreadPoolExecutor(16) as pool:
        wins = list(pool.map(attempt, range(32)))
    assert wins.count(True) == 1


def test_processor_fenced_off_drops_the_shard_at_once(kinesis, dynamodb, stream_name, lease_table) -> None:
    put(kinesis, stream_name, [f"f{i}".encode() for i in range(20)])
    lost: list[str] = []

    class Fenced(Collector):
        def process_batch(self, ctx, records, lag):  # type: ignore[override]
            if records:
                raise LeaseLost(ctx.shard_id)
            return None

        def lease_lost(self, ctx) -> None:
            lost.append(ctx.shard_id)

    worker = Worker(kinesis, dynamodb, stream_name, lease_table, "test", lambda: Fenced([]),
                    config=WorkerConfig(lease_duration_s=3, idle_poll_interval_s=0.05))
    for _ in range(20):
        worker.run_once()
        time.sleep(0.05)
    worker.shutdown()
    assert lost, "a fenced processor makes the worker give the shard up"
    assert all(lease.checkpoint is None for lease in LeaseTable(dynamodb, lease_table, "test", stream_name).leases().values())


def test_get_records_errors_back_off_instead_of_stopping(kinesis, dynamodb, stream_name, lease_table) -> None:
    from botocore.awsrequest import AWSResponse

    items = [f"t{i}".encode() for i in range(300)]
    put(kinesis, stream_name, items)
    throttled = {"n": 0}

    def throttle(**_: Any):
        if throttled["n"] < 20:  # more than botocore's own retries (8 attempts): the worker must see it
            throttled["n"] += 1
            return AWSResponse("http://fault", 400, {}, None), {
                "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "injected"},
                "ResponseMetadata": {"HTTPStatusCode": 400}}
        return None

    from streaming.aws import aws_client

    client = aws_client("kinesis", "us-east-1", kinesis.meta.endpoint_url)
    client.meta.events.register("before-call.kinesis.GetRecords", throttle)
    sink: list = []
    worker = Worker(client, dynamodb, stream_name, lease_table, "test", lambda: Collector(sink),
                    config=WorkerConfig(lease_duration_s=3, idle_poll_interval_s=0.05, max_backoff_s=0.2))
    worker.run_until_caught_up(90)
    assert throttled["n"] == 20
    assert sum(m.errors for m in worker.metrics.values()) >= 1, "the worker backed off at least once itself"
    assert Counter(d for _, d, _ in sink) == Counter(items)


def test_read_ahead_keeps_order_and_the_per_shard_poll_limit(kinesis, dynamodb, lease_table) -> None:
    """A busy shard's next page is fetched from another thread while the current one is processed: every
    record still arrives once and in stream order, also when the processor fails and gets its page again,
    and no two GetRecords calls on the shard start less than 0.2 s apart (Kinesis's 5 per second)."""
    from streaming.aws import aws_client
    from streaming.resources import ensure_stream
    from tests.conftest import unique_name

    stream = unique_name("test-ahead")
    ensure_stream(kinesis, stream, 1)
    items = [f"r{i:04d}".encode() for i in range(700)]
    put(kinesis, stream, items)
    calls: list[tuple[float, str]] = []
    client = aws_client("kinesis", "us-east-1", kinesis.meta.endpoint_url)
    client.meta.events.register("before-call.kinesis.GetRecords",
                                lambda **_: calls.append((time.monotonic(), threading.current_thread().name)))

    class Uneven(Collector):
        """Every other page takes 0.15 s: a read-ahead sent as soon as a quick page is done would then
        start well under 0.2 s after the one sent when the slow page was done."""

        def process_batch(self, ctx: ShardContext, records: list[StreamRecord], lag: int) -> str | None:
            if records and len(self.offered) % 2 == 0:
                time.sleep(0.15)
            return super().process_batch(ctx, records, lag)

    sink: list = []
    worker = Worker(client, dynamodb, stream, lease_table, "test", lambda: Uneven(sink, fail=2),
                    config=WorkerConfig(lease_duration_s=3, idle_poll_interval_s=0.05, max_records=100,
                                        max_backoff_s=0.2))
    worker.run_until_caught_up(60)
    assert [d for _, d, _ in sink] == items, "every record once, in stream order"
    assert any(name.startswith("get-records") for _, name in calls), "pages were read ahead"
    starts = [t for t, _ in calls]
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.19


def test_a_shard_waiting_for_its_page_does_not_hold_up_the_others(kinesis, dynamodb, lease_table) -> None:
    """One shard's read-ahead takes 1.5 s (a slow GetRecords): meanwhile the worker keeps processing the
    other shard's pages, one per allowed poll, instead of waiting for the slow one first."""
    from streaming.aws import aws_client
    from streaming.resources import ensure_stream
    from tests.conftest import unique_name

    stream = unique_name("test-slow-shard")
    ensure_stream(kinesis, stream, 2)
    put(kinesis, stream, [f"s{i:05d}".encode() for i in range(2000)])
    client = aws_client("kinesis", "us-east-1", kinesis.meta.endpoint_url)
    shard_of: dict[str, str] = {}  # iterator -> shard, learned from the responses
    slow_calls: list[tuple[float, float]] = []
    slow_shard: list[str] = []  # the shard of the first GetRecords call

    def before(params: dict, context: dict, **_: Any) -> None:
        context["request"] = params
        if "ShardIterator" not in params:
            return
        shard = shard_of.get(params["ShardIterator"], "?")
        if not slow_shard:
            slow_shard.append(shard)
        if shard == slow_shard[0] and threading.current_thread().name.startswith("get-records") and not slow_calls:
            started = time.monotonic()
            time.sleep(1.5)
            slow_calls.append((started, time.monotonic()))

    def after(parsed: dict, context: dict, **_: Any) -> None:
        request = context.get("request", {})
        if "ShardId" in request and "ShardIterator" in parsed:
            shard_of[parsed["ShardIterator"]] = request["ShardId"]
        elif parsed.get("NextShardIterator"):
            shard_of[parsed["NextShardIterator"]] = shard_of.get(request.get("ShardIterator", ""), "?")

    for op in ("GetShardIterator", "GetRecords"):
        client.meta.events.register(f"before-parameter-build.kinesis.{op}", before)  # params: the API's
        client.meta.events.register(f"after-call.kinesis.{op}", after)
    processed: list[tuple[float, str]] = []

    class Timed(Collector):
        def process_batch(self, ctx: ShardContext, records: list[StreamRecord], lag: int) -> str | None:
            if records:
                processed.append((time.monotonic(), ctx.shard_id))
            return super().process_batch(ctx, records, lag)

    sink: list = []
    worker = Worker(client, dynamodb, stream, lease_table, "test", lambda: Timed(sink),
                    config=WorkerConfig(lease_duration_s=3, idle_poll_interval_s=0.05, max_records=50))
    worker.run_until_caught_up(60)
    assert len(sink) == 2000 and len({d for _, d, _ in sink}) == 2000
    assert slow_calls, (slow_shard, list(shard_of.values())[:5])
    [(started, ended)] = slow_calls
    others = [t for t, shard in processed if shard != slow_shard[0] and started < t < ended]
    assert len(others) >= 4, f"only {len(others)} pages of the other shard processed during the slow read"


class Lagging(Collector):
    """Commits all but the last record of each page (a sink that buffers, like the archiver)."""

    def process_batch(self, ctx: ShardContext, records: list[StreamRecord], lag: int) -> str | None:
        if not records:
            return None
        self.sink.extend((r.shard_id, r.data, ctx.lease_token) for r in records)
        return records[-2].sequence_number if len(records) > 1 else None


def _stream_records(kinesis: Any, stream: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        out[shard["ShardId"]] = kinesis.get_records(ShardIterator=it, Limit=10_000)["Records"]
    return out


def test_positions_record_the_checkpoint_its_arrival_and_the_tip(kinesis, dynamodb, stream_name, lease_table) -> None:
    put(kinesis, stream_name, [f"p{i}".encode() for i in range(200)])
    sent_at = time.time()
    make_worker(kinesis, dynamodb, stream_name, lease_table, []).run_until_caught_up(30)
    records = _stream_records(kinesis, stream_name)
    leases = LeaseTable(dynamodb, lease_table, "test", stream_name).leases()
    assert set(leases) == set(records)
    for shard_id, lease in leases.items():
        last = records[shard_id][-1]
        assert lease.checkpoint == last["SequenceNumber"]
        assert lease.position.arrival == pytest.approx(last["ApproximateArrivalTimestamp"].timestamp(), abs=1e-3)
        assert lease.position.at_tip
        assert lease.position.observed_at is not None and lease.position.observed_at >= sent_at - 1

    # A group whose sink holds the last record of each page back is never at the tip: its position is
    # the record before, with that record's arrival time.
    table = LeaseTable(dynamodb, lease_table, "lagging", stream_name)
    Worker(kinesis, dynamodb, stream_name, lease_table, "lagging", lambda: Lagging([]),
           config=WorkerConfig(lease_duration_s=3.0, idle_poll_interval_s=0.05)).run_until_caught_up(30)
    for shard_id, lease in table.leases().items():
        before_last = records[shard_id][-2]
        assert lease.checkpoint == before_last["SequenceNumber"]
        assert lease.position.arrival == pytest.approx(before_last["ApproximateArrivalTimestamp"].timestamp(), abs=1e-3)
        assert not lease.position.at_tip
