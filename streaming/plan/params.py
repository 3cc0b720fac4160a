"""The parameter file of ``deploy/tally.yaml`` for a plan (``tally plan --emit-params FILE``).

The file is CloudFormation's own format (``aws cloudformation create-stack --parameters file://FILE``):
a list of ``{"ParameterKey", "ParameterValue"}``. The plan fills what it sized; the site's own values
(network, image, the Lambda zip's location) come from ``--param KEY=VALUE`` or are listed as still to set.
"""

from __future__ import annotations

import json
from pathlib import Path

from streaming.plan.capacity import ARCHIVER_TASK, COLLECTOR_TASK, IA_AFTER_DAYS, GLACIER_IR_AFTER_DAYS, Plan
from streaming.settings import SettingError

#: Parameters only the site knows; the template refuses an empty one when Target=aws (its Rules).
SITE_PARAMETERS = ("LambdaCodeBucket", "LambdaCodeKey", "VpcId", "PrivateSubnetIds", "PublicSubnetIds", "ContainerImage")


def plan_parameters(plan: Plan) -> dict[str, str]:
    """Template parameter -> value, for what the plan sized."""
    load = plan.load
    kinesis = plan.component("kinesis").sizing
    speed = plan.component("speed layer").sizing
    redis = plan.component("redis").sizing
    values: dict[str, object] = {
        "StreamMode": kinesis["mode"],
        "ShardCount": kinesis["shards"],
        "StreamRetentionHours": load.stream_retention_hours,
        "LambdaArchitecture": speed["architecture"],
        "LambdaMemoryMB": speed["memory_mb"],
        "SpeedBatchSize": speed["batch_size"],
        "SpeedBatchingWindowSeconds": speed["batching_window_s"],
        "DedupHorizonSeconds": load.dedup_horizon_s,
        "SpeedTtlMinuteSeconds": load.speed_ttl_minute_s,
        "SpeedTtlHourSeconds": load.speed_ttl_hour_s,
        "SpeedTtlDaySeconds": load.speed_ttl_day_s,
        "SpeedSegmentHistorySeconds": load.speed_segment_history_s,
        "RedisNodeType": redis["node_type"],
        "RedisClusterMode": redis["cluster_mode"],
        "RedisShards": redis["shards"],
        "RedisReplicasPerShard": redis["replicas_per_shard"],
        "CollectorTasks": plan.component("collector").sizing["tasks"],
        "CollectorCpu": int(COLLECTOR_TASK[0] * 1024),
        "CollectorMemory": int(COLLECTOR_TASK[1] * 1024),
        "ArchiverTasks": plan.component("archiver").sizing["tasks"],
        "ArchiverCpu": int(ARCHIVER_TASK[0] * 1024),
        "ArchiverMemory": int(ARCHIVER_TASK[1] * 1024),
        "ArchiveInfrequentAccessDays": IA_AFTER_DAYS,
        "ArchiveGlacierIrDays": GLACIER_IR_AFTER_DAYS,
    }
    return {k: str(v) for k, v in values.items()}


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SettingError("--param", pair, "is not KEY=VALUE", "give --param like VpcId=vpc-0123456789abcdef0")
        out[key] = value
    return out


def write_parameters(plan: Plan, path: Path, overrides: dict[str, str], template_parameters: set[str]) -> list[str]:
    """Write the file; return the site parameters still to set. Unknown names are refused."""
    unknown = sorted(set(overrides) - template_parameters)
    if unknown:
        raise SettingError("--param", unknown[0], "is not a parameter of deploy/tally.yaml",
                           "use one of: " + ", ".join(sorted(template_parameters)))
    values = {**plan_parameters(plan), **overrides}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()], indent=2) + "\n")
    return [p for p in SITE_PARAMETERS if p not in values]
