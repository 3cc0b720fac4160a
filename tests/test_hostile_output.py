"""Hostile tenant-visible values through the whole pipeline, then every command that prints them.

Page paths, anonymous ids, a collector's source id and dead letters' raw bytes carry rich markup
(``[/]``, ``[/x]``), ANSI escapes, NUL, RTL controls, emoji, 10,000 characters, SQL and shell
metacharacters. They go out with ``tally send``, through ``tally consume`` (Redis), ``tally archive``
(S3) and the loader and dbt (DuckDB); then each printing command runs plain and ``--format json``: exit
as expected, plain output shows each value as :func:`streaming.literal.printable` writes it (and no
control character reaches the terminal raw), JSON decodes to the stored value exactly. Tenant ids are
restricted by the contract, so a hostile one is refused with one clear line.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings as hsettings, strategies as st

from orchestration.cli import main
from orchestration.output import LiteralConsole, plain_value
from streaming.aws import aws_client
from streaming.literal import json_text, printable
from streaming.resources import ensure_bucket, ensure_lease_table, ensure_stream
from streaming.settings import load_settings
from tests.batch.streams import read_shard
from tests.conftest import REGION, unique_name

HOSTILE = [
    "[/]", "[/x]", "[bold red]b[/bold red]", "\x1b[31mred\x1b[0m", "nul\x00byte", "rtl\u202eevil\u200f",
    "emoji 😀🚀", "'; DROP TABLE raw.events; --", "$(touch /tmp/pwned) `id` | & ; > <", ":smile: \\back\\slash",
    "new\nline\ttab", "\x9b31m c1 csi",
]
LONG_PATH = "/" + "x" * 10_000
TENANT = "hostile-tenant"
HOSTILE_SOURCE = "[/x]\x1b[31m\u202esrc"
BAD_TENANT_EVENT = {
    "event_id": "7f7f0000-0000-4000-8000-000000000001", "tenant_id": "[/x]\x1b[31m", "event_type": "click",
    "anonymous_id": "a", "occurred_at": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z",
    "source_id": "s", "source_seq": 1, "properties": {}, "schema_version": 1}
RAW_DEAD_LETTERS = [b"[/x] \x1b[31m not json \x00 \xe2\x80\xae", b"\xff\xfe[/] not utf-8",
                    json.dumps(BAD_TENANT_EVENT).encode()]
#: Characters that act on a terminal: none may reach stdout raw.
ACTIVE = ["\x1b", "\x00", "\u202e", "\u200f", "\x9b"]


def _event(anonymous_id: str, event_type: str, properties: dict[str, Any], at: dt.datetime, source: str, seq: int) -> bytes:
    return json.dumps({
        "event_id": str(uuid.uuid4()), "tenant_id": TENANT, "event_type": event_type, "anonymous_id": anonymous_id,
        "user_id": anonymous_id, "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "received_at": at.isoformat().replace("+00:00", "Z"), "source_id": source, "source_seq": seq,
        "properties": properties, "schema_version": 1,
    }, ensure_ascii=False).encode()


def _lines(at: dt.datetime) -> list[bytes]:
    lines: list[bytes] = []
    seq = 0
    for i, value in enumerate(HOSTILE):
        visitor = f"{value}#{i}"
        for event_type, props in (("page_view", {"path": value, "title": value}),
                                  ("click", {"element": "cta-start-trial", "label": value})):
            seq += 1
            lines.append(_event(visitor, event_type, props, at, "collector-1", seq))
    seq += 1
    lines.append(_event("long-visitor", "page_view", {"path": LONG_PATH}, at, "collector-1", seq))
    lines.append(lines[0])  # an exact duplicate: a producer retry
    lines.append(_event("gap-visitor", "click", {}, at, HOSTILE_SOURCE, 1))
    lines.append(_event("gap-visitor", "click", {}, at, HOSTILE_SOURCE, 3))  # 2 never arrives: upstream_gap
    # Ten minutes later, on every shard (16 partition keys): each shard's watermark passes the minute
    # above plus its lateness, so that minute is judged.
    for n in range(16):
        lines.append(_event(f"clock-{n}", "click", {}, at + dt.timedelta(minutes=10), "collector-1", seq + 1 + n))
    return lines + RAW_DEAD_LETTERS


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, aws_endpoint: str, redis_url: str) -> Iterator[dict[str, Any]]:
    """The hostile file sent with `tally send`, consumed, archived, loaded and built once for the module."""
    from tests.reconcile import pipeline as layers

    home = tmp_path_factory.mktemp("hostile")
    env = {"TALLY_ENV": "local", "TALLY_HOME": str(home / "tally_home"), "TALLY_AWS_ENDPOINT_URL": aws_endpoint,
           "TALLY_REDIS_URL": redis_url, "TALLY_STREAM_NAME": unique_name("stream"), "TALLY_BUCKET": unique_name("bucket"),
           "TALLY_LEASE_TABLE": unique_name("leases"), "TALLY_DUCKDB_PATH": str(home / "warehouse.duckdb")}
    settings = load_settings(env)
    kinesis, s3 = aws_client("kinesis", REGION, aws_endpoint), aws_client("s3", REGION, aws_endpoint)
    dynamodb = aws_client("dynamodb", REGION, aws_endpoint)
    ensure_stream(kinesis, settings.stream_name, 2)
    ensure_bucket(s3, settings.bucket, REGION)
    ensure_lease_table(dynamodb, settings.lease_table)
    import redis

    redis.Redis.from_url(redis_url).flushall()
    at = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=30)).replace(second=5, microsecond=0)
    lines = _lines(at)
    source = home / "events.jsonl"
    source.write_bytes(b"\n".join(lines[:3]) + b"\n\n   \n" + b"\n".join(lines[3:]) + b"\n")
    runner = CliRunner()
    sent = runner.invoke(main, ["send", str(source)], env=env)
    assert sent.exit_code == 0, sent.output
    consumed = runner.invoke(main, ["consume", "--until-caught-up", "--timeout-s", "120"], env=env)
    assert consumed.exit_code == 0, consumed.output
    archived = runner.invoke(main, ["archive", "--timeout-s", "120"], env=env)
    assert archived.exit_code == 0, archived.output
    layers.load_warehouse(settings, s3)
    layers.run_dbt(settings, home, "+fct_event_counts_day")
    window = ["--from", (at - dt.timedelta(minutes=30)).isoformat(), "--to", (at + dt.timedelta(minutes=10)).isoformat()]
    yield {"env": env, "lines": lines, "send_output": sent.output, "window": window, "kinesis": kinesis,
           "settings": settings}


def _invoke(pipeline: dict[str, Any], args: list[str], code: int = 0) -> str:
    result = CliRunner().invoke(main, args, env=pipeline["env"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    for char in ACTIVE:
        assert char not in result.output, (args, repr(char))
    return result.output


@pytest.mark.integration
@pytest.mark.slow
def test_send_puts_exactly_those_bytes_on_the_stream(pipeline: dict[str, Any]) -> None:
    """Valid, duplicate and malformed lines: the stream holds each line's bytes, no more, no fewer."""
    from streaming.stream_reader import list_shard_ids

    kinesis, stream = pipeline["kinesis"], pipeline["settings"].stream_name
    held = collections.Counter(r.data for shard in list_shard_ids(kinesis, stream)
                               for r in read_shard(kinesis, stream, shard))
    assert held == collections.Counter(pipeline["lines"])
    out = pipeline["send_output"]
    assert f"sent {len(pipeline['lines'])} records" in out and "2 empty lines skipped" in out
    assert "3 of the records sent are not valid events and will be dead-lettered" in out
    assert "bad_tenant_id=1" in out and "invalid_json=1" in out and "not_utf8=1" in out


