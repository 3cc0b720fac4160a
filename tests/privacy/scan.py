"""Independent scans of every layer for anything about a person (the tests' own readers, not the
code under test): every object under raw/, every table and view of the warehouse, every Redis key."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import duckdb


def _needles(user_id: str, anonymous_ids: set[str]) -> list[bytes]:
    return [i.encode() for i in (user_id, *anonymous_ids)]


def archive_hits(s3: Any, bucket: str, user_id: str, anonymous_ids: set[str]) -> list[str]:
    """Keys of every object in the bucket (archive, manifests, audit, reports...) whose bytes, gunzipped
    where they are gzip, contain the user id or one of the anonymous ids."""
    needles = _needles(user_id, anonymous_ids)
    hits = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            if body[:2] == b"\x1f\x8b":
                body = gzip.decompress(body)
            if any(n in body for n in needles):
                hits.append(item["Key"])
    return hits


def warehouse_hits(path: Path, user_id: str, anonymous_ids: set[str]) -> dict[str, int]:
    """Rows per table or view whose text contains an identifier."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        relations = con.execute("select table_schema, table_name from information_schema.tables "
                                "where table_schema <> 'information_schema'").fetchall()
        hits = {}
        for schema, table in relations:
            (n,) = con.execute(
                f'select count(*) from "{schema}"."{table}" t '
                "where list_has_any(regexp_extract_all(t::varchar, '[A-Za-z0-9_-]+'), $1::varchar[])",
                [[user_id, *anonymous_ids]]).fetchone()
            if n:
                hits[f"{schema}.{table}"] = int(n)
        return hits
    finally:
        con.close()


def redis_hits(client: Any, user_id: str, anonymous_ids: set[str]) -> list[str]:
    """Keys whose name, fields, members or value contain an identifier (HyperLogLog registers hold no
    readable identifier and are skipped: see the README's Privacy section)."""
    needles = _needles(user_id, anonymous_ids)
    hits = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            value = client.get(key) or b""
            parts = [] if value.startswith(b"HYLL") else [value]
        elif kind == "hash":
            parts = [b for kv in client.hgetall(key).items() for b in kv]
        elif kind == "zset":
            parts = client.zrange(key, 0, -1)
        elif kind == "set":
            parts = list(client.smembers(key))
        elif kind == "list":
            parts = client.lrange(key, 0, -1)
        else:
            parts = []
        if any(n in key or any(n in p for p in parts) for n in needles):
            hits.append(key.decode())
    return hits
