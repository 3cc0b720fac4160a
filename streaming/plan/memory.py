"""Redis memory of the speed layer, per key family, from the bytes the memory benchmark measured.

For each family of ``streaming.speed.keys.FAMILIES`` the model counts the keys that are alive and the
elements they hold, for each tenant (its share of the traffic on a Zipf curve), over the time its keys
live (its TTL, or the elapsed time of a run that has not reached it), then prices them with the
benchmark's ``memory_<family>_<encoding>_key_bytes + member_bytes x elements`` for the encoding Redis
picks at that size (listpack up to ``memory_listpack_max_entries`` elements). The sum is scaled by
``memory_used_per_usage_ratio`` (what ``INFO memory`` grows by over the sum of ``MEMORY USAGE``).

Counts are expectations: a tenant with ``n`` events in a minute has a minute key with probability
``1 - exp(-n)`` and ``sum_t 1 - exp(-n x share_t)`` event types in it. Visitors: ``events per
visitor-hour`` (measured on the generator's traffic unless given) turns events into visitor-hours; a
visitor is assumed new in every hour (an upper bound for the families that hold visitors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from streaming.events import EVENT_TYPES
from streaming.plan.figures import Figures
from streaming.plan.load import Load
from streaming.segments import SegmentRule, load_rules
from streaming.speed.keys import DEAD_LETTER_TAG, FAMILIES, OPS_TAG
from streaming.speed.ops import HISTOGRAM_TTL_S
from streaming.speed.store import DEDUP_BUCKETS, Retention

#: Families that grow with something other than traffic: deletion requests, API keys. Not modelled.
NOT_MODELLED = {
    "suppression": "grows with deletion requests (one hash field per forgotten subject), not with traffic",
    "suppressed_counts": "only events of forgotten subjects received after their request",
    "api_keys": "one hash field per API key",
    "positions": "one small hash per shard, consumer group and master node, whatever the traffic",
}


@dataclass(frozen=True)
class FamilyMemory:
    family: str
    keys: float
    elements: float
    bytes: float
    basis: str


@dataclass(frozen=True)
class RedisMemory:
    families: tuple[FamilyMemory, ...]
    ratio: float
    #: Bytes (before the ratio) per hash tag: each tenant's keys share ``{tenant}``, so on Redis Cluster they
    #: live in one slot, on one node; the dead letters and ops keys have their own tags.
    by_tag: dict[str, float]

    @property
    def usage_bytes(self) -> float:
        return sum(f.bytes for f in self.families)

    @property
    def used_bytes(self) -> float:
        """What ``INFO memory`` ``used_memory`` grows by: the families' bytes times the measured ratio."""
        return self.usage_bytes * self.ratio

    def of(self, family: str) -> FamilyMemory:
        return next(f for f in self.families if f.family == family)

    def tag_used_bytes(self) -> list[tuple[str, float]]:
        """Each hash tag's share of ``used_bytes``, largest first: what one Cluster node must hold at least."""
        return sorted(((tag, b * self.ratio) for tag, b in self.by_tag.items()), key=lambda kv: -kv[1])