@pytest.mark.integration
@pytest.mark.slow
def test_top_pages_show_paths_literally(pipeline: dict[str, Any]) -> None:
    args = ["query", "top-pages", "--tenant", TENANT, "--minutes", "120", "--limit", "50"]
    plain = _invoke(pipeline, args)
    for path in [*HOSTILE, LONG_PATH]:
        assert f"  {printable(path)}\n" in plain, path
    doc = json.loads(_invoke(pipeline, [*args, "--format", "json"]))
    assert {row["path"] for row in doc} == {*HOSTILE, LONG_PATH}
    _invoke(pipeline, [*args, "--format", "table"])


@pytest.mark.integration
@pytest.mark.slow
def test_segment_members_show_anonymous_ids_literally(pipeline: dict[str, Any]) -> None:
    args = ["query", "segment", "--tenant", TENANT, "--name", "trial_starter", "--limit", "100"]
    visitors = {f"{value}#{i}" for i, value in enumerate(HOSTILE)}
    plain = _invoke(pipeline, args).splitlines()
    assert set(plain[1:]) == {printable(v) for v in visitors}
    assert set(json.loads(_invoke(pipeline, [*args, "--format", "json"]))["members"]) == visitors


@pytest.mark.integration
@pytest.mark.slow
def test_live_table_and_counts(pipeline: dict[str, Any]) -> None:
    live = json.loads(_invoke(pipeline, ["query", "live", "--minutes", "120", "--format", "json"]))
    row = [r for r in live["tenants"] if r["tenant"] == TENANT][0]
    assert row["top_page"] in HOSTILE + [LONG_PATH] and row["page_view"] == len(HOSTILE) + 1  # the duplicate counted once
    plain = _invoke(pipeline, ["query", "live", "--minutes", "120"])
    assert f"top_page={plain_value(row['top_page'])}" in plain
    _invoke(pipeline, ["query", "live", "--minutes", "120", "--format", "table"])
    for args in (["query", "counts", "--tenant", TENANT, "--minutes", "120"], ["query", "lag"],
                 ["query", "latency", "--minutes", "120"], ["query", "uniques", "--tenant", TENANT, "--minutes", "120"],
                 ["stream", "summary"], ["heals"], ["stack", "status"]):
        _invoke(pipeline, args)
        json.loads(_invoke(pipeline, [*args, "--format", "json"]))


