"""What the capacity planner needs that no other benchmark measures: Redis bytes per key family, archive
bytes per record, and the apply time of a small batch (a Lambda invocation's).

The capacity planner (``tally plan``, ``streaming/plan/``) predicts Redis memory from these figures, so
they come from a real run, not from a formula: the generator's traffic (50 tenants on its Zipf curve, one
hour at 150 events/s, 1% duplicates, 0.1% malformed, over 4 shards) goes through the speed layer's own
``process_batch`` into a redis-server started here. Then every key is read back: its family
(``streaming.speed.keys.FAMILIES``), ``OBJECT ENCODING``, element count (fields, members, or a
HyperLogLog's PFCOUNT) and ``MEMORY USAGE key SAMPLES 0`` (every element counted).

Per family and encoding, the bytes of a key are fitted as ``key_bytes + member_bytes x elements`` over
that family's keys (least squares; a family whose keys all hold the same number of elements gets its mean
as ``key_bytes``): ``memory_<family>_<encoding>_key_bytes`` / ``..._member_bytes``. What ``MEMORY USAGE``
does not see (the expires dict, the keyspace's bucket arrays, allocator rounding) is the ratio
``memory_used_per_usage_ratio``: the growth of ``INFO memory`` ``used_memory`` over the sum of ``MEMORY
USAGE`` (1.09-1.10 here, at 20 and 60 minutes of this traffic: a ratio, not a cost per key).

Encodings this workload does not reach are calibrated on synthetic keys of the same shape: a dense
HyperLogLog (``memory_hll_dense_key_bytes``) and a sorted set of page paths past the listpack limit
(``memory_zset_skiplist_*``). The traffic shape the planner scales is measured from the same run's
ledger: events per visitor-hour, event-type shares, segment members and states per visitor-hour.

A Lambda invocation: ``process_batch`` on batches of 100 and 1,000 records of the same traffic (a fresh
Redis each round, medians of 20 batches each), fitted as ``lambda_batch_fixed_ms + lambda_batch_event_us
x records``: an event source mapping polls each shard once a second, so at a modest rate each invocation
carries few records and the fixed part (a script call per tenant, the ops pipeline) dominates.

The archive figure: the same records cut into the archiver's default batches (20,000 records per
shard), encoded by ``streaming.archive.batch.build_batch`` (gzip JSON lines + manifest), bytes counted.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
import zlib
from collections import defaultdict
from typing import Any

import redis

from bench.servers import redis_server
from streaming.archive.batch import build_batch
from streaming.events import EVENT_TYPES, EventDecoder
from streaming.generator import GeneratorConfig, TrafficGenerator
from streaming.kinesis.processor import ShardContext, StreamRecord
from streaming.segments import load_rules
from streaming.speed import keys
from streaming.speed.consumer import SpeedProcessor
from streaming.speed.ops import OpsRecorder
from streaming.speed.store import SpeedStore

SHARDS = 4
BATCH = 10_000
ARCHIVE_BATCH = 20_000  # TALLY_ARCHIVE_MAX_RECORDS' default
HLL_DENSE_BYTES = 12_304  # Redis's dense representation: 16-byte header + 16,384 6-bit registers
WORKLOAD = GeneratorConfig(seed=11, tenants=50, duration_s=3_600, rate_per_s=150, duplicate_rate=0.01,
                           malformed_rate=0.001)


def _shard_of(partition_key: str) -> str:
    return f"shardId-{zlib.crc32(partition_key.encode()) % SHARDS:012d}"


def _records(config: GeneratorConfig) -> tuple[dict[str, list[StreamRecord]], Any]:
    gen = TrafficGenerator(config)
    by_shard: dict[str, list[StreamRecord]] = defaultdict(list)
    for r in gen.records():
        shard = _shard_of(r.partition_key)
        by_shard[shard].append(StreamRecord(shard, str(len(by_shard[shard]) + 1), r.partition_key, r.data, 0.0))
    return by_shard, gen.ledger


def apply_records(client: redis.Redis, by_shard: dict[str, list[StreamRecord]]) -> None:
    """The speed layer's own path: decode, dedup, aggregate, one Lua call per tenant and batch."""
    rules = load_rules()
    proc = SpeedProcessor(SpeedStore(client, "speed", rules), EventDecoder(), rules, OpsRecorder(client, "speed"))
    for shard, records in by_shard.items():
        ctx = ShardContext("bench", shard, "bench", 1)
        for i in range(0, len(records), BATCH):
            proc.process_batch(ctx, records[i:i + BATCH], 0)


