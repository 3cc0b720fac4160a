"""The worker's reset hook: a processor whose store lost what it had applied raises ``ResetShard`` and
the worker reads the shard again from the position it names (or the trim horizon), dropping what it
held, also when the loss is found at the shard's end. Real AWS emulator and DynamoDB lease table."""

from __future__ import annotations

from typing import Any

import pytest

from streaming.kinesis.leases import SHARD_END, LeaseTable
from streaming.kinesis.processor import ResetShard, ShardContext, StreamRecord
from streaming.kinesis.worker import Worker, WorkerConfig

pytestmark = pytest.mark.integration


class Forgetful:
    """Applies records in order; once it has seen ``forget_at`` records it "loses" everything after the
    first ``keep`` (like Redis losing a suffix) and asks to read again after the last one it kept."""

    def __init__(self, forget_at: int, keep: int, at_end: bool = False) -> None:
        self.forget_at, self.keep, self.at_end = forget_at, keep, at_end
        self.applied: list[StreamRecord] = []
        self.resets = 0

    def initialize(self, ctx: ShardContext, checkpoint: str | None) -> str | None:
        return checkpoint

    def _forget(self) -> None:
        self.resets += 1
        self.applied = self.applied[:self.keep]
        raise ResetShard(self.applied[-1].sequence_number if self.applied else None, "store lost a suffix")

    def process_batch(self, ctx: ShardContext, records: list[StreamRecord], lag: int) -> str | None:
        if not records:
            return None
        if self.applied:
            assert int(records[0].sequence_number) > int(self.applied[-1].sequence_number), "never an old page"
        self.applied.extend(records)
        if not self.at_end and not self.resets and len(self.applied) >= self.forget_at:
            self._forget()
        return records[-1].sequence_number

    def shard_ended(self, ctx: ShardContext) -> None:
        if self.at_end and not self.resets:
            self._forget()

    def lease_lost(self, ctx: ShardContext) -> None: ...
    def shutdown(self, ctx: ShardContext) -> None: ...


def _run(kinesis: Any, dynamodb: Any, stream: str, table: str, processor: Forgetful) -> Worker:
    worker = Worker(kinesis, dynamodb, stream, table, "test", lambda: processor,
                    config=WorkerConfig(lease_duration_s=3, idle_poll_interval_s=0.05, max_records=50))
    worker.run_until_caught_up(60)
    return worker


def _fill(kinesis: Any, stream: str, n: int) -> list[bytes]:
    items = [f"r{i:04d}".encode() for i in range(n)]
    for i in range(0, n, 100):
        kinesis.put_records(StreamName=stream, Records=[
            {"Data": d, "PartitionKey": "k", "ExplicitHashKey": "0"} for d in items[i:i + 100]])
    return items


@pytest.mark.parametrize("keep", [120, 0], ids=["after-a-position", "from-the-trim-horizon"])
def test_reset_reads_the_shard_again_from_the_named_position(kinesis: Any, dynamodb: Any, stream_name: str,
                                                             lease_table: str, keep: int) -> None:
    items = _fill(kinesis, stream_name, 400)
    processor = Forgetful(forget_at=300, keep=keep)
    _run(kinesis, dynamodb, stream_name, lease_table, processor)
    assert processor.resets == 1
    # Exactly the records, once each and in order: the kept prefix, then everything after it again.
    assert [r.data for r in processor.applied if r.data.startswith(b"r")] == items


def test_reset_moves_the_checkpoint_back_at_once(kinesis: Any, dynamodb: Any, stream_name: str,
                                                 lease_table: str) -> None:
    _fill(kinesis, stream_name, 300)
    processor = Forgetful(forget_at=250, keep=100)
    worker = Worker(kinesis, dynamodb, stream_name, lease_table, "test", lambda: processor,
                    config=WorkerConfig(lease_duration_s=3, idle_poll_interval_s=0.05, max_records=50))
    leases = LeaseTable(dynamodb, lease_table, "test", stream_name)
    shard = kinesis.list_shards(StreamName=stream_name)["Shards"][0]["ShardId"]
    while not processor.resets:
        worker.run_once()
    assert leases.leases()[shard].checkpoint == processor.applied[99].sequence_number
    worker.shutdown()


def test_reset_at_shard_end_reads_again_instead_of_ending(kinesis: Any, dynamodb: Any, stream_name: str,
                                                          lease_table: str) -> None:
    items = _fill(kinesis, stream_name, 200)
    shard = kinesis.list_shards(StreamName=stream_name)["Shards"][0]["ShardId"]
    kinesis.split_shard(StreamName=stream_name, ShardToSplit=shard,
                        NewStartingHashKey=str(2 ** 126))
    processor = Forgetful(forget_at=0, keep=50, at_end=True)
    _run(kinesis, dynamodb, stream_name, lease_table, processor)
    assert processor.resets == 1
    assert [r.data for r in processor.applied if r.shard_id == shard] == items
    assert LeaseTable(dynamodb, lease_table, "test", stream_name).leases()[shard].checkpoint == SHARD_END
