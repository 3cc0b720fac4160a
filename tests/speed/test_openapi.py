"""The query API's OpenAPI document is generated from the routes' types, and the app keeps to it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import jsonschema
import pytest
import redis
from openapi_spec_validator import validate
from starlette.routing import Route
from starlette.testclient import TestClient

from streaming.query.apikeys import create_key
from streaming.query.http import create_app, openapi_spec


@pytest.mark.unit
def test_the_document_is_valid_openapi_and_names_every_route_of_the_app() -> None:
    spec = openapi_spec()
    validate(spec)  # raises on an invalid OpenAPI 3.1 document
    app = create_app(client=None)
    served = {(route.path, method.lower()) for route in app.routes if isinstance(route, Route)
              for method in (route.methods or ()) if method != "HEAD"}
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert documented == served - {("/openapi.json", "get"), ("/metrics", "get"), ("/dashboard", "get")}


@pytest.mark.unit
def test_parameters_come_from_the_types() -> None:
    spec = openapi_spec()
    params = {p["name"]: p for p in spec["paths"]["/v1/tenants/{tenant}/top-pages"]["get"]["parameters"]}
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}
    assert params["start"]["schema"] == {"type": "string", "format": "date-time"} and not params["start"]["required"]
    assert params["tenant"]["in"] == "path" and params["tenant"]["required"]
    counts = {p["name"]: p for p in spec["paths"]["/v1/tenants/{tenant}/counts"]["get"]["parameters"]}
    assert counts["resolution"]["schema"]["enum"] == ["d", "h", "m"]
    body = spec["paths"]["/v1/tenants/{tenant}/forget"]["post"]["requestBody"]["content"]["application/json"]
    assert spec["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[1]]["required"] == ["user_id"]


def _answer_schema(spec: dict[str, Any], path: str, status: str = "200") -> dict[str, Any]:
    """The answer's schema, resolvable on its own (the components alongside it)."""
    ref = spec["paths"][path]["get"]["responses"][status]["content"]["application/json"]["schema"]
    return {**ref, "components": spec["components"]}


@pytest.mark.integration
def test_answers_and_errors_fit_their_documented_schemas(redis_client: redis.Redis) -> None:
    spec = openapi_spec()
    http = TestClient(create_app(redis_client))
    headers = {"X-API-Key": create_key(redis_client, "tenant-001")}
    end = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    window = {"start": (end - dt.timedelta(hours=2)).isoformat(), "end": end.isoformat()}
    for path, params in (("/v1/tenants/{tenant}/counts", {**window, "resolution": "h"}),
                         ("/v1/tenants/{tenant}/uniques", window), ("/v1/tenants/{tenant}/top-pages", window),
                         ("/v1/tenants/{tenant}/segments", {}), ("/v1/ops/lag", {}), ("/v1/ops/latency", window)):
        answer = http.get(path.replace("{tenant}", "tenant-001"), headers=headers, params=params)
        assert answer.status_code == 200, (path, answer.text)
        jsonschema.validate(answer.json(), _answer_schema(spec, path))
    bad = http.get("/v1/tenants/tenant-001/top-pages", headers=headers, params={"limit": "0"})
    assert bad.status_code == 400 and "$.limit" in bad.json()["error"]
    jsonschema.validate(bad.json(), _answer_schema(spec, "/v1/tenants/{tenant}/top-pages", "400"))
    assert http.get("/v1/tenants/tenant-001/counts", headers=headers, params={"resolution": "s"}).status_code == 400
