"""The suppression list: subjects (user ids and their stitched anonymous ids) whose new events no layer keeps.

Redis layout (a contract the speed layer and the archiver both read; the keys are built by
:mod:`streaming.speed.keys`):

- :func:`~streaming.speed.keys.suppression`, a hash ``subject_hash -> since_ms`` (epoch ms when the
  suppression started);
- :func:`~streaming.speed.keys.suppression_version`, an integer INCR'd in the same transaction as every
  change of that hash (add or lift), so a reader re-reads the hash only when the version moved.

Both keys share the tenant's hash tag, so one MULTI covers them on Redis Cluster too.

The counting rule, the same in every layer so the layers keep agreeing: an event whose ``user_id`` or
``anonymous_id`` is suppressed with ``since_ms`` S is *suppressed* (not counted; counted as suppressed
per tenant × event type × minute) iff its ``received_at`` >= S. An earlier-received event still counts
toward aggregates, but no layer keeps personal data about it (the archiver writes no line for it and
counts it as ``forgotten`` in the manifest; the speed layer writes no per-visitor state for it).

The rule and the subject hash are shared with the speed layer: :mod:`streaming.suppression`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streaming.speed import keys
from streaming.suppression import earliest_since, subject_hash

__all__ = ["SuppressionCache", "add", "entries", "lift", "subject_hash"]  # subject_hash: what the lists hold


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def add(client: Any, tenant: str, hashes: Iterable[str], since_ms: int) -> int:
    """Suppress ``hashes`` from ``since_ms`` on; an existing entry keeps its earlier start. Returns how
    many entries are new. Idempotent: a second call changes nothing and does not bump the version."""
    hashes = sorted(set(hashes))
    if not hashes:
        return 0
    key = keys.suppression(tenant)
    current = client.hmget(key, hashes)
    todo = {h: since_ms for h, have in zip(hashes, current, strict=True) if have is None or int(have) > since_ms}
    if not todo:
        return 0
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, mapping=todo)
    pipe.incr(keys.suppression_version(tenant))
    pipe.execute()
    return sum(1 for h, have in zip(hashes, current, strict=True) if have is None)


def lift(client: Any, tenant: str, hashes: Iterable[str]) -> int:
    """End the suppression of ``hashes``; returns how many were suppressed."""
    hashes = sorted(set(hashes))
    if not hashes:
        return 0
    pipe = client.pipeline(transaction=True)
    pipe.hdel(keys.suppression(tenant), *hashes)
    pipe.incr(keys.suppression_version(tenant))
    removed, _ = pipe.execute()
    return int(removed)


def entries(client: Any, tenant: str) -> dict[str, int]:
    """Every suppressed subject hash of ``tenant`` with its since_ms."""
    return {_text(k): int(v) for k, v in client.hgetall(keys.suppression(tenant)).items()}


@dataclass
class _TenantList:
    version: int
    since: dict[str, int]


@dataclass
class SuppressionCache:
    """A reader's copy of the suppression lists, checked against the list version once per batch.

    Call :meth:`begin_batch` at the start of every batch: the first :meth:`since` of a tenant in the
    batch then reads its version (and the hash only if the version moved). :meth:`refresh` does that
    for known tenants in one pipelined round trip (what a caller that has grouped by tenant uses).
    """

    client: Any
    salt: str = ""
    _lists: dict[str, _TenantList] = field(default_factory=dict)
    _checked: set[str] = field(default_factory=set)

    def begin_batch(self) -> None:
        self._checked = set()

    def refresh(self, tenants: Iterable[str]) -> None:
        tenants = sorted(set(tenants) - self._checked)
        if not tenants:
            return
        pipe = self.client.pipeline(transaction=False)
        for tenant in tenants:
            pipe.get(keys.suppression_version(tenant))
        versions = [int(v) if v is not None else 0 for v in pipe.execute()]
        stale = [(t, v) for t, v in zip(tenants, versions, strict=True)
                 if t not in self._lists or self._lists[t].version != v]
        if not stale:
            return
        pipe = self.client.pipeline(transaction=False)
        for tenant, _ in stale:
            pipe.hgetall(keys.suppression(tenant))
        for (tenant, version), found in zip(stale, pipe.execute(), strict=True):
            self._lists[tenant] = _TenantList(version, {_text(k): int(v) for k, v in found.items()})
        self._checked.update(tenants)

    def since(self, tenant: str, user_id: str | None, anonymous_id: str | None) -> int | None:
        """The earliest since_ms of the event's suppressed identifiers, or None if neither is suppressed."""
        if tenant not in self._checked:
            self.refresh([tenant])
        listed = self._lists.get(tenant)
        if listed is None or not listed.since:
            return None
        return earliest_since(listed.since, tenant, user_id, anonymous_id, self.salt)
