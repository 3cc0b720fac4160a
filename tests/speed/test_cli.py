"""The speed layer's `tally` commands against real servers: keys, consume, query, dead letters."""

from __future__ import annotations

import pytest
import redis
from click.testing import CliRunner

from orchestration.cli import main
from streaming.aws import aws_client
from streaming.generator import GeneratorConfig
from streaming.producer import Producer
from streaming.query.apikeys import tenant_for
from streaming.resources import ensure_lease_table, ensure_stream
from streaming.settings import load_settings
from tests.conftest import REGION
from tests.speed.conftest import generated, recent_start

pytestmark = pytest.mark.integration


def test_consume_then_query_and_keys(tally_env: dict[str, str], redis_client: redis.Redis) -> None:
    settings = load_settings(tally_env)
    kinesis = aws_client("kinesis", REGION, settings.aws_endpoint_url)
    ensure_stream(kinesis, settings.stream_name, 2)
    ensure_lease_table(aws_client("dynamodb", REGION, settings.aws_endpoint_url), settings.lease_table)
    datas, pkeys, ledger = generated(GeneratorConfig(seed=4, tenants=3, duration_s=60, rate_per_s=50,
                                                     start=recent_start(60), malformed_rate=0.05))
    with Producer(kinesis, settings.stream_name) as producer:
        producer.put_many(zip(datas, pkeys, strict=True))
    runner = CliRunner()
    result = runner.invoke(main, ["consume", "--until-caught-up", "--timeout-s", "120"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["query", "counts", "--tenant", "tenant-001", "--minutes", "10"])
    assert result.exit_code == 0, result.output
    assert f'"total": {sum(sum(m.values()) for m in ledger.counts["tenant-001"].values())}' in result.output
    result = runner.invoke(main, ["query", "live", "--minutes", "10"])
    assert result.exit_code == 0 and "tenant-001" in result.output, result.output
    result = runner.invoke(main, ["dead-letters", "list"])
    assert result.exit_code == 0 and f"{sum(ledger.dead_letters.values())} dead letters" in result.output
    result = runner.invoke(main, ["keys", "create", "--tenant", "tenant-002"])
    assert result.exit_code == 0
    assert tenant_for(redis_client, result.output.strip()) == "tenant-002"
    result = runner.invoke(main, ["query", "counts", "--tenant", "Not A Tenant"])
    assert result.exit_code == 2 and "does not match" in result.output
