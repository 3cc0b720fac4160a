"""The stream as reconciliation reads it: each shard's records after the lower of the layers' positions.

Counters cannot be cut at a sequence number, but the stream still holds the records between two
layers' positions (within its retention). :class:`StreamTailReader` reads them, from the lowest position
of a shard up to the shard's tip, and decodes each one with the event contract into the cell it touches
and the numbers it carries (:func:`streaming.events.sequence_position`, also for a rejected record).
:mod:`streaming.reconcile.positions` turns them into held cells and layer clocks.

The read is bounded (``max_records`` over all shards): past the bound a tail is *incomplete*, and so is
one whose starting record has been trimmed from the stream (its successors may be gone too).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from streaming.events import Event, EventDecoder, SequencePosition, sequence_position

#: GetRecords per shard is limited to 5 calls a second, shared with the consumers: one call every 0.25 s.
_CALL_INTERVAL_S = 0.25


@dataclass(frozen=True)
class TailRecord:
    """One stream record after a layer's position: the cell it touches (None for a rejected record)."""

    seq: int
    arrival: float
    cell: tuple[str, str, int] | None
    number: SequencePosition | None
    event_id: str | None


@dataclass
class ShardTail:
    """The records of a shard after ``after`` (None = from the oldest record), oldest first."""

    shard_id: str
    after: int | None
    records: list[TailRecord] = field(default_factory=list)
    #: The read reached the tip (an empty page with MillisBehindLatest 0) or the end of a closed shard.
    complete: bool = False
    #: ``after`` itself is no longer in the stream: records after it may have been trimmed unread.
    trimmed: bool = False
    #: The arrival time of the oldest record the stream still holds on this shard (None: shard empty).
    oldest_arrival: float | None = None
    #: When the read found the tip: every record that arrived before this has been seen.
    read_at: float = 0.0


def _arrival(record: dict[str, Any]) -> float:
    ts = record.get("ApproximateArrivalTimestamp")
    return ts.timestamp() if hasattr(ts, "timestamp") else float(ts or 0.0)


class StreamTailReader:
    def __init__(self, kinesis: Any, stream_name: str, decoder: EventDecoder | None = None,
                 max_records: int = 2_000_000) -> None:
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.decoder = decoder or EventDecoder()
        self.max_records = max_records

    def shard_ids(self) -> list[str]:
        shards: list[str] = []
        kwargs: dict[str, Any] = {"StreamName": self.stream_name}
        while True:
            page = self.kinesis.list_shards(**kwargs)
            shards.extend(s["ShardId"] for s in page["Shards"])
            if not page.get("NextToken"):
                return shards
            kwargs = {"NextToken": page["NextToken"]}

    def tails(self, after: dict[str, int | None]) -> dict[str, ShardTail]:
        """Each shard's tail after its given position, shards read in parallel, the bound shared."""
        if not after:
            return {}
        budget = max(1, self.max_records // len(after))
        with ThreadPoolExecutor(max_workers=min(8, len(after))) as pool:
            tails = list(pool.map(lambda item: self.tail(item[0], item[1], budget), after.items()))
        return {t.shard_id: t for t in tails}

    def _iterator(self, shard_id: str, after: int | None) -> str:
        kwargs: dict[str, Any] = {"StreamName": self.stream_name, "ShardId": shard_id}
        if after is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=str(after))
        return self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]

    def tail(self, shard_id: str, after: int | None, budget: int) -> ShardTail:
        tail = ShardTail(shard_id, after)
        oldest = self.kinesis.get_records(ShardIterator=self._iterator(shard_id, None), Limit=1)["Records"]
        if oldest:
            tail.oldest_arrival = _arrival(oldest[0])
            tail.trimmed = after is not None and int(oldest[0]["SequenceNumber"]) > after
        iterator: str | None = self._iterator(shard_id, after)
        limit = self.decoder.future_limit()
        while iterator:
            started = time.time()
            page = self.kinesis.get_records(ShardIterator=iterator, Limit=min(10_000, max(1, budget)))
            for raw in page["Records"]:
                tail.records.append(self._decode(raw, limit))
            budget -= len(page["Records"])
            iterator = page.get("NextShardIterator")
            if iterator is None or (not page["Records"] and int(page.get("MillisBehindLatest", 0)) == 0):
                tail.complete, tail.read_at = True, started
                break
            if budget <= 0:
                break
            time.sleep(max(0.0, started + _CALL_INTERVAL_S - time.time()))
        return tail

    def _decode(self, raw: dict[str, Any], future_limit: Any) -> TailRecord:
        data = raw["Data"]
        result = self.decoder.decode(data, future_limit)
        seq, arrival = int(raw["SequenceNumber"]), _arrival(raw)
        if isinstance(result, Event):
            number = SequencePosition(result.source_id, result.tenant_id, result.source_seq)
            return TailRecord(seq, arrival, (result.tenant_id, result.event_type.value, result.minute), number,
                              str(result.event_id))
        return TailRecord(seq, arrival, None, sequence_position(data), None)
