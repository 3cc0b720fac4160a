"""`tally plan`: shard counts by the Kinesis limits, the outputs, the parameter file, wrong inputs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestration.cli import main
from streaming.deploy.template import template_parameters
from streaming.plan.capacity import plan
from streaming.plan.figures import load_figures
from streaming.plan.load import preset
from streaming.plan.prices import load_prices

pytestmark = pytest.mark.unit


def _plan(name: str, **changes: Any) -> Any:
    return plan(preset(name, **changes), load_figures(), load_prices())


def test_shards_for_50m_a_day_at_10x_are_what_the_kinesis_limits_give_by_hand() -> None:
    # 50,000,000 events a day at 10x the average: 50e6 / 86,400 x 10 = 5,787.04 records/s at the peak.
    # Records of 400 bytes plus a 36-byte partition key (the visitor's anonymous_id).
    #   in, records: 5,787.04 / 1,000 records/s per shard          = 5.79 -> 6 shards
    #   in, bytes:   5,787.04 x 436 B = 2,523,148 B/s / 1,048,576   = 2.41 -> 3 shards
    #   out, bytes:  2 readers x 5,787.04 x 400 B = 4,629,630 B/s / 2,097,152 = 2.21 -> 3 shards
    # The largest: 6 shards (bound by records).
    kinesis = _plan("growth", event_bytes=400).component("kinesis").sizing
    assert kinesis["limits"] == {"write_records": 6, "write_bytes": 3, "read_bytes": 3, "shards": 6}
    assert kinesis["shards"] == 6
    # Bigger records make bytes the bound: 2,000 B -> in 5,787.04 x 2,036 / 1,048,576 = 11.24 -> 12,
    # out 2 x 5,787.04 x 2,000 / 2,097,152 = 11.04 -> 12, records still 6: 12 shards.
    big = _plan("growth", event_bytes=2_000).component("kinesis").sizing
    assert big["limits"] == {"write_records": 6, "write_bytes": 12, "read_bytes": 12, "shards": 12}


def test_growth_fits_the_ceiling_and_enterprise_says_plainly_what_is_past_one_tier() -> None:
    growth = _plan("growth")
    assert 0 < growth.total <= growth.budget
    assert math.isclose(growth.total, sum(line.monthly for c in growth.components for line in c.lines))
    enterprise = _plan("enterprise")
    over = _plan("enterprise", events_per_day=5_000_000_000)
    assert over.total > over.budget
    assert any("past the default quota" in text for text in over.component("kinesis").beyond)
    redis = enterprise.component("redis")
    assert redis.sizing["cluster_mode"] == "enabled" and redis.sizing["shards"] > 1
    assert any("Redis Cluster" in text for text in redis.beyond)
    # segment members are kept TALLY_SPEED_SEGMENT_HISTORY_S after their membership ended, not the day TTL
    week = _plan("growth", speed_segment_history_s=7 * 86_400).redis.of("segment_members").bytes
    assert growth.redis.of("segment_members").bytes < week < _plan("growth", speed_segment_history_s=90 * 86_400).redis.of("segment_members").bytes
    startup = _plan("startup").component("redis")
    assert startup.sizing["cluster_mode"] == "disabled" and not startup.beyond
    # Every line says where it comes from; the plan records which measured figures it read.
    assert all(line.basis for c in growth.components for line in c.lines)
    for name in ("memory_dedup_hashtable_member_bytes", "speed_consumer_peak_events_per_s",
                 "batch_archive_events_per_s", "batch_dbt_events_per_s", "archive_stored_bytes_per_record"):
        assert name in growth.figures_used


def test_text_json_and_html(tmp_path: Path) -> None:
    runner = CliRunner()
    text = runner.invoke(main, ["plan", "--preset", "growth"], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert "within the $50,000/month ceiling" in text.output and "Redis memory" in text.output
    out = runner.invoke(main, ["plan", "--preset", "growth", "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["within_budget"] is True
    assert math.isclose(doc["total_monthly"], sum(c["monthly"] for c in doc["components"]), abs_tol=0.1)
    assert {c["name"] for c in doc["components"]} >= {"kinesis", "speed layer", "redis", "collector", "archiver",
                                                       "s3 archive", "snowflake", "dagster"}
    page = tmp_path / "plan.html"
    html = runner.invoke(main, ["plan", "--events-per-day", "20000000", "--tenants", "300", "--format", "html",
                                "--out", str(page)])
    assert html.exit_code == 0, html.output
    body = page.read_text()
    for name in ("startup", "growth", "enterprise", "custom"):
        assert f'id="{name}"' in body
    assert body.count("<svg") == 5  # the overview and one bar per plan
    assert "{{" not in body and "{%" not in body


def test_a_price_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    base = _plan("growth").component("kinesis")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"kinesis": {"shard_hour": 0.03}}))
    result = CliRunner().invoke(main, ["plan", "--preset", "growth", "--format", "json", "--prices", str(prices)])
    assert result.exit_code == 0, result.output
    kinesis = next(c for c in json.loads(result.output)["components"] if c["name"] == "kinesis")
    shards = base.sizing["shards"]
    assert math.isclose(kinesis["sizing"]["provisioned_monthly"] - base.sizing["provisioned_monthly"], shards * 730 * 0.015)


def test_emitted_parameters_are_the_templates_and_valid_for_it(tmp_path: Path) -> None:
    path = tmp_path / "params.json"
    result = CliRunner().invoke(main, ["plan", "--preset", "enterprise", "--format", "json", "--emit-params", str(path),
                                       "--param", "VpcId=vpc-0123456789abcdef0", "--param", "ContainerImage=tally:1"])
    assert result.exit_code == 0, result.output
    declared = template_parameters()
    values = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(path.read_text())}
    assert set(values) <= set(declared)
    for key, value in values.items():
        spec = declared[key]
        if "AllowedValues" in spec:
            assert value in [str(v) for v in spec["AllowedValues"]], key
        if spec["Type"] == "Number":
            assert spec.get("MinValue", -math.inf) <= float(value) <= spec.get("MaxValue", math.inf), key
        if "AllowedPattern" in spec:
            assert re.fullmatch(spec["AllowedPattern"], value), key
    enterprise = _plan("enterprise")
    assert values["ShardCount"] == str(enterprise.component("kinesis").sizing["shards"])
    assert values["RedisClusterMode"] == "enabled"
    assert values["RedisShards"] == str(enterprise.component("redis").sizing["shards"])
    assert values["VpcId"] == "vpc-0123456789abcdef0"
    assert "still to set for Target=aws: LambdaCodeBucket, LambdaCodeKey, PrivateSubnetIds, PublicSubnetIds" in " ".join(result.output.split())


@pytest.mark.parametrize(("args", "names"), [
    (["--events-per-day", "-5"], "--events-per-day"),
    (["--preset", "huge"], "--preset"),
    (["--events-per-day", "lots"], "--events-per-day"),
    ([], "--events-per-day"),
    (["--preset", "growth", "--peak-multiplier", "0.5"], "--peak-multiplier"),
    (["--preset", "growth", "--tenants", "2.5"], "--tenants"),
    (["--preset", "growth", "--malformed-rate", "1.5"], "--malformed-rate"),
    (["--preset", "growth", "--arch", "sparc"], "--arch"),
    (["--preset", "growth", "--format", "xml"], "--format"),
    (["--preset", "growth", "--emit-params", "p.json", "--param", "NoSuchParameter=1"], "--param"),
])
def test_a_wrong_input_gets_one_sentence_and_exit_2(args: list[str], names: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["plan", *args], env={"TALLY_HOME": str(tmp_path)})
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert message.startswith(f"tally: {names}=") and message.count("tally:") == 1
    assert message.count(". Fix: ") == 1 and "Traceback" not in result.output + result.stderr


def test_wrong_price_and_figure_files_are_named_with_the_fix(tmp_path: Path) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"kinesis": {"shard_hours": 0.03}}))
    result = CliRunner().invoke(main, ["plan", "--preset", "growth", "--prices", str(prices)])
    assert result.exit_code == 2 and "names kinesis.shard_hours, which the price table does not have" in " ".join(result.stderr.split())
    figures = tmp_path / "results.json"
    figures.write_text(json.dumps({k: v for k, v in load_figures().values.items() if k != "memory_used_per_usage_ratio"}))
    result = CliRunner().invoke(main, ["plan", "--preset", "growth", "--figures", str(figures)])
    assert result.exit_code == 2
    assert "has no measured figure memory_used_per_usage_ratio. Fix: run `make bench`" in " ".join(result.stderr.split())


def test_a_tenant_is_never_split_over_redis_cluster_shards() -> None:
    # One tenant: all its keys share one hash tag, one slot, one node; a Cluster adds nothing.
    alone = _plan("growth", tenants=1)
    redis = alone.component("redis").sizing
    assert redis["shards"] == 1 and redis["cluster_mode"] == "disabled"
    gib = load_prices()["elasticache_node_memory_gib"][redis["node_type"]]
    assert alone.redis.used_bytes <= gib * 1024 ** 3 * 0.75 * 0.8
    # Many tenants: the biggest tag decides the smallest node a Cluster may use.
    growth = _plan("growth")
    sizing = growth.component("redis").sizing
    biggest = growth.redis.tag_used_bytes()[0][1]
    assert biggest <= load_prices()["elasticache_node_memory_gib"][sizing["node_type"]] * 1024 ** 3 * 0.75 * 0.8
    # A tenant bigger than the biggest node is said to be past the design, not planned onto a Cluster
    # (segment members kept 90 days after their membership ended make the busiest tenant ~350 GiB).
    huge = _plan("enterprise", speed_segment_history_s=90 * 86_400).component("redis")
    assert any("each hash tag lives on one node" in text and "tenant #1" in text for text in huge.beyond)
