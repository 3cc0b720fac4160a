"""Assemble and run a speed-layer consumer process: settings -> Redis, Kinesis, lease worker, processors.

``tally consume`` calls :func:`run_consumer`; ``python -m streaming.speed.run`` does the same with fewer
imports (the crash tests restart it dozens of times).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streaming.endpoints import Endpoints, from_variables
from streaming.events import EventDecoder
from streaming.segments import load_rules
from streaming.settings import Settings, load_settings
from streaming.speed.connect import connect
from streaming.speed.consumer import OVERLAP_SWITCH_INTERVAL_S, RetryPolicy, SpeedProcessor
from streaming.speed.ops import OpsRecorder
from streaming.speed.positions import ShardPositions
from streaming.speed.store import Retention, SpeedStore

if TYPE_CHECKING:
    from streaming.outages import Locate

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


def build_worker(settings: Settings, options: ConsumerOptions, stop: threading.Event | None = None,
                 endpoints: Endpoints | None = None) -> Any:
    """``endpoints`` as the caller resolved them (``tally consume``: with the local stack's record);
    None: the settings' variables (``python -m streaming.speed.run``, started by whoever set them)."""
    from streaming.aws import aws_client
    from streaming.kinesis.worker import Worker, WorkerConfig
    from streaming.speed.fast_kinesis import install_fast_get_records

    endpoints = endpoints or from_variables(settings)
    kinesis = aws_client("kinesis", settings.aws_region, endpoints.aws_url("kinesis"))
    if options.fast_get_records:
        install_fast_get_records(kinesis)
    dynamodb = aws_client("dynamodb", settings.aws_region, endpoints.aws_url("dynamodb"))
    client = connect(endpoints.redis_url)
    factory = processor_factory(settings, client, options.group, stop, options.redis_wait_s)
    return Worker(kinesis, dynamodb, settings.stream_name, settings.lease_table, options.group, factory,
                  worker_id=options.worker_id,
                  config=WorkerConfig(lease_duration_s=options.lease_duration_s, read_ahead=options.read_ahead))


def run_consumer(settings: Settings, options: ConsumerOptions, until_caught_up: bool = False,
                 timeout_s: float = 600.0, stop: threading.Event | None = None,
                 resolve: Callable[[], Endpoints] | None = None, locate: Locate | None = None) -> Any:
    """Run until SIGTERM/SIGINT (or until caught up); returns the worker (for its lag figures).

    Until caught up (a job with an end), a service that is down is an error for the caller to report.
    Running on, it waits (:func:`streaming.outages.keep_running`): Redis, Kinesis or DynamoDB down at
    start, or gone mid-run beyond what the processor's own retries cover, is logged with the fix and
    retried with backoff; the checkpoint only moves for applied batches, so nothing is lost or doubled.
    Returns None if stopped while waiting.

    ``resolve`` gives the endpoints for each attempt (the CLI's: with the local stack's record; a stack
    restarted during an outage may have moved); ``locate`` says where they came from, for the sentence.
    None: the settings' variables.
    """
    from streaming.outages import keep_running

    sys.setswitchinterval(OVERLAP_SWITCH_INTERVAL_S)  # the processors' sending threads (see there)
    stop = stop or threading.Event()
    if until_caught_up:
        worker = build_worker(settings, options, stop, resolve() if resolve else None)
        worker.run_until_caught_up(timeout_s)
        return worker
    from streaming.metrics import serve_for

    serve_for("speed", settings)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    # One worker id for every attempt: after an outage the new worker takes its own leases back.
    options = dataclasses.replace(options, worker_id=options.worker_id or default_worker_id())

    def attempt() -> Any:
        worker = build_worker(settings, options, stop, resolve() if resolve else None)
        worker.run(stop)
        return worker

    return keep_running(attempt, stop, f"speed consumer {options.worker_id}", settings, locate=locate)


def default_worker_id() -> str:
    import os
    import socket
    import uuid

    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def main(argv: list[str] | None = None) -> None:
    """``python -m streaming.speed.run``: settings read and errors said as ``tally`` does (one sentence,
    exit 2); the consumer then runs as :func:`run_consumer` says."""
    from streaming.outages import exit_on_user_error

    parser = argparse.ArgumentParser(description="tally speed-layer consumer")
    parser.add_argument("--group", default=DEFAULT_GROUP)
    parser.add_argument("--worker-id", default="")
    parser.add_argument("--until-caught-up", action="store_true")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--lease-duration-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    settings = exit_on_user_error(load_settings)
    from streaming.logs import configure

    configure("speed", settings)
    # Everything imported so far lives as long as the process: keep it out of every later GC scan.
    gc.freeze()
    options = ConsumerOptions(group=args.group, worker_id=args.worker_id, lease_duration_s=args.lease_duration_s)
    exit_on_user_error(lambda: run_consumer(settings, options, args.until_caught_up, args.timeout_s),
                       lambda: settings)


if __name__ == "__main__":
    main()
