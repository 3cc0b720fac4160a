"""The write-ahead spool on a real directory: group commit, recovery after torn writes, numbering that
survives restarts and trims, the bound, and one process per state directory."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from streaming.collector.spool import Position, Spool, SpoolCorrupt, SpoolFull, SpoolLocked, spool_status

pytestmark = pytest.mark.unit


def opened(path: Path, max_bytes: int = 1 << 24, segment_bytes: int = 1 << 20) -> Spool:
    return Spool(path, max_bytes, fsync=True, segment_bytes=segment_bytes).open()


def put(spool: Spool, tenant: str, n: int, size: int = 10) -> list[int]:
    done = threading.Event()
    errors: list[BaseException | None] = []

    def waiter(exc: BaseException | None) -> None:
        errors.append(exc)
        done.set()

    seqs = spool.append(tenant, [lambda seq: (f"k{seq}", f"{tenant}:{seq}:".encode() + b"x" * size)] * n, waiter)
    assert done.wait(10) and errors == [None]
    return seqs


def drain_all(spool: Spool) -> list[tuple[str, int, bytes]]:
    out = []
    at = spool.drained
    while True:
        records, end = spool.read(at, 500, 1 << 20)
        if not records and end == at:
            return out
        spool.mark_drained(end, len(records))
        out += [(r.tenant, r.source_seq, r.data) for r in records]
        at = end


def test_numbers_are_per_tenant_and_continue_after_a_restart(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    assert put(spool, "a", 3) == [1, 2, 3]
    assert put(spool, "b", 2) == [1, 2]
    assert put(spool, "a", 1) == [4]
    sid = spool.source_id
    spool.close()
    again = opened(tmp_path)
    assert again.source_id == sid and sid.startswith("col-")
    assert put(again, "a", 1) == [5] and put(again, "b", 1) == [3] and put(again, "c", 1) == [1]
    records = drain_all(again)
    assert [(t, s) for t, s, _ in records] == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("a", 4),
                                               ("a", 5), ("b", 3), ("c", 1)]
    again.close()


def test_numbers_survive_trimming_every_segment(tmp_path: Path) -> None:
    spool = opened(tmp_path, segment_bytes=2_000)
    for _ in range(20):
        put(spool, "a", 5, size=100)
    drain_all(spool)
    assert spool.depth_bytes() == 0
    spool.close()
    again = opened(tmp_path, segment_bytes=2_000)  # a new active segment: the old ones can all go
    drain_all(again)
    again.close()
    segments = list((tmp_path / "spool").glob("*.seg"))
    assert sum(p.stat().st_size for p in segments) == 0, "every segment that held a number is deleted"
    third = opened(tmp_path, segment_bytes=2_000)
    assert put(third, "a", 1) == [101], "the numbers of trimmed segments are kept in seqs.json"
    third.close()


def test_a_torn_tail_is_cut_and_its_numbers_given_again(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    put(spool, "a", 3)
    spool.close()
    segment = sorted((tmp_path / "spool").glob("*.seg"))[-1]
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # the last frame was half-written when the machine lost power
    again = opened(tmp_path)
    assert put(again, "a", 1) == [3], "number 3 never became durable, so it is given again: no gap"
    assert [(t, s) for t, s, _ in drain_all(again)] == [("a", 1), ("a", 2), ("a", 3)]
    again.close()


def test_damage_in_a_closed_segment_stops_the_start(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    put(spool, "a", 3)
    spool.close()
    opened(tmp_path).close()  # a second segment now exists; the first is closed
    first = sorted((tmp_path / "spool").glob("*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[20] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(SpoolCorrupt, match="checksum"):
        opened(tmp_path)


def test_a_builder_that_fails_takes_no_number(tmp_path: Path) -> None:
    spool = opened(tmp_path)

    def broken(seq: int) -> tuple[str, bytes]:
        raise RuntimeError("encoding failed")

    with pytest.raises(RuntimeError):
        spool.append("a", [lambda seq: ("k", b"ok"), broken], lambda exc: None)
    assert put(spool, "a", 1) == [1]
    spool.close()


def test_the_bound_refuses_before_taking_numbers(tmp_path: Path) -> None:
    spool = opened(tmp_path, max_bytes=1_000)
    put(spool, "a", 5, size=100)
    with pytest.raises(SpoolFull):
        spool.append("a", [lambda seq: ("k", b"x" * 600)], lambda exc: None)
    drain_all(spool)
    assert put(spool, "a", 1, size=600) == [6], "after draining there is room, and no number was lost"
    spool.close()


def test_one_process_per_state_directory(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    with pytest.raises(SpoolLocked, match="TALLY_COLLECTOR_STATE_DIR"):
        opened(tmp_path)
    spool.close()


def test_drained_position_and_status_from_disk(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    put(spool, "a", 4, size=50)
    status = spool_status(tmp_path)
    assert status["depth_bytes"] == spool.depth_bytes() > 0
    drain_all(spool)
    spool.close()
    status = spool_status(tmp_path)
    assert status["depth_bytes"] == 0 and status["drained_records"] == 4
    assert Position(*map(int, status["drained"].split(":"))) > Position(1, 0)


def test_group_commit_serves_many_requests_with_few_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    calls = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd)))
    spool = opened(tmp_path)
    done = threading.Semaphore(0)
    for i in range(200):
        spool.append("a", [lambda seq: ("k", b"y" * 100)], lambda exc: done.release())
    for _ in range(200):
        assert done.acquire(timeout=10)
    assert 1 <= len(calls) < 200
    spool.close()


def test_no_waiter_is_woken_before_its_fsync_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    release = threading.Event()
    real = os.fdatasync

    def slow_sync(fd: int) -> None:
        assert release.wait(10)
        real(fd)

    spool = opened(tmp_path)
    monkeypatch.setattr(os, "fdatasync", slow_sync)
    woken = threading.Event()
    spool.append("a", [lambda seq: ("k", b"z")], lambda exc: woken.set())
    assert not woken.wait(0.5), "a 200 before the fsync would be a 200 for an event not on disk"
    assert spool.status()["durable"] == f"{spool.drained.segment}:0", "nor may the drainer see it"
    release.set()
    assert woken.wait(10)
    spool.close()