def _elements(client: redis.Redis, key: bytes, kind: str) -> tuple[int, str]:
    """(elements, encoding) of a key; a HyperLogLog is a string whose elements are its PFCOUNT."""
    if kind == "string":
        size = client.strlen(key)
        if client.getrange(key, 0, 3) == b"HYLL":
            return int(client.pfcount(key)), "dense" if size >= HLL_DENSE_BYTES else "sparse"
        return size, "string"
    counter = {"hash": client.hlen, "set": client.scard, "zset": client.zcard, "list": client.llen}[kind]
    return int(counter(key)), client.object("encoding", key).decode()


def scan_keys(client: redis.Redis) -> list[tuple[str, str, int, int]]:
    """(family, encoding, elements, MEMORY USAGE bytes) of every key."""
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        elements, encoding = _elements(client, key, kind)
        out.append((keys.family_of(key), encoding, elements, int(client.memory_usage(key, samples=0))))
    return out


def fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    """(key_bytes, member_bytes) of ``bytes = key_bytes + member_bytes x elements``, least squares."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    if len(points) < 3 and sum(xs):  # one key holds them all (dead letters, lag): a cost per element
        return 0.0, sum(ys) / sum(xs)
    if max(xs) == min(xs):  # every key the same size (a marker's two fields): a cost per key
        return statistics.fmean(ys), 0.0
    slope, intercept = statistics.linear_regression(xs, ys)
    if intercept < 0:  # a fit through the origin explains these keys better than a negative fixed cost
        return 0.0, sum(ys) / sum(xs)
    return intercept, slope


def family_figures(rows: list[tuple[str, str, int, int]]) -> dict[str, float]:
    groups: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for family, encoding, elements, usage in rows:
        groups[(family, encoding)].append((elements, usage))
    figures: dict[str, float] = {}
    for (family, encoding), points in sorted(groups.items()):
        key_bytes, member_bytes = fit(points)
        name = f"memory_{family}_{encoding}"
        figures[f"{name}_key_bytes"] = round(key_bytes, 2)
        figures[f"{name}_member_bytes"] = round(member_bytes, 3)
        print(f"   {family:18} {encoding:9} {len(points):7,} keys {sum(p[0] for p in points):10,} elements "
              f"{sum(p[1] for p in points) / 1e6:8.2f} MB  fit {key_bytes:8.1f} + {member_bytes:7.2f}/element")
    return figures


def calibrate(client: redis.Redis) -> dict[str, float]:
    """Encodings past the workload's reach, on synthetic keys shaped like the families that reach them."""
    client.flushall()
    client.pfadd(keys.uniques("cal", "h", 1), *[f"anon-{i:08x}" for i in range(50_000)])
    dense = int(client.memory_usage(keys.uniques("cal", "h", 1), samples=0))
    points = []
    for n in (300, 1_000, 3_000):  # past zset-max-listpack-entries: a skiplist, as a busy tenant's top pages
        key = keys.top_pages("cal", "d", n)
        client.zadd(key, {f"/blog/post-{i:05d}": i + 1 for i in range(n)})
        assert client.object("encoding", key) == b"skiplist"
        points.append((n, int(client.memory_usage(key, samples=0))))
    key_bytes, member_bytes = fit(points)
    config = client.config_get("*max-listpack-entries") | client.config_get("hll-sparse-max-bytes")
    client.flushall()
    return {
        "memory_hll_dense_key_bytes": dense,
        "memory_zset_skiplist_key_bytes": round(key_bytes, 2),
        "memory_zset_skiplist_member_bytes": round(member_bytes, 3),
        "memory_listpack_max_entries": min(int(config[k]) for k in config if k.endswith("max-listpack-entries")),
        "memory_hll_sparse_max_bytes": int(config["hll-sparse-max-bytes"]),
    }


