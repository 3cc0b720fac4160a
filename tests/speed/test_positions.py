"""Redis that forgets acknowledged writes: the speed processor notices and reads again from what Redis
provably holds (``streaming/speed/positions.py``). A real redis-server of the test's own, restarted
cleanly, with the tail of its AOF cut off (the writes an ``appendfsync everysec`` crash loses), and
empty; the results are compared with the generator's ledger. The worker's side of a reset is tested in
``tests/test_worker_reset.py``; the storm under load in ``test_redis_storm.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from streaming.events import EventDecoder
from streaming.generator import GeneratorConfig, Ledger
from streaming.kinesis.processor import ResetShard, ShardContext, StreamRecord
from streaming.segments import load_rules
from streaming.speed import keys
from streaming.speed.consumer import RetryPolicy, SpeedProcessor
from streaming.speed.positions import NOTHING_LOST, NodeRestarted, ShardPositions, lost_after, node_of
from streaming.speed.store import SpeedStore
from streaming.stack.process import free_port
from streaming.stack.redis_local import RedisServer
from tests.speed.conftest import as_stream_records, assert_speed_layer_matches, generated, recent_start

SHARD = "shardId-000000000007"


def test_lost_after_names_the_lowest_floor_below_what_was_written() -> None:
    assert lost_after(None, {"a": None}) is NOTHING_LOST  # nothing expected: reading from the start anyway
    assert lost_after("100", {"a": "100", "b": "250"}) is NOTHING_LOST
    assert lost_after("100", {"a": "99", "b": "250"}) == "99"
    assert lost_after("100", {"a": "99", "b": "7", "c": "100"}) == "7"
    assert lost_after("100", {"a": "99", "b": None}) is None  # a node holding nothing: the trim horizon
    # Sequence numbers compare as numbers (Kinesis's are up to 56 digits), not as text.
    assert lost_after("1000", {"a": "999"}) == "999" and lost_after("999", {"a": "1000"}) is NOTHING_LOST


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    server = RedisServer(workdir=tmp_path / "redis", port=free_port(), appendonly=True, appendfsync="always",
                         data_name="t").start()
    try:
        yield server
    finally:
        server.stop()


def aof_tail(server: RedisServer) -> Path:
    """The AOF file new writes go to (Redis 7: the newest incr file of the multi-part AOF; 6: the file)."""
    parts = sorted((server.workdir / "appendonlydir").glob("t.aof.*.incr.aof"), key=lambda p: int(p.name.split(".")[2]))
    return parts[-1] if parts else server.workdir / "t.aof"


def restart(server: RedisServer, cut_to: int | None = None, empty: bool = False) -> None:
    """SIGKILL, then start on the same port: from the whole AOF, from its first ``cut_to`` bytes (what a
    crash before fsync leaves), or with no data at all."""
    server.kill()
    if cut_to is not None:
        with open(aof_tail(server), "r+b") as fh:
            fh.truncate(cut_to)
    if empty:
        for path in list(server.workdir.rglob("t.aof*")) + list(server.workdir.glob("appendonlydir")):
            if path.is_file():
                path.unlink()
    server.start()


def stream(seed: int = 5) -> tuple[list[StreamRecord], Ledger]:
    datas, _, ledger = generated(GeneratorConfig(seed=seed, tenants=12, duration_s=120, rate_per_s=60,
                                                 duplicate_rate=0.03, late_rate=0.0, malformed_rate=0.02,
                                                 start=recent_start(120)))
    return as_stream_records(datas, SHARD), ledger


class Driver:
    """The lease worker's part, by hand: feed batches in order; on ResetShard, go back where it says."""

    def __init__(self, client: Any, records: list[StreamRecord], batch: int = 300) -> None:
        rules = load_rules()
        self.store = SpeedStore(client, "speed", rules)
        self.positions = ShardPositions(client, "speed", 3_600)
        self.processor = SpeedProcessor(self.store, EventDecoder(), rules, retry=RetryPolicy(max_wait_s=20),
                                        positions=self.positions)
        self.ctx = ShardContext("s", SHARD, "w", 1)
        self.records, self.batch = records, batch
        self.index = {r.sequence_number: i for i, r in enumerate(records)}
        self.resets: list[str | None] = []
        self.next = 0

    def start(self, checkpoint: str | None = None) -> str | None:
        after = self.processor.initialize(self.ctx, checkpoint)
        self.next = 0 if after is None else self.index[after] + 1
        return after

    def feed(self, until: int | None = None) -> None:
        stop = len(self.records) if until is None else until
        while self.next < stop:
            chunk = self.records[self.next:min(stop, self.next + self.batch)]
            if self._process(chunk):
                self.next += len(chunk)

    def tick(self) -> None:
        self.processor._next_check_at = 0.0
        self._process([])

    def _process(self, chunk: list[StreamRecord]) -> bool:
        try:
            self.processor.process_batch(self.ctx, chunk, 0)
        except ResetShard as reset:
            self.resets.append(reset.after)
            self.next = 0 if reset.after is None else self.index[reset.after] + 1
            return False
        return True


def started(server: RedisServer) -> tuple[list[StreamRecord], Ledger, redis.Redis, Driver]:
    records, ledger = stream()
    client = redis.Redis.from_url(server.url)
    driver = Driver(client, records)
    driver.start()
    return records, ledger, client, driver


