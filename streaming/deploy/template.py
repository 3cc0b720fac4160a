"""``deploy/tally.yaml`` read from Python: its parameters, and its outputs as TALLY_* settings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "tally.yaml"

#: Stack output -> the setting a TALLY_ENV=prod process reads it from (the template test checks both ways).
OUTPUT_SETTINGS = {
    "StreamName": "TALLY_STREAM_NAME",
    "Region": "TALLY_AWS_REGION",
    "BucketName": "TALLY_BUCKET",
    "LeaseTableName": "TALLY_LEASE_TABLE",
    "WriteKeyTableName": "TALLY_WRITE_KEY_TABLE",
    "RedisUrl": "TALLY_REDIS_URL",
}


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (``!Ref``, ``!Sub``...) read as plain values."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {("Ref" if suffix == "Ref" else f"Fn::{suffix}"): value}


_CfnLoader.add_multi_constructor("!", _tagged)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


def template_parameters(path: Path = TEMPLATE) -> dict[str, dict[str, Any]]:
    return dict(load_template(path)["Parameters"])


def settings_from_outputs(outputs: Mapping[str, str] | list[dict[str, str]]) -> dict[str, str]:
    """The TALLY_* settings a stack's outputs give (describe-stacks' list, or a key -> value map)."""
    if isinstance(outputs, list):
        outputs = {o["OutputKey"]: o["OutputValue"] for o in outputs}
    return {OUTPUT_SETTINGS[k]: v for k, v in outputs.items() if k in OUTPUT_SETTINGS}
