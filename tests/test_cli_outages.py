"""Every `tally` command, with Redis or the AWS endpoint unreachable: exit 2, one sentence that names
the service, the setting and the fix, no traceback.

The commands come from walking the click tree (``orchestration.cli.main``), so a command added later
fails :func:`test_every_command_is_covered` until it is listed here with the services it needs (or in
the commented allow-list of commands that need none). Each runs as its own process: what a user sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest

from orchestration.cli import main
from streaming.aws import aws_client
from streaming.resources import ensure_bucket, ensure_lease_table, ensure_stream
from tests.conftest import REGION, unique_name


UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
UNREACHABLE_AWS = "http://127.0.0.1:1"

#: One invocation per line: the arguments (past click's parsing, up to where it connects) and the
#: services it needs. Long-running commands run in their bounded form (--until-caught-up); their
#: waiting form is tested in test_consumer_waits_for_redis_at_start.
INVOCATIONS: list[tuple[tuple[str, ...], frozenset[str]]] = [
    (("stack", "up"), frozenset({"redis", "aws"})),
    (("generate", "--duration-s", "5", "--tenants", "1", "--to-stream"), frozenset({"aws"})),
    (("stream", "summary"), frozenset({"aws"})),
    (("send", "{events}"), frozenset({"aws"})),
    (("consume", "--until-caught-up", "--timeout-s", "60"), frozenset({"redis", "aws"})),
    (("dead-letters", "list"), frozenset({"redis"})),
    (("dead-letters", "replay"), frozenset({"redis"})),
    (("query", "counts", "--tenant", "t1"), frozenset({"redis"})),
    (("query", "uniques", "--tenant", "t1"), frozenset({"redis"})),
    (("query", "top-pages", "--tenant", "t1"), frozenset({"redis"})),
    (("query", "segment", "--tenant", "t1", "--name", "pricing_intent"), frozenset({"redis"})),
    (("query", "lag"), frozenset({"redis"})),
    (("query", "latency"), frozenset({"redis"})),
    (("query", "live"), frozenset({"redis"})),
    (("serve", "--port", "1"), frozenset({"redis"})),
    (("keys", "create", "--tenant", "t1"), frozenset({"redis"})),
    (("keys", "create", "--tenant", "t1", "--kind", "write"), frozenset({"aws"})),
    (("collect",), frozenset()),  # serves on with Kinesis, DynamoDB and Redis down: see tests/collector/test_faults.py
    (("archive",), frozenset({"redis", "aws"})),
    (("archive", "--follow"), frozenset()),  # waits instead: see test_archiver_follow_waits_for_aws
    (("batch", "build"), frozenset({"aws"})),
    (("reconcile", "--hours", "1"), frozenset({"redis", "aws"})),
    (("heal", "--hours", "1", "--dry-run"), frozenset({"redis", "aws"})),
    (("heals",), frozenset({"redis"})),
    (("forget", "--list"), frozenset({"aws"})),
    (("forget", "--tenant", "t1", "--user", "u1", "--no-rebuild"), frozenset({"redis"})),
    (("deploy", "env", "--stack", "tally"), frozenset({"aws"})),
    (("alerts", "test"), frozenset()),  # needs only its channels: tests/ops/test_alerts.py
    # Reads TALLY_MIGRATION_CONFIG and the legacy database before any tally service: tests/migration/test_bad_config.py
    (("migrate", "report", "--days", "1"), frozenset()),
]

#: Commands that need no service (commented), run with both down: exit 0, no traceback.
NO_SERVICE: dict[tuple[str, ...], str] = {
    ("stack", "down"): "stops what stack.json records; nothing recorded here",
    ("stack", "status"): "reports what runs, including what does not answer",
    ("generate", "--duration-s", "5", "--tenants", "1"): "without --to-stream it writes files only",
    ("settings",): "prints and validates settings",
    ("plan", "--preset", "growth"): "reads the measured figures and the price table, nothing else",
    # It needs PyPI, no tally service: only its help runs here; tests/deploy/test_lambda_zip.py builds it.
    ("package", "lambda", "--help"): "downloads wheels from PyPI",
}


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out += leaf_commands(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


def _covered(path: tuple[str, ...], invocations: list[tuple[str, ...]]) -> bool:
    return any(args[:len(path)] == path for args in invocations)


@pytest.mark.unit
def test_every_command_is_covered() -> None:
    listed = [args for args, _ in INVOCATIONS] + list(NO_SERVICE)
    missing = [" ".join(p) for p in leaf_commands(main) if not _covered(p, listed)]
    assert not missing, f"add these commands to INVOCATIONS (with the services they need) or NO_SERVICE: {missing}"


def _env(tmp_path: Path, redis_url: str, aws_url: str, names: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALLY_", "AWS_ENDPOINT_URL", "DAGSTER_"))}
    env.update({"TALLY_HOME": str(tmp_path / "home"), "TALLY_REDIS_URL": redis_url, "TALLY_AWS_ENDPOINT_URL": aws_url,
                "TALLY_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"), "COLUMNS": "80", **names})
    return env


def _run(args: tuple[str, ...], env: dict[str, str], events: Path) -> subprocess.CompletedProcess[str]:
    argv = [a.replace("{events}", str(events)) for a in args]
    return subprocess.run([sys.executable, "-m", "orchestration.cli", *argv], env=env, capture_output=True,
                          text=True, timeout=240, stdin=subprocess.DEVNULL)


def _one_sentence(proc: subprocess.CompletedProcess[str], *names: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    problems = []
    if proc.returncode != 2:
        problems.append(f"exit {proc.returncode}")
    if "Traceback" in proc.stderr + proc.stdout:
        problems.append("a traceback")
    sentences = [line for line in lines if line.startswith("tally: ")]
    if len(sentences) != 1:
        problems.append(f"{len(sentences)} 'tally:' lines")
    elif "Fix:" not in sentences[0] or not all(n in sentences[0] for n in names):
        problems.append(f"a sentence without 'Fix:' or {names}")
    extra = [line for line in lines if not line.startswith("tally: ") and "sending" not in line]
    if extra:  # `tally send` draws its progress on stderr (stdout is not a terminal here)
        problems.append(f"more on stderr: {extra[:3]}")
    return "; ".join(problems)


@pytest.fixture
def names(aws_endpoint: str) -> dict[str, str]:
    """A stream, bucket and lease table that exist, so a command gets as far as the service that is down."""
    names = {"TALLY_STREAM_NAME": unique_name("stream"), "TALLY_BUCKET": unique_name("bucket"),
             "TALLY_LEASE_TABLE": unique_name("leases")}
    ensure_stream(aws_client("kinesis", REGION, aws_endpoint), names["TALLY_STREAM_NAME"], 1)
    ensure_bucket(aws_client("s3", REGION, aws_endpoint), names["TALLY_BUCKET"], REGION)
    ensure_lease_table(aws_client("dynamodb", REGION, aws_endpoint), names["TALLY_LEASE_TABLE"])
    return names


@pytest.mark.integration
@pytest.mark.slow
def test_every_command_says_one_sentence_when_a_service_is_down(
        tmp_path: Path, aws_endpoint: str, redis_url: str, names: dict[str, str]) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"not": "an event"}\n')
    cases = []
    for args, needs in INVOCATIONS:
        if "redis" in needs:
            cases.append((args, _env(tmp_path / "r", UNREACHABLE_REDIS, aws_endpoint, names), ("Redis", "TALLY_REDIS_URL")))
        if "aws" in needs:
            cases.append((args, _env(tmp_path / "a", redis_url, UNREACHABLE_AWS, names), ("TALLY_AWS_ENDPOINT_URL",)))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: _run(case[0], case[1], events), cases))
    failures = []
    for (args, _, words), proc in zip(cases, results, strict=True):
        problem = _one_sentence(proc, *words)
        if problem:
            failures.append(f"tally {' '.join(args)} with {words[-1]} down: {problem}\n{proc.stderr[-600:]}")
    assert not failures, "\n".join(failures)


@pytest.mark.integration
@pytest.mark.slow
def test_commands_that_need_no_service_run_with_both_down(tmp_path: Path) -> None:
    env = _env(tmp_path, UNREACHABLE_REDIS, UNREACHABLE_AWS, {})
    for args in NO_SERVICE:
        proc = _run(args, env, tmp_path / "none")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stderr[-600:])


@pytest.mark.integration
@pytest.mark.slow
def test_wrong_tally_env_is_the_sentence_everywhere(tmp_path: Path) -> None:
    env = {**_env(tmp_path, UNREACHABLE_REDIS, UNREACHABLE_AWS, {}), "TALLY_ENV": "staging"}
    for argv in (["-m", "orchestration.cli", "query", "counts", "--tenant", "t1"],
                 ["-m", "orchestration.cli", "reconcile"], ["-m", "streaming.speed.run"]):
        proc = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert proc.stderr.strip() == ("tally: TALLY_ENV='staging' is not a known environment. "
                                       "Fix: set TALLY_ENV to 'local' or 'prod'"), (argv, proc.stderr)
    env = {**_env(tmp_path, UNREACHABLE_REDIS, UNREACHABLE_AWS, {}), "TALLY_DEDUP_HORIZON_S": "0"}
    proc = subprocess.run([sys.executable, "-m", "streaming.speed.run"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("tally: TALLY_DEDUP_HORIZON_S='0'"), proc.stderr
    assert "Traceback" not in proc.stderr


def _wait_for(proc: subprocess.Popen[str], text: str, lines: list[str], timeout_s: float = 90) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return
    raise AssertionError(f"no {text!r} in {lines[-5:]}")


@pytest.mark.integration
@pytest.mark.slow
def test_consumer_waits_for_redis_at_start_then_consumes(
        tmp_path: Path, aws_endpoint: str, names: dict[str, str], servers_dir: Path) -> None:
    """`python -m streaming.speed.run` started before its Redis: it logs the sentence and retries, then
    counts once Redis is there; SIGTERM stops it cleanly."""
    import signal
    import time

    import redis

    from streaming.producer import Producer
    from streaming.speed import deadletters
    from streaming.stack.process import free_port
    from streaming.stack.redis_local import RedisServer

    port = free_port()
    env = _env(tmp_path, f"redis://127.0.0.1:{port}/0", aws_endpoint, names)
    with Producer(aws_client("kinesis", REGION, aws_endpoint), names["TALLY_STREAM_NAME"]) as producer:
        producer.put(b'{"not": "an event"}', "k")
    proc = subprocess.Popen([sys.executable, "-m", "streaming.speed.run", "--lease-duration-s", "3"], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    server = None
    lines: list[str] = []
    try:
        _wait_for(proc, "Retrying in", lines)
        assert "does not answer" in lines[-1] and "TALLY_REDIS_URL" in lines[-1] and "Fix:" in lines[-1]
        assert proc.poll() is None, "it waits; it does not exit"
        server = RedisServer(workdir=servers_dir / f"late-{port}", port=port).start()
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not deadletters.counts(client):
            time.sleep(0.5)
        assert deadletters.counts(client) == {"missing_field": 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        if server is not None:
            server.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_archiver_follow_waits_for_aws(tmp_path: Path, redis_url: str, names: dict[str, str]) -> None:
    """`tally archive --follow` with the AWS endpoint down: a log line with the fix per retry, no exit."""
    import signal

    env = _env(tmp_path, redis_url, UNREACHABLE_AWS, names)
    proc = subprocess.Popen([sys.executable, "-m", "orchestration.cli", "archive", "--follow"], env=env,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    try:
        _wait_for(proc, "Retrying in", lines, timeout_s=120)
        assert "does not answer" in lines[-1] and "TALLY_AWS_ENDPOINT_URL" in lines[-1]
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
