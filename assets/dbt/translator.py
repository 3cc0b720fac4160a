"""Asset keys and groups of dbt nodes, from dbt folders and meta (never hard-coded model names).

Models get ``[<top folder>, <name>]`` (``staging/stg_kinesis__events``, ``marts/fct_events``), seeds
``[reference, <name>]``; a source table's key comes from its ``meta.dagster.asset_key`` (the raw tables
point at ``warehouse/raw_events``). The group is ``meta.dagster.group`` (set per folder in
dbt_project.yml), else the top folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings


def _meta(props: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = props.get("config", {}).get("meta") or props.get("meta") or {}
    return meta.get("dagster", {}) if isinstance(meta, Mapping) else {}


def _top_folder(props: Mapping[str, Any]) -> str:
    fqn = props.get("fqn", [])
    # fqn = [project, folder..., name]
    return fqn[1] if len(fqn) > 2 else props.get("resource_type", "dbt")


class TallyDbtTranslator(DagsterDbtTranslator):
    def __init__(self) -> None:
        super().__init__(DagsterDbtTranslatorSettings(enable_asset_checks=True, enable_duplicate_source_asset_keys=True))

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        meta = _meta(dbt_resource_props)
        if "asset_key" in meta:
            return dg.AssetKey(meta["asset_key"])
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey(["warehouse", dbt_resource_props["source_name"], dbt_resource_props["name"]])
        if dbt_resource_props["resource_type"] == "seed":
            return dg.AssetKey(["reference", dbt_resource_props["name"]])
        return dg.AssetKey([_top_folder(dbt_resource_props), dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return _meta(dbt_resource_props).get("group") or _top_folder(dbt_resource_props)
