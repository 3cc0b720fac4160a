"""A legacy collector stand-in for `make demo-migration`: the HTTP endpoint tally's collector forwards to, and
a lossy pipeline behind it that counts into PostgreSQL (the same ``legacy_events`` table and names as
:mod:`streaming.migration.standin`), with its ledger of what it lost and double counted.

It reads the forwarded Segment requests as the old pipeline would (the write key names the tenant: the
legacy and tally know the same keys), classifies each message with tally's own mapping (a stand-in: the
point is what it loses, not how it names), counts each event once, and sheds load: of the events that
arrive in a second in which it has already taken ``peak_per_s``, it drops ``drop_rate``; it counts
``double_rate`` of the rest twice. Rows are stamped with its own clock (``received_at``) and ``counted_at``
``late_minutes`` later.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import random
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streaming.collector.segment import Envelope, EventMap, map_message
from streaming.migration.standin import EVENT_NAMES, LegacyLedger, StandInConfig, legacy_tenant, write_postgres

UTC = dt.timezone.utc
MAX_MESSAGE_BYTES = 32_768


class LegacyCollector:
    """``start()`` serves on a free loopback port (``url``); ``stop()`` flushes the last rows and stops."""

    def __init__(self, dsn: str, tenant_for: Callable[[str], str | None], event_map: EventMap,
                 config: StandInConfig, peak_per_s: int = 150) -> None:
        self.dsn = dsn
        self.tenant_for = tenant_for
        self.event_map = event_map
        self.config = config
        self.peak_per_s = peak_per_s
        self.ledger = LegacyLedger({**config.__dict__, "peak_per_s": peak_per_s})
        self.port = 0  # the kernel picks a free one when start() binds
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self._rows: list[tuple[Any, ...]] = []
        self._seen: set[str] = set()
        self._second = (0, 0)  # (epoch second, events taken in it)
        self._server: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="legacy-writer", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LegacyCollector:
        legacy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = legacy.take(self.path, dict(self.headers.items()), body)
                answer = b'{"success": true}' if status == 200 else b'{"success": false}'
                self.send_response(status)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="legacy-http", daemon=True).start()
        self._writer.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._stop.set()
        self._writer.join(timeout=30)
        self._flush()

    def take(self, path: str, headers: dict[str, str], body: bytes) -> int:
        """Count one forwarded request; 503 while its write key is not known yet (tally's forwarder retries)."""
        key = _basic_user(headers.get("Authorization") or headers.get("authorization") or "")
        if (headers.get("Content-Encoding") or headers.get("content-encoding") or "").lower() == "gzip":
            body = gzip.decompress(body)
        doc = json.loads(body)
        key = key or (doc.get("writeKey") if isinstance(doc, dict) else None)
        tenant = self.tenant_for(key) if key else None
        if tenant is None:
            return 503
        messages = doc.get("batch", []) if path.split("?")[0] in ("/v1/batch", "/v1/import") else [doc]
        implied = None if path.split("?")[0] in ("/v1/batch", "/v1/import") else path.split("?")[0].rsplit("/", 1)[-1]
        now = time.time()
        received = dt.datetime.fromtimestamp(now, tz=UTC)
        stamp = received.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        with self._lock:
            for message in messages:
                if len(json.dumps(message)) > MAX_MESSAGE_BYTES:  # refused, as Segment's (and tally's) 32 KB limit
                    continue
                envelope = map_message(message, tenant, stamp, self.event_map, None, implied)
                if not isinstance(envelope, Envelope) or envelope.doc["event_id"] in self._seen:
                    continue
                event_id, etype = envelope.doc["event_id"], envelope.doc["event_type"]
                self._seen.add(event_id)
                cell = {"event_id": event_id, "tenant_id": tenant, "event_type": etype, "hour": int(now) // 3600}
                second, taken = self._second
                taken = taken + 1 if second == int(now) else 1
                self._second = (int(now), taken)
                if taken > self.peak_per_s and self._rng.random() < self.config.drop_rate:
                    self.ledger.lost.append(cell)
                    continue
                row = (event_id, legacy_tenant(tenant), EVENT_NAMES[etype], received,
                       received + dt.timedelta(minutes=self.config.late_minutes))
                self._rows.append(row)
                if self._rng.random() < self.config.double_rate:
                    self._rows.append(row)
                    self.ledger.double_counted.append(cell)
        return 200

    def _write_loop(self) -> None:
        while not self._stop.wait(0.5):
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
        if rows:
            write_postgres(self.dsn, rows)
            self.ledger.counted += len(rows)


def _basic_user(value: str) -> str | None:
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        return base64.b64decode(token.strip()).decode().partition(":")[0] or None
    except ValueError:
        return None
