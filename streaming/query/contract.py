"""The query API's contract as types: each route's query parameters, body and answer, and the OpenAPI
document generated from them.

The HTTP app (:mod:`streaming.query.http`) parses every query string and body into these types and
converts every answer into its route's answer type before it is sent, so a field the document does not
name cannot be answered and a parameter it does not describe cannot be read. The schemas are msgspec's
JSON Schema of the types (:func:`msgspec.json.schema_components`); nothing here is written by hand but
the summaries and the security schemes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from streaming.events import TenantId

#: Times are read with :meth:`datetime.fromisoformat` (``Z`` allowed; no zone means UTC).
DateTime = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]


# -- query parameters ---------------------------------------------------------------------------------

class TimeRange(Struct):
    start: Annotated[DateTime | None, Meta(description="inclusive; default end - 1 hour")] = None
    end: Annotated[DateTime | None, Meta(description="exclusive; default now")] = None


class CountsQuery(TimeRange):
    event_type: str | None = None
    resolution: Annotated[Literal["m", "h", "d"] | None,
                          Meta(description="also return a series at this resolution")] = None


class TopPagesQuery(TimeRange):
    limit: Annotated[int, Meta(ge=1, le=1000)] = 10


class AtQuery(Struct):
    at: Annotated[DateTime | None, Meta(description="default now")] = None


class MembersQuery(AtQuery):
    limit: Annotated[int, Meta(ge=1, le=100_000)] = 1000


class ForgetBody(Struct):
    user_id: str


# -- answers ------------------------------------------------------------------------------------------

class Bucket(Struct):
    bucket_start: DateTime
    by_event_type: dict[str, int]


class CountsAnswer(Struct, omit_defaults=True):
    tenant: str
    start: DateTime
    end: DateTime
    by_event_type: dict[str, int]
    total: int
    series: list[Bucket] | UnsetType = UNSET


class UniquesAnswer(Struct):
    tenant: str
    start: DateTime
    end: DateTime
    unique_visitors: int


class PageViews(Struct):
    path: str
    views: int


class TopPagesAnswer(Struct):
    tenant: str
    start: DateTime
    end: DateTime
    pages: list[PageViews]


class SegmentSize(Struct):
    name: str
    description: str
    members: int


class SegmentsAnswer(Struct):
    tenant: str
    at: DateTime
    segments: list[SegmentSize]


class MembersAnswer(Struct):
    tenant: str
    segment: str
    at: DateTime
    members: list[str]


class ForgetAccepted(Struct):
    request_id: str
    status: str
    status_url: str


class ForgetStatus(Struct):
    """A deletion request's audit record (:meth:`streaming.privacy.requests.Request.to_json`)."""

    request_id: str
    tenant: str
    subject: str
    since_ms: int
    requested_at: str
    requested_by: str
    status: str
    finished_at: str | None
    error: str | None
    steps: dict[str, Any]
    forgotten: list[Any]


class LagAnswer(Struct):
    shards: Annotated[dict[str, dict[str, Any]],
                      Meta(description='"<group>/<shard>" -> {millis_behind_latest, at, worker}')]


class LatencyAnswer(Struct):
    start: DateTime
    end: DateTime
    events: int
    p50_s: float | None
    p99_s: float | None
    histogram_ms: dict[str, int]


class ErrorAnswer(Struct):
    error: str


# -- the document -------------------------------------------------------------------------------------

#: The types of the path parameters, by name.
PATH_PARAMETERS: dict[str, Any] = {"tenant": TenantId, "segment": str, "request_id": str}
_PATH_PARAM = re.compile(r"\{(\w+)\}")
_ERRORS = {400: "bad parameter", 401: "missing or invalid API key", 403: "the key belongs to another tenant",
           404: "no such tenant or request"}


@dataclass(frozen=True)
class Operation:
    """One route of the API: what it takes and what it answers."""

    path: str
    summary: str
    answer: type
    method: str = "get"
    query: type | None = None
    body: type | None = None
    status: int = 200
    tenant_scoped: bool = True

    @property
    def path_parameters(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent, never null: ``anyOf [T, null]`` becomes T (its default kept)."""
    options = schema.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        out = {k: v for k, v in schema.items() if k != "anyOf"}
        if out.get("default", 0) is None:
            out.pop("default")
        return {**(rest[0] if len(rest) == 1 else {"anyOf": rest}), **out}
    return schema


def document(operations: list[Operation], title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``: components from the types, one entry per route."""
    types: list[Any] = [ErrorAnswer]
    for op in operations:
        types += [t for t in (op.query, op.body, op.answer) if t is not None]
    types += list(PATH_PARAMETERS.values())
    refs, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    ref_of = dict(zip(map(id, types), refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": ref_of[id(PATH_PARAMETERS[name])]}
            for name in op.path_parameters]
        if op.query is not None:
            fields = components[op.query.__name__]
            for name, schema in fields["properties"].items():
                schema = _without_null(schema)
                parameter = {"name": name, "in": "query", "required": name in fields.get("required", []),
                             "schema": {k: v for k, v in schema.items() if k != "description"}}
                if "description" in schema:
                    parameter["description"] = schema["description"]
                parameters.append(parameter)
        error = {"application/json": {"schema": ref_of[id(ErrorAnswer)]}}
        responses: dict[str, Any] = {str(op.status): {
            "description": "OK" if op.status == 200 else "accepted",
            "content": {"application/json": {"schema": ref_of[id(op.answer)]}}}}
        for code, text in _ERRORS.items():
            if code in (403, 404) and not op.tenant_scoped:
                continue
            responses[str(code)] = {"description": text, "content": error}
        entry: dict[str, Any] = {"summary": op.summary, "parameters": parameters, "responses": responses,
                                 "security": [{"bearer": []}, {"apiKey": []}]}
        if op.body is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref_of[id(op.body)]}}}
        paths.setdefault(op.path, {})[op.method] = entry
    for op in operations:  # a query struct is a list of parameters, not a document of its own
        if op.query is not None:
            components.pop(op.query.__name__, None)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "components": {"schemas": components, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }},
        "paths": paths,
    }
