"""One suite, both warehouse adapters: a DuckDB file and the Snowflake emulator (fakesnow over HTTP, the
server of tests/snowflake). Each adapter loads the same generated archive (two hours, duplicates, late
events, malformed records, a zombie batch that overlaps another) and every answer is compared with what
the archive objects themselves say, computed here in Python: a behaviour difference between the adapters
fails for at least one of them.

The marts are not built here (no dbt): what the readers answer without them is part of the contract;
tests/snowflake/test_pipeline.py compares the mart readers of both warehouses after real dbt builds.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from streaming.privacy.subject import Subject
from streaming.privacy.warehouse import WarehouseEraser
from streaming.settings import SnowflakeSettings
from streaming.warehouse.base import EVENT_COLUMNS, Warehouse
from streaming.warehouse.duckdb import DuckDBWarehouse
from streaming.warehouse.snowflake import SnowflakeWarehouse

from tests.snowflake.archive import ArchiveFixture

pytestmark = [pytest.mark.integration]

LATENESS_S = 300
UTC = dt.timezone.utc


@pytest.fixture(params=[pytest.param("duckdb"), pytest.param("snowflake", marks=pytest.mark.snowflake)])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        yield DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    else:
        sf: SnowflakeSettings = request.getfixturevalue("sf_settings")
        yield SnowflakeWarehouse.from_settings(sf, login_timeout_s=10, network_timeout_s=60)


class Truth:
    """What the archive's committed objects hold, one row per (shard, sequence number)."""

    def __init__(self, archive: ArchiveFixture) -> None:
        self.keys: set[str] = set()
        self.manifest_records = 0
        lines: dict[tuple[str, str], dict[str, Any]] = {}
        for hour in archive.hours:
            for obj in sorted(archive.store.committed_objects(hour), key=lambda o: o.key):
                self.keys.add(obj.key)
                self.manifest_records += int(obj.entry["records"])
                for raw in gzip.decompress(archive.store.read_object(obj.key)).splitlines():
                    line = json.loads(raw)
                    lines.setdefault((line["shard_id"], line["sequence_number"]), line)
        self.objects = len(self.keys)
        self.events: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []
        for (shard, seq), line in lines.items():
            if line.get("data_b64") is not None:
                self.dead.append(line)
                continue
            event = line.get("event") or json.loads(line["data"])
            received = dt.datetime.fromisoformat(event["received_at"].replace("Z", "+00:00")).timestamp()
            self.events.append({**event, "_shard": shard, "_seq": int(seq), "_received": received,
                                "_minute": int(received // 60)})

    def raw_cells(self) -> list[tuple[str, str, str, int]]:
        cells = Counter((e["tenant_id"], e["event_type"],
                         dt.datetime.fromtimestamp(e["_minute"] * 60, tz=UTC).strftime("%Y-%m-%dT%H:%M:00Z"))
                        for e in self.events)
        return sorted((t, e, m, n) for (t, e, m), n in cells.items())

    def dead_reasons(self) -> list[tuple[str, int]]:
        return sorted(Counter(d["reason"] for d in self.dead).items())

    def counts(self, lateness_s: int) -> list[tuple[str, str, int, int, int, int, int]]:
        """(tenant, type, minute, rows, distinct ids, mart, late), late as the adapters define it: the
        shard's event time before the row (sequence order) had passed the window's end plus lateness."""
        late: dict[tuple[str, str, int], set[str]] = defaultdict(set)
        by_shard: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in self.events:
            by_shard[e["_shard"]].append(e)
        for rows in by_shard.values():
            newest = None
            for e in sorted(rows, key=lambda r: r["_seq"]):
                if newest is not None and newest >= (e["_minute"] + 1) * 60 + lateness_s:
                    late[(e["tenant_id"], e["event_type"], e["_minute"])].add(e["event_id"])
                newest = e["_received"] if newest is None else max(newest, e["_received"])
        rows_: Counter[tuple[str, str, int]] = Counter()
        ids: dict[tuple[str, str, int], set[str]] = defaultdict(set)
        for e in self.events:
            cell = (e["tenant_id"], e["event_type"], e["_minute"])
            rows_[cell] += 1
            ids[cell].add(e["event_id"])
        return sorted((*cell, n, len(ids[cell]), 0, len(late[cell])) for cell, n in rows_.items())

    def sequences(self) -> list[tuple[Any, ...]]:
        return sorted((e["event_id"], e["tenant_id"], e["event_type"], e["_minute"], e["source_id"], e["source_seq"])
                      for e in self.events)

    def minute_range(self) -> tuple[int, int]:
        minutes = [e["_minute"] for e in self.events]
        return min(minutes), max(minutes) + 1


def _rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple[Any, ...]]:
    return sorted(tuple(v.item() if hasattr(v, "item") else v for v in row)
                  for row in frame[columns].itertuples(index=False))


def _sorted(counts: tuple[list[Any], list[Any]]) -> tuple[list[Any], list[Any]]:
    return sorted(counts[0]), sorted(counts[1])


@pytest.fixture
def truth(archive: ArchiveFixture) -> Truth:
    return Truth(archive)


def test_an_empty_warehouse_answers_empty(warehouse: Warehouse) -> None:
    warehouse.ensure_raw_tables()
    warehouse.ensure_raw_tables()  # idempotent
    assert warehouse.loaded_hours() == []
    assert warehouse.raw_counts([]) == ([], [])
    assert warehouse.rollup_grains() == set()
    assert warehouse.watermark() is None
    assert warehouse.counts(0, 10**9, LATENESS_S).empty
    assert warehouse.events([1], "mart").empty and list(warehouse.events([1], "mart").columns) == list(EVENT_COLUMNS)
    assert warehouse.visitor_counts(0, 10**7).empty and warehouse.page_views(0, 10**7).empty
    assert warehouse.segment_hits("page_view", {"path": "/"}, 0, 10**15).empty
    assert warehouse.marks(3).count(",") == 2


def test_load_and_raw_counts_match_the_archive(warehouse: Warehouse, archive: ArchiveFixture, truth: Truth) -> None:
    result = warehouse.load_hours(archive.store, archive.hours)
    assert (result.hours, result.objects, result.events, result.dead_letters, result.manifest_records) == \
        (len(archive.hours), truth.objects, len(truth.events), len(truth.dead), truth.manifest_records)
    # The zombie batch: the manifests count its records twice, the raw tables hold them once.
    assert result.events + result.dead_letters == archive.records < result.manifest_records
    assert warehouse.loaded_hours() == archive.hours
    rows, dead = warehouse.raw_counts(archive.hours)
    assert sorted(rows) == truth.raw_cells() and sorted(dead) == truth.dead_reasons()
    first, second = archive.hours
    only_first, _ = warehouse.raw_counts([first])
    assert 0 < sum(n for *_, n in only_first) < sum(n for *_, n in rows)


def test_reloading_an_hour_replaces_it_and_moves_the_fingerprint(warehouse: Warehouse, archive: ArchiveFixture,
                                                                truth: Truth) -> None:
    warehouse.load_hours(archive.store, archive.hours)
    before = warehouse.fingerprint()
    counts_before = _sorted(warehouse.raw_counts(archive.hours))
    again = warehouse.load_hours(archive.store, [archive.hours[1]])
    assert again.hours == 1 and again.events > 0
    assert _sorted(warehouse.raw_counts(archive.hours)) == counts_before  # replaced, not duplicated
    after = warehouse.fingerprint()
    assert after != before and after[0] == before[0]  # same raw rows, a newer load time
    assert warehouse.fingerprint() == after  # nothing committed since: equal


def test_reconciliation_reads_match_the_archive(warehouse: Warehouse, archive: ArchiveFixture, truth: Truth) -> None:
    warehouse.load_hours(archive.store, archive.hours)
    start, end = truth.minute_range()
    columns = ["tenant_id", "event_type", "minute", "rows", "distinct_ids", "mart", "late"]
    counts = warehouse.counts(start, end, LATENESS_S)
    assert _rows(counts, columns) == truth.counts(LATENESS_S)
    assert any(late for *_, late in truth.counts(LATENESS_S))  # the run has late events to find
    assert _rows(warehouse.sequences(start, end), list(EVENT_COLUMNS)) == truth.sequences()
    hours = sorted({m // 60 for m in range(start, end)})
    raw_events = warehouse.events(hours, "raw")
    assert _rows(raw_events, list(EVENT_COLUMNS)) == sorted(set(truth.sequences()))
    first_hour_hour = int(archive.hours[0].timestamp()) // 3600
    assert warehouse.loaded_keys(first_hour_hour * 60, (first_hour_hour + 2) * 60) == truth.keys
    assert warehouse.loaded_keys(0, 60) == set()
    # No mart built: every raw cell is unbuilt, no watermark, no roll-ups.
    unbuilt = warehouse.unbuilt(start, end)
    assert _rows(unbuilt, ["tenant_id", "event_type", "minute", "rows"]) == \
        [(t, e, m, n) for t, e, m, n, *_ in truth.counts(LATENESS_S)]
    assert warehouse.watermark() is None and warehouse.rollup_grains() == set()
    assert warehouse.rollups(start, end).empty


def test_dead_letter_numbers_are_the_rejected_records_inside_the_sequences(warehouse: Warehouse,
                                                                          archive: ArchiveFixture,
                                                                          truth: Truth) -> None:
    warehouse.load_hours(archive.store, archive.hours)
    start, end = truth.minute_range()
    spans: dict[tuple[str, str], tuple[int, int]] = {}
    for e in truth.events:
        lo, hi = spans.get((e["source_id"], e["tenant_id"]), (e["source_seq"], e["source_seq"]))
        spans[(e["source_id"], e["tenant_id"])] = (min(lo, e["source_seq"]), max(hi, e["source_seq"]))
    expected = sorted({(d["source_id"], d["tenant_id"], d["source_seq"]) for d in truth.dead
                       if d.get("source_seq") is not None and (d["source_id"], d["tenant_id"]) in spans
                       and spans[(d["source_id"], d["tenant_id"])][0] <= d["source_seq"]
                       <= spans[(d["source_id"], d["tenant_id"])][1]})
    got = _rows(warehouse.dead_letter_numbers(start, end), ["source_id", "tenant_id", "source_seq"])
    assert got == expected


def test_erasure_deletes_the_subjects_raw_rows_and_nothing_else(warehouse: Warehouse, archive: ArchiveFixture,
                                                               truth: Truth) -> None:
    warehouse.load_hours(archive.store, archive.hours)
    users = Counter((e["tenant_id"], e["user_id"]) for e in truth.events if e.get("user_id"))
    (tenant, user), n = users.most_common(1)[0]
    eraser = WarehouseEraser(warehouse)
    subject = Subject(tenant, user)
    assert sum(eraser.count(subject).values()) == n
    rows_before, _ = warehouse.raw_counts(archive.hours)
    erased = eraser.erase(subject)
    raw_key = next(k for k in erased.rows_deleted if k.lower() == "raw.events")
    assert erased.rows_deleted[raw_key] == n
    assert sum(eraser.count(subject).values()) == 0
    rows_after, _ = warehouse.raw_counts(archive.hours)
    assert sum(r[3] for r in rows_before) - sum(r[3] for r in rows_after) == n
    # Another user of the same tenant keeps every row.
    other = next(((t, u), k) for (t, u), k in users.items() if t == tenant and u != user)
    assert sum(eraser.count(Subject(*other[0])).values()) == other[1]