@pytest.mark.integration
@pytest.mark.slow
def test_dead_letters_show_raw_bytes_literally(pipeline: dict[str, Any]) -> None:
    plain = _invoke(pipeline, ["dead-letters", "list", "--limit", "50"])
    for raw in RAW_DEAD_LETTERS:
        assert f"raw={plain_value(raw)}" in plain, raw
    doc = json.loads(_invoke(pipeline, ["dead-letters", "list", "--limit", "50", "--format", "json"]))
    assert sorted(base64.b64decode(e["raw_base64"]) for e in doc["pending"]) == sorted(RAW_DEAD_LETTERS)
    assert {e["raw"] for e in doc["pending"]} >= {RAW_DEAD_LETTERS[0].decode(), RAW_DEAD_LETTERS[2].decode()}
    _invoke(pipeline, ["dead-letters", "list", "--format", "table"])


@pytest.mark.integration
@pytest.mark.slow
def test_reconcile_names_a_hostile_source_literally(pipeline: dict[str, Any]) -> None:
    """The hostile collector's gap is an upstream_gap (loss, exit 1), its source id shown as stored."""
    plain = _invoke(pipeline, ["reconcile", *pipeline["window"]], code=1)
    gap = [line for line in plain.splitlines() if line.startswith("sequence ") and "upstream_gap" in line]
    assert len(gap) == 1 and f"source_id={plain_value(HOSTILE_SOURCE)}" in gap[0], plain
    doc = json.loads(_invoke(pipeline, ["reconcile", *pipeline["window"], "--format", "json"], code=1))
    assert [s["source_id"] for s in doc["findings"]["sequences"] if s["verdict"] == "upstream_gap"] == [HOSTILE_SOURCE]
    assert doc["outcome"] == "loss"
    for fmt in ("table", "csv"):
        _invoke(pipeline, ["reconcile", *pipeline["window"], "--format", fmt], code=1)


@pytest.mark.integration
@pytest.mark.slow
def test_hostile_tenant_ids_are_refused_clearly(pipeline: dict[str, Any]) -> None:
    for tenant in ("[/x]\x1b[31m", "Tenant A", "a" * 65, "x}{y"):
        result = CliRunner().invoke(main, ["query", "top-pages", "--tenant", tenant], env=pipeline["env"])
        assert result.exit_code == 2 and "does not match" in result.output, result.output
        assert "\x1b" not in result.output and "Traceback" not in result.output


@pytest.mark.unit
@hsettings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_any_string_prints_literally_and_round_trips(value: str) -> None:
    """Whatever a tenant sends, the console shows printable(value) exactly (no markup, no emoji codes,
    nothing cut), nothing active reaches the terminal, and json_text decodes back to the value."""
    import io

    out = io.StringIO()
    LiteralConsole(file=out).print(printable(value), soft_wrap=True)
    assert out.getvalue() == printable(value) + "\n"
    assert not any(char in out.getvalue() for char in ACTIVE)
    assert json.loads(json_text(value)) == value
    assert not any(char in json_text(value) for char in ACTIVE)
    quoted = plain_value(value)
    assert (json.loads(quoted) if quoted.startswith('"') else quoted) == value or quoted == ""
