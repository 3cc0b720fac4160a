"""Snowflake settings: validated where the warehouse is Snowflake, the error names the missing setting
and its fix, and no secret reaches a repr, a log line, an error or the Dagster resource's config."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from streaming.settings import SettingError, load_settings, require_snowflake
from streaming.warehouse.snowflake_connect import connect_kwargs, describe
from streaming.warehouse.snowflake_load import _text_chunks

pytestmark = [pytest.mark.unit, pytest.mark.snowflake]

SECRET = "hunter2-not-for-logs"
COMPLETE = {
    "TALLY_ENV": "prod", "TALLY_REDIS_URL": "redis://cache:6379/0",
    "TALLY_SNOWFLAKE_ACCOUNT": "myorg-myaccount", "TALLY_SNOWFLAKE_USER": "TALLY_SVC",
    "TALLY_SNOWFLAKE_PASSWORD": SECRET, "TALLY_SNOWFLAKE_ROLE": "TALLY_LOADER",
    "TALLY_SNOWFLAKE_WAREHOUSE": "TALLY_WH",
}


@pytest.mark.parametrize("missing", ["TALLY_SNOWFLAKE_ACCOUNT", "TALLY_SNOWFLAKE_USER", "TALLY_SNOWFLAKE_ROLE",
                                     "TALLY_SNOWFLAKE_WAREHOUSE", "TALLY_SNOWFLAKE_PASSWORD"])
def test_missing_setting_is_named_with_its_fix(missing: str) -> None:
    env = {k: v for k, v in COMPLETE.items() if k != missing}
    with pytest.raises(SettingError) as info:
        require_snowflake(load_settings(env))
    assert info.value.setting == missing
    assert str(info.value).startswith(f"{missing}=<unset>") and "Fix: set" in str(info.value)


def test_the_speed_layer_in_prod_needs_no_snowflake_settings() -> None:
    settings = load_settings({"TALLY_ENV": "prod", "TALLY_REDIS_URL": "redis://cache:6379/0"})
    assert settings.snowflake.account is None  # load_settings alone does not require them


def test_key_pair_instead_of_password(tmp_path: Path) -> None:
    key = tmp_path / "rsa_key.p8"
    key.write_text("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n")
    env = {k: v for k, v in COMPLETE.items() if k != "TALLY_SNOWFLAKE_PASSWORD"}
    sf = require_snowflake(load_settings({**env, "TALLY_SNOWFLAKE_PRIVATE_KEY_PATH": str(key),
                                          "TALLY_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": SECRET}))
    kwargs = connect_kwargs(sf)
    assert kwargs["private_key_file"] == str(key) and kwargs["private_key_file_pwd"] == SECRET
    assert "password" not in kwargs
    assert SECRET not in repr(sf) and SECRET not in describe(sf) and "key pair" in describe(sf)
    with pytest.raises(SettingError) as info:
        load_settings({**env, "TALLY_SNOWFLAKE_PRIVATE_KEY_PATH": str(tmp_path / "nope.p8")})
    assert info.value.setting == "TALLY_SNOWFLAKE_PRIVATE_KEY_PATH"


def test_load_method_follows_the_stage() -> None:
    assert require_snowflake(load_settings(COMPLETE)).effective_load_method == "insert"
    staged = require_snowflake(load_settings({**COMPLETE, "TALLY_SNOWFLAKE_STAGE": "RAW.TALLY_ARCHIVE"}))
    assert staged.effective_load_method == "copy" and staged.stage == "RAW.TALLY_ARCHIVE"
    with pytest.raises(SettingError) as info:
        require_snowflake(load_settings({**COMPLETE, "TALLY_SNOWFLAKE_LOAD_METHOD": "copy"}))
    assert info.value.setting == "TALLY_SNOWFLAKE_STAGE"


@pytest.mark.parametrize("name, value", [
    ("TALLY_SNOWFLAKE_STAGE", "raw.archive; drop table raw.events"),
    ("TALLY_SNOWFLAKE_WAREHOUSE", "wh-1"),
    ("TALLY_SNOWFLAKE_DATABASE", "a.b.c.d"),
    ("TALLY_SNOWFLAKE_PROTOCOL", "ftp"),
    ("TALLY_SNOWFLAKE_LOAD_METHOD", "upload"),
    ("TALLY_SNOWFLAKE_PORT", "99999"),
])
def test_names_that_go_into_sql_are_validated(name: str, value: str) -> None:
    with pytest.raises(SettingError) as info:
        load_settings({**COMPLETE, name: value})
    assert info.value.setting == name and "Fix:" in str(info.value)


def test_secrets_stay_out_of_reprs_and_raw() -> None:
    settings = load_settings({**COMPLETE, "TALLY_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": SECRET})
    assert SECRET not in repr(settings) and SECRET not in str(settings.snowflake)
    assert "password='***'" in repr(settings.snowflake)
    assert SECRET not in repr(settings.raw) and "TALLY_SNOWFLAKE_PASSWORD" not in settings.raw
    assert SECRET not in describe(settings.snowflake)


def test_dagster_resource_holds_the_password_by_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    from assets.warehouse.resources import build_snowflake_warehouse

    for key, value in COMPLETE.items():
        monkeypatch.setenv(key, value)
    resource = build_snowflake_warehouse(load_settings(COMPLETE))
    assert isinstance(resource.password, dg.EnvVar) and resource.password.env_var_name == "TALLY_SNOWFLAKE_PASSWORD"
    assert SECRET not in repr(resource)
    assert resource.kind == "snowflake" and resource.load_method == "insert"


def test_dagster_definitions_fail_fast_on_a_missing_setting() -> None:
    from assets.warehouse.resources import build_snowflake_warehouse

    with pytest.raises(SettingError, match="TALLY_SNOWFLAKE_ACCOUNT"):
        build_snowflake_warehouse(load_settings({"TALLY_ENV": "prod", "TALLY_REDIS_URL": "redis://cache:6379/0"}))


def test_insert_pieces_end_at_line_ends() -> None:
    import gzip

    lines = [("x" * n).encode() for n in (10, 500, 30, 2000, 5)]
    body = gzip.compress(b"\n".join(lines) + b"\n")
    pieces = list(_text_chunks(body, max_bytes=600))
    assert "".join(pieces).encode() == b"\n".join(lines) + b"\n"
    assert all(p.endswith("\n") for p in pieces) and len(pieces) >= 3


class _RecordingCursor:
    """Records what a loader sends (the emulator cannot run COPY from S3; this checks the statement)."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    def execute(self, sql: str, params: Any = None) -> None:
        self.log.append((" ".join(sql.split()), params))

    def executemany(self, sql: str, rows: Any) -> None:
        self.log.append((" ".join(sql.split()), list(rows)))


