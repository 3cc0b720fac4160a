"""A faster GetRecords response path for one boto3 Kinesis client.

botocore parses a GetRecords response field by field against the service model (and base64-decodes each
``Data``) at ~57k records/s per core, which would make one consumer process spend most of its CPU in
the parser. This hook parses the JSON body with orjson and decodes ``Data`` with binascii, then hands
botocore an empty body, so its parser has nothing left to do. Only successful GetRecords responses are
touched; errors, signing, retries and every other operation stay botocore's. Records come out with the
same keys as botocore's (``Data`` bytes, ``ApproximateArrivalTimestamp`` epoch seconds as a float).
"""

from __future__ import annotations

import binascii
from typing import Any

import orjson

_EVENT = "before-parse.kinesis.GetRecords"


def _parse_get_records(response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any) -> None:
    if response_dict.get("status_code") != 200:
        return
    body = response_dict.get("body")
    if not body:
        return
    doc = orjson.loads(body)
    a2b = binascii.a2b_base64
    records = [
        {
            "SequenceNumber": r["SequenceNumber"],
            "PartitionKey": r["PartitionKey"],
            "Data": a2b(r["Data"]),
            "ApproximateArrivalTimestamp": float(r.get("ApproximateArrivalTimestamp") or 0.0),
        }
        for r in doc.get("Records", ())
    ]
    customized_response_dict["Records"] = records
    customized_response_dict["NextShardIterator"] = doc.get("NextShardIterator")
    if "MillisBehindLatest" in doc:
        customized_response_dict["MillisBehindLatest"] = doc["MillisBehindLatest"]
    if "ChildShards" in doc:
        customized_response_dict["ChildShards"] = doc["ChildShards"]
    response_dict["body"] = b"{}"


def install_fast_get_records(client: Any) -> Any:
    """Register the fast parser on ``client`` (idempotent); returns the client."""
    client.meta.events.unregister(_EVENT, unique_id="tally-fast-get-records")
    client.meta.events.register(_EVENT, _parse_get_records, unique_id="tally-fast-get-records")
    return client


class ReadAheadKinesis:
    """A Kinesis client wrapper that fetches a shard's next GetRecords page while the current one is
    being applied, so a consumer behind the stream is not idle while it waits for the service.

    It only reads ahead while the shard is behind (``MillisBehindLatest`` > 0 or a full page) and keeps
    every chain of calls at least ``min_interval_s`` apart (Kinesis allows 5 GetRecords/s per shard).
    Results and errors are handed back exactly when the caller asks for that iterator; everything else
    is the wrapped client's.
    """

    def __init__(self, client: Any, min_interval_s: float = 0.2, max_ahead: int = 64) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._client = client
        self._min_interval_s = min_interval_s
        self._max_ahead = max_ahead
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="kinesis-read-ahead")
        self._ahead: dict[str, Any] = {}  # iterator -> Future of (page, started_at)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _fetch(self, iterator: str, limit: int | None, not_before: float) -> tuple[dict[str, Any], float]:
        import time

        delay = not_before - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        started = time.monotonic()
        kwargs: dict[str, Any] = {"ShardIterator": iterator}
        if limit is not None:
            kwargs["Limit"] = limit
        return self._client.get_records(**kwargs), started

    def get_records(self, **kwargs: Any) -> dict[str, Any]:
        import time

        iterator = kwargs["ShardIterator"]
        limit = kwargs.get("Limit")
        future = self._ahead.pop(iterator, None)
        if future is not None:
            page, started = future.result()
        else:
            page, started = self._fetch(iterator, limit, 0.0)
        nxt = page.get("NextShardIterator")
        behind = page.get("MillisBehindLatest", 0) > 0 or len(page.get("Records", ())) >= (limit or 10_000)
        if nxt and behind:
            while len(self._ahead) >= self._max_ahead:  # iterators the caller abandoned (lease lost, reset)
                self._ahead.pop(next(iter(self._ahead))).cancel()
            self._ahead[nxt] = self._pool.submit(self._fetch, nxt, limit, started + self._min_interval_s)
        return page
