"""The dbt domain's resource: dagster-dbt's CLI resource on the project, for the environment's target."""

from __future__ import annotations

import sys
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject


def dbt_executable() -> str:
    """The venv's dbt, found without activating the venv."""
    return str(Path(sys.executable).parent / "dbt")


def build_dbt_resource(project: DbtProject, target: str) -> DbtCliResource:
    return DbtCliResource(project_dir=project, dbt_executable=dbt_executable(), target=target)
