"""Per-tenant write keys: made by `tally keys create --kind write`, stored hashed, compared in constant time.

A write key is ``twk_<key id>_<secret>``. The DynamoDB table ``TALLY_WRITE_KEY_TABLE`` holds, per key id,
the tenant and the SHA-256 of the whole key (never the key). Every collector reads the table when it
starts and every ``TALLY_COLLECTOR_KEYS_REFRESH_S`` seconds, and keeps the last copy it read in its state
directory: ingestion never waits on DynamoDB (or on Redis, which is lossy), and a collector restarted
while DynamoDB is unreachable starts with the keys it had. The table is the truth: a key deleted there is
refused after the next refresh.

A key is found by its id and then its hash compared with :func:`hmac.compare_digest`; an unknown id is
compared against a dummy hash, so a refusal takes the same work whether or not the key id exists, and
every refusal is the same 401 whether or not the tenant exists.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from streaming.events import TENANT_ID_PATTERN

log = logging.getLogger("tally.collector.keys")

PREFIX = "twk_"
_TENANT_RE = re.compile(TENANT_ID_PATTERN)
_DUMMY = hashlib.sha256(b"tally: no such write key").hexdigest()
KeyTable = dict[str, tuple[str, str]]  # key id -> (tenant, sha256 hex of the key)


class BadTenantId(ValueError):
    pass


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _key_id(key: str) -> str | None:
    if not key.startswith(PREFIX) or len(key) > 200:
        return None
    parts = key[len(PREFIX):].split("_", 1)
    return parts[0] if len(parts) == 2 and parts[0] else None


def ensure_table(dynamodb: Any, name: str) -> None:
    try:
        dynamodb.create_table(
            TableName=name, KeySchema=[{"AttributeName": "key_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "key_id", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})


def create_write_key(dynamodb: Any, table: str, tenant: str) -> str:
    """A new write key for ``tenant``; only its hash is stored, so show it to the user once."""
    if not _TENANT_RE.match(tenant):
        raise BadTenantId(f"tenant id {tenant!r} must match ^[a-z0-9][a-z0-9_-]{{0,63}}$")
    ensure_table(dynamodb, table)
    key_id = secrets.token_hex(6)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(24)}"
    dynamodb.put_item(TableName=table, Item={
        "key_id": {"S": key_id}, "tenant_id": {"S": tenant}, "sha256": {"S": _digest(key)},
        "created_at": {"N": str(int(time.time()))},
    }, ConditionExpression="attribute_not_exists(key_id)")
    return key


def revoke_write_key(dynamodb: Any, table: str, key: str) -> bool:
    key_id = _key_id(key)
    if key_id is None:
        return False
    out = dynamodb.delete_item(TableName=table, Key={"key_id": {"S": key_id}}, ReturnValues="ALL_OLD")
    return "Attributes" in out


def scan_table(dynamodb: Any, table: str) -> KeyTable:
    keys: KeyTable = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page.get("Items", []):
            keys[item["key_id"]["S"]] = (item["tenant_id"]["S"], item["sha256"]["S"])
    return keys


class WriteKeys:
    """The collector's view of the key table, refreshed in the background, cached on disk."""

    def __init__(self, load: Callable[[], KeyTable], cache_path: Path, refresh_s: float) -> None:
        self._load = load
        self.cache_path = cache_path
        self.refresh_s = refresh_s
        self._keys: KeyTable = {}
        self.loaded_from = "nothing"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> WriteKeys:
        if not self.refresh():
            if self.cache_path.exists():
                self._keys = {k: (t, d) for k, (t, d) in json.loads(self.cache_path.read_text()).items()}
                self.loaded_from = f"the cache {self.cache_path}"
                log.warning("write keys: the table is not readable; using %d keys from %s", len(self._keys),
                            self.cache_path)
            else:
                log.error("write keys: the table is not readable and no cache exists: every request gets 401 "
                          "until the table answers")
        self._thread = threading.Thread(target=self._loop, name="write-keys", daemon=True)
        self._thread.start()
        return self

    def refresh(self) -> bool:
        try:
            keys = self._load()
        except Exception as exc:  # noqa: BLE001 - DynamoDB down or the table gone: keep the keys we have
            log.warning("write keys: refresh failed (%s); keeping %d keys", type(exc).__name__, len(self._keys))
            return False
        if keys != self._keys:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(keys))
            os.chmod(tmp, 0o600)
            tmp.replace(self.cache_path)
        self._keys = keys
        self.loaded_from = "the table"
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()

    def tenant_for(self, key: str | None) -> str | None:
        """The tenant of a write key, or None (missing, malformed, unknown or revoked: all alike)."""
        if not key:
            hmac.compare_digest(_DUMMY, _DUMMY)
            return None
        key_id = _key_id(key)
        entry = self._keys.get(key_id) if key_id is not None else None
        digest = _digest(key)
        if entry is None:
            hmac.compare_digest(digest, _DUMMY)
            return None
        tenant, stored = entry
        return tenant if hmac.compare_digest(digest, stored) else None
