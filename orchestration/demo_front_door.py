"""`make demo` through the front door: the generator's traffic as Segment batch requests to the collector,
and the exact ledger of what the collector acknowledged.

The generator still draws the traffic (Zipf tenants, funnels, duplicates, malformed input); each of its
events becomes the Segment message an SDK would send (``messageId`` = its event id, ``timestamp`` = its
client time), batched per tenant (a write key is one tenant) and posted to ``/v1/batch``. The collector
gives ``received_at`` from its own clock, so the generator's minutes cannot be kept; the ledger is built
from the answers instead: each 200 says the request's ``received_at`` and which messages were refused
and why, so the ledger holds, per tenant × event type × minute, exactly the events acknowledged (an
``event_id`` counted at its first acknowledgement, which is the copy every layer keeps: the earliest),
and per reason the dead letters. The generator's stream-level malformations (bad UTF-8, bad tenant ids...)
cannot pass through a collector; its malformed records become the invalid messages an SDK user can send
(every reason the collector can answer). Its late events are sent when they are due, and are not late:
the collector's clock has no past.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from streaming.generator import GeneratedRecord, Ledger

#: The demo's event map: the generator's clicks and form submits are `track` calls with these names.
EVENT_MAP = "'*': {Element Clicked: click, Form Submitted: form_submit}\n"
BATCH = 100
_BAD = [
    ("unknown_message_type", lambda i: {"type": "purchase", "anonymousId": f"anon-bad-{i}"}),
    ("missing_field", lambda i: {"type": "track", "event": "Signed Up"}),
    ("wrong_type", lambda i: {"type": "page", "anonymousId": f"anon-bad-{i}", "properties": ["/"]}),
    ("invalid_value", lambda i: {"type": "track", "event": "E", "anonymousId": f"anon-bad-{i}", "timestamp": "noon"}),
    ("invalid_json", lambda i: f"not a message {i}"),
    ("oversized", lambda i: {"type": "track", "event": "E", "anonymousId": f"anon-bad-{i}",
                             "properties": {"blob": "x" * 40_000}}),
]


def to_message(record: GeneratedRecord, n: int) -> tuple[str | None, Any, str | None]:
    """(tenant or None for any, the Segment message, the envelope type it should become or None if invalid)."""
    if record.kind == "malformed":
        reason, make = _BAD[n % len(_BAD)]
        return None, make(n), None
    doc = json.loads(record.data)
    etype, props = doc["event_type"], dict(doc.get("properties") or {})
    base = {"messageId": doc["event_id"], "anonymousId": doc["anonymous_id"], "timestamp": doc["occurred_at"]}
    if doc.get("user_id"):
        base["userId"] = doc["user_id"]
    if etype == "page_view":
        message = {"type": "page", **base, "properties": props}
    elif etype == "identify":
        message = {"type": "identify", **base, "traits": props.get("traits", {})}
    elif etype == "click":
        message = {"type": "track", "event": "Element Clicked", **base, "properties": props}
    elif etype == "form_submit":
        message = {"type": "track", "event": "Form Submitted", **base, "properties": props}
    else:
        message = {"type": "track", "event": props.get("name", "custom"), **base, "properties": props}
    return doc["tenant_id"], message, etype


@dataclass
class AckLedger:
    """What the collector acknowledged, as a generator :class:`Ledger` (so the summary compares alike)."""

    ledger: Ledger = field(default_factory=lambda: Ledger(config={"through": "collector"}))
    seen: set[str] = field(default_factory=set)
    requests: int = 0
    retries: int = 0

    def record(self, tenant: str, batch: list[tuple[Any, str | None]], answer: dict[str, Any]) -> None:
        minute = answer["received_at"][:16] + ":00Z"
        refused = {r["index"]: r["reason"] for r in answer.get("rejections", [])}
        led = self.ledger
        for index, (message, etype) in enumerate(batch):
            led.records_total += 1
            if index in refused:
                led.dead_letters[refused[index]] = led.dead_letters.get(refused[index], 0) + 1
                continue
            assert etype is not None, f"the collector accepted a message meant to be refused: {message}"
            if message["messageId"] in self.seen:
                led.duplicates += 1
                continue
            self.seen.add(message["messageId"])
            led.valid_events += 1
            by_minute = led.counts.setdefault(tenant, {}).setdefault(etype, {})
            by_minute[minute] = by_minute.get(minute, 0) + 1


class FrontDoor:
    """Posts batches to the collector with each tenant's write key, retrying as an SDK does."""

    def __init__(self, url: str, keys: dict[str, str], on_sent: Callable[[int], None]) -> None:
        self.url = url.rstrip("/") + "/v1/batch"
        self.keys = keys
        self.on_sent = on_sent
        self.acks = AckLedger()
        self.session = requests.Session()
        self.buffers: dict[str, list[tuple[Any, str | None]]] = {}
        self._any = 0

    def add(self, record: GeneratedRecord) -> None:
        tenant, message, etype = to_message(record, self._any)
        if tenant is None:  # an invalid message: the tenants' keys take turns sending them
            tenants = sorted(self.keys)
            tenant = tenants[self._any % len(tenants)]
            self._any += 1
        buffer = self.buffers.setdefault(tenant, [])
        buffer.append((message, etype))
        if len(buffer) >= BATCH:
            self.flush(tenant)

    def flush(self, tenant: str | None = None) -> None:
        for t in [tenant] if tenant is not None else list(self.buffers):
            batch = self.buffers.pop(t, [])
            if batch:
                self._post(t, batch)

    def _post(self, tenant: str, batch: list[tuple[Any, str | None]]) -> None:
        body = json.dumps({"batch": [m for m, _ in batch]})
        while True:
            try:
                answer = self.session.post(self.url, data=body, auth=(self.keys[tenant], ""), timeout=30,
                                           headers={"Content-Type": "application/json"})
            except requests.RequestException:
                self.acks.retries += 1
                time.sleep(0.5)
                continue
            if answer.status_code == 200:
                break
            if answer.status_code in (429, 503) or answer.status_code >= 500:
                self.acks.retries += 1
                time.sleep(min(5.0, float(answer.headers.get("Retry-After", "1"))))
                continue
            raise RuntimeError(f"the collector answered {answer.status_code}: {answer.text[:300]}")
        self.acks.requests += 1
        self.acks.record(tenant, batch, answer.json())
        self.on_sent(len(batch))


def create_keys(settings: Any, tenants: list[str], collector_url: str, timeout_s: float = 60.0) -> dict[str, str]:
    """A write key per tenant (the demo's SDK users), once the collector has read them (it re-reads the
    key table every TALLY_COLLECTOR_KEYS_REFRESH_S)."""
    from orchestration.commands.collector import create_write_key

    keys = {t: create_write_key(settings, t) for t in tenants}
    deadline = time.monotonic() + timeout_s
    last = keys[tenants[-1]]
    while time.monotonic() < deadline:
        answer = requests.post(collector_url.rstrip("/") + "/v1/batch", json={"batch": []}, auth=(last, ""), timeout=10)
        if answer.status_code == 200:
            return keys
        time.sleep(0.2)
    raise RuntimeError(f"the collector at {collector_url} did not take the new write keys in {timeout_s:.0f} s")
