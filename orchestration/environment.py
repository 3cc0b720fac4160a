"""The one place that reads the environment for Dagster: called when definitions are built, never at
import (so tests and tools can set TALLY_* variables first, without reloading modules)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
    from streaming.stack.manager import resolve_endpoints

    settings = load_settings(dict(os.environ if env is None else env))
    endpoints = resolve_endpoints(settings, require_running=False)
    return Environment(settings.env, settings, dict(endpoints.aws), endpoints.redis)


def get_dbt_target(environment: Environment) -> str:
    return "local" if environment.is_local else "prod"
