"""The collector's HTTP front: the Segment HTTP Tracking API as a plain ASGI application.

``POST /v1/track|page|screen|identify|group|alias`` (one message) and ``/v1/batch`` (``/v1/import``):
HTTP Basic with the tenant's write key as the user name, or the body's ``writeKey``. Bodies may be
``application/json`` or ``text/plain`` (``navigator.sendBeacon``), gzip-compressed or not; CORS preflight
is answered for every origin (write keys are public in browsers, as Segment's are).

A 200 means every message of the request is durable: an event in the spool (fsynced, unless
``TALLY_COLLECTOR_FSYNC=none``), or, for a message that cannot be an event, a dead-letter record in the
spool with its reason and raw bytes (listed in the answer). The spool's drainer forwards both to Kinesis.

Answers are Segment-shaped JSON: ``{"success": true, "accepted": n, "rejected": m, "received_at": t,
"rejections": [...]}`` (``received_at``: the time every event of the request was given, its minute);
errors ``{"code": ..., "message": ...}`` (the SDKs read both). 400: the body is not JSON / not gzip / not a
batch; 401: the write key is missing, unknown or revoked (one answer for all); 413: the body is over the
batch limit or, on a single-message route, over the message limit; 503 + Retry-After: the spool is full.

Plain ASGI rather than a framework: a request's work is the body, the key and the spool; routing is
a dict lookup, and the framework's per-request objects would be a third of a small request's cost.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from streaming.collector.forward import forward_request
from streaming.collector.segment import MESSAGE_TYPES, Envelope, EventMap, Refusal, map_message
from streaming.collector.spool import Spool, SpoolFull
from streaming.collector.writekeys import WriteKeys
from streaming.events import Reason, encode_rejected

log = logging.getLogger("tally.collector")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode
_UTC = dt.timezone.utc
_SINGLE = {f"/v1/{t}": t for t in MESSAGE_TYPES}
_BATCH = {"/v1/batch", "/v1/import"}


class _Batch(msgspec.Struct):
    batch: list[msgspec.Raw]
    writeKey: str | None = None  # noqa: N815 - Segment's field name
    context: dict[str, Any] | None = None


_decode_batch = msgspec.json.Decoder(_Batch).decode


@dataclass(frozen=True)
class Limits:
    max_batch_bytes: int = 512_000
    max_message_bytes: int = 32_768
    max_event_bytes: int = 65_536
    retry_after_s: int = 5


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


_UNAUTHORIZED = HttpError(401, "unauthorized", "missing, unknown or revoked write key: send it as the HTTP Basic "
                          "user name (password empty) or as `writeKey` in the body")


def _received_at(now: float) -> str:
    whole = int(now)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((now - whole) * 1000):03d}Z"


def _basic_user(value: bytes) -> str | None:
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"basic" or not token:
        return None
    try:
        user, _, _ = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user or None


class CollectorApp:
    """ASGI application; :meth:`startup` / :meth:`shutdown` run from the lifespan protocol."""

    def __init__(self, spool: Spool, keys: WriteKeys, event_map: EventMap, limits: Limits,
                 on_startup: Callable[[CollectorApp], None] | None = None,
                 on_shutdown: Callable[[CollectorApp], None] | None = None,
                 status: Callable[[], dict[str, Any]] | None = None, clock: Callable[[], float] = time.time,
                 forward: Spool | None = None) -> None:
        self.spool = spool
        #: The forward spool (TALLY_COLLECTOR_FORWARD_URL set): each accepted request is copied into it.
        self.forward = forward
        self.clock = clock
        self.keys = keys
        self.event_map = event_map
        self.limits = limits
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self._status = status or spool.status
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counts = {"requests": 0, "accepted": 0, "rejected": 0, "refused_full": 0, "unauthorized": 0,
                       "forward_spooled": 0, "forward_dropped": 0}
        #: Responses by HTTP status code (read by the metrics exporter).
        self.statuses: dict[int, int] = {}

    # -- lifespan ----------------------------------------------------------------------------------
    def startup(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.spool.on_group_durable = self._group_durable
        if self.forward is not None:
            self.forward.on_group_durable = self._group_durable
        if self._on_startup is not None:
            self._on_startup(self)

    def shutdown(self) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown(self)

    def _group_durable(self, waiters: list[Any], error: BaseException | None) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(_resolve, waiters, error)

    # -- ASGI ----------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and not scope["path"].startswith("/v1/"):
            await self._http(scope, receive, send)  # /health and unknown routes: not Tracking API answers
        elif kind == "http":
            async def counted(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    self.statuses[message["status"]] = self.statuses.get(message["status"], 0) + 1
                await send(message)

            await self._http(scope, receive, counted)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    log.exception("collector start failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        cors = [(b"access-control-allow-origin", origin or b"*"), (b"vary", b"Origin")]
        method, path = scope["method"], scope["path"]
        try:
            if method == "OPTIONS":
                requested = headers.get(b"access-control-request-headers", b"authorization, content-type, content-encoding")
                await _respond(send, 204, b"", cors + [
                    (b"access-control-allow-methods", b"POST, OPTIONS"), (b"access-control-allow-headers", requested),
                    (b"access-control-max-age", b"86400")])
                return
            if method == "GET" and path == "/health":
                await _respond(send, 200, _encode({"ok": True, **self._status()}), cors)
                return
            implied = _SINGLE.get(path)
            if implied is None and path not in _BATCH:
                raise HttpError(404, "not_found", f"no route {path}: POST /v1/batch, /v1/import or /v1/<type> "
                                f"with <type> one of {', '.join(MESSAGE_TYPES)}")
            if method != "POST":
                raise HttpError(405, "method_not_allowed", f"{path} takes POST")
            limit = self.limits.max_message_bytes if implied else self.limits.max_batch_bytes
            body, wire = await _read_body(receive, headers, limit)
            answer, tenant = await self._ingest(body, implied, headers.get(b"authorization"))
            if self.forward is not None:
                await self._copy_forward(tenant, forward_request(path, scope.get("query_string", b""), headers,
                                                                 wire, self.clock()))
            await _respond(send, 200, _encode(answer), cors)
        except HttpError as exc:
            await _respond(send, exc.status, _encode({"code": exc.code, "message": exc.message}), cors + list(exc.headers))

    # -- ingestion -------------------------------------------------------------------------------------
    async def _ingest(self, body: bytes, implied: str | None, authorization: bytes | None) -> tuple[dict[str, Any], str]:
        self.counts["requests"] += 1
        header_key = _basic_user(authorization) if authorization else None
        if authorization and header_key is None:
            self.counts["unauthorized"] += 1
            raise _UNAUTHORIZED
        tenant = self.keys.tenant_for(header_key) if header_key else None
        if header_key and tenant is None:
            self.counts["unauthorized"] += 1
            raise _UNAUTHORIZED
        batch_context: dict[str, Any] | None = None
        if implied is None:
            try:
                batch = _decode_batch(body)
            except msgspec.ValidationError as exc:
                raise HttpError(400, "bad_request", f"the body is not a Segment batch ({{\"batch\": [messages]}}): {exc}") from None
            except msgspec.DecodeError as exc:
                raise HttpError(400, "bad_request", f"the body is not JSON: {exc}") from None
            raws: list[bytes | msgspec.Raw] = list(batch.batch)
            body_key, batch_context = batch.writeKey, batch.context
        else:
            try:
                doc = _decode_any(body)
            except msgspec.DecodeError as exc:
                raise HttpError(400, "bad_request", f"the body is not JSON: {exc}") from None
            raws = [body]
            body_key = doc.get("writeKey") if isinstance(doc, dict) else None
        if body_key is not None:
            if not isinstance(body_key, str) or (header_key is not None and body_key != header_key):
                self.counts["unauthorized"] += 1
                raise _UNAUTHORIZED
            if tenant is None:
                tenant = self.keys.tenant_for(body_key)
        if tenant is None:
            self.counts["unauthorized"] += 1
            raise _UNAUTHORIZED
        if batch_context is not None and not isinstance(batch_context, dict):
            batch_context = None

        received_at = _received_at(self.clock())
        source_tail = b',"source_id":"' + self.spool.source_id.encode() + b'","source_seq":'
        builders: list[Callable[[int], tuple[str, bytes]]] = []
        rejections: list[dict[str, Any]] = []
        max_message, max_event = self.limits.max_message_bytes, self.limits.max_event_bytes
        for index, raw in enumerate(raws):
            outcome: Envelope | Refusal
            if len(raw) > max_message:
                outcome = Refusal(Reason.OVERSIZED, f"message of {len(raw)} bytes > limit {max_message}")
            else:
                outcome = map_message(_decode_any(raw) if implied is None else doc, tenant, received_at,
                                      self.event_map, batch_context, implied)
            if isinstance(outcome, Envelope):
                head = _encode(outcome.doc)[:-1] + source_tail
                if len(head) + 24 > max_event:
                    outcome = Refusal(Reason.OVERSIZED, f"the event would be {len(head) + 24} bytes > limit {max_event}")
                else:
                    builders.append(_event_builder(head, outcome.partition_key))
                    continue
            rejections.append({"index": index, "reason": outcome.reason.value, "detail": outcome.detail})
            builders.append(_rejection_builder(outcome, bytes(raw), tenant, self.spool.source_id, received_at))
        assert self._loop is not None
        done = self._loop.create_future()
        try:
            self.spool.append(tenant, builders, done)
        except SpoolFull as exc:
            self.counts["refused_full"] += 1
            retry = str(self.limits.retry_after_s).encode()
            raise HttpError(503, "spool_full", f"the collector's spool is full ({exc}); retry after "
                            f"{self.limits.retry_after_s} s", ((b"retry-after", retry),)) from None
        await done
        self.counts["accepted"] += len(builders) - len(rejections)
        self.counts["rejected"] += len(rejections)
        answer: dict[str, Any] = {"success": True, "accepted": len(builders) - len(rejections), "rejected": len(rejections),
                                  "received_at": received_at}
        if rejections:
            answer["rejections"] = rejections[:100]
        return answer, tenant


    async def _copy_forward(self, tenant: str, request: Any) -> None:
        """Put the accepted request into the forward spool and wait for its fsync (a 200 then means the
        legacy collector will get it too); a full or failed forward spool is counted, never refused."""
        assert self._loop is not None and self.forward is not None
        done = self._loop.create_future()
        data = request.encode()
        try:
            self.forward.append(tenant, [lambda seq: (request.path, data)], done)
            await done
        except (SpoolFull, HttpError) as exc:
            self.counts["forward_dropped"] += 1
            if self.counts["forward_dropped"] in (1, 10, 100) or self.counts["forward_dropped"] % 1000 == 0:
                log.error("forward: a request was acknowledged but not kept for the legacy collector (%s); %d so "
                          "far. Fix: bring the legacy collector back or raise TALLY_COLLECTOR_FORWARD_MAX_BYTES",
                          getattr(exc, "message", exc), self.counts["forward_dropped"])
            return
        self.counts["forward_spooled"] += 1


def _event_builder(head: bytes, key: str) -> Callable[[int], tuple[str, bytes]]:
    return lambda seq: (key, head + str(seq).encode() + b"}")


def _rejection_builder(refusal: Refusal, raw: bytes, tenant: str, source_id: str,
                       received_at: str) -> Callable[[int], tuple[str, bytes]]:
    return lambda seq: (f"{source_id}-{seq}", encode_rejected(refusal.reason, refusal.detail, raw, tenant, source_id,
                                                               seq, received_at))


def _resolve(waiters: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for fut in waiters:
        if fut.done():
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(HttpError(503, "spool_failed", f"the spool could not be written ({error}); retry",
                                        ((b"retry-after", b"5"),)))


async def _read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> tuple[bytes, bytes]:
    """The body (inflated) and the bytes as they came on the wire (what forwarding sends on)."""
    gzipped = headers.get(b"content-encoding", b"").strip().lower() == b"gzip"
    wire_limit = limit if not gzipped else limit + limit // 2 + 1024
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > wire_limit:
        raise HttpError(413, "payload_too_large", f"the body is {int(length)} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "bad_request", "the client went away before the body was complete")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > wire_limit:
            raise HttpError(413, "payload_too_large", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    body = wire = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if gzipped:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise HttpError(400, "bad_request", f"Content-Encoding is gzip but the body is not valid gzip ({exc})") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise HttpError(413, "payload_too_large", f"the body inflates to more than the limit of {limit} bytes")
    if len(body) > limit:
        raise HttpError(413, "payload_too_large", f"the body is {len(body)} bytes; the limit is {limit}")
    return body, wire


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
