"""The dbt project as Dagster assets (models, seeds) with dbt tests as asset checks."""


import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

from assets.dbt.translator import TallyDbtTranslator

#: What every scheduled `dbt build` adds: unit tests are code tests on static inputs, run in CI; no
#: manifest.json / run_results.json rewritten per run (Dagster reads dbt's event stream, and the
#: manifest it loads is the one parsed once at deploy: assets/dbt/project.py).
PRODUCTION_BUILD_ARGS = ("--exclude-resource-type", "unit_test", "--no-write-json")


@contextmanager
def dbt_environment(warehouse: Any) -> Iterator[None]:
    """dbt's `local` profile reads TALLY_DUCKDB_PATH: point it at the resource's file for this call."""
    path = warehouse.dbt_env().get("TALLY_DUCKDB_PATH")
    old = os.environ.get("TALLY_DUCKDB_PATH")
    if path:
        os.environ["TALLY_DUCKDB_PATH"] = path
    try:
        yield
    finally:
        if path:
            if old is None:
                os.environ.pop("TALLY_DUCKDB_PATH", None)
            else:
                os.environ["TALLY_DUCKDB_PATH"] = old


def build_dbt_assets(project: DbtProject) -> dg.AssetsDefinition:
    @dbt_assets(manifest=project.manifest_path, project=project, dagster_dbt_translator=TallyDbtTranslator(),
                name="dbt_models")
    def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: dg.ResourceParam[Any]) -> Iterator[Any]:
        """`dbt build` of the selected models: seeds, models, data tests (as asset checks).

        Unit tests are left out (PRODUCTION_BUILD_ARGS): they check SQL logic on fixed inputs, so they
        run in CI (tests/batch/test_dbt_unit_tests.py), not on every hourly build.
        """
        with dbt_environment(warehouse):
            yield from dbt.cli(["build", *PRODUCTION_BUILD_ARGS], context=context).stream()

    return dbt_models