def shape_figures(client: redis.Redis, ledger: Any) -> dict[str, float]:
    """The traffic's shape, which the planner scales: per visitor-hour and per event."""
    visitor_hours = sum(n for by_hour in ledger.uniques_hour.values() for n in by_hour.values())
    by_type: dict[str, int] = defaultdict(int)
    for (_, etype), n in ledger.totals_by_tenant_type().items():
        by_type[etype] += n
    figures: dict[str, float] = {
        "memory_workload_events_per_visitor_hour": round(ledger.valid_events / visitor_hours, 3),
    }
    for etype in EVENT_TYPES:
        figures[f"memory_workload_share_{etype}"] = round(by_type.get(etype, 0) / ledger.valid_events, 4)
    for rule in load_rules():
        member_keys = client.scan_iter(match=keys.segment_members_pattern(segment=rule.name), count=1000)
        members = sum(client.zcard(k) for k in member_keys)
        state_keys = client.scan_iter(match=keys.segment_state_pattern(segment=rule.name), count=1000)
        states = sum(client.hlen(k) for k in state_keys)
        figures[f"memory_workload_segment_{rule.name}_members_per_visitor_hour"] = round(members / visitor_hours, 4)
        figures[f"memory_workload_segment_{rule.name}_states_per_visitor_hour"] = round(states / visitor_hours, 4)
    return figures


def archive_figures(by_shard: dict[str, list[StreamRecord]]) -> dict[str, float]:
    decoder = EventDecoder()
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    records = raw = stored = 0
    for shard, recs in by_shard.items():
        for i in range(0, len(recs), ARCHIVE_BATCH):
            chunk = recs[i:i + ARCHIVE_BATCH]
            batch = build_batch(shard, chunk, decoder, future)
            stored += sum(len(o.body) for o in batch.objects) + len(json.dumps(batch.manifest).encode())
            records += len(chunk)
            raw += sum(len(r.data) for r in chunk)
    return {"archive_record_bytes_mean": round(raw / records, 1), "archive_stored_bytes_per_record": round(stored / records, 1)}


def small_batches(client: redis.Redis, by_shard: dict[str, list[StreamRecord]]) -> dict[str, float]:
    records = next(iter(by_shard.values()))
    rules = load_rules()
    medians = {}
    for size in (100, 1_000):
        client.flushall()
        proc = SpeedProcessor(SpeedStore(client, "lambda", rules), EventDecoder(), rules, OpsRecorder(client, "lambda"))
        ctx = ShardContext("bench", records[0].shard_id, "lambda", 0)
        times = []
        for i in range(21):
            batch = records[i * size:(i + 1) * size]
            started = time.perf_counter()
            proc.process_batch(ctx, batch, 0)
            if i:  # the first call loads the scripts
                times.append(time.perf_counter() - started)
        medians[size] = statistics.median(times)
    per_event = (medians[1_000] - medians[100]) / 900
    return {"lambda_batch_fixed_ms": round(max(0.0, medians[100] - 100 * per_event) * 1000, 3),
            "lambda_batch_event_us": round(per_event * 1e6, 3)}


def run() -> dict[str, float]:
    by_shard, ledger = _records(WORKLOAD)
    records = sum(len(v) for v in by_shard.values())
    with redis_server() as server:
        client = redis.Redis(port=server.port)
        figures = calibrate(client)
        figures |= small_batches(client, by_shard)
        apply_records(client, {s: r[:50] for s, r in by_shard.items()})  # load the scripts
        client.flushall()
        before = int(client.info("memory")["used_memory"])
        apply_records(client, by_shard)
        after = int(client.info("memory")["used_memory"])
        rows = scan_keys(client)
        figures |= family_figures(rows)
        usage = sum(r[3] for r in rows)
        figures["memory_used_per_usage_ratio"] = round((after - before) / usage, 4)
        figures["memory_workload_events"] = ledger.valid_events
        figures["memory_workload_used_bytes"] = after - before
        figures["memory_workload_bytes_per_event"] = round((after - before) / ledger.valid_events, 2)
        figures |= shape_figures(client, ledger)
        print(f"   {records:,} records, {ledger.valid_events:,} valid events: used_memory +{(after - before) / 1e6:.1f} MB, "
              f"{len(rows):,} keys, MEMORY USAGE sum {usage / 1e6:.1f} MB")
    figures |= archive_figures(by_shard)
    return figures
