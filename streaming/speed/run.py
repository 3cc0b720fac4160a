"""Assemble and run a speed-layer consumer process: settings -> Redis, Kinesis, lease worker, processors.

``tally consume`` calls :func:`run_consumer`; ``python -m streaming.speed.run`` does the same with fewer
imports (the crash tests restart it dozens of times).
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any

from streaming.events import EventDecoder
from streaming.segments import load_rules
from streaming.settings import Settings, load_settings
from streaming.speed.connect import connect
from streaming.speed.consumer import OVERLAP_SWITCH_INTERVAL_S, RetryPolicy, SpeedProcessor
from streaming.speed.ops import OpsRecorder
from streaming.speed.positions import ShardPositions
from streaming.speed.store import Retention, SpeedStore

DEFAULT_GROUP = "speed"


@dataclass(frozen=True)
class ConsumerOptions:
    group: str = DEFAULT_GROUP
    worker_id: str = ""
    #: How long one batch waits for Redis inside the processor before handing the retry to the worker
    #: (which keeps renewing leases meanwhile). Either way the checkpoint does not move.
    redis_wait_s: float = 3.0
    fast_get_records: bool = True
    #: Fetch a busy shard's next page while the current one is applied (the worker's ``read_ahead``).
    read_ahead: bool = True
    #: A killed worker's shards are free again after this long (the worker's default is 10 s).
    lease_duration_s: float = 10.0


def retention(settings: Settings) -> Retention:
    return Retention.from_settings(settings)


def processor_factory(settings: Settings, redis_client: Any, group: str, stop: threading.Event | None = None,
                      redis_wait_s: float = 3.0) -> Any:
    """A factory making one :class:`SpeedProcessor` per shard, sharing the Redis client and rules."""
    rules = load_rules()
    kept = retention(settings)
    store = SpeedStore(redis_client, group, rules, settings.dedup_horizon_s, kept, settings.privacy_salt)
    positions = ShardPositions(redis_client, group, kept.marker_s)
    ops = OpsRecorder(redis_client, group)
    should_stop = stop.is_set if stop is not None else (lambda: False)

    def make() -> SpeedProcessor:
        decoder = EventDecoder(settings.max_event_bytes, settings.max_future_skew_s)
        return SpeedProcessor(store, decoder, rules, ops, RetryPolicy(max_wait_s=redis_wait_s, should_stop=should_stop),
                              overlap=True, positions=positions)

    return make


def build_worker(settings: Settings, options: ConsumerOptions, stop: threading.Event | None = None) -> Any:
    from streaming.aws import aws_client
    from streaming.kinesis.worker import Worker, WorkerConfig
    from streaming.stack.manager import resolve_endpoints
    from streaming.speed.fast_kinesis import install_fast_get_records

    endpoints = resolve_endpoints(settings)
    kinesis = aws_client("kinesis", settings.aws_region, endpoints.aws_endpoint_url)
    if options.fast_get_records:
        install_fast_get_records(kinesis)
    dynamodb = aws_client("dynamodb", settings.aws_region, endpoints.aws_endpoint_url)
    client = connect(endpoints.redis_url)
    factory = processor_factory(settings, client, options.group, stop, options.redis_wait_s)
    return Worker(kinesis, dynamodb, settings.stream_name, settings.lease_table, options.group, factory,
                  worker_id=options.worker_id,
                  config=WorkerConfig(lease_duration_s=options.lease_duration_s, read_ahead=options.read_ahead))


def run_consumer(settings: Settings, options: ConsumerOptions, until_caught_up: bool = False,
                 timeout_s: float = 600.0) -> Any:
    """Run until SIGTERM/SIGINT (or until caught up); returns the worker (for its lag figures)."""
    sys.setswitchinterval(OVERLAP_SWITCH_INTERVAL_S)  # the processors' sending threads (see there)
    stop = threading.Event()
    worker = build_worker(settings, options, stop)
    if until_caught_up:
        worker.run_until_caught_up(timeout_s)
        return worker
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.run(stop)
    return worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="tally speed-layer consumer")
    parser.add_argument("--group", default=DEFAULT_GROUP)
    parser.add_argument("--worker-id", default="")
    parser.add_argument("--until-caught-up", action="store_true")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--lease-duration-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Everything imported so far lives as long as the process: keep it out of every later GC scan.
    gc.freeze()
    options = ConsumerOptions(group=args.group, worker_id=args.worker_id, lease_duration_s=args.lease_duration_s)
    run_consumer(load_settings(), options, args.until_caught_up, args.timeout_s)


if __name__ == "__main__":
    main()
