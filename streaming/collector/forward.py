"""Forwarding to the legacy collector: every accepted request, unchanged, from a durable spool of its own.

While a team runs tally beside the pipeline it replaces, the SDKs keep one endpoint (tally's collector) and
the old pipeline keeps receiving exactly what it received before. The collector copies each request it
answered 200 for (after tally's own spool has it durably) into a second spool, ``<state dir>/forward/``,
with the same discipline as the first (:class:`~streaming.collector.spool.Spool`: group-committed fsync,
CRC frames, a torn tail cut on recovery); the copy is fsynced before the 200 goes out, so an acknowledged
request is never lost to the legacy pipeline. A :class:`Forwarder` thread sends the copies in order:

- same path and query, same body bytes (still gzip-compressed if the SDK compressed it), same
  ``Content-Type``, ``Content-Encoding`` and ``Authorization`` (the legacy collector authenticates its
  own write keys);
- a refused connection, a timeout, a 5xx, 408 or 429 is retried with exponential backoff (0.25 s doubling
  up to ``max_backoff_s``, jittered), for as long as it takes: the spool, not the retries, is bounded;
- another 4xx is the legacy collector refusing that request for good: it is counted (``rejected``),
  logged with its status, and the forwarder moves on (retrying it would stop every later request);
- the position (``forward/drained.json``) is rewritten (by a rename) after every acknowledged request, so
  a restarted collector resumes after the last request the legacy collector acknowledged; it is fsynced
  at most once a second.

The duplicates this cannot rule out: a collector killed after the legacy collector answered a request
and before the position was written (microseconds) sends that request again after its restart; after a
power loss, the requests of the last second before it are sent again.

The forward spool full (the legacy collector down for long): the request is still acknowledged (tally
has it; 503 is only for tally's own spool) and counted as ``dropped``; nothing waits on the legacy side.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streaming.collector.spool import BODY_HEAD, FRAME, Position, Spool, SpooledRecord, spool_status

log = logging.getLogger("tally.collector.forward")

#: The request headers that travel with a forwarded request (the rest describe tally's own connection).
FORWARDED_HEADERS = (b"content-type", b"content-encoding", b"authorization", b"user-agent")
_READ_BYTES = 4 * 1024 * 1024
_STATUS_FILE = "forward_status.json"


@dataclass(frozen=True)
class ForwardRequest:
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    accepted_at: float

    def encode(self) -> bytes:
        head = json.dumps({"p": self.path, "h": self.headers, "t": self.accepted_at}).encode()
        return len(head).to_bytes(4, "little") + head + self.body

    @classmethod
    def decode(cls, data: bytes) -> ForwardRequest:
        n = int.from_bytes(data[:4], "little")
        head = json.loads(data[4:4 + n])
        return cls(head["p"], tuple((k, v) for k, v in head["h"]), data[4 + n:], float(head["t"]))


def forward_request(path: str, query: bytes, headers: dict[bytes, bytes], body: bytes, now: float) -> ForwardRequest:
    """What to send the legacy collector for one accepted request (``body``: the bytes as received)."""
    target = path + ("?" + query.decode("latin-1") if query else "")
    kept = tuple((k.decode("latin-1"), headers[k].decode("latin-1")) for k in FORWARDED_HEADERS if k in headers)
    return ForwardRequest(target, kept, body, now)


def forward_spool(state_dir: Path, max_bytes: int, fsync: bool) -> Spool:
    """The forward spool: a :class:`Spool` in ``<state dir>/forward`` whose position is saved at every step."""
    return Spool(state_dir / "forward", max_bytes, fsync=fsync, drained_every_s=0.0, drained_sync_every_s=1.0)


@dataclass
class ForwarderStats:
    forwarded: int = 0
    failures: int = 0
    rejected: int = 0
    last_error: str = ""
    #: When the oldest request not yet forwarded was accepted (None: nothing waits).
    head_accepted_at: float | None = None
    by_status: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"forwarded": self.forwarded, "failures": self.failures, "rejected": self.rejected,
                "last_error": self.last_error, "lag_s": self.lag_s(), "at": time.time()}

    def lag_s(self) -> float:
        """Seconds the oldest request not yet forwarded has waited (0 when nothing waits)."""
        head = self.head_accepted_at
        return 0.0 if head is None else round(max(0.0, time.time() - head), 3)


class _Transient(Exception):
    """The legacy collector is down, slow or overloaded: try the same request again later."""


class Forwarder:
    """A thread: forward spool -> the legacy collector's URL, one request at a time, in order."""

    def __init__(self, spool: Spool, base_url: str, *, max_backoff_s: float = 30.0, timeout_s: float = 10.0) -> None:
        parts = urlsplit(base_url)
        self.spool = spool
        self.scheme, self.host, self.port = parts.scheme, parts.hostname or "", parts.port
        self.prefix = parts.path.rstrip("/")
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.stats = ForwarderStats()
        self._conn: http.client.HTTPConnection | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._rng = random.Random()
        self._last_status_write = 0.0

    def start(self) -> Forwarder:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        self._write_status(force=True)

    def _run(self) -> None:
        at = self.spool.drained
        while not self._stop.is_set():
            records, end = self.spool.read(at, 256, _READ_BYTES)
            if not records:
                self.stats.head_accepted_at = None
                self._write_status()
                if end != at:
                    self.spool.mark_drained(end, 0)
                    at = end
                    continue
                self.spool.wait_durable(at, 0.5)
                continue
            # One read's records come from one segment and end at ``end``: walk back to where they start.
            sizes = [_frame_size(r) for r in records]
            offset = end.offset - sum(sizes)
            for record, size in zip(records, sizes):
                if not self._deliver(record):
                    return
                offset += size
                at = Position(end.segment, offset)
                self.spool.mark_drained(at, 1)
                self._write_status()

    def _deliver(self, record: SpooledRecord) -> bool:
        """True once the legacy collector answered (2xx or a permanent 4xx); False if asked to stop."""
        request = ForwardRequest.decode(record.data)
        attempt = 0
        while True:
            self.stats.head_accepted_at = request.accepted_at
            try:
                status = self._send(request)
            except _Transient as exc:
                attempt += 1
                self.stats.failures += 1
                self.stats.last_error = str(exc)[:300]
                if attempt == 1 or attempt % 20 == 0:
                    log.warning("forward: the legacy collector did not take a request (%s); it stays in the forward "
                                "spool and is retried", exc)
                self._write_status()
                delay = min(self.max_backoff_s, 0.25 * 2 ** min(attempt - 1, 10))
                if self._stop.wait(self._rng.uniform(0.5, 1.0) * delay):
                    return False
                continue
            self.stats.by_status[str(status)] = self.stats.by_status.get(str(status), 0) + 1
            if 200 <= status < 300:
                self.stats.forwarded += 1
            else:
                self.stats.rejected += 1
                self.stats.last_error = f"the legacy collector answered {status} to {request.path}"
                log.error("forward: the legacy collector refused a request to %s with %d; not retried (a 4xx "
                          "is its answer for good)", request.path, status)
            return True

    def _send(self, request: ForwardRequest) -> int:
        try:
            conn = self._connection()
            conn.request("POST", self.prefix + request.path, body=request.body, headers=dict(request.headers))
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._close()
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        if response.status >= 500 or response.status in (408, 429):
            self._close()
            raise _Transient(f"HTTP {response.status}")
        if response.will_close:
            self._close()
        return response.status

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=self.timeout_s)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write_status(self, force: bool = False) -> None:
        """``forward_status.json`` for `tally stack status` (which reads the state directory, not the process)."""
        now = time.monotonic()
        if not force and now - self._last_status_write < 1.0:
            return
        self._last_status_write = now
        path = self.spool.state_dir / _STATUS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats.as_dict()))
        tmp.replace(path)


def _frame_size(record: SpooledRecord) -> int:
    return (FRAME.size + BODY_HEAD.size + len(record.tenant.encode()) + len(record.partition_key.encode())
            + len(record.data))


def forward_status(state_dir: Path) -> dict[str, Any] | None:
    """The forwarder's last written stats and its spool's depth, read from disk; None when never forwarding."""
    forward_dir = state_dir / "forward"
    if not forward_dir.exists():
        return None
    out: dict[str, Any] = dict(spool_status(forward_dir))
    path = forward_dir / _STATUS_FILE
    if path.exists():
        try:
            out.update(json.loads(path.read_text()))
        except ValueError:  # written by a rename, so whole; unreadable only if damaged: show the depth alone
            pass
    return out