@pytest.mark.integration
def test_a_clean_restart_is_verified_and_nothing_is_read_again(own_redis: RedisServer) -> None:
    records, ledger, client, driver = started(own_redis)
    driver.feed(len(records) // 2)
    restart(own_redis)  # the whole AOF: nothing lost, but the node is a new incarnation
    driver.feed()
    assert driver.resets == [] and driver.processor.stats.restarts_verified >= 1
    assert_speed_layer_matches(client, [r.data for r in records], ledger)


@pytest.mark.integration
def test_a_lost_tail_is_read_again_from_the_floor_that_survived(own_redis: RedisServer) -> None:
    records, ledger, client, driver = started(own_redis)
    driver.feed(1_200)
    kept = aof_tail(own_redis).stat().st_size  # every write up to here survives the crash
    floor = records[1_199].sequence_number
    driver.feed(2_400)
    counted = sum(int(n) for k in client.scan_iter("tally:{*}:cnt:d:*") for n in client.hvals(k))
    restart(own_redis, cut_to=kept)
    assert sum(int(n) for k in client.scan_iter("tally:{*}:cnt:d:*") for n in client.hvals(k)) < counted
    driver.feed()
    assert driver.resets == [floor], "read again after the floor that survived, not from the checkpoint"
    assert_speed_layer_matches(client, [r.data for r in records], ledger)


@pytest.mark.integration
def test_an_empty_restart_reads_the_stream_from_its_trim_horizon(own_redis: RedisServer) -> None:
    records, ledger, client, driver = started(own_redis)
    driver.feed(2_000)
    restart(own_redis, empty=True)
    assert client.dbsize() == 0
    driver.feed()
    assert driver.resets == [None]
    assert_speed_layer_matches(client, [r.data for r in records], ledger)


@pytest.mark.integration
def test_an_idle_shard_notices_a_restart_that_lost_its_writes(own_redis: RedisServer) -> None:
    records, ledger, client, driver = started(own_redis)
    driver.feed(1_500)
    kept = aof_tail(own_redis).stat().st_size
    driver.feed()
    restart(own_redis, cut_to=kept)
    driver.tick()  # no records: the floor check alone finds it
    assert driver.resets == [records[1_499].sequence_number]
    driver.feed()
    assert_speed_layer_matches(client, [r.data for r in records], ledger)


@pytest.mark.integration
def test_initialize_resumes_from_what_redis_holds(own_redis: RedisServer) -> None:
    records, _ = stream()
    client = redis.Redis.from_url(own_redis.url)
    driver = Driver(client, records)
    assert driver.start("500") is None, "a checkpoint but no floor (an empty Redis): from the trim horizon"
    run_ids = {name: v.run_id for name, v in driver.positions.read(SHARD).items()}
    driver.positions.write(SHARD, 1, "300", run_ids)
    assert Driver(client, records).start("500") == "300", "Redis holds less than the checkpoint says"
    driver.positions.write(SHARD, 1, "900", run_ids)
    assert Driver(client, records).start("500") == "500", "Redis holds more: the checkpoint"
    assert Driver(client, records).start(None) is None


@pytest.mark.integration
def test_a_call_on_a_node_other_than_the_one_verified_writes_nothing(redis_client: redis.Redis) -> None:
    records, _ = stream()
    from streaming.speed.aggregate import aggregate

    batch = aggregate(records[:200], EventDecoder(), [])
    store = SpeedStore(redis_client, "speed")
    with pytest.raises(NodeRestarted):
        store.apply(SHARD, 1, list(batch.tenants.values()), run_ids={"_": "0" * 40})
    assert not list(redis_client.scan_iter("tally:{*}:cnt:*"))
    with pytest.raises(NodeRestarted):  # a node never verified is not written either
        store.apply(SHARD, 1, list(batch.tenants.values()), run_ids={})
    assert not list(redis_client.scan_iter("tally:*"))


@pytest.mark.integration
def test_cluster_floors_on_every_master_and_a_loss_on_one_of_them(cluster_client: Any) -> None:
    records, _ = stream()
    driver = Driver(cluster_client, records)
    nodes = driver.positions.nodes()
    assert len(nodes) == 3 and len({node_of(cluster_client, keys.shard_position(t, "speed", SHARD))
                                    for t in nodes.values()}) == 3
    driver.start()
    driver.feed(1_500)
    views = driver.positions.read(SHARD)
    assert {v.floor for v in views.values()} == {records[1_499].sequence_number}
    assert len({v.run_id for v in views.values()}) == 3
    # One master "restarts empty": a new run id is simulated by forgetting the verified one, and the
    # node's data is dropped (its floor, and the markers of the tenants it holds).
    lost_node = sorted(nodes)[0]
    driver.processor._run_ids[lost_node] = "0" * 40
    for key in cluster_client.scan_iter("tally:*", target_nodes=cluster_client.get_primaries()):
        if node_of(cluster_client, key.decode()) == lost_node:
            cluster_client.delete(key)
    driver.feed(1_600)
    assert driver.resets == [None], "the node without a floor sends the shard back to its trim horizon"


@pytest.mark.integration
def test_a_tail_cut_inside_a_script_never_comes_back_half_applied(own_redis: RedisServer) -> None:
    """Redis 7.0 keeps a half MULTI/EXEC block after loading a tail cut inside it, and the restart after
    next applies its first commands; RedisServer.start repairs the AOF first (redis-check-aof --fix)."""
    client = redis.Redis.from_url(own_redis.url)
    client.set("base", 1)
    client.eval("redis.call('INCR', 'counter'); redis.call('SET', 'marker', 'x'); return 1", 0)
    own_redis.kill()
    tail = aof_tail(own_redis)
    data = tail.read_bytes()
    with open(tail, "r+b") as fh:
        fh.truncate(data.rindex(b"marker"))  # inside the script's block: INCR whole, SET cut
    own_redis.start()
    assert client.get("counter") is None and client.get("marker") is None
    client.eval("redis.call('SET', 'other', 'y'); redis.call('SET', 'o2', 'z'); return 1", 0)
    own_redis.kill()
    own_redis.start()
    assert client.get("other") == b"y"
    assert client.get("counter") is None, "the half script came back"
