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
    aws_endpoint_url: str | None
    redis_url: str | None

    @property
    def is_local(self) -> bool:
        return self.name == "local"

    @property
    def dbt_target(self) -> str:
        return get_dbt_target(self)


def _recorded_endpoints(settings: Settings) -> tuple[str | None, str | None]:
    """Endpoints `tally stack up` recorded, without requiring them to be up right now: definitions
    must load while the stack is down (the UI, the definitions test); a run then fails on connect."""
    from streaming.stack.manager import load_state

    state = load_state(settings)
    aws = state["aws-emulator"].url if "aws-emulator" in state else None
    redis_url = state["redis"].url if "redis" in state else None
    return aws, redis_url


def get_environment(env: Mapping[str, str] | None = None) -> Environment:
    settings = load_settings(dict(os.environ if env is None else env))
    aws, redis_url = settings.aws_endpoint_url, settings.redis_url
    if settings.is_local and (aws is None or redis_url is None):
        recorded_aws, recorded_redis = _recorded_endpoints(settings)
        aws = aws or recorded_aws
        redis_url = redis_url or recorded_redis
    return Environment(settings.env, settings, aws, redis_url)


def get_dbt_target(environment: Environment) -> str:
    return "local" if environment.is_local else "prod"
