"""Every Redis key family the speed layer writes has the TTL the README's table promises (speed-layer
section, "Key families and their TTLs"): real traffic through the consumer's own processor factory (with
the TTL settings set to values of the test's own) into a real redis-server, then ``TTL`` of every key.
A key of a family the table does not name fails the test, so a new family cannot go unbounded."""

from __future__ import annotations

import re
from typing import Any

import pytest
import redis

from streaming.events import EventDecoder
from streaming.generator import GeneratorConfig
from streaming.kinesis.processor import ShardContext
from streaming.privacy import suppression
from streaming.query.apikeys import create_key
from streaming.segments import load_rules
from streaming.settings import load_settings
from streaming.speed.run import processor_factory
from tests.speed.conftest import as_stream_records, generated, recent_start, valid_events

pytestmark = pytest.mark.integration

ENV = {"TALLY_SPEED_TTL_MINUTE_S": "7200", "TALLY_SPEED_TTL_HOUR_S": "36000", "TALLY_SPEED_TTL_DAY_S": "200000",
       "TALLY_DEAD_LETTER_TTL_S": "100000", "TALLY_DEDUP_HORIZON_S": "4000"}
MARKER_S = 8 * 86_400  # Retention.marker_s: applied markers and position floors
OPS_S = 2 * 86_400  # lag and latency


def families(settings: Any) -> list[tuple[str, str, tuple[int, int] | None]]:
    """(family, key pattern, (lowest, highest) TTL in seconds or None: kept without TTL), as the README says."""
    m, h, d = settings.speed_ttl_minute_s, settings.speed_ttl_hour_s, settings.speed_ttl_day_s
    dl, horizon = settings.dead_letter_ttl_s, settings.dedup_horizon_s
    bucket = -(-horizon // 4)
    windows = {r.name: r.window_hours * 3600 for r in load_rules()}
    state = {2 * w + 60 for w in windows.values()}
    tenant = r"tally:\{[a-z0-9][a-z0-9_-]*\}:"
    return [
        ("minute counters", tenant + r"cnt:m:\d+$", (m, m)),
        ("hour counters", tenant + r"cnt:h:\d+$", (h, h)),
        ("day counters", tenant + r"cnt:d:\d+$", (d, d)),
        ("hourly uniques", tenant + r"uv:h:\d+$", (d, d)),
        ("hourly top pages", tenant + r"top:h:\d+$", (h, h)),
        ("daily top pages", tenant + r"top:d:\d+$", (d, d)),
        ("segment members", tenant + r"seg:[a-z_]+$", (d, d)),
        ("segment states", tenant + r"segst:[a-z_]+:\d+$", (min(state), max(state))),
        ("suppressed counts", tenant + r"sup:m:\d+$", (d, d)),
        ("applied markers", tenant + r"applied:speed:[\w-]+$", (MARKER_S, MARKER_S)),
        ("dedup seen-sets", tenant + r"seen:\d+$", (horizon, 6 * bucket)),
        ("dead letters", r"tally:\{[a-z0-9_-]+\}:dl:(entries|pending|written|counts|replayed)$", (dl, dl)),
        ("dead-letter tags", r"tally:\{_dl\}:dl:tags$", (dl, dl)),
        ("position floors", r"tally:\{_pos\d*\}:pos:speed:[\w-]+$", (MARKER_S, MARKER_S)),
        ("consumer lag", r"tally:\{_ops\}:lag$", (OPS_S, OPS_S)),
        ("latency histograms", r"tally:\{_ops\}:lat:\d+$", (OPS_S, OPS_S)),
        ("suppression lists", tenant + r"suppress(:ver)?$", None),
        ("API keys", r"tally:\{_keys\}:api$", None),
    ]


def test_every_key_family_has_the_ttl_the_readme_promises(redis_client: redis.Redis) -> None:
    settings = load_settings(ENV)
    datas, _, ledger = generated(GeneratorConfig(seed=41, tenants=6, duration_s=240, rate_per_s=40,
                                                 duplicate_rate=0.03, malformed_rate=0.03, start=recent_start(240)))
    suppressed = valid_events(datas)[0]  # a visitor who asked to be forgotten: their events count apart
    suppression.add(redis_client, suppressed.tenant_id,
                    [suppression.subject_hash(suppressed.tenant_id, suppressed.anonymous_id)], 0)
    create_key(redis_client, suppressed.tenant_id)
    processor = processor_factory(settings, redis_client, "speed")()
    assert isinstance(processor.decoder, EventDecoder)
    ctx = ShardContext("s", "shardId-000000000003", "w", 1)
    processor.initialize(ctx, None)
    records = as_stream_records(datas, ctx.shard_id)
    for i in range(0, len(records), 700):
        processor.process_batch(ctx, records[i:i + 700], 0)
    processor.process_batch(ctx, [], 0)  # settles the last batch
    processor.shutdown(ctx)

    table = families(settings)
    seen: dict[str, int] = {}
    for raw in redis_client.scan_iter(count=1000):
        key = raw.decode()
        matched = [(name, bounds) for name, pattern, bounds in table if re.match(pattern, key)]
        assert len(matched) == 1, f"{key}: {'no family' if not matched else 'several families'} in the README's table"
        name, bounds = matched[0]
        ttl = redis_client.ttl(key)
        if bounds is None:
            assert ttl == -1, (name, key, ttl)
        else:
            lo, hi = bounds
            assert lo - 30 <= ttl <= hi, (name, key, ttl, bounds)
        seen[name] = seen.get(name, 0) + 1
    assert set(seen) == {name for name, _, _ in table}, f"families not written: {set(n for n, _, _ in table) - set(seen)}"
    assert ledger.valid_events and sum(seen.values()) > 100


def test_the_lambda_handler_takes_the_same_ttl_settings(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from streaming.speed.lambda_handler import build_processor
    from streaming.speed.store import Retention

    for key, value in {**ENV, "TALLY_REDIS_URL": redis_url}.items():
        monkeypatch.setenv(key, value)
    assert build_processor().store.retention == Retention.from_settings(load_settings())
    assert build_processor().store.retention.minute_s == 7200
