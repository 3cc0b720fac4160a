"""Fixtures of the batch-layer tests: small generated runs (with duplicates, late and malformed
records) on a fresh stream, and an archive store on a fresh bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streaming.archive.store import ArchiveStore
from streaming.generator import GeneratorConfig, Ledger, read_run, write_run

from tests.batch.streams import send

#: Small but with every kind of record; late delays cross hour boundaries (start 00:50, 20 min long).
SMALL_RUN = GeneratorConfig(seed=7, tenants=6, start="2026-01-01T00:50:00Z", duration_s=1200, rate_per_s=4.0,
                            duplicate_rate=0.05, late_rate=0.05, late_delay_s=(60, 900), malformed_rate=0.03)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Ledger]:
    out = tmp_path_factory.mktemp("small-run")
    ledger = write_run(SMALL_RUN, out)
    return out, ledger


@pytest.fixture
def loaded_stream(kinesis: Any, stream_name: str, small_run: tuple[Path, Ledger]) -> tuple[str, Ledger]:
    """The small run sent to a fresh 2-shard stream."""
    out, ledger = small_run
    assert send(kinesis, stream_name, read_run(out)) == ledger.records_total
    return stream_name, ledger


@pytest.fixture
def store(s3: Any, bucket: str) -> ArchiveStore:
    return ArchiveStore(s3, bucket)
