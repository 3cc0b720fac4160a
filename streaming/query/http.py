"""The HTTP query API (starlette): per-tenant API keys, JSON answers, an OpenAPI document.

Authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. A missing or unknown key is
401; a key for one tenant asking for another tenant's data is 403. Ops endpoints (lag, latency) carry no
tenant data and accept any valid key. ``/dashboard`` is a live page over these endpoints (the key stays
in the browser). Serve with ``tally serve`` (uvicorn on 127.0.0.1).

Deletion requests (``POST /v1/tenants/{t}/forget`` with ``{"user_id": ...}``, then
``GET /v1/tenants/{t}/forget/{request_id}``) are guarded by the same tenant key; the request runs in the
background and its status is the audit record, which holds no personal data.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.background import BackgroundTask
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from streaming import metrics
from streaming.events import TENANT_ID_PATTERN
from streaming.query.api import QueryError, SpeedQueries
from streaming.query.apikeys import tenant_for
from streaming.speed.keys import BadTenant, check_tenant

UTC = dt.timezone.utc
DASHBOARD_HTML = Path(__file__).with_name("static") / "dashboard.html"


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _api_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def _authorize(request: Request, tenant: str | None) -> str:
    """The caller's tenant; 401 without a valid key, 403 when the key's tenant is not ``tenant``."""
    owner = tenant_for(request.app.state.client, _api_key(request))
    if owner is None:
        raise HttpError(401, "missing or invalid API key")
    if tenant is not None and owner != tenant:
        raise HttpError(403, "this API key may not read that tenant's data")
    return owner


def _time(request: Request, name: str, default: dt.datetime) -> dt.datetime:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise HttpError(400, f"`{name}` must be an ISO-8601 timestamp") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _range(request: Request) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(UTC)
    end = _time(request, "end", now)
    start = _time(request, "start", end - dt.timedelta(hours=1))
    return start, end


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"`{name}` must be an integer") from None
    if not lo <= value <= hi:
        raise HttpError(400, f"`{name}` must be between {lo} and {hi}")
    return value


def _tenant(request: Request) -> str:
    tenant = request.path_params["tenant"]
    _authorize(request, tenant)
    try:
        return check_tenant(tenant)
    except BadTenant:
        raise HttpError(404, "no such tenant") from None


def _queries(request: Request) -> SpeedQueries:
    return request.app.state.queries


async def counts(request: Request) -> dict[str, Any]:
    tenant = _tenant(request)
    start, end = _range(request)
    resolution = request.query_params.get("resolution")
    result = _queries(request).counts(tenant, start, end, request.query_params.get("event_type")).as_dict()
    if resolution:
        result["series"] = _queries(request).series(tenant, start, end, resolution)
    return result


async def uniques(request: Request) -> dict[str, Any]:
    tenant = _tenant(request)
    start, end = _range(request)
    return {"tenant": tenant, "start": start.isoformat(), "end": end.isoformat(),
            "unique_visitors": _queries(request).uniques(tenant, start, end)}


async def top_pages(request: Request) -> dict[str, Any]:
    tenant = _tenant(request)
    start, end = _range(request)
    limit = _int(request, "limit", 10, 1, 1000)
    pages = _queries(request).top_pages(tenant, start, end, limit)
    return {"tenant": tenant, "start": start.isoformat(), "end": end.isoformat(),
            "pages": [{"path": p, "views": n} for p, n in pages]}


async def segment_members(request: Request) -> dict[str, Any]:
    tenant = _tenant(request)
    at = _time(request, "at", dt.datetime.now(UTC))
    limit = _int(request, "limit", 1000, 1, 100_000)
    segment = request.path_params["segment"]
    return {"tenant": tenant, "segment": segment, "at": at.isoformat(),
            "members": _queries(request).segment_members(tenant, segment, at, limit)}


async def segments(request: Request) -> dict[str, Any]:
    tenant = _tenant(request)
    at = _time(request, "at", dt.datetime.now(UTC))
    return {"tenant": tenant, "at": at.isoformat(), "segments": _queries(request).segment_sizes(tenant, at)}


async def dashboard(request: Request) -> HTMLResponse:
    """The live dashboard page; it calls the API above with the key the user gives it."""
    return HTMLResponse(DASHBOARD_HTML.read_text(encoding="utf-8"))


async def lag(request: Request) -> dict[str, Any]:
    _authorize(request, None)
    return {"shards": _queries(request).consumer_lag()}


async def latency(request: Request) -> dict[str, Any]:
    _authorize(request, None)
    start, end = _range(request)
    return {"start": start.isoformat(), "end": end.isoformat(), **_queries(request).latency(start, end)}


class Privacy:
    """Deletion requests for the API: the :class:`streaming.privacy.forget.Eraser` of the configured
    environment, built on first use (settings are read then, not when the app is made)."""

    def __init__(self, eraser: Any | None = None) -> None:
        self._eraser = eraser

    @property
    def eraser(self) -> Any:
        if self._eraser is None:
            from streaming.privacy.service import eraser_from_settings
            from streaming.settings import load_settings

            self._eraser = eraser_from_settings(load_settings())
        return self._eraser


async def forget(request: Request) -> JSONResponse:
    from streaming.privacy.subject import BadRequest

    tenant = _tenant(request)
    try:
        body = await request.json()
    except ValueError:
        raise HttpError(400, "the body must be JSON: {\"user_id\": \"...\"}") from None
    user_id = body.get("user_id") if isinstance(body, dict) else None
    if not isinstance(user_id, str):
        raise HttpError(400, "`user_id` (a string) is required")
    eraser = request.app.state.privacy.eraser
    try:
        created = eraser.create(tenant, user_id, requested_by="http")
    except BadRequest as exc:
        raise HttpError(400, str(exc)) from None
    location = f"/v1/tenants/{tenant}/forget/{created.request_id}"
    return JSONResponse({"request_id": created.request_id, "status": created.status, "status_url": location},
                        status_code=202, headers={"Location": location},
                        background=BackgroundTask(_run_quietly, eraser, created))


def _run_quietly(eraser: Any, created: Any) -> None:
    """Run a request after the 202; a failure is in its audit record (status failed, error)."""
    try:
        eraser.resume(created)
    except Exception:  # noqa: BLE001 - recorded in the request's audit record by the eraser
        pass


async def forget_status(request: Request) -> dict[str, Any]:
    from streaming.privacy.requests import BadRequest, UnknownRequest

    tenant = _tenant(request)
    try:
        return request.app.state.privacy.eraser.requests.load(tenant, request.path_params["request_id"]).to_json()
    except (UnknownRequest, BadRequest):
        raise HttpError(404, "no such deletion request for this tenant") from None


def _endpoint(fn: Any) -> Any:
    """The JSON endpoint ``fn`` with its errors answered, counted and timed (route label: ``fn``'s name)."""
    exported = metrics.query()
    duration = exported.duration.labels(fn.__name__)

    async def answer(request: Request) -> JSONResponse:
        try:
            answer = await fn(request)
            return answer if isinstance(answer, JSONResponse) else JSONResponse(answer)
        except HttpError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except QueryError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def wrapped(request: Request) -> JSONResponse:
        started = time.perf_counter()
        response = await answer(request)
        duration.observe(time.perf_counter() - started)
        exported.requests.labels(fn.__name__, str(response.status_code)).inc()
        return response

    wrapped.__name__ = fn.__name__
    return wrapped


async def prometheus_metrics(request: Request) -> Response:
    """Prometheus text exposition of this process's metrics (no tenant data: no key needed, like /openapi.json)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document served at /openapi.json."""
    tenant = {"name": "tenant", "in": "path", "required": True, "schema": {"type": "string", "pattern": TENANT_ID_PATTERN}}
    start = {"name": "start", "in": "query", "schema": {"type": "string", "format": "date-time"},
             "description": "inclusive; default end - 1 hour"}
    end = {"name": "end", "in": "query", "schema": {"type": "string", "format": "date-time"},
           "description": "exclusive; default now"}
    errors = {"400": {"description": "bad parameter"}, "401": {"description": "missing or invalid API key"},
              "403": {"description": "the key belongs to another tenant"}}

    def op(summary: str, params: list[dict[str, Any]], tenant_scoped: bool = True) -> dict[str, Any]:
        responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {}}}, **errors}
        if not tenant_scoped:
            responses.pop("403")
        return {"get": {"summary": summary, "parameters": params, "responses": responses,
                        "security": [{"bearer": []}, {"apiKey": []}]}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "tally real-time query API", "version": "1"},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }},
        "paths": {
            "/v1/tenants/{tenant}/counts": op("Events per type in a range", [
                tenant, start, end,
                {"name": "event_type", "in": "query", "schema": {"type": "string"}},
                {"name": "resolution", "in": "query", "schema": {"enum": ["m", "h", "d"]},
                 "description": "also return a series at this resolution"}]),
            "/v1/tenants/{tenant}/uniques": op("Unique visitors in a range (HyperLogLog, hour resolution)", [tenant, start, end]),
            "/v1/tenants/{tenant}/top-pages": op("Most viewed paths in a range", [
                tenant, start, end, {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 10}}]),
            "/v1/tenants/{tenant}/segments": op("Every segment with its live member count", [
                tenant, {"name": "at", "in": "query", "schema": {"type": "string", "format": "date-time"}}]),
            "/v1/tenants/{tenant}/segments/{segment}/members": op("Live members of a behavioural segment", [
                tenant, {"name": "segment", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "at", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 1000}}]),
            "/v1/tenants/{tenant}/forget": {"post": {
                "summary": "Ask to forget a user of the tenant everywhere (GDPR/CCPA); runs in the background",
                "parameters": [tenant],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["user_id"], "properties": {"user_id": {"type": "string"}}}}}},
                "responses": {"202": {"description": "accepted: request_id and status_url"}, **errors},
                "security": [{"bearer": []}, {"apiKey": []}]}},
            "/v1/tenants/{tenant}/forget/{request_id}": op("A deletion request's progress and audit record", [
                tenant, {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}]),
            "/v1/ops/lag": op("MillisBehindLatest per consumer group and shard", [], tenant_scoped=False),
            "/v1/ops/latency": op("Event-to-counter latency percentiles", [start, end], tenant_scoped=False),
        },
    }


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.spec)


def create_app(client: Any, privacy: Privacy | None = None) -> Starlette:
    app = Starlette(routes=[
        Route("/openapi.json", openapi),
        Route("/metrics", prometheus_metrics),
        Route("/v1/tenants/{tenant}/counts", _endpoint(counts)),
        Route("/v1/tenants/{tenant}/uniques", _endpoint(uniques)),
        Route("/v1/tenants/{tenant}/top-pages", _endpoint(top_pages)),
        Route("/v1/tenants/{tenant}/segments", _endpoint(segments)),
        Route("/v1/tenants/{tenant}/segments/{segment}/members", _endpoint(segment_members)),
        Route("/v1/tenants/{tenant}/forget", _endpoint(forget), methods=["POST"]),
        Route("/v1/tenants/{tenant}/forget/{request_id}", _endpoint(forget_status)),
        Route("/dashboard", dashboard),
        Route("/v1/ops/lag", _endpoint(lag)),
        Route("/v1/ops/latency", _endpoint(latency)),
    ])
    app.state.client = client
    app.state.queries = SpeedQueries(client)
    app.state.spec = openapi_spec()
    app.state.privacy = privacy or Privacy()
    return app
