"""The speed layer's Redis key layout: one place that names every key.

Every key one atomic call touches carries the same hash tag, so a tenant's batch is one slot on Redis
Cluster. Tenant ids are validated by the event contract (``^[a-z0-9][a-z0-9_-]{0,63}$``), so they can
never contain ``{``, ``}`` or ``:``. The non-tenant tags (``_dl``, ``_unattributed``, ``_ops``, ``_keys``, ``_pos<n>``) start with an
underscore, which no tenant id can, so they never collide with a tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from streaming.events import TENANT_ID_PATTERN

_TENANT_RE = re.compile(TENANT_ID_PATTERN)

DEAD_LETTER_TAG = "_dl"
UNATTRIBUTED_TAG = "_unattributed"
OPS_TAG = "_ops"
API_KEYS_TAG = "_keys"
HEAL_TAG = "_heal"
PRIVACY_TAG = "_privacy"
_ROOT = "tally:"


class BadTenant(ValueError):
    """A tenant id that does not match the contract: never turned into a key."""


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT_RE.match(tenant):
        raise BadTenant(f"tenant id {tenant!r} does not match {TENANT_ID_PATTERN}")
    return tenant


def tenant_prefix(tenant: str) -> str:
    """``tally:{tenant}:``; the Lua script builds its keys from this prefix (same slot for all)."""
    return f"{_ROOT}{{{check_tenant(tenant)}}}:"


def applied_marker(tenant: str, group: str, shard_id: str) -> str:
    """Hash {token, seq}: the lease token and last sequence number applied for this tenant from a shard."""
    return f"{tenant_prefix(tenant)}applied:{group}:{shard_id}"


def shard_position(tag: str, group: str, shard_id: str) -> str:
    """Hash {token, seq}: the shard's position floor on the node that holds ``tag`` (a ``_pos<n>`` tag
    chosen per master): that node holds every write of the shard's batches up to seq
    (:mod:`streaming.speed.positions`)."""
    if not tag.startswith("_pos"):
        raise ValueError(f"position tags start with _pos, not {tag!r}")
    return f"{_ROOT}{{{tag}}}:pos:{group}:{shard_id}"


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


def segment_state(tenant: str, segment: str, bucket: int) -> str:
    """Hash anonymous_id -> msgpack list of the newest min_count hit times (epoch ms, ascending) of a
    visitor whose newest hit lies in this window-long bucket (``apply.lua`` builds the same names)."""
    return f"{tenant_prefix(tenant)}segst:{segment}:{bucket}"


def suppression(tenant: str) -> str:
    """Hash subject_hash -> since_ms: the tenant's suppression list (:mod:`streaming.privacy.suppression`
    writes it; the speed layer and the archiver read it)."""
    return f"{tenant_prefix(tenant)}suppress"


def suppression_version(tenant: str) -> str:
    """Integer, INCR'd in the same transaction as every change of :func:`suppression` (``apply.lua``
    compares it with the version a batch was aggregated with)."""
    return f"{tenant_prefix(tenant)}suppress:ver"


def dead_letter_tag(tenant: str | None) -> str:
    """The hash tag of a dead letter: its record's tenant when the bytes name a valid tenant id, else
    :data:`UNATTRIBUTED_TAG` (an underscore first: no tenant id can be it). Dead letters are spread over
    the cluster with their tenants, and a tenant's are listed, replayed and erased in its own slot."""
    return UNATTRIBUTED_TAG if tenant is None else check_tenant(tenant)


def _dead_letter_key(tag: str, name: str) -> str:
    if tag != UNATTRIBUTED_TAG:
        check_tenant(tag)
    return f"{_ROOT}{{{tag}}}:dl:{name}"


def dead_letter_entries(tag: str) -> str:
    """Hash "<shard>/<seq>" -> msgpack entry (reason, detail, raw, shard, seq, arrival, at, tenant_id,
    source_id, source_seq)."""
    return _dead_letter_key(tag, "entries")


def dead_letter_pending(tag: str) -> str:
    """Sorted set of pending (not replayed) entry ids by time written (the listing order)."""
    return _dead_letter_key(tag, "pending")


def dead_letter_written(tag: str) -> str:
    """Sorted set of every entry id by time written: what retention trims (TALLY_DEAD_LETTER_TTL_S)."""
    return _dead_letter_key(tag, "written")


def dead_letter_counts(tag: str) -> str:
    """Hash reason -> dead letters written under this tag (each shard/seq once)."""
    return _dead_letter_key(tag, "counts")


def dead_letter_replayed(tag: str) -> str:
    """Hash reason -> dead letters of this tag re-fed to the stream."""
    return _dead_letter_key(tag, "replayed")


def dead_letter_tags() -> str:
    """Sorted set tag -> epoch ms of its newest dead letter: the tags to read for global counts."""
    return f"{_ROOT}{{{DEAD_LETTER_TAG}}}:dl:tags"


def consumer_lag() -> str:
    """Hash "<group>/<shard>" -> msgpack {millis_behind_latest, at, worker}."""
    return f"{_ROOT}{{{OPS_TAG}}}:lag"


def latency_histogram(minute: int) -> str:
    """Hash upper-bound-ms -> events applied in this epoch minute with that event-to-counter latency."""
    return f"{_ROOT}{{{OPS_TAG}}}:lat:{minute}"


def api_keys() -> str:
    """Hash sha256(api key) -> tenant id. Keys are stored hashed only."""
    return f"{_ROOT}{{{API_KEYS_TAG}}}:api"


def heal_log() -> str:
    """List of JSON heal records, oldest first (:mod:`streaming.reconcile.heal`)."""
    return f"{_ROOT}{{{HEAL_TAG}}}:log"