class _RecordingConnection:
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def cursor(self) -> _RecordingCursor:
        return _RecordingCursor(self.log)


def test_copy_lists_the_objects_below_the_stage_and_registers_them() -> None:
    from streaming.archive.layout import BatchRange, object_key
    from streaming.archive.store import CommittedObject
    from streaming.warehouse.snowflake_load import land_by_copy

    hour = dt.datetime(2026, 1, 1, 0, tzinfo=dt.timezone.utc)
    objects = [CommittedObject(object_key("shardId-000000000000", hour, str(i * 10 + 1), str(i * 10 + 10)),
                               BatchRange("shardId-000000000000", str(i * 10 + 1), str(i * 10 + 10)),
                               {"hour": "2026-01-01T00:00:00Z", "records": 10}) for i in range(1001)]
    conn = _RecordingConnection()
    land_by_copy(conn, "RAW.TALLY_ARCHIVE", objects)
    copies = [(sql, params) for sql, params in conn.log if sql.startswith("copy into")]
    assert [len(params) for _, params in copies] == [1000, 1]  # FILES takes at most 1000 names
    sql, params = copies[0]
    assert "from @RAW.TALLY_ARCHIVE" in sql and "'raw/events/' || metadata$filename" in sql
    assert sql.count("%s") == 1000 and params[0].startswith("dt=2026-01-01/hour=00/shardId-000000000000/")
    assert "file_format = (type = json, compression = gzip)" in sql and "force" not in sql.lower()
    registered = [rows for sql, rows in conn.log if sql.startswith("insert into RAW.ARCHIVE_FILES")]
    assert sum(len(rows) for rows in registered) == 1001
