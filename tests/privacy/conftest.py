"""One generated run through the real stream, archiver, loader and dbt for the privacy tests (its own
stream and bucket); each test works on copies of its bucket and DuckDB file."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from streaming.generator import GeneratorConfig
from tests.reconcile.conftest import (  # noqa: F401 - session fixtures reused
    Clients, PipelineRun, _name, clients, pipeline_run, speed_lease_table, with_bucket,
)
from tests.reconcile import pipeline

#: Short and small: 3 tenants, 09:50-10:06 (hour 09's windows close; 10:00 onward stay pending).
PRIVACY = GeneratorConfig(seed=11, tenants=3, start="2026-01-05T09:50:00Z", duration_s=900, rate_per_s=4.0,
                          duplicate_rate=0.02, malformed_rate=0.01)


@pytest.fixture(scope="session")
def privacy_run(tmp_path_factory: pytest.TempPathFactory, aws_endpoint: str, redis_url: str,
                clients: Clients) -> PipelineRun:  # noqa: F811
    return pipeline_run(PRIVACY, tmp_path_factory.mktemp("privacy-run"), aws_endpoint, redis_url, clients)


@dataclass
class Person:
    tenant: str
    user_id: str
    anonymous_ids: set[str]
    events: int


def stitched_people(run: PipelineRun) -> list[Person]:
    """Users with identify-stitched history (anonymous events before their identify), most events first."""
    by_anon: dict[tuple[str, str], int] = defaultdict(int)
    users: dict[tuple[str, str], set[str]] = defaultdict(set)
    for record in run.records:
        if record.kind != "valid":
            continue
        doc = json.loads(record.data)
        by_anon[(doc["tenant_id"], doc["anonymous_id"])] += 1
        if doc.get("user_id"):
            users[(doc["tenant_id"], doc["user_id"])].add(doc["anonymous_id"])
    people = [Person(t, u, anons, sum(by_anon[(t, a)] for a in anons)) for (t, u), anons in users.items()]
    return sorted(people, key=lambda p: (-p.events, p.tenant, p.user_id))


def copy_run(run: PipelineRun, clients: Clients, tmp: Path, lease_table: str):  # noqa: F811
    """The run's settings with its own bucket copy, DuckDB copy, home and lease table."""
    settings = with_bucket(run.settings, clients)
    return pipeline.clone(settings, tmp, lease_table=lease_table)


__all__ = ["Person", "copy_run", "stitched_people", "replace", "_name"]
