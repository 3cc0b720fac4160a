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