def privacy_lock() -> str:
    """String lock token: one deletion at a time (:mod:`streaming.privacy.forget`)."""
    return f"{_ROOT}{{{PRIVACY_TAG}}}:lock"


# -- SCAN patterns and parsing -----------------------------------------------------------------------
# Tenant ids hold no glob character (``*?[]\\``): the contract's pattern excludes them, and
# :func:`check_tenant` runs before a tenant reaches a pattern.


def counts_pattern(resolution: str) -> str:
    """SCAN pattern of every tenant's counters at ``resolution`` (m|h|d)."""
    if resolution not in ("m", "h", "d"):
        raise ValueError(f"counter resolutions are m, h and d, not {resolution!r}")
    return f"{_ROOT}{{*}}:cnt:{resolution}:*"


def _tenants(tenant: str | None) -> str:
    return f"{_ROOT}{{*}}:" if tenant is None else tenant_prefix(tenant)


def segment_members_pattern(tenant: str | None = None, segment: str | None = None) -> str:
    """SCAN pattern of segment membership sets: one tenant's or every tenant's (None), one rule's or every
    rule's (None; rule names match ``streaming.segments``' name pattern, no glob character)."""
    return f"{_tenants(tenant)}seg:{segment or '*'}"


def segment_state_pattern(tenant: str | None = None, segment: str | None = None) -> str:
    """SCAN pattern of segment state hashes (every bucket), narrowed like :func:`segment_members_pattern`."""
    return f"{_tenants(tenant)}segst:{segment + ':*' if segment else '*'}"


def latency_histograms_pattern() -> str:
    """SCAN pattern of every minute's latency histogram (:func:`latency_histogram`)."""
    return f"{_ROOT}{{{OPS_TAG}}}:lat:*"


_COUNTS_RE = re.compile(r"^tally:\{([a-z0-9][a-z0-9_-]{0,63})\}:cnt:([mhd]):(\d+)$")


def parse_counts(key: str | bytes) -> tuple[str, str, int] | None:
    """(tenant, resolution, bucket) of a counter key built by :func:`counts`, or None for any other key."""
    text = key.decode() if isinstance(key, bytes) else key
    found = _COUNTS_RE.match(text)
    return (found.group(1), found.group(2), int(found.group(3))) if found else None


# -- key families ------------------------------------------------------------------------------------
# Every key tally writes, grouped by what it holds: the memory benchmark (bench/bench_memory.py) measures
# each family's bytes on a real workload, and the capacity planner (streaming/plan/) predicts each one.
# A key layout change is made here, in the builders above, and in this table; the test that classifies
# every builder's output keeps them together.


@dataclass(frozen=True)
class KeyFamily:
    name: str
    pattern: re.Pattern[str]
    holds: str


_T = r"tally:\{[a-z0-9][a-z0-9_-]{0,63}\}:"
FAMILIES: tuple[KeyFamily, ...] = (
    KeyFamily("dedup", re.compile(_T + r"seen:-?\d+$"), "set of 16-byte event_ids first seen in one time bucket"),
    KeyFamily("counts_minute", re.compile(_T + r"cnt:m:\d+$"), "hash event_type -> count, one tenant-minute"),
    KeyFamily("counts_hour", re.compile(_T + r"cnt:h:\d+$"), "hash event_type -> count, one tenant-hour"),
    KeyFamily("counts_day", re.compile(_T + r"cnt:d:\d+$"), "hash event_type -> count, one tenant-day"),
    KeyFamily("uniques_hour", re.compile(_T + r"uv:h:\d+$"), "HyperLogLog of anonymous_ids, one tenant-hour"),
    KeyFamily("top_pages_hour", re.compile(_T + r"top:h:\d+$"), "sorted set path -> page views, one tenant-hour"),
    KeyFamily("top_pages_day", re.compile(_T + r"top:d:\d+$"), "sorted set path -> page views, one tenant-day"),
    KeyFamily("segment_members", re.compile(_T + r"seg:[^:]+$"), "sorted set anonymous_id -> member until (ms), per rule"),
    KeyFamily("segment_state", re.compile(_T + r"segst:[^:]+:-?\d+$"), "hash anonymous_id -> newest hits, per rule and window bucket"),
    KeyFamily("applied_markers", re.compile(_T + r"applied:[^:]+:.+$"), "hash {token, seq} per tenant, group and shard"),
    KeyFamily("suppressed_counts", re.compile(_T + r"sup:m:\d+$"), "hash event_type -> suppressed events, one tenant-minute"),
    KeyFamily("suppression", re.compile(_T + r"suppress(:ver)?$"), "a tenant's suppression list and its version"),
    KeyFamily("dead_letters", re.compile(r"tally:\{([a-z0-9][a-z0-9_-]{0,63}|" + UNATTRIBUTED_TAG + "|" + DEAD_LETTER_TAG
                                         + r")\}:dl:"), "dead letters per tenant tag: entries, pending and written sets, counts, the tag index"),
    KeyFamily("positions", re.compile(r"tally:\{_pos\d+\}:pos:"), "a shard's position floor on one node (hash token, seq)"),
    KeyFamily("ops", re.compile(r"tally:\{" + OPS_TAG + r"\}:"), "consumer lag per shard, latency histograms per minute"),
    KeyFamily("api_keys", re.compile(r"tally:\{" + API_KEYS_TAG + r"\}:"), "hashed API keys"),
)
OTHER_FAMILY = "other"


def family_of(key: str | bytes) -> str:
    """The name of the family a key belongs to (:data:`FAMILIES`), or ``"other"``."""
    text = key.decode() if isinstance(key, bytes) else key
    for family in FAMILIES:
        if family.pattern.match(text):
            return family.name
    return OTHER_FAMILY
