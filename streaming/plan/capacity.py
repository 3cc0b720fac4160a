"""Size and price every component of a deployment for a load.

Each line of a plan names the measured figure (``bench/results.json``) or the AWS limit it comes from,
and the price it is multiplied by (``prices.json``). What no benchmark measures here is said as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from streaming.plan.figures import Figures
from streaming.plan.load import Load
from streaming.plan.memory import RedisMemory, redis_memory, tenant_shares

HOURS = 730  # AWS bills a month as 730 hours
SECONDS_PER_MONTH = HOURS * 3_600
DAYS_PER_MONTH = HOURS / 24
GIB = 1024 ** 3
GB = 1e9

# Kinesis Data Streams limits per shard (provisioned mode), from the Kinesis developer guide's quotas.
SHARD_WRITE_BYTES_S = 1_048_576  # 1 MiB/s in, partition keys included
SHARD_WRITE_RECORDS_S = 1_000
SHARD_READ_BYTES_S = 2_097_152  # 2 MiB/s out, shared by every consumer without enhanced fan-out
SHARD_GET_RECORDS_S = 5  # GetRecords calls per second, shared likewise
SHARD_QUOTA = 500  # default shards per account in us-east-1 (200 in most other regions)
ON_DEMAND_WRITE_BYTES_S = 200 * 1_048_576  # default on-demand stream write quota: 200 MiB/s ...
ON_DEMAND_WRITE_RECORDS_S = 200_000  # ... and 200,000 records/s
#: Both layers read every record: the speed layer (Lambda) and the archiver.
CONSUMERS = 2
#: The producer's partition key is the visitor's anonymous_id (a UUID's 36 characters).
PARTITION_KEY_BYTES = 36

# Lambda on a Kinesis event source mapping.
ESM_POLL_S = 1.0  # the mapping polls each shard once a second when it has no backlog
LAMBDA_MEMORY_MB = 1_769  # the size at which a function gets one full vCPU
LAMBDA_BATCH_SIZE = 10_000  # the mapping's maximum; Lambda's 6 MB payload limit cuts a batch earlier
LAMBDA_ACCOUNT_CONCURRENCY = 1_000  # the default per-region quota

# ElastiCache: reserved-memory-percent's default keeps 25% for forks and buffers; we fill at most 80% of the rest.
REDIS_RESERVED = 0.25
REDIS_FILL = 0.80

# Fargate task sizes (vCPU, GB) and counts the template deploys.
COLLECTOR_TASK = (1.0, 2.0)
ARCHIVER_TASK = (1.0, 2.0)
DAGSTER_TASKS = {"webserver": (0.5, 1.0), "daemon": (0.5, 1.0), "code server": (0.5, 1.0)}
DAGSTER_RUN_TASK = (1.0, 2.0)
DAGSTER_RUN_START_S = 60  # a Fargate run task's start (pull, boot) before its step runs
MIN_TASKS = 2  # one per availability zone, so one zone's loss keeps the service up

# The collector behind the ALB: one request and one new connection per event (analytics.js sends each
# call on its own; batching SDKs need fewer), with ~600 bytes of HTTP headers.
HTTP_OVERHEAD_BYTES = 600
ALB_LCU = {"new_connections_s": 25, "processed_gb_h": 1.0}

# The archive's lifecycle (deploy/tally.yaml defaults): raw/ goes to Standard-IA after 30 days and to
# Glacier Instant Retrieval after 90 days, and is never expired (it is the master dataset).
IA_AFTER_DAYS = 30
GLACIER_IR_AFTER_DAYS = 90
ARCHIVE_FLUSH_S = 30  # TALLY_ARCHIVE_FLUSH_S's default: a busy shard commits a batch at least this often
ARCHIVE_OBJECTS_PER_BATCH = 2  # one object per received hour (mostly one) + the manifest
ARCHIVE_BATCH_RECORDS = 20_000  # TALLY_ARCHIVE_MAX_RECORDS's default

SNOWFLAKE_SIZES = (("X-Small", 1), ("Small", 2), ("Medium", 4), ("Large", 8), ("X-Large", 16))
SNOWFLAKE_MIN_BILLED_S = 60
SNOWFLAKE_AUTO_SUSPEND_S = 60  # the README's warehouse: auto_suspend = 60
#: The incremental benchmark's hour (bench/bench_batch.py: one more hour of 50,000 events).
BENCH_INCREMENTAL_EVENTS = 50_000

#: CloudWatch alarms deploy/tally.yaml creates (the template test counts them).
ALARMS = 8

LAMBDA_WINDOW_S = 0  # MaximumBatchingWindowInSeconds: 0 = invoke as soon as a poll returns records


@dataclass(frozen=True)
class Line:
    item: str
    monthly: float
    basis: str


@dataclass
class Component:
    name: str
    sizing: dict[str, Any]
    lines: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Where the load is past what this component's chosen tier is designed for, said plainly.
    beyond: list[str] = field(default_factory=list)

    @property
    def monthly(self) -> float:
        return sum(line.monthly for line in self.lines)


@dataclass
class Plan:
    load: Load
    components: list[Component]
    s3_by_month: list[dict[str, float]]
    latency: dict[str, Any]
    redis: RedisMemory
    figures_path: str
    figures_used: dict[str, float]
    prices_as_of: str
    prices_note: str
    budget: float

    @property
    def total(self) -> float:
        return sum(c.monthly for c in self.components)

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)


def _fargate(prices: dict[str, Any], arch: str, task: tuple[float, float], count: float, hours: float = HOURS) -> float:
    f = prices["fargate"]
    return count * hours * (task[0] * f[f"vcpu_hour_{arch}"] + task[1] * f[f"gb_hour_{arch}"])


def kinesis_shards(peak_records_s: float, record_bytes: float) -> dict[str, int]:
    """Shards a provisioned stream needs for the peak, by each per-shard limit; ``shards`` is the largest."""
    by = {
        "write_records": math.ceil(peak_records_s / SHARD_WRITE_RECORDS_S),
        "write_bytes": math.ceil(peak_records_s * (record_bytes + PARTITION_KEY_BYTES) / SHARD_WRITE_BYTES_S),
        "read_bytes": math.ceil(CONSUMERS * peak_records_s * record_bytes / SHARD_READ_BYTES_S),
    }
    return {**by, "shards": max(1, *by.values())}


def _kinesis(load: Load, prices: dict[str, Any], record_bytes: float, min_shards: int = 1) -> Component:
    k = prices["kinesis"]
    avg = load.events_per_day / 86_400
    peak = avg * load.peak_multiplier
    need = kinesis_shards(peak, record_bytes)
    shards = max(need["shards"], min_shards)
    records_month = avg * SECONDS_PER_MONTH
    provisioned = shards * HOURS * k["shard_hour"] + records_month * math.ceil(record_bytes / 25_600) / 1e6 * k["put_payload_units_per_million"]
    if load.stream_retention_hours > 24:
        provisioned += shards * HOURS * k["extended_retention_shard_hour"]
    ingest_gb = records_month * math.ceil(record_bytes / 1024) * 1024 / GIB  # on-demand bills each record rounded up to 1 KiB
    read_gb = CONSUMERS * records_month * record_bytes / GIB
    on_demand = HOURS * k["on_demand_stream_hour"] + ingest_gb * k["on_demand_ingest_per_gb"] + read_gb * k["on_demand_retrieval_per_gb"]
    mode = "PROVISIONED" if provisioned <= on_demand else "ON_DEMAND"
    limits = (f"peak {peak:,.0f} records/s of {record_bytes + PARTITION_KEY_BYTES:,.0f} B (record + partition key): "
              f"{need['write_records']} shards by 1,000 records/s in, {need['write_bytes']} by 1 MiB/s in, "
              f"{need['read_bytes']} by 2 MiB/s out shared by {CONSUMERS} consumers")
    c = Component("kinesis", {"mode": mode, "shards": shards, "peak_records_s": peak, "limits": need,
                              "provisioned_monthly": provisioned, "on_demand_monthly": on_demand})
    if mode == "PROVISIONED":
        c.lines.append(Line(f"{shards} provisioned shards", provisioned, limits))
        c.notes.append(f"on-demand would cost ${on_demand:,.0f}/month (records are billed rounded up to 1 KiB: "
                       f"{ingest_gb:,.0f} GiB in, {read_gb:,.0f} GiB out)")
    else:
        c.lines.append(Line("on-demand stream", on_demand, f"{ingest_gb:,.0f} GiB in (each record rounded up to 1 KiB), "
                            f"{read_gb:,.0f} GiB out; provisioned would need {shards} shards (${provisioned:,.0f}/month): {limits}"))
        c.notes.append("on-demand writes up to twice the stream's peak of the last 30 days without throttling; a new "
                       "stream starts at 4 MiB/s and 4,000 records/s (the producer retries what is throttled, nothing is lost)")
    c.notes.append(f"GetRecords: {SHARD_GET_RECORDS_S} calls/s per shard shared by the Lambda mapping (1/s) and the archiver "
                   "(up to 5/s when busy): a busy archiver is throttled now and then and retries; it loses nothing")
    if shards > SHARD_QUOTA:
        c.beyond.append(f"{shards} shards is past the default quota of {SHARD_QUOTA} shards per account and region: "
                        "request a Kinesis shard quota increase before deploying")
    if peak * (record_bytes + PARTITION_KEY_BYTES) > ON_DEMAND_WRITE_BYTES_S or peak > ON_DEMAND_WRITE_RECORDS_S:
        c.beyond.append("the peak is past an on-demand stream's default write quota (200 MiB/s, 200,000 records/s): "
                        "provisioned shards, or a quota increase")
    return c


def _speed(load: Load, prices: dict[str, Any], figures: Figures, shards: int) -> Component:
    lam = prices["lambda"]
    avg = load.events_per_day / 86_400
    peak = avg * load.peak_multiplier
    fixed_ms = figures("lambda_batch_fixed_ms")
    event_us = figures("lambda_batch_event_us")
    per_shard_peak = peak / shards
    peak_invocation_s = (fixed_ms / 1000 + per_shard_peak * ESM_POLL_S * event_us / 1e6)
    # Each shard is polled once a second; a poll that finds records is one invocation.
    invocations = shards * SECONDS_PER_MONTH * min(1.0, avg / shards * ESM_POLL_S)
    seconds = invocations * fixed_ms / 1000 + avg * SECONDS_PER_MONTH * event_us / 1e6
    gb_s = seconds * LAMBDA_MEMORY_MB / 1024
    cost = invocations / 1e6 * lam["requests_per_million"] + gb_s * lam[f"gb_second_{load.architecture}"]
    workers = math.ceil(peak / figures("speed_consumer_peak_events_per_s")) + 1
    c = Component("speed layer", {
        "runtime": "Lambda", "concurrency": shards, "parallelization_factor": 1, "batch_size": LAMBDA_BATCH_SIZE,
        "batching_window_s": LAMBDA_WINDOW_S, "memory_mb": LAMBDA_MEMORY_MB, "architecture": load.architecture,
        "peak_invocation_s": peak_invocation_s, "alternative_workers": workers,
    })
    c.lines.append(Line(f"Lambda, {shards} concurrent ({load.architecture}, {LAMBDA_MEMORY_MB} MB)", cost,
                        f"{invocations / 1e6:,.1f}M invocations x (lambda_batch_fixed_ms {fixed_ms:.1f} ms + "
                        f"records x lambda_batch_event_us {event_us:.1f} us) = {gb_s:,.0f} GB-s"))
    c.notes.append(f"one invocation per shard at a time (ParallelizationFactor 1: the per-shard markers need it): "
                   f"{per_shard_peak:,.0f} records/s per shard at the peak take {peak_invocation_s * 1000:,.0f} ms per 1-s poll")
    c.notes.append(f"instead of Lambda: {workers} `tally consume` workers on ECS (peak / speed_consumer_peak_events_per_s "
                   f"{figures('speed_consumer_peak_events_per_s'):,.0f}, plus one to lose)")
    if peak_invocation_s > ESM_POLL_S * 0.5:
        c.beyond.append(f"one invocation per shard cannot keep up ({peak_invocation_s:.2f} s of work per second at the peak): "
                        "add shards (each shard is one more concurrent invocation)")
    if shards > LAMBDA_ACCOUNT_CONCURRENCY:
        c.beyond.append(f"{shards} concurrent invocations is past the default account quota of {LAMBDA_ACCOUNT_CONCURRENCY}: "
                        "request a Lambda concurrency increase")
    return c


def _redis(load: Load, prices: dict[str, Any], figures: Figures, shards: int) -> tuple[Component, RedisMemory]:
    memory = redis_memory(load, figures, shards)
    need = memory.used_bytes
    peak = load.events_per_day / 86_400 * load.peak_multiplier
    # The apply benchmark with 500 tenants (10x the script calls of 50) had Redis below saturation, so
    # this is a lower bound of what one node applies.
    per_node = figures("speed_apply_500_tenants_events_per_s")
    by_cpu = math.ceil(peak / per_node)
    hour = prices["elasticache_node_hour"]
    gib = prices["elasticache_node_memory_gib"]
    tags = memory.tag_used_bytes()
    largest_tag, largest = tags[0]
    options = []
    for node, price in hour.items():
        usable = gib[node] * GIB * (1 - REDIS_RESERVED) * REDIS_FILL
        count = max(by_cpu, _shards_holding([b for _, b in tags], usable), 1)
        if node.startswith("cache.t") and count > 1:  # burstable nodes only as a single small node
            continue
        options.append((count * (1 + load.redis_replicas) * price * HOURS, count, node, largest <= usable))
    feasible = [o for o in options if o[3]] or [max(options, key=lambda o: gib[o[2]])]
    cheapest = min(o[0] for o in feasible)
    # Within 5% of the cheapest, fewer shards win: fewer nodes to run, fewer slots to move.
    monthly, count, node, fits = min((o for o in feasible if o[0] <= cheapest * 1.05), key=lambda o: (o[1], o[0]))
    usable = gib[node] * GIB * (1 - REDIS_RESERVED) * REDIS_FILL
    cluster = count > 1
    c = Component("redis", {"node_type": node, "shards": count, "replicas_per_shard": load.redis_replicas,
                            "cluster_mode": "enabled" if cluster else "disabled", "memory_bytes": need,
                            "by_cpu_shards": by_cpu})
    biggest = sorted(memory.families, key=lambda f: -f.bytes)[:3]
    c.lines.append(Line(f"{count} x {node}" + (f" + {count * load.redis_replicas} replica(s)" if load.redis_replicas else ""),
                        monthly, f"{need / GIB:,.2f} GiB measured-model memory (largest: "
                        + ", ".join(f"{f.family} {f.bytes * memory.ratio / GIB:,.2f} GiB" for f in biggest)
                        + f"); nodes filled to {REDIS_FILL:.0%} of what reserved-memory-percent {REDIS_RESERVED:.0%} leaves"))
    if not fits:
        over = ", ".join(f"{'the dead letters ({' + t + '})' if t.startswith('_') else t} {b / GIB:,.1f} GiB"
                         for t, b in tags if b > usable)
        c.beyond.append(f"beyond the design: each hash tag lives on one node, and {over} need more than the largest node "
                        f"({node}) holds at this fill ({usable / GIB:,.1f} GiB): shorten the TTLs, the segment history, the dedup horizon or "
                        "how long dead letters stay, or split the tenant")
    if cluster:
        c.notes.append(f"a tenant's keys share its {{tenant}} hash tag, one slot: {largest_tag} ({largest / GIB:,.2f} GiB) sits on "
                       "one shard; the plan packs the biggest tags onto separate shards (move their slots to balance: "
                       "an even spread of slots alone can put two big tenants together)")
        why = "memory" if _shards_holding([b for _, b in tags], usable) >= by_cpu else "throughput"
        c.beyond.append(f"past one Redis node ({why}): Redis Cluster with {count} shards (cluster mode enabled; every key "
                        "one call touches shares a {tenant} hash tag, so the same code runs there)")
    hottest = peak * max(tenant_shares(load.tenants, load.tenant_skew))
    if hottest > per_node:
        c.beyond.append(f"beyond the design: the busiest tenant's peak ({hottest:,.0f} events/s) is more than one node applies "
                        f"(speed_apply_500_tenants_events_per_s {per_node:,.0f}), and a tenant cannot be spread over nodes")
    if by_cpu > 1:
        c.notes.append(f"throughput: peak {peak:,.0f} events/s over speed_apply_500_tenants_events_per_s {per_node:,.0f} "
                       f"(a lower bound of one node) = {by_cpu} shard(s)")
    seg = memory.of("segment_members")
    if seg.bytes:
        c.notes.append(f"segment members: {seg.bytes * memory.ratio / GIB:,.2f} GiB, each kept "
                       f"{load.speed_segment_history_s / 3_600:,.0f} h (TALLY_SPEED_SEGMENT_HISTORY_S) after its membership ended")
    dl = memory.of("dead_letters")
    if dl.bytes:
        c.notes.append(f"dead letters: {dl.bytes * memory.ratio / GIB:,.2f} GiB, each kept {load.dead_letter_days}-"
                       f"{2 * load.dead_letter_days} days (TALLY_DEAD_LETTER_TTL_S) in its tenant's slot")
    return c, memory


def _shards_holding(sizes: list[float], capacity: float) -> int:
    """Shards a Redis Cluster needs for hash tags of these sizes (largest first): first-fit decreasing; a tag
    larger than a node still takes one node of its own (said as beyond the design by the caller)."""
    bins: list[float] = []
    for size in sizes:
        for i, used in enumerate(bins):
            if used + size <= capacity:
                bins[i] += size
                break
        else:
            bins.append(size)
    return len(bins)


def _collector(load: Load, prices: dict[str, Any], figures: Figures, record_bytes: float) -> Component:
    avg = load.events_per_day / 86_400
    peak = avg * load.peak_multiplier
    # What one collector process delivered to Kinesis, not what it acknowledged: the spool absorbs a burst,
    # the drainer's rate is what a peak that lasts needs.
    measured = figures.get("collector_batch_delivered_per_s", 0.0)
    tasks = max(MIN_TASKS, math.ceil(peak / measured)) if measured else MIN_TASKS
    alb = prices["alb"]
    processed_gb_h = avg * 3_600 * (record_bytes + HTTP_OVERHEAD_BYTES) / GB
    lcu = max(avg / ALB_LCU["new_connections_s"], processed_gb_h / ALB_LCU["processed_gb_h"], 1.0)
    c = Component("collector", {"tasks": tasks, "task_vcpu": COLLECTOR_TASK[0], "task_gb": COLLECTOR_TASK[1]})
    c.lines.append(Line(f"{tasks} Fargate tasks ({COLLECTOR_TASK[0]:g} vCPU, {COLLECTOR_TASK[1]:g} GB, {load.architecture})",
                        _fargate(prices, load.architecture, COLLECTOR_TASK, tasks),
                        f"peak {peak:,.0f} events/s over collector_batch_delivered_per_s {measured:,.0f}, "
                        "at least one per availability zone" if measured else
                        "one per availability zone (the collector's throughput is not benchmarked yet)"))
    c.lines.append(Line("application load balancer", HOURS * (alb["hour"] + lcu * alb["lcu_hour"]),
                        f"{lcu:,.1f} LCU: one new connection per event ({avg:,.0f}/s over 25/s per LCU), "
                        f"{processed_gb_h:,.2f} GB/h processed"))
    if not measured:
        c.notes.append("tasks: the minimum for two zones; size them from a collector benchmark before a launch")
    return c


def _network(load: Load, prices: dict[str, Any], record_bytes: float) -> Component:
    gb = load.events_per_day * DAYS_PER_MONTH * record_bytes * 2 / GB  # collector -> Kinesis, Kinesis -> archiver
    c = Component("network", {})
    c.lines.append(Line("NAT gateway data", gb * prices["nat"]["per_gb"],
                        f"{gb:,.0f} GB/month: collector to Kinesis and Kinesis to the archiver through your NAT gateway "
                        "(a Kinesis interface VPC endpoint charges $0.01/GB instead; S3 and DynamoDB gateway endpoints are free)"))
    return c


def _archiver(load: Load, prices: dict[str, Any], figures: Figures, shards: int) -> Component:
    peak = load.events_per_day / 86_400 * load.peak_multiplier
    per_task = figures("batch_archive_events_per_s")
    tasks = min(max(MIN_TASKS, math.ceil(peak / per_task)), max(MIN_TASKS, shards))
    d = prices["dynamodb"]
    lease_writes_s = (shards + tasks) / (10.0 / 3) + shards / ARCHIVE_FLUSH_S  # renew every lease_duration/3, checkpoints
    leases = lease_writes_s * SECONDS_PER_MONTH / 1e6 * d["write_request_units_per_million"]
    c = Component("archiver", {"tasks": tasks, "task_vcpu": ARCHIVER_TASK[0], "task_gb": ARCHIVER_TASK[1]})
    c.lines.append(Line(f"{tasks} Fargate tasks ({ARCHIVER_TASK[0]:g} vCPU, {ARCHIVER_TASK[1]:g} GB, {load.architecture})",
                        _fargate(prices, load.architecture, ARCHIVER_TASK, tasks),
                        f"peak {peak:,.0f} records/s over batch_archive_events_per_s {per_task:,.0f}, at least one per zone, "
                        "at most one per shard"))
    c.lines.append(Line("DynamoDB lease table (on demand)", leases,
                        f"{lease_writes_s:,.1f} writes/s: lease renewals every 3.3 s per shard and worker, a checkpoint per batch"))
    return c


def _s3(load: Load, prices: dict[str, Any], figures: Figures, shards: int) -> tuple[Component, list[dict[str, float]]]:
    s = prices["s3"]
    per_record = figures("archive_stored_bytes_per_record")
    gb_month = load.events_per_day * DAYS_PER_MONTH * per_record / GB
    months = max(1, math.ceil(load.archive_retention_days / DAYS_PER_MONTH))
    by_month = []
    for m in range(1, months + 1):
        tiers = {"standard": 0.0, "standard_ia": 0.0, "glacier_ir": 0.0}
        for k in range(1, m + 1):  # data written in month k is (m - k) months old at month m
            age_days = (m - k) * DAYS_PER_MONTH
            tier = "standard" if age_days < IA_AFTER_DAYS else ("standard_ia" if age_days < GLACIER_IR_AFTER_DAYS else "glacier_ir")
            tiers[tier] += gb_month
        cost = (tiers["standard"] * s["standard_gb_month"] + tiers["standard_ia"] * s["standard_ia_gb_month"]
                + tiers["glacier_ir"] * s["glacier_ir_gb_month"])
        by_month.append({"month": m, **{f"{t}_gb": v for t, v in tiers.items()}, "storage": cost})
    per_shard_s = load.events_per_day / 86_400 / shards
    batches_per_h = shards * max(min(3_600 / ARCHIVE_FLUSH_S, per_shard_s * 3_600), per_shard_s * 3_600 / ARCHIVE_BATCH_RECORDS)
    objects = batches_per_h * HOURS * ARCHIVE_OBJECTS_PER_BATCH
    requests = objects / 1000 * (s["put_per_thousand"] + s["get_per_thousand"]
                                 + s["transition_ia_per_thousand"] + s["transition_glacier_ir_per_thousand"])
    last = by_month[-1]
    c = Component("s3 archive", {"gb_per_month": gb_month, "months": months})
    c.lines.append(Line(f"storage at month {months}", last["storage"],
                        f"{gb_month:,.1f} GB/month (archive_stored_bytes_per_record {per_record:.1f} B, gzip JSON lines + "
                        f"manifests); Standard, then Standard-IA after {IA_AFTER_DAYS} d, Glacier IR after {GLACIER_IR_AFTER_DAYS} d; raw/ never expires"))
    c.lines.append(Line("requests", requests, f"{objects:,.0f} objects/month written, read once by the loads, moved twice by the lifecycle"))
    return c, by_month


def _snowflake(load: Load, prices: dict[str, Any], figures: Figures, archive_gb: float) -> tuple[Component, float]:
    sf = prices["snowflake"]
    builds = HOURS * 60 / load.refresh_minutes
    events = load.events_per_day / 1_440 * load.refresh_minutes
    dbt_rate = figures("batch_dbt_events_per_s")
    load_rate = figures("batch_load_events_per_s")
    per_event = 1 / dbt_rate + 1 / load_rate
    fixed = max(0.0, figures("batch_incremental_hour_s") - BENCH_INCREMENTAL_EVENTS * per_event)
    bench_s = fixed + events * per_event
    size, credits_h, run_s = SNOWFLAKE_SIZES[-1][0], SNOWFLAKE_SIZES[-1][1], 0.0
    for name, factor in SNOWFLAKE_SIZES:
        run_s = bench_s / (sf["xs_speed_vs_bench"] * factor)
        size, credits_h = name, factor
        if run_s <= load.refresh_minutes * 60 / 2:
            break
    billed = max(SNOWFLAKE_MIN_BILLED_S, run_s) + SNOWFLAKE_AUTO_SUSPEND_S
    credits = builds * billed / 3_600 * credits_h
    c = Component("snowflake", {"warehouse_size": size, "build_s": run_s, "builds_per_month": builds})
    c.lines.append(Line(f"{builds:,.0f} builds on {size} ({credits:,.1f} credits)", credits * sf["credit"],
                        f"{events:,.0f} events per build: {fixed:.1f} s fixed + events x (1/batch_dbt_events_per_s + "
                        f"1/batch_load_events_per_s) = {bench_s:,.1f} s on the benchmark's DuckDB, / xs_speed_vs_bench "
                        f"{sf['xs_speed_vs_bench']:g} x size; billed at least {SNOWFLAKE_MIN_BILLED_S} s + {SNOWFLAKE_AUTO_SUSPEND_S} s auto-suspend"))
    c.lines.append(Line("storage", archive_gb / 1000 * sf["storage_tb_month"],
                        f"{archive_gb:,.0f} GB, taken as the archive's compressed size"))
    c.notes.append("not measured: Snowflake's speed against the benchmark (no account here); set snowflake.xs_speed_vs_bench "
                   "in --prices from a build you timed. Reconciliation's queries are not in this line")
    if run_s > load.refresh_minutes * 60 / 2:
        c.beyond.append(f"a build takes {run_s:,.0f} s on {size}, more than half the {load.refresh_minutes}-minute cadence")
    elif size != "X-Small":
        c.notes.append(f"{size}: an X-Small build would take more than half the {load.refresh_minutes}-minute cadence")
    return c, run_s


def _dagster(load: Load, prices: dict[str, Any], build_s: float) -> Component:
    rds = prices["rds"]
    runs = HOURS * 60 / load.refresh_minutes
    always_on = sum(_fargate(prices, "x86_64", task, 1) for task in DAGSTER_TASKS.values())
    run_hours = runs * (build_s + DAGSTER_RUN_START_S) / 3_600
    c = Component("dagster", {"runs_per_month": runs})
    c.lines.append(Line("webserver, daemon, code server (Fargate)", always_on, "0.5 vCPU and 1 GB each, always on"))
    c.lines.append(Line("run tasks (Fargate)", _fargate(prices, "x86_64", DAGSTER_RUN_TASK, 1, run_hours),
                        f"{runs:,.0f} runs x (build + {DAGSTER_RUN_START_S} s start) on 1 vCPU, 2 GB"))
    c.lines.append(Line("PostgreSQL (RDS db.t4g.small, 20 GB)", HOURS * rds["db.t4g.small_hour"] + 20 * rds["gp3_gb_month"],
                        "runs, events and schedules storage"))
    c.notes.append("not in deploy/tally.yaml: run Dagster from its Helm chart or ECS (README: Going to production)")
    return c


def _monitoring(prices: dict[str, Any]) -> Component:
    c = Component("monitoring", {"alarms": ALARMS})
    c.lines.append(Line(f"{ALARMS} CloudWatch alarms", ALARMS * prices["cloudwatch"]["alarm_month"],
                        "speed and stream iterator age, Lambda errors, failed batches, write throttling, Redis memory, archiver running, collector healthy"))
    c.notes.append("log ingestion ($0.50/GB) depends on your log level and is not included")
    return c


def latency(load: Load, speed: Component, figures: Figures) -> dict[str, Any]:
    fixed_ms = figures("lambda_batch_fixed_ms")
    event_us = figures("lambda_batch_event_us")
    avg_per_shard = load.events_per_day / 86_400 / speed.sizing["concurrency"]
    typical = ESM_POLL_S / 2 + LAMBDA_WINDOW_S + (fixed_ms / 1000 + avg_per_shard * ESM_POLL_S * event_us / 1e6)
    worst = ESM_POLL_S + LAMBDA_WINDOW_S + speed.sizing["peak_invocation_s"]
    return {
        "lambda_typical_s": typical, "lambda_peak_worst_s": worst,
        "workers_p50_s": figures("speed_e2e_p50_latency_s"), "workers_p99_s": figures("speed_e2e_p99_latency_s"),
        "basis": (f"Lambda: half the mapping's 1-s poll on average (all of it at worst) + the invocation "
                  f"(lambda_batch_fixed_ms {fixed_ms:.1f} ms + lambda_batch_event_us {event_us:.1f} us per record); "
                  "workers: the speed benchmark's end to end p50/p99 (speed_e2e_*); neither counts the collector's spool"),
    }


def plan(load: Load, figures: Figures, prices: dict[str, Any], budget: float = 50_000.0) -> Plan:
    record_bytes = load.event_bytes or figures("archive_record_bytes_mean")
    kinesis = _kinesis(load, prices, record_bytes)
    shards = kinesis.sizing["shards"]
    speed = _speed(load, prices, figures, shards)
    if speed.beyond and speed.sizing["peak_invocation_s"] > ESM_POLL_S * 0.5:
        # More shards let more invocations run side by side: size the stream for the speed layer too.
        need = math.ceil(shards * speed.sizing["peak_invocation_s"] / (ESM_POLL_S * 0.5))
        kinesis = _kinesis(load, prices, record_bytes, min_shards=need)
        kinesis.notes.append(f"{need} shards, not {shards}: one invocation per shard keeps up with the peak (speed layer)")
        shards = need
        speed = _speed(load, prices, figures, shards)
    redis, memory = _redis(load, prices, figures, shards)
    s3, by_month = _s3(load, prices, figures, shards)
    archive_gb = sum(v for k, v in by_month[-1].items() if k.endswith("_gb"))
    snowflake, build_s = _snowflake(load, prices, figures, archive_gb)
    components = [kinesis, speed, redis, _collector(load, prices, figures, record_bytes), _archiver(load, prices, figures, shards),
                  _network(load, prices, record_bytes), s3, snowflake, _dagster(load, prices, build_s), _monitoring(prices)]
    return Plan(load=load, components=components, s3_by_month=by_month, latency=latency(load, speed, figures),
                redis=memory, figures_path=str(figures.path), figures_used=dict(sorted(figures.used.items())),
                prices_as_of=prices["as_of"], prices_note=prices["note"], budget=budget)
