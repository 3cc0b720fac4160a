"""The one place that reads the environment for Dagster and the CLI: called when definitions are built
(or a command starts), never at import (so tests and tools can set TALLY_* variables first, without
reloading modules). It is also the one place outside the local stack that asks the stack where the
services are (:func:`resolve_endpoints`); everything below takes the resolved endpoints as parameters."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from streaming.endpoints import Endpoints
from streaming.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"


@dataclass(frozen=True)
class Environment:
    """What the definitions are built for: ``local`` (emulator, local Redis, DuckDB) or ``prod``."""

    name: str
    settings: Settings
    aws_endpoints: Mapping[str, str | None]
    redis_url: str | None
    endpoints: Endpoints | None = None

    @property
    def is_local(self) -> bool:
        return self.name == "local"

    @property
    def aws_endpoint_url(self) -> str | None:
        """The endpoint of the services without one of their own (the emulator locally)."""
        return self.aws_endpoints.get("*")

    def aws_endpoint(self, service: str) -> str | None:
        return self.aws_endpoints.get(service)

    @property
    def dbt_target(self) -> str:
        return get_dbt_target(self)

    @property
    def dbt_project_dir(self) -> Path:
        return DBT_PROJECT_DIR


def get_environment(env: Mapping[str, str] | None = None) -> Environment:
    """Endpoints as every command resolves them, but taking what `tally stack up` recorded without
    requiring it to be up right now: definitions must load while the stack is down (the UI, the
    definitions test); a run then fails on connect."""
    settings = load_settings(dict(os.environ if env is None else env))
    endpoints = resolve_endpoints(settings, require_running=False)
    return Environment(settings.env, settings, dict(endpoints.aws), endpoints.redis, endpoints)


def resolve_endpoints(settings: Settings, require_running: bool = True) -> Endpoints:
    """Where the services are for ``settings``: variables first, then (locally) what ``tally stack up``
    recorded (:func:`streaming.stack.manager.resolve_endpoints`)."""
    from streaming.stack.manager import resolve_endpoints as from_stack

    return from_stack(settings, require_running=require_running)


def locate_endpoints(settings: Settings) -> Endpoints:
    """For error sentences (:mod:`streaming.outages`): where the endpoints came from, stack up or not."""
    return resolve_endpoints(settings, require_running=False)


def get_dbt_target(environment: Environment) -> str:
    return "local" if environment.is_local else "prod"
