"""The reconciliation tests' session run (generated traffic through the real stream, archiver, loader and
dbt) reused: each privacy test works on copies of its bucket and DuckDB file and never writes to its
stream (new events go to a stream of their own)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.reconcile.conftest import (  # noqa: F401 - session fixtures reused
    Clients, PipelineRun, _name, clean_run, clients, prepare, speed_lease_table, with_bucket,
)
from tests.reconcile import pipeline


@pytest.fixture(scope="session")
def privacy_run(clean_run: PipelineRun) -> PipelineRun:  # noqa: F811
    return clean_run


def fresh_layers(settings, clients: Clients):  # noqa: F811
    """The settings with a new, empty stream, bucket and lease table (for events sent after a deletion)."""
    fresh = replace(settings, stream_name=_name("stream"), bucket=_name("bucket"), lease_table=_name("leases"))
    prepare(fresh, clients)
    return fresh


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


__all__ = ["Person", "copy_run", "fresh_layers", "stitched_people"]
