"""A lease-based Kinesis worker: N of them share a stream's shards, any of them may die.

The worker discovers shards (children only once their parents reached SHARD_END), takes its fair share
of leases, polls each owned shard within Kinesis's limits (≤5 GetRecords/s per shard, ≤10,000 records a
call), hands every poll's records to the shard's :class:`RecordProcessor` and checkpoints what the
processor says is durable. One loop round-robins over the owned shards, renews leases and heartbeats
between polls; while a busy shard's page is processed, its next GetRecords call is already on its way
(``read_ahead``, from a small thread pool, no sooner than the per-shard limit allows), so a consumer
does not wait for the stream between pages.

Beside each checkpoint the worker records the shard's *position* (:class:`~streaming.kinesis.leases.Position`:
the checkpointed record's arrival time, and whether the last poll found the shard's tip with everything
read committed), on every checkpoint and lease renewal: reconciliation and ``make demo`` read it.

If ``process_batch`` raises, the records are kept and offered again after a backoff; the checkpoint does
not move and the loop keeps renewing leases, so a failing sink (Redis down) makes the worker wait, never
skip. A worker that finds its lease taken calls ``lease_lost`` and forgets the shard.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from streaming import metrics as _metrics
from streaming.kinesis.leases import SHARD_END, Lease, LeaseLost, LeaseTable, Position
from streaming.kinesis.processor import RecordProcessor, ResetShard, ShardContext, StreamRecord

log = logging.getLogger(__name__)

MAX_RECORDS_PER_CALL = 10_000
MIN_POLL_INTERVAL_S = 0.2  # 5 GetRecords per second per shard


@dataclass
class _Owned:
    lease: Lease
    ctx: ShardContext
    processor: RecordProcessor
    iterator: str | None
    last_read: str | None
    next_poll_at: float = 0.0
    pending: list[StreamRecord] | None = None
    pending_lag: int = 0
    failures: int = 0
    caught_up: bool = False
    #: GetRecords already sent for ``iterator`` (read-ahead), or None.
    ahead: Future[dict[str, Any]] | None = None
    #: When the shard's last GetRecords call started: the next may start MIN_POLL_INTERVAL_S later.
    last_call_at: float = 0.0
    #: When the call that returned ``pending`` started (the time an empty page proves the tip at).
    pending_called_at: float = 0.0
    #: Pages processed but not yet wholly covered by a checkpoint (to know the checkpoint's arrival time).
    unacked: list[list[StreamRecord]] = field(default_factory=list)
    position: Position = field(default_factory=Position)

    def waiting(self) -> bool:
        """Nothing to process until the page read ahead arrives: polling now would only wait for it."""
        return self.pending is None and self.ahead is not None and not self.ahead.done()


@dataclass
class ShardMetrics:
    millis_behind_latest: int = 0
    records: int = 0
    last_poll_at: float = 0.0
    errors: int = 0


@dataclass
class WorkerConfig:
    lease_duration_s: float = 10.0
    max_records: int = MAX_RECORDS_PER_CALL
    idle_poll_interval_s: float = 0.25
    initial_position: str = "TRIM_HORIZON"
    max_backoff_s: float = 5.0
    max_leases: int | None = None
    #: Fetch a busy shard's next page while its current one is processed.
    read_ahead: bool = True


def _shards(kinesis: Any, stream_name: str) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamName": stream_name}
    while True:
        page = kinesis.list_shards(**kwargs)
        shards.extend(page["Shards"])
        if not page.get("NextToken"):
            return shards
        kwargs = {"NextToken": page["NextToken"]}


def _to_record(shard_id: str, raw: Any) -> StreamRecord:
    """A GetRecords record (botocore's dict, or an object with the same names as attributes, as a fast
    response parser such as ``streaming/speed/fast_kinesis.py`` gives) as a :class:`StreamRecord`."""
    if not isinstance(raw, dict):
        return StreamRecord(shard_id, raw.SequenceNumber, raw.PartitionKey, raw.Data, raw.ApproximateArrivalTimestamp)
    arrival = raw.get("ApproximateArrivalTimestamp")
    ts = arrival.timestamp() if hasattr(arrival, "timestamp") else float(arrival or 0.0)
    return StreamRecord(shard_id, raw["SequenceNumber"], raw["PartitionKey"], raw["Data"], ts)


def _settle_unacked(owned: _Owned, safe: str, arrival: float | None) -> float | None:
    """The arrival time of record ``safe`` (else ``arrival``); drops the pages the checkpoint now covers."""
    target = int(safe)
    keep: list[list[StreamRecord]] = []
    for page in owned.unacked:
        last = page[-1]
        if int(last.sequence_number) <= target:
            if int(last.sequence_number) == target:
                arrival = last.arrival_ts
            continue
        if int(page[0].sequence_number) <= target:  # a commit inside a page (the archiver's bounded batches)
            arrival = next((r.arrival_ts for r in page if int(r.sequence_number) == target), arrival)
        keep.append(page)
    owned.unacked = keep
    return arrival


@dataclass
class Worker:
    kinesis: Any
    dynamodb: Any
    stream_name: str
    lease_table: str
    group: str
    processor_factory: Callable[[], RecordProcessor]
    worker_id: str = ""
    config: WorkerConfig = field(default_factory=WorkerConfig)
    metrics: dict[str, ShardMetrics] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.worker_id:
            self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.leases = LeaseTable(self.dynamodb, self.lease_table, self.group, self.stream_name)
        self._owned: dict[str, _Owned] = {}
        self._next_balance_at = 0.0
        self._next_renew_at = 0.0
        self._fetcher: ThreadPoolExecutor | None = None

    # -- leases -------------------------------------------------------------------------------------
    def _balance(self, now: float) -> None:
        """Take expired or free leases of ready shards up to a fair share; steal one if starved."""
        shards = _shards(self.kinesis, self.stream_name)
        leases = self.leases.leases()
        finished = {sid for sid, lease in leases.items() if lease.checkpoint == SHARD_END}
        known = {s["ShardId"] for s in shards}
        ready = [
            s["ShardId"] for s in shards
            if s["ShardId"] not in finished
            and all(p in finished or p not in known
                    for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p)
        ]
        workers = max(1, len(self.leases.live_workers(now) | {self.worker_id}))
        share = -(-len(ready) // workers)
        if self.config.max_leases is not None:
            share = min(share, self.config.max_leases)
        mine = [sid for sid in ready if sid in self._owned]
        for shard_id in ready:
            if len(mine) >= share:
                break
            lease = leases.get(shard_id)
            if shard_id in self._owned or (lease is not None and not lease.expired(now)):
                continue
            if self._acquire(shard_id, lease):
                mine.append(shard_id)
        if len(mine) < share:
            self._steal(ready, leases, len(mine), now)

    def _steal(self, ready: list[str], leases: dict[str, Lease], mine: int, now: float) -> None:
        """Take one lease from the busiest peer if it holds at least two more than this worker.

        (4 shards over 3 workers gives a share of 2: without the "two more" rule, 2 + 2 + 0 would count
        as balanced and the third worker would idle.)
        """
        held: dict[str, list[str]] = {}
        for sid in ready:
            lease = leases.get(sid)
            if lease is not None and not lease.expired(now) and lease.owner != self.worker_id:
                held.setdefault(lease.owner or "", []).append(sid)
        for owner, sids in sorted(held.items(), key=lambda kv: -len(kv[1])):
            if len(sids) >= mine + 2:
                self._acquire(sids[-1], leases[sids[-1]])
            return

    def _acquire(self, shard_id: str, seen: Lease | None) -> bool:
        try:
            lease = self.leases.take(shard_id, self.worker_id, self.config.lease_duration_s, seen)
        except LeaseLost:
            return False
        ctx = ShardContext(self.stream_name, shard_id, self.worker_id, lease.token)
        processor = self.processor_factory()
        start = processor.initialize(ctx, lease.checkpoint)
        iterator = self._iterator(shard_id, start)
        self._owned[shard_id] = _Owned(lease, ctx, processor, iterator, start)
        self.metrics.setdefault(shard_id, ShardMetrics())
        _metrics.worker().leases.labels(self.group).set(len(self._owned))
        log.info("worker %s took %s (token %d) from %s", self.worker_id, shard_id, lease.token,
                 start or self.config.initial_position,
                 extra={"group": self.group, "shard": shard_id, "worker": self.worker_id, "token": lease.token})
        return True

    def _iterator(self, shard_id: str, after: str | None, otherwise: str | None = None) -> str:
        kwargs: dict[str, Any] = {"StreamName": self.stream_name, "ShardId": shard_id}
        if after:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
        else:
            kwargs.update(ShardIteratorType=otherwise or self.config.initial_position)
        return self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]

    def _renew(self) -> None:
        for shard_id, owned in list(self._owned.items()):
            try:
                owned.lease = self.leases.renew(owned.lease, self.config.lease_duration_s, owned.position)
            except LeaseLost:
                self._lose(shard_id)

    def _lose(self, shard_id: str) -> None:
        owned = self._owned.pop(shard_id)
        self._forget_series(shard_id)
        log.warning("worker %s lost the lease on %s", self.worker_id, shard_id,
                    extra={"group": self.group, "shard": shard_id, "worker": self.worker_id})
        owned.processor.lease_lost(owned.ctx)

    # -- polling ------------------------------------------------------------------------------------
    def _poll(self, shard_id: str, owned: _Owned, now: float) -> None:
        metrics = self.metrics[shard_id]
        _metrics.worker().polled.labels(self.group, shard_id).set(now)
        if owned.pending is None:
            ahead, owned.ahead = owned.ahead, None
            try:
                page = ahead.result() if ahead is not None else self._get_records(owned, owned.iterator)
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ExpiredIteratorException":
                    owned.iterator = self._iterator(shard_id, owned.last_read)
                    return
                # Throttling or a service error that outlasted botocore's retries: back off this shard,
                # keep the loop (and the other shards' leases) alive.
                self._backoff(shard_id, owned, now, f"GetRecords ({exc.response['Error']['Code']})")
                return
            except (BotoCoreError, OSError):
                self._backoff(shard_id, owned, now, "GetRecords (connection)")
                return
            owned.pending = [_to_record(shard_id, r) for r in page["Records"]]
            owned.pending_lag = int(page.get("MillisBehindLatest", 0))
            owned.pending_called_at = owned.last_call_at
            owned.iterator = page.get("NextShardIterator")
            metrics.last_poll_at = now
            busy = len(owned.pending) >= self.config.max_records or owned.pending_lag > 0
            if busy and self.config.read_ahead and owned.iterator is not None:
                # The next page is fetched while this one is processed (and kept if processing fails).
                owned.ahead = self._fetch_pool().submit(self._get_records, owned, owned.iterator,
                                                        owned.last_call_at + MIN_POLL_INTERVAL_S)
        records, lag = owned.pending, owned.pending_lag
        try:
            safe = owned.processor.process_batch(owned.ctx, records, lag)
        except LeaseLost:
            raise  # the sink fenced us off: a newer owner holds the shard
        except ResetShard as reset:
            self._reset(shard_id, owned, reset)
            return
        except Exception:  # noqa: BLE001 - any sink failure: keep the records, back off, retry them
            self._backoff(shard_id, owned, now, "processing")
            return
        owned.failures = 0
        owned.pending = None
        metrics.millis_behind_latest = lag
        metrics.records += len(records)
        exported = _metrics.worker()
        exported.records_read.labels(self.group, shard_id).inc(len(records))
        exported.behind_latest.labels(self.group, shard_id).set(lag / 1000.0)
        if records:
            owned.last_read = records[-1].sequence_number
            owned.unacked.append(records)
        self._record_position(owned, safe, records, lag)
        if owned.iterator is None:
            self._end_shard(shard_id, owned)
            return
        owned.caught_up = not records and lag == 0
        # Kinesis allows 5 calls per second per shard: the next call starts 0.2 s after the last one
        # *started* (a page that took longer to fetch and process than that is followed at once).
        owned.next_poll_at = max(owned.last_call_at + MIN_POLL_INTERVAL_S,
                                 now if records else now + self.config.idle_poll_interval_s)

    def _record_position(self, owned: _Owned, safe: str | None, records: list[StreamRecord], lag: int) -> None:
        """Checkpoint ``safe`` with the shard's position; write the position alone when only it changed."""
        arrival = owned.position.arrival
        if safe is not None and safe != owned.lease.checkpoint:
            arrival = _settle_unacked(owned, safe, arrival)
        committed = safe if safe is not None else owned.lease.checkpoint
        at_tip = not records and lag == 0 and committed == owned.last_read
        before = owned.position
        owned.position = Position(arrival, at_tip, owned.pending_called_at)
        if safe is not None and safe != owned.lease.checkpoint:
            owned.lease = self.leases.checkpoint(owned.lease, safe, owned.position)
            _metrics.worker().checkpoints.labels(self.group, owned.ctx.shard_id).inc()
        elif at_tip != before.at_tip:
            owned.lease = self.leases.renew(owned.lease, self.config.lease_duration_s, owned.position)
        exported = _metrics.worker()
        if arrival is not None:
            exported.position_arrival.labels(self.group, owned.ctx.shard_id).set(arrival)
        exported.at_tip.labels(self.group, owned.ctx.shard_id).set(1 if at_tip else 0)

    def _get_records(self, owned: _Owned, iterator: str | None, not_before: float = 0.0) -> dict[str, Any]:
        """One GetRecords call, no sooner than ``not_before`` (the shard's next allowed poll)."""
        delay = not_before - time.time()
        if delay > 0:
            time.sleep(delay)
        owned.last_call_at = time.time()
        return self.kinesis.get_records(ShardIterator=iterator, Limit=self.config.max_records)

    def _fetch_pool(self) -> ThreadPoolExecutor:
        if self._fetcher is None:
            # A read-ahead may wait out its shard's poll interval in its thread: room for 8 busy shards.
            self._fetcher = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"get-records-{self.worker_id}")
        return self._fetcher

    def _backoff(self, shard_id: str, owned: _Owned, now: float, what: str) -> None:
        owned.failures += 1
        self.metrics[shard_id].errors += 1
        exported = _metrics.worker()
        failed = exported.batch_failures if what == "processing" else exported.getrecords_errors
        failed.labels(self.group, shard_id).inc()
        backoff = min(self.config.max_backoff_s, 0.1 * 2 ** min(owned.failures, 10))
        owned.next_poll_at = now + backoff
        log.exception("shard %s: %s failed (attempt %d); retrying in %.1fs without checkpointing",
                      shard_id, what, owned.failures, backoff,
                      extra={"group": self.group, "shard": shard_id, "attempt": owned.failures})

    def _end_shard(self, shard_id: str, owned: _Owned) -> None:
        try:
            owned.processor.shard_ended(owned.ctx)
        except ResetShard as reset:
            self._reset(shard_id, owned, reset)
            return
        self.leases.checkpoint(owned.lease, SHARD_END, Position(owned.position.arrival, True, time.time()))
        self.leases.release(owned.lease)
        del self._owned[shard_id]
        self._forget_series(shard_id)
        self._next_balance_at = 0.0  # children may be ready now
        log.info("shard %s reached SHARD_END", shard_id, extra={"group": self.group, "shard": shard_id})

    def _forget_series(self, shard_id: str) -> None:
        """Drop the shard's gauges: a shard this worker no longer reads must not show its old lag."""
        exported = _metrics.worker()
        for gauge in (exported.behind_latest, exported.position_arrival, exported.at_tip, exported.polled):
            try:
                gauge.remove(self.group, shard_id)
            except KeyError:
                pass
        exported.leases.labels(self.group).set(len(self._owned))

    def _reset(self, shard_id: str, owned: _Owned, reset: ResetShard) -> None:
        """The processor's store holds less than it had applied: read the shard again where it says
        (after ``reset.after``, or from the trim horizon). Records held and pages read ahead came from
        the old iterator and are dropped. The checkpoint goes back to ``reset.after`` at once, so the
        speed watermark (and heal, which trusts it) never counts the records to re-read as applied; from
        the trim horizon it goes back with the first batch read again. If no iterator can be had, the
        error ends the worker: a restart resumes from the store's floor."""
        owned.pending, owned.ahead, owned.unacked = None, None, []
        owned.position = Position(None, False, owned.position.observed_at)
        if reset.after is not None:
            owned.lease = self.leases.checkpoint(owned.lease, reset.after, owned.position)
        owned.iterator = self._iterator(shard_id, reset.after, "TRIM_HORIZON")
        owned.last_read = reset.after
        owned.failures, owned.caught_up, owned.next_poll_at = 0, False, 0.0
        log.warning("shard %s: %s", shard_id, reset)

    def run_once(self) -> None:
        """One pass: rebalance/renew when due, then poll every owned shard whose turn has come."""
        now = time.time()
        if now >= self._next_renew_at:
            self._renew()
            self.leases.heartbeat(self.worker_id, self.config.lease_duration_s)
            self._next_renew_at = now + self.config.lease_duration_s / 3
        if now >= self._next_balance_at:
            self._balance(now)
            self._next_balance_at = now + self.config.lease_duration_s / 2
        for shard_id, owned in list(self._owned.items()):
            # A shard whose page read ahead has not arrived is passed over: the others' pages are
            # processed meanwhile, and the wait in _sleep_until_next ends when it arrives.
            if owned.next_poll_at <= time.time() and not owned.waiting():
                try:
                    self._poll(shard_id, owned, time.time())
                except LeaseLost:
                    self._lose(shard_id)

    def _sleep_until_next(self, stop: threading.Event) -> None:
        """Until the next poll, renewal or rebalance is due, or a page read ahead arrives."""
        waiting = [o.ahead for o in self._owned.values() if o.waiting()]
        upcoming = [o.next_poll_at for o in self._owned.values() if not o.waiting()]
        delay = max(0.0, min(upcoming + [self._next_renew_at, self._next_balance_at]) - time.time())
        delay = min(delay, self.config.idle_poll_interval_s)
        if waiting:
            wait(waiting, timeout=delay, return_when=FIRST_COMPLETED)  # type: ignore[arg-type]
        else:
            stop.wait(delay)

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set, then flush processors and release leases."""
        try:
            while not stop.is_set():
                self.run_once()
                self._sleep_until_next(stop)
        finally:
            self.shutdown()

    def caught_up(self) -> bool:
        """Every ready shard is owned by this worker and read to its end with nothing pending."""
        now = time.time()
        shards = _shards(self.kinesis, self.stream_name)
        leases = self.leases.leases()
        for shard in shards:
            lease = leases.get(shard["ShardId"])
            if lease is not None and lease.checkpoint == SHARD_END:
                continue
            owned = self._owned.get(shard["ShardId"])
            if owned is None:
                parents = [p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p]
                if parents and any(p in {s["ShardId"] for s in shards} and (leases.get(p) is None or leases[p].checkpoint != SHARD_END) for p in parents):
                    return False
                if lease is None or lease.expired(now):
                    return False
                continue  # a peer owns it
            if not owned.caught_up or owned.pending is not None:
                return False
        return True

    def run_until_caught_up(self, timeout_s: float = 60.0) -> None:
        """Process until every shard is read to its current end (tests, batch jobs), then shut down."""
        stop = threading.Event()
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                self.run_once()
                if self._owned and all(o.caught_up and o.pending is None for o in self._owned.values()) and self.caught_up():
                    return
                if not self._owned and self.caught_up():
                    return
                self._sleep_until_next(stop)
            raise TimeoutError(f"worker {self.worker_id} not caught up on {self.stream_name} after {timeout_s}s")
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Flush each processor, checkpoint nothing new, release the leases, drop the heartbeat (pages
        read ahead and not processed are dropped: nothing past the checkpoint was applied from them)."""
        if self._fetcher is not None:
            self._fetcher.shutdown(wait=False, cancel_futures=True)
            self._fetcher = None
        for shard_id, owned in list(self._owned.items()):
            try:
                owned.processor.shutdown(owned.ctx)
            finally:
                self.leases.release(owned.lease)
                del self._owned[shard_id]
                self._forget_series(shard_id)
        try:
            self.leases.remove_worker(self.worker_id)
        except ClientError:
            pass

    def lag(self) -> dict[str, int]:
        """MillisBehindLatest of each shard this worker has read."""
        return {sid: m.millis_behind_latest for sid, m in self.metrics.items()}
