"""The embedded AWS emulator: moto's server (Kinesis, S3, DynamoDB) on loopback, with three fixes.

moto 5.2.5 is the one emulator that serves all three services tally needs over HTTP, but its Kinesis
shard was written for unit tests:

* every append ran ``list(self.records.keys())[-1]`` and every GetRecords scanned the shard from its
  first record, so writes fell from ~5k to ~650 records/s as a shard filled;
* it never trims records, so a long run grows without bound;
* it publishes a CloudWatch datapoint per PutRecords call, another unbounded list;
* every record was a moto ``BaseModel``, which appends each instance to a class-wide list, so even
  trimmed records were never freed; and building each one cost two datetime conversions;
* PutRecords and GetRecords answers went through moto's generic serializer (a tenth of the put time);
* with a Lambda event source mapping on a stream, every put record tried to run the function in Docker
  (which the emulator does not have: 2,500 records took 13.6 s instead of 0.16 s);
* resharding copied a parent's records into its children and a closed shard never reported SHARD_END,
  where Kinesis keeps the records on the parent and ends its iterator (``NextShardIterator`` null);
  and new records could still be routed to a closed parent.

:func:`patch_moto` replaces those pieces (constant-time append and read by sequence number, retention by
age and by count, no CloudWatch datapoints) and serialises shard access, since werkzeug serves requests
on threads. Run as ``python -m streaming.stack.emulator --port N``; ``tally stack up`` does that.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import signal
import threading
import time
from collections import OrderedDict
from typing import Any

import orjson

_LOCK = threading.RLock()


class _Record:
    """A stream record: moto's ``Record`` interface without its instance tracking (which kept every
    record ever put alive) or its per-record datetime conversions."""

    __slots__ = ("partition_key", "data", "sequence_number", "explicit_hash_key", "created_at")

    def __init__(self, partition_key: str, data: str, sequence_number: int, explicit_hash_key: str) -> None:
        self.partition_key = partition_key
        self.data = data  # base64 text, as PutRecords carried it
        self.sequence_number = sequence_number
        self.explicit_hash_key = explicit_hash_key
        self.created_at = time.time()

    @property
    def created_at_datetime(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.created_at, dt.timezone.utc).replace(tzinfo=None)

    def to_json(self) -> dict[str, Any]:
        return {"Data": base64.b64decode(self.data), "PartitionKey": self.partition_key,
                "SequenceNumber": str(self.sequence_number), "ApproximateArrivalTimestamp": self.created_at_datetime}


def patch_moto(retention_s: int, max_records_per_shard: int) -> None:
    """Make moto's Kinesis shard constant-time and bounded. Idempotent."""
    from moto.kinesis import models
    from moto.kinesis.models import KinesisBackend, Shard, Stream
    from moto.kinesis.responses import KinesisResponse

    def get_min_sequence_number(self: Shard) -> int:
        return next(iter(self.records)) if self.records else 0

    def get_max_sequence_number(self: Shard) -> int:
        if self.records:
            return next(reversed(self.records))
        return getattr(self, "_tally_last_seq", 0)

    def trim(self: Shard) -> None:
        records: OrderedDict[int, _Record] = self.records  # type: ignore[assignment]
        cutoff = time.time() - retention_s
        while records:
            first = next(iter(records))
            if len(records) > max_records_per_shard or records[first].created_at < cutoff:
                records.popitem(last=False)
            else:
                break

    def put_record(self: Shard, partition_key: str, data: str, explicit_hash_key: str) -> str:
        with _LOCK:
            sequence_number = get_max_sequence_number(self) + 1
            self.records[sequence_number] = _Record(partition_key, data, sequence_number, explicit_hash_key)
            self._tally_last_seq = sequence_number  # type: ignore[attr-defined]
            if len(self.records) > max_records_per_shard or sequence_number % 1000 == 0:
                trim(self)
            return str(sequence_number)

    def get_records(self: Shard, last_sequence_id: str, limit: int | None) -> tuple[list[_Record], int, int]:
        with _LOCK:
            records = self.records
            last = int(last_sequence_id)
            if not records:
                return [], last, 0
            newest = next(reversed(records))
            seq = max(last + 1, next(iter(records)))
            limit = limit or 10_000
            out: list[_Record] = []
            # Sequence numbers are contiguous per shard (trimming only removes a prefix).
            while seq <= newest and len(out) < limit:
                record = records.get(seq)
                if record is not None:
                    out.append(record)
                    last = seq
                seq += 1
            behind = 0
            if out:
                behind = int((records[newest].created_at - out[-1].created_at) * 1000)
            return out, last, behind

    def no_metrics(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    def keeping_records(original: Any, *names: str) -> Any:
        """Run a resharding call with the parents' records hidden, so none are copied to children."""

        def wrapper(self: Stream, *args: Any) -> None:
            with _LOCK:
                parents = [self.shards[a] for a in args[: len(names)] if a in self.shards]
                kept = [(shard, shard.records) for shard in parents]
                for shard in parents:
                    shard._tally_last_seq = get_max_sequence_number(shard)  # type: ignore[attr-defined]
                    shard.records = OrderedDict()
                try:
                    original(self, *args)
                finally:
                    for shard, records in kept:
                        shard.records = records

        return wrapper

    def get_shard_for_key(self: Stream, partition_key: str, explicit_hash_key: str) -> Shard | None:
        """Route to open shards only (moto also matched closed parents after a split)."""
        if not isinstance(partition_key, str) or len(partition_key) > 256:
            raise models.InvalidArgumentError("partition_key")
        if explicit_hash_key:
            if not isinstance(explicit_hash_key, str) or int(explicit_hash_key) >= 2**128:
                raise models.InvalidArgumentError("explicit_hash_key")
            key = int(explicit_hash_key)
        else:
            key = int(models.md5_hash(partition_key.encode("utf-8")).hexdigest(), 16)
        for shard in self.shards.values():
            if shard.is_open and shard.starting_hash <= key <= shard.ending_hash:
                return shard
        return None

    original_backend_get_records = KinesisBackend.get_records

    def backend_get_records(self: KinesisBackend, stream_arn: Any, shard_iterator: str, limit: Any) -> Any:
        next_iterator, records, behind = original_backend_get_records(self, stream_arn, shard_iterator, limit)
        if not records:
            stream_name, shard_id, last = models.decompose_shard_iterator(shard_iterator)
            stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
            shard = stream.get_shard(shard_id)
            if not shard.is_open and int(last) >= get_max_sequence_number(shard):
                next_iterator = None  # SHARD_END
        return next_iterator, records, behind

    def put_records_response(self: KinesisResponse) -> str:
        response = self.kinesis_backend.put_records(self._get_param("StreamARN"), self._get_param("StreamName"),
                                                    self._get_param("Records"))
        return orjson.dumps(response).decode()

    def get_records_response(self: KinesisResponse) -> str:
        """The Kinesis JSON answer built directly (Data stays the base64 text it arrived as)."""
        next_iterator, records, behind = self.kinesis_backend.get_records(
            self._get_param("StreamARN"), self._get_param("ShardIterator"), self._get_param("Limit"))
        body: dict[str, Any] = {
            "Records": [{"Data": r.data, "PartitionKey": r.partition_key, "SequenceNumber": str(r.sequence_number),
                         "ApproximateArrivalTimestamp": round(r.created_at, 3)} for r in records],
            "MillisBehindLatest": behind,
        }
        if next_iterator is not None:
            body["NextShardIterator"] = next_iterator
        return orjson.dumps(body).decode()

    KinesisResponse.put_records = put_records_response  # type: ignore[method-assign]
    KinesisResponse.get_records = get_records_response  # type: ignore[method-assign]
    Shard.get_min_sequence_number = get_min_sequence_number  # type: ignore[method-assign]
    Shard.get_max_sequence_number = get_max_sequence_number  # type: ignore[method-assign]
    Shard.put_record = put_record  # type: ignore[method-assign]
    Shard.get_records = get_records  # type: ignore[method-assign]
    KinesisBackend._send_stream_metrics = no_metrics  # type: ignore[method-assign]
    KinesisBackend.get_records = backend_get_records  # type: ignore[method-assign]
    # A Lambda event source mapping on a stream (deploy/tally.yaml creates one) made moto invoke the
    # function for every record put, in a Docker container this emulator does not have: functions are
    # defined here, never run (tests run the handler themselves, or the consumer in its place).
    from moto.awslambda.models import LambdaBackend

    def no_invoke(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    LambdaBackend.send_kinesis_message = no_invoke  # type: ignore[method-assign]
    if not getattr(models, "_tally_patched", False):
        Stream.split_shard = keeping_records(Stream.split_shard, "shard_to_split")  # type: ignore[method-assign]
        Stream.merge_shards = keeping_records(Stream.merge_shards, "a", "b")  # type: ignore[method-assign]
        Stream.get_shard_for_key = get_shard_for_key  # type: ignore[method-assign]
    models._tally_patched = True  # type: ignore[attr-defined]


def serve(host: str, port: int, retention_s: int, max_records_per_shard: int) -> None:
    """Serve until SIGTERM/SIGINT. Binds ``host`` only (loopback by default)."""
    patch_moto(retention_s, max_records_per_shard)
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, serialize_dynamodb(app), threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"tally AWS emulator listening on http://{host}:{port}", flush=True)
    stop.wait()
    server.shutdown()


def serialize_dynamodb(app: Any) -> Any:
    """Run DynamoDB requests one at a time.

    moto evaluates a ConditionExpression and then writes, without a lock; on werkzeug's threads two
    conditional writes could both pass (two workers taking one lease). DynamoDB makes each conditional
    write atomic, and lease fencing depends on it.
    """
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            with lock:
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description="tally's embedded AWS emulator (moto, patched)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--retention-s", type=int, default=86_400)
    parser.add_argument("--max-records-per-shard", type=int, default=2_000_000)
    args = parser.parse_args()
    serve(args.host, args.port, args.retention_s, args.max_records_per_shard)


if __name__ == "__main__":
    main()
