"""Build a deletion :class:`~streaming.privacy.forget.Eraser` for the configured environment
(what the CLI, the HTTP API and the Dagster job call)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streaming.archive.store import ArchiveStore
from streaming.privacy.forget import Eraser
from streaming.privacy.requests import RequestStore
from streaming.privacy.warehouse import WarehouseEraser, dbt_rebuild
from streaming.endpoints import Endpoints
from streaming.settings import Settings
from streaming.warehouse.factory import warehouse_for

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"


def warehouse_eraser(settings: Settings) -> WarehouseEraser:
    return WarehouseEraser(warehouse_for(settings))


def eraser_from_settings(settings: Settings, redis_client: Any | None = None, s3: Any | None = None,
                         rebuild: bool = True, endpoints: Endpoints | None = None) -> Eraser:
    """``endpoints`` (for the clients not given) as the caller resolved them; None: the settings' variables."""
    from streaming.aws import aws_client
    from streaming.endpoints import from_variables
    from streaming.speed.connect import connect

    if redis_client is None or s3 is None:
        endpoints = endpoints or from_variables(settings)
        redis_client = redis_client or connect(endpoints.redis_url)
        s3 = s3 or aws_client("s3", settings.aws_region, endpoints.aws_url("s3"))
    warehouse = warehouse_eraser(settings)
    target = "local" if settings.is_local else "prod"
    env = {"DBT_LOG_PATH": str(settings.home / "logs" / "privacy-dbt")}
    if settings.is_local:
        env["TALLY_DUCKDB_PATH"] = str(settings.duckdb_path)
    runner = dbt_rebuild(DBT_PROJECT_DIR, target, env, target_path=settings.home / "privacy-dbt-target") if rebuild else None
    return Eraser(redis=redis_client, store=ArchiveStore(s3, settings.bucket), requests=RequestStore(s3, settings.bucket),
                  warehouse=warehouse, rebuild=runner, salt=settings.privacy_salt)
