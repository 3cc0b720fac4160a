"""The speed layer's Redis key layout: one place that names every key.

Every key one atomic call touches carries the same hash tag, so a tenant's batch is one slot on Redis
Cluster. Tenant ids are validated by the event contract (``^[a-z0-9][a-z0-9_-]{0,63}$``), so they can
never contain ``{``, ``}`` or ``:``. The non-tenant tags (``_dl``, ``_ops``, ``_keys``) start with an
underscore, which no tenant id can, so they never collide with a tenant.
"""

from __future__ import annotations

import re

from streaming.events import TENANT_ID_PATTERN

_TENANT_RE = re.compile(TENANT_ID_PATTERN)

DEAD_LETTER_TAG = "_dl"
OPS_TAG = "_ops"
API_KEYS_TAG = "_keys"


class BadTenant(ValueError):
    """A tenant id that does not match the contract: never turned into a key."""


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT_RE.match(tenant):
        raise BadTenant(f"tenant id {tenant!r} does not match {TENANT_ID_PATTERN}")
    return tenant


def tenant_prefix(tenant: str) -> str:
    """``tally:{tenant}:``; the Lua script builds its keys from this prefix (same slot for all)."""
    return f"tally:{{{check_tenant(tenant)}}}:"


def applied_marker(tenant: str, group: str, shard_id: str) -> str:
    """Hash {token, seq}: the lease token and last sequence number applied for this tenant from a shard."""
    return f"{tenant_prefix(tenant)}applied:{group}:{shard_id}"


def counts(tenant: str, resolution: str, bucket: int) -> str:
    """Hash event_type -> count; resolution m|h|d and bucket = epoch minute|hour|day."""
    return f"{tenant_prefix(tenant)}cnt:{resolution}:{bucket}"


def uniques(tenant: str, resolution: str, bucket: int) -> str:
    """HyperLogLog of anonymous_ids per hour (resolution ``h``); longer ranges are unions of hours."""
    return f"{tenant_prefix(tenant)}uv:{resolution}:{bucket}"


def top_pages(tenant: str, resolution: str, bucket: int) -> str:
    """Sorted set path -> page views; resolution h|d."""
    return f"{tenant_prefix(tenant)}top:{resolution}:{bucket}"


def segment_members(tenant: str, segment: str) -> str:
    """Sorted set anonymous_id -> epoch ms until which the visitor is a member."""
    return f"{tenant_prefix(tenant)}seg:{segment}"


def dead_letter_entries() -> str:
    """Hash "<shard>/<seq>" -> msgpack entry (reason, detail, raw, shard, seq, at, status)."""
    return f"tally:{{{DEAD_LETTER_TAG}}}:entries"


def dead_letter_pending() -> str:
    """Sorted set of pending entry ids by time written (the listing order)."""
    return f"tally:{{{DEAD_LETTER_TAG}}}:pending"


def dead_letter_counts() -> str:
    """Hash reason -> dead letters ever written (each shard/seq once)."""
    return f"tally:{{{DEAD_LETTER_TAG}}}:counts"


def dead_letter_replayed() -> str:
    """Hash reason -> dead letters re-fed to the stream."""
    return f"tally:{{{DEAD_LETTER_TAG}}}:replayed"


def consumer_lag() -> str:
    """Hash "<group>/<shard>" -> msgpack {millis_behind_latest, at, worker}."""
    return f"tally:{{{OPS_TAG}}}:lag"


def latency_histogram(minute: int) -> str:
    """Hash upper-bound-ms -> events applied in this epoch minute with that event-to-counter latency."""
    return f"tally:{{{OPS_TAG}}}:lat:{minute}"


def api_keys() -> str:
    """Hash sha256(api key) -> tenant id. Keys are stored hashed only."""
    return f"tally:{{{API_KEYS_TAG}}}:api"