def tenant_shares(tenants: int, skew: float) -> list[float]:
    weights = [1.0 / rank ** skew for rank in range(1, tenants + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def dedup_lifetime_s(horizon_s: int) -> tuple[float, float]:
    """(average, longest) life of an event_id in the dedup sets. The sets are buckets of
    ``L = ceil(horizon / DEDUP_BUCKETS)`` seconds by Redis's clock; ``apply.lua`` looks an id up in the
    current and ``DEDUP_BUCKETS`` previous buckets and sets each bucket to expire at
    ``(bucket + DEDUP_BUCKETS + 2) x L``: an id lives between ``(DEDUP_BUCKETS + 1) x L`` and
    ``(DEDUP_BUCKETS + 2) x L`` after it was added (tested against a real Redis's TTLs)."""
    bucket = math.ceil(horizon_s / DEDUP_BUCKETS)
    return (DEDUP_BUCKETS + 1.5) * bucket, (DEDUP_BUCKETS + 2) * bucket


class _Cost:
    """Bytes of one key holding ``n`` elements, per family, in the encoding Redis picks for ``n``."""

    def __init__(self, figures: Figures) -> None:
        self.f = figures
        self.listpack_max = figures("memory_listpack_max_entries")

    def fit(self, family: str, encoding: str, n: float) -> float:
        return self.f(f"memory_{family}_{encoding}_key_bytes") + self.f(f"memory_{family}_{encoding}_member_bytes") * n

    def collection(self, family: str, big: str, n: float) -> float:
        """A hash, set or sorted set: listpack while small, ``big`` past the listpack limit."""
        return self.fit(family, "listpack" if n <= self.listpack_max else big, n)

    def hll(self, cardinality: float) -> float:
        sparse = self.fit("uniques_hour", "sparse", cardinality)
        sparse_key = self.f("memory_uniques_hour_sparse_key_bytes")
        if sparse - sparse_key > self.f("memory_hll_sparse_max_bytes"):
            return self.f("memory_hll_dense_key_bytes")
        return sparse

    def pages(self, n: float) -> float:
        """Top pages: the workload's 8 paths are always a listpack; past the limit, the calibrated skiplist."""
        if n <= self.listpack_max:
            return self.fit("top_pages_hour", "listpack", n)
        return self.f("memory_zset_skiplist_key_bytes") + self.f("memory_zset_skiplist_member_bytes") * n


def _window(ttl_s: float, elapsed_s: float | None) -> float:
    return ttl_s if elapsed_s is None else min(ttl_s, elapsed_s)


def _buckets(window_s: float, bucket_s: float) -> float:
    return max(1.0, math.ceil(window_s / bucket_s))


def redis_memory(load: Load, figures: Figures, shards: int, elapsed_s: float | None = None,
                 rules: list[SegmentRule] | None = None, groups: int = 1) -> RedisMemory:
    """Redis memory for ``load`` on a stream of ``shards`` shards: in steady state (every family's TTL
    reached), or ``elapsed_s`` after an empty Redis started taking this load."""
    rules = load_rules() if rules is None else rules
    cost = _Cost(figures)
    retention = Retention(minute_s=load.speed_ttl_minute_s, hour_s=load.speed_ttl_hour_s, day_s=load.speed_ttl_day_s)
    shares = [figures(f"memory_workload_share_{t}") for t in EVENT_TYPES]
    epvh = load.events_per_visitor_hour or figures("memory_workload_events_per_visitor_hour")
    valid_per_s = load.events_per_day * (1 - load.malformed_rate) / 86_400
    tenant_rates = [valid_per_s * w for w in tenant_shares(load.tenants, load.tenant_skew)]
    families: list[FamilyMemory] = []
    tenant_bytes = [0.0] * load.tenants
    by_tag: dict[str, float] = {}

    def add(family: str, keys: float, elements: float, nbytes: float, basis: str) -> None:
        families.append(FamilyMemory(family, keys, elements, nbytes, basis))

    # dedup: every valid event_id, for its life in the bucketed sets (a hashtable set at any real rate).
    average, longest = dedup_lifetime_s(load.dedup_horizon_s)
    life = average if elapsed_s is None else min(elapsed_s, average)
    bucket_s = math.ceil(load.dedup_horizon_s / DEDUP_BUCKETS)
    ids = valid_per_s * life
    per_tenant_keys = _buckets(_window(longest, elapsed_s), bucket_s)
    keys_ = load.tenants * per_tenant_keys
    for i, rate in enumerate(tenant_rates):
        tenant_bytes[i] += (per_tenant_keys * cost.f("memory_dedup_hashtable_key_bytes")
                            + rate * life * cost.f("memory_dedup_hashtable_member_bytes"))
    add("dedup", keys_, ids, keys_ * cost.f("memory_dedup_hashtable_key_bytes") + ids * cost.f("memory_dedup_hashtable_member_bytes"),
        f"{ids:,.0f} ids alive ({life / 3600:.1f} h of valid events) x memory_dedup_hashtable_member_bytes")

    # counters per minute, hour, day: one small hash per tenant-bucket with events.
    for family, bucket, ttl in (("counts_minute", 60, retention.minute_s), ("counts_hour", 3_600, retention.hour_s),
                                ("counts_day", 86_400, retention.day_s)):
        window = _window(ttl, elapsed_s)
        keys_total = elements_total = bytes_total = 0.0
        for i, rate in enumerate(tenant_rates):
            n = rate * min(bucket, window)
            occupied = 1 - math.exp(-n)
            if occupied <= 0:
                continue
            types = sum(1 - math.exp(-n * s) for s in shares) / occupied
            k = occupied * _buckets(window, bucket)
            keys_total += k
            elements_total += k * types
            bytes_total += k * cost.collection(family, "hashtable", types)
            tenant_bytes[i] += k * cost.collection(family, "hashtable", types)
        add(family, keys_total, elements_total, bytes_total,
            f"tenant-{family.split('_')[1]}s with events over {window / 3600:,.1f} h x memory_{family}_listpack_*")

    # unique visitors: one HyperLogLog per tenant-hour; sparse while small, dense past hll-sparse-max-bytes.
    window = _window(retention.day_s, elapsed_s)
    keys_total = elements_total = bytes_total = 0.0
    for i, rate in enumerate(tenant_rates):
        n = rate * min(3_600, window)
        occupied = 1 - math.exp(-n)
        k = occupied * _buckets(window, 3_600)
        cardinality = n / epvh / max(occupied, 1e-12)
        keys_total += k
        elements_total += k * cardinality
        bytes_total += k * cost.hll(cardinality)
        tenant_bytes[i] += k * cost.hll(cardinality)
    add("uniques_hour", keys_total, elements_total, bytes_total,
        f"tenant-hours over {window / 86_400:,.1f} d; visitors = events / {epvh:.2f} (events per visitor-hour); "
        "memory_uniques_hour_sparse_* or memory_hll_dense_key_bytes")

    # top pages per hour (hour TTL) and day (day TTL): distinct paths reached by the page views.
    page_share = figures("memory_workload_share_page_view")
    for family, bucket, ttl in (("top_pages_hour", 3_600, retention.hour_s), ("top_pages_day", 86_400, retention.day_s)):
        window = _window(ttl, elapsed_s)
        keys_total = elements_total = bytes_total = 0.0
        for i, rate in enumerate(tenant_rates):
            views = rate * page_share * min(bucket, window)
            occupied = 1 - math.exp(-views)
            if occupied <= 0:
                continue
            paths = load.pages * (1 - math.exp(-views / load.pages)) / occupied
            k = occupied * _buckets(window, bucket)
            keys_total += k
            elements_total += k * paths
            bytes_total += k * cost.pages(paths)
            tenant_bytes[i] += k * cost.pages(paths)
        add(family, keys_total, elements_total, bytes_total,
            f"{load.pages} distinct paths; tenant-{family.split('_')[2]}s over {window / 86_400:,.1f} d")

    # segments: members and the per-visitor state of rules that need more than one hit. A member stays
    # until its membership ended TALLY_SPEED_SEGMENT_HISTORY_S before the bucket of its rule's newest hit:
    # the visitors whose last qualifying hit is within history + a window, + up to a window of bucket.
    members_total = members_bytes = members_keys = 0.0
    states_total = states_bytes = states_keys = 0.0
    for rule in rules:
        member_rate = figures(f"memory_workload_segment_{rule.name}_members_per_visitor_hour")
        state_rate = figures(f"memory_workload_segment_{rule.name}_states_per_visitor_hour")
        window_s = rule.window_hours * 3_600
        member_window = _window(min(retention.day_s, load.speed_segment_history_s + 2 * window_s), elapsed_s)
        # A state hash per window-long bucket expires 2 windows + 60 s after its last write: about 2.5
        # windows of visitors are alive in the current bucket and the two before it.
        state_window = _window(2.5 * window_s + 60, elapsed_s)
        for i, rate in enumerate(tenant_rates):
            visitor_hours_per_s = rate / epvh
            members = member_rate * visitor_hours_per_s * member_window
            if members > 0:
                members_keys += 1
                members_total += members
                members_bytes += cost.collection("segment_members", "skiplist", members)
                tenant_bytes[i] += cost.collection("segment_members", "skiplist", members)
            states = state_rate * visitor_hours_per_s * state_window
            if rule.min_count > 1 and states > 0:
                buckets = min(3.0, _buckets(state_window, window_s))
                states_keys += buckets
                states_total += states
                states_bytes += buckets * cost.collection("segment_state", "hashtable", states / buckets)
                tenant_bytes[i] += buckets * cost.collection("segment_state", "hashtable", states / buckets)
    add("segment_members", members_keys, members_total, members_bytes,
        f"{len(rules)} rules; members per visitor-hour as measured, kept TALLY_SPEED_SEGMENT_HISTORY_S "
        f"({load.speed_segment_history_s / 3_600:,.0f} h) + up to two windows after their membership ended")
    add("segment_state", states_keys, states_total, states_bytes,
        "rules with min_count > 1; states per visitor-hour as measured, ~2.5 windows alive")

    # applied markers: one per tenant, consumer group and shard it has events on.
    window = _window(retention.marker_s, elapsed_s)
    markers = groups * sum(shards * (1 - math.exp(-rate * window / shards)) for rate in tenant_rates)
    for i, rate in enumerate(tenant_rates):
        tenant_bytes[i] += groups * shards * (1 - math.exp(-rate * window / shards)) * cost.fit("applied_markers", "listpack", 2)
    add("applied_markers", markers, 2 * markers, markers * cost.fit("applied_markers", "listpack", 2),
        f"tenants x {shards} shards x {groups} group(s) x memory_applied_markers_listpack_key_bytes")

    # dead letters: per tenant tag, trimmed on every write to their TTL, so each lives 1-2 TTLs (1.5 on average).
    window = _window(1.5 * load.dead_letter_days * 86_400, elapsed_s)
    letters = load.events_per_day / 86_400 * load.malformed_rate * window
    each = figures("memory_dead_letters_hashtable_member_bytes") + figures("memory_dead_letters_skiplist_member_bytes")
    total_rate = sum(tenant_rates) or 1.0
    for i, rate in enumerate(tenant_rates):
        tenant_bytes[i] += letters * each * rate / total_rate
    add("dead_letters", 4 * len(tenant_rates), letters, letters * each,
        f"{load.malformed_rate:.2%} of records kept ~{window / 86_400:,.1f} d x {each:,.0f} B each (the generator's mix "
        "of reasons), in each tenant's slot")

    # ops: a latency histogram per received minute (2-day TTL) and the lag hash.
    minutes = _buckets(_window(HISTOGRAM_TTL_S, elapsed_s), 60)
    by_tag[OPS_TAG] = minutes * cost.fit("ops", "listpack", 1) + cost.fit("ops", "listpack", shards)
    add("ops", minutes + 1, minutes + shards, by_tag[OPS_TAG],
        "one latency histogram per minute (2 d) and the lag per shard")

    modelled = {f.family for f in families} | set(NOT_MODELLED)
    missing = {f.name for f in FAMILIES} - modelled
    if missing:  # a family added to the key layout must be added here too
        raise AssertionError(f"key families without a memory model: {sorted(missing)}")
    by_tag.update({f"tenant #{i + 1}": b for i, b in enumerate(tenant_bytes)})
    return RedisMemory(tuple(families), figures("memory_used_per_usage_ratio"), by_tag)
