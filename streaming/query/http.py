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
from typing import Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.background import BackgroundTask
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from streaming import metrics
from streaming.query import contract
from streaming.query.api import QueryError, SpeedQueries
from streaming.query.apikeys import tenant_for
from streaming.speed.keys import BadTenant, check_tenant

UTC = dt.timezone.utc
T = TypeVar("T")
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


def _params(request: Request, query: type[T]) -> T:
    """The query string as the route's parameter type (:mod:`streaming.query.contract`); 400 naming the
    parameter when a value does not fit it. Parameters the route does not take are ignored."""
    try:
        return msgspec.convert(dict(request.query_params), query, strict=False)
    except msgspec.ValidationError as exc:
        raise HttpError(400, f"bad query parameter: {exc}") from None


def _time(raw: str | None, name: str, default: dt.datetime) -> dt.datetime:
    if raw is None:
        return default
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise HttpError(400, f"`{name}` must be an ISO-8601 timestamp") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _range(params: contract.TimeRange) -> tuple[dt.datetime, dt.datetime]:
    end = _time(params.end, "end", dt.datetime.now(UTC))
    start = _time(params.start, "start", end - dt.timedelta(hours=1))
    return start, end


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
    params = _params(request, contract.CountsQuery)
    start, end = _range(params)
    result = _queries(request).counts(tenant, start, end, params.event_type).as_dict()
    if params.resolution:
        result["series"] = _queries(request).series(tenant, start, end, params.resolution)
    return result


async def uniques(request: Request) -> dict[str, Any]:
    tenant = _tenant(request)
    start, end = _range(_params(request, contract.TimeRange))
    return {"tenant": tenant, "start": start.isoformat(), "end": end.isoformat(),
            "unique_visitors": _queries(request).uniques(tenant, start, end)}


async def top_pages(request: Request) -> dict[str, Any]:
    tenant = _tenant(request)
    params = _params(request, contract.TopPagesQuery)
    start, end = _range(params)
    pages = _queries(request).top_pages(tenant, start, end, params.limit)
    return {"tenant": tenant, "start": start.isoformat(), "end": end.isoformat(),
            "pages": [{"path": p, "views": n} for p, n in pages]}


async def segment_members(request: Request) -> dict[str, Any]:
    tenant = _tenant(request)
    params = _params(request, contract.MembersQuery)
    at = _time(params.at, "at", dt.datetime.now(UTC))
    segment = request.path_params["segment"]
    return {"tenant": tenant, "segment": segment, "at": at.isoformat(),
            "members": _queries(request).segment_members(tenant, segment, at, params.limit)}


async def segments(request: Request) -> dict[str, Any]:
    tenant = _tenant(request)
    at = _time(_params(request, contract.AtQuery).at, "at", dt.datetime.now(UTC))
    return {"tenant": tenant, "at": at.isoformat(), "segments": _queries(request).segment_sizes(tenant, at)}


async def dashboard(request: Request) -> HTMLResponse:
    """The live dashboard page; it calls the API above with the key the user gives it."""
    return HTMLResponse(DASHBOARD_HTML.read_text(encoding="utf-8"))


async def lag(request: Request) -> dict[str, Any]:
    _authorize(request, None)
    return {"shards": _queries(request).consumer_lag()}


async def latency(request: Request) -> dict[str, Any]:
    _authorize(request, None)
    start, end = _range(_params(request, contract.TimeRange))
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
        user_id = msgspec.json.decode(await request.body(), type=contract.ForgetBody).user_id
    except msgspec.DecodeError:
        raise HttpError(400, "the body must be JSON with `user_id` (a string): {\"user_id\": \"...\"}") from None
    eraser = request.app.state.privacy.eraser
    try:
        created = eraser.create(tenant, user_id, requested_by="http")
    except BadRequest as exc:
        raise HttpError(400, str(exc)) from None
    location = f"/v1/tenants/{tenant}/forget/{created.request_id}"
    accepted = contract.ForgetAccepted(request_id=created.request_id, status=created.status, status_url=location)
    return JSONResponse(msgspec.to_builtins(accepted), status_code=202, headers={"Location": location},
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


def _endpoint(fn: Any, answer_type: type) -> Any:
    """The JSON endpoint ``fn`` with its errors answered, counted and timed (route label: ``fn``'s name).
    A dict ``fn`` returns is converted to ``answer_type`` first: an answer that does not fit the type
    the OpenAPI document names for it fails loudly (500) instead of drifting from the document."""
    exported = metrics.query()
    duration = exported.duration.labels(fn.__name__)

    async def answer(request: Request) -> JSONResponse:
        try:
            answer = await fn(request)
            if isinstance(answer, JSONResponse):
                return answer
            return JSONResponse(msgspec.to_builtins(msgspec.convert(answer, answer_type)))
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


#: The API's routes: what each takes and answers (the OpenAPI document is generated from these).
OPERATIONS: list[tuple[contract.Operation, Any]] = [
    (contract.Operation("/v1/tenants/{tenant}/counts", "Events per type in a range", contract.CountsAnswer,
                        query=contract.CountsQuery), counts),
    (contract.Operation("/v1/tenants/{tenant}/uniques", "Unique visitors in a range (HyperLogLog, hour resolution)",
                        contract.UniquesAnswer, query=contract.TimeRange), uniques),
    (contract.Operation("/v1/tenants/{tenant}/top-pages", "Most viewed paths in a range", contract.TopPagesAnswer,
                        query=contract.TopPagesQuery), top_pages),
    (contract.Operation("/v1/tenants/{tenant}/segments", "Every segment with its live member count",
                        contract.SegmentsAnswer, query=contract.AtQuery), segments),
    (contract.Operation("/v1/tenants/{tenant}/segments/{segment}/members", "Live members of a behavioural segment",
                        contract.MembersAnswer, query=contract.MembersQuery), segment_members),
    (contract.Operation("/v1/tenants/{tenant}/forget",
                        "Ask to forget a user of the tenant everywhere (GDPR/CCPA); runs in the background",
                        contract.ForgetAccepted, method="post", body=contract.ForgetBody, status=202), forget),
    (contract.Operation("/v1/tenants/{tenant}/forget/{request_id}", "A deletion request's progress and audit record",
                        contract.ForgetStatus), forget_status),
    (contract.Operation("/v1/ops/lag", "MillisBehindLatest per consumer group and shard", contract.LagAnswer,
                        tenant_scoped=False), lag),
    (contract.Operation("/v1/ops/latency", "Event-to-counter latency percentiles", contract.LatencyAnswer,
                        query=contract.TimeRange, tenant_scoped=False), latency),
]


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document served at /openapi.json, generated from :data:`OPERATIONS`' types."""
    return contract.document([op for op, _ in OPERATIONS], "tally real-time query API", "1")


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.spec)


def create_app(client: Any, privacy: Privacy | None = None) -> Starlette:
    app = Starlette(routes=[
        Route("/openapi.json", openapi),
        Route("/metrics", prometheus_metrics),
        Route("/dashboard", dashboard),
        *(Route(op.path, _endpoint(fn, op.answer), methods=[op.method.upper()]) for op, fn in OPERATIONS),
    ])
    app.state.client = client
    app.state.queries = SpeedQueries(client)
    app.state.spec = openapi_spec()
    app.state.privacy = privacy or Privacy()
    return app
