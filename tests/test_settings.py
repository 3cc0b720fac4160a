"""A wrong setting names the setting and the fix; defaults are sane; nothing is read at import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streaming.settings import SETTINGS, SettingError, load_settings, settings_table

pytestmark = pytest.mark.unit


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.env == "local" and settings.stream_name == "tally-events"
    assert settings.duckdb_path.name == "warehouse.duckdb"
    assert settings.redis_url is None


@pytest.mark.parametrize(
    "name, value, fix_words",
    [
        ("TALLY_ENV", "staging", "'local' or 'prod'"),
        ("TALLY_REDIS_URL", "localhost:6379", "redis://host:6379/0"),
        ("TALLY_STREAM_SHARDS", "zero", "positive integer"),
        ("TALLY_STREAM_SHARDS", "0", "positive integer"),
        ("TALLY_EMULATOR_PORT", "70000", "between 1 and 65535"),
        ("TALLY_AWS_ENDPOINT_URL", "127.0.0.1:4566", "http://"),
        ("TALLY_BUCKET", "my bucket!", "letters, digits"),
        ("TALLY_MAX_EVENT_BYTES", "5000000", "at most 1000000"),
        ("TALLY_SPEED_SEGMENT_HISTORY_S", "0", "positive integer"),
    ],
)
def test_wrong_value_names_setting_and_fix(name: str, value: str, fix_words: str) -> None:
    with pytest.raises(SettingError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert message.startswith(f"{name}=")
    assert "Fix:" in message and fix_words in message
    assert info.value.setting == name


def test_prod_requires_redis_url() -> None:
    with pytest.raises(SettingError, match="TALLY_REDIS_URL.*required when TALLY_ENV=prod"):
        load_settings({"TALLY_ENV": "prod"})


def test_password_is_redacted_in_errors() -> None:
    with pytest.raises(SettingError) as info:
        load_settings({"TALLY_REDIS_URL": "http://user:s3cret@host:6379"})
    assert "s3cret" not in str(info.value)


def test_table_lists_every_setting() -> None:
    table = settings_table()
    for setting in SETTINGS:
        assert f"`{setting.name}`" in table


def test_cli_prints_one_clear_line(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "stack", "status"],
        env={"PATH": "/usr/bin:/bin", "TALLY_STREAM_SHARDS": "-3", "TALLY_HOME": str(tmp_path)},
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "TALLY_STREAM_SHARDS='-3'" in proc.stderr and "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("env, words", [
    ({"TALLY_COLLECTOR_FSYNC": "sometimes"}, ["TALLY_COLLECTOR_FSYNC='sometimes'", "Fix: set TALLY_COLLECTOR_FSYNC to 'always'"]),
    ({"TALLY_COLLECTOR_MAX_MESSAGE_BYTES": "600000"}, ["TALLY_COLLECTOR_MAX_MESSAGE_BYTES='600000' is larger than", "Fix:"]),
    ({"TALLY_COLLECTOR_SPOOL_MAX_BYTES": "1000"}, ["TALLY_COLLECTOR_SPOOL_MAX_BYTES='1000' is smaller than four batches", "Fix:"]),
    ({"TALLY_COLLECTOR_MAX_BATCH_BYTES": "2000000", "TALLY_COLLECTOR_MAX_MESSAGE_BYTES": "1000"}, ["TALLY_COLLECTOR_MAX_BATCH_BYTES='2000000'", "Fix:"]),
    ({"TALLY_COLLECTOR_HOST": "my host"}, ["TALLY_COLLECTOR_HOST='my host' is not a host name", "Fix:"]),
    ({"TALLY_COLLECTOR_PORT": "70000"}, ["TALLY_COLLECTOR_PORT='70000' is not a TCP port", "Fix:"]),
    ({"TALLY_COLLECTOR_EVENT_MAP": "/nonexistent/map.yaml"}, ["TALLY_COLLECTOR_EVENT_MAP='/nonexistent/map.yaml' is not a readable file", "Fix:"]),
])
def test_collector_settings_name_the_setting_and_the_fix(env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(SettingError) as err:
        load_settings(env)
    assert all(w in str(err.value) for w in words), str(err.value)
def test_per_service_endpoints_follow_the_sdks_order() -> None:
    """A service's own variable beats a global one (as in the AWS SDKs); tally's own beats the SDK's at
    each level; AWS_IGNORE_CONFIGURED_ENDPOINT_URLS drops the SDK variables; the stack fills the rest."""
    from streaming.stack.manager import resolve_endpoints

    env = {"TALLY_AWS_ENDPOINT_URL": "http://all:1", "AWS_ENDPOINT_URL": "http://sdk-all:1",
           "AWS_ENDPOINT_URL_KINESIS": "http://sdk-kinesis:1", "TALLY_AWS_ENDPOINT_URL_S3": "http://s3:1",
           "AWS_ENDPOINT_URL_S3": "http://sdk-s3:1"}
    endpoints = resolve_endpoints(load_settings(env), state={})
    assert {s: endpoints.aws_url(s) for s in ("kinesis", "s3", "dynamodb")} == {
        "kinesis": "http://sdk-kinesis:1", "s3": "http://s3:1", "dynamodb": "http://all:1"}
    assert endpoints.sources["kinesis"] == "AWS_ENDPOINT_URL_KINESIS" and endpoints.sources["dynamodb"] == "TALLY_AWS_ENDPOINT_URL"
    ignored = resolve_endpoints(load_settings({**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}), state={})
    assert ignored.aws_url("kinesis") == "http://all:1" and ignored.aws_url("s3") == "http://s3:1"
    only_kinesis = resolve_endpoints(load_settings({"AWS_ENDPOINT_URL_KINESIS": "http://k:1"}), state={})
    assert only_kinesis.aws_url("kinesis") == "http://k:1"
    with pytest.raises(Exception, match="tally stack up"):
        only_kinesis.aws_url("s3")  # locally, the rest is the emulator, which is not running
    prod = resolve_endpoints(load_settings({"TALLY_ENV": "prod", "TALLY_REDIS_URL": "redis://r:6379/0"}), state={})
    assert prod.aws_url("kinesis") is None  # real AWS: botocore's own resolution
    with pytest.raises(SettingError, match="AWS_ENDPOINT_URL_DYNAMODB"):
        load_settings({"AWS_ENDPOINT_URL_DYNAMODB": "dynamodb:8000"})
