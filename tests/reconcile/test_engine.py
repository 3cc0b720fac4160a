"""The reconciliation core on constructed layers: each fault gets its verdict, cell and event_ids."""

from __future__ import annotations

import pandas as pd
import pytest

from streaming.reconcile.engine import reconcile
from streaming.reconcile.model import Config, Inputs, Tolerance
from tests.reconcile.builders import BASE_MINUTE, Ev, Layers, drop, inputs, mark_late, traffic

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def events() -> list[Ev]:
    return traffic()


def cell(result_cells: pd.DataFrame, e: Ev) -> pd.Series:
    rows = result_cells[(result_cells.tenant_id == e.tenant_id) & (result_cells.event_type == e.event_type)
                        & (result_cells.minute == e.minute)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def only_finding(result) -> pd.Series:  # type: ignore[no-untyped-def]
    findings = result.findings()
    assert len(findings) == 1, findings
    return findings.iloc[0]


def test_clean_layers_are_all_ok_and_never_drilled(events: list[Ev]) -> None:
    inp = inputs(Layers.clean(events))
    result = reconcile(inp)
    assert result.findings().empty
    assert not result.unexplained_loss
    assert result.summary["ok"] == 3 * 2 * 120
    assert result.cells.empty  # every hour agreed on totals and checksums: no minute was re-read
    assert set(result.hours.verdict) == {"ok"} and set(result.days.verdict) == {"ok"}
    assert inp.event_ids.calls == []  # type: ignore[union-attr]
    assert result.sequences.empty


def test_speed_missing_names_the_cell(events: list[Ev]) -> None:
    lost = events[333]
    layers = Layers.clean(events)
    layers.speed = drop(layers.speed, lost)
    result = reconcile(inputs(layers))
    row = only_finding(result)
    assert (row.verdict, row.tenant_id, row.event_type, row.minute) == ("speed_missing", lost.tenant_id,
                                                                         lost.event_type, lost.minute)
    assert (row.speed, row.expected) == (1, 2)
    assert result.unexplained_loss
    hour = result.hours[(result.hours.tenant_id == lost.tenant_id) & (result.hours.event_type == lost.event_type)
                        & (result.hours.hour == lost.minute // 60)]
    assert hour.iloc[0].verdict == "speed_missing"
    assert (result.hours.verdict != "ok").sum() == 1
    assert result.event_ids.empty  # archive and warehouse agree: nothing to drill


def test_speed_extra_when_applied_twice(events: list[Ev]) -> None:
    twice = events[100]
    layers = Layers.clean(events)
    layers.speed = layers.speed + [twice]
    row = only_finding(reconcile(inputs(layers)))
    assert (row.verdict, row.tenant_id, row.event_type, row.minute) == ("speed_extra", twice.tenant_id,
                                                                         twice.event_type, twice.minute)


def test_duplicates_delivered_by_the_stream_are_not_findings(events: list[Ev]) -> None:
    layers = Layers.clean(events + [events[5], events[77]])  # redelivered: archive and raw hold them twice
    result = reconcile(inputs(layers))
    assert result.findings().empty and result.sequences.empty


def test_archive_object_deleted_before_load_is_archive_missing_only(events: list[Ev]) -> None:
    gone = [e for e in events if e.minute == BASE_MINUTE + 70 and e.tenant_id == "tenant-1"]
    layers = Layers.clean(events)
    layers.archive_lost = gone
    layers.raw = drop(layers.raw, *gone)  # loaded after the object was deleted
    layers.mart = drop(layers.mart, *gone)
    result = reconcile(inputs(layers))
    findings = result.findings()
    assert set(findings.verdict) == {"archive_missing"}
    assert {(r.tenant_id, r.event_type, r.minute) for r in findings.itertuples()} == {
        (e.tenant_id, e.event_type, e.minute) for e in gone}
    # the speed layer still counts them: explained by the archive loss, not speed_extra
    assert (findings.speed == 2).all() and (findings.expected == 0).all()
    # their source numbers are held by no readable layer, but the archive loss explains the gaps
    assert len(result.sequences) > 0 and set(result.sequences.verdict) == {"explained"}
    assert set(result.sequences.explained_by) == {"archive_missing"}
    assert result.summary["upstream_gap"] == 0


def test_archive_object_deleted_after_load_is_archive_missing_only(events: list[Ev]) -> None:
    gone = [e for e in events if e.minute == BASE_MINUTE + 10 and e.event_type == "click"]
    layers = Layers.clean(events)
    layers.archive_lost = gone
    findings = reconcile(inputs(layers)).findings()
    assert set(findings.verdict) == {"archive_missing"}
    assert len(findings) == 3 and set(findings.minute) == {BASE_MINUTE + 10}


def test_warehouse_raw_rows_deleted_lists_the_exact_event_ids(events: list[Ev]) -> None:
    deleted = [events[50], events[51], events[900]]
    layers = Layers.clean(events)
    layers.raw = drop(layers.raw, *deleted)
    result = reconcile(inputs(layers))
    findings = result.findings()
    assert set(findings.verdict) == {"warehouse_missing"}
    assert {(r.tenant_id, r.event_type, r.minute) for r in findings.itertuples()} == {
        (e.tenant_id, e.event_type, e.minute) for e in deleted}
    ids = result.event_ids
    raw_missing = ids[(ids["table"] == "raw") & (ids.kind == "missing")]
    assert set(raw_missing.event_id) == {e.event_id for e in deleted}
    assert ids[ids.kind == "extra"].empty
    assert result.sequences.empty  # the archive still holds their source numbers: no upstream gap


def test_mart_rows_deleted_lists_the_exact_event_ids(events: list[Ev]) -> None:
    deleted = events[200]
    layers = Layers.clean(events)
    layers.mart = drop(layers.mart, deleted)
    result = reconcile(inputs(layers))
    row = only_finding(result)
    assert (row.verdict, row.minute) == ("warehouse_missing", deleted.minute)
    assert list(result.event_ids.event_id) == [deleted.event_id]
    assert list(result.event_ids["table"]) == ["mart"]


def test_warehouse_rows_loaded_twice_are_warehouse_extra(events: list[Ev]) -> None:
    layers = Layers.clean(events)
    layers.raw = layers.raw + [events[10]]
    row = only_finding(reconcile(inputs(layers)))
    assert (row.verdict, row.tenant_id, row.minute) == ("warehouse_extra", events[10].tenant_id, events[10].minute)


def test_warehouse_loss_without_event_source_still_attributed(events: list[Ev]) -> None:
    layers = Layers.clean(events)
    layers.raw = drop(layers.raw, events[42])
    result = reconcile(inputs(layers, with_ids=False))
    row = only_finding(result)
    assert row.verdict == "warehouse_missing" and result.event_ids.empty


def test_count_moved_between_minutes_of_one_hour_is_caught(events: list[Ev]) -> None:
    moved = events[20]
    layers = Layers.clean(events)
    layers.speed = drop(layers.speed, moved) + [Ev(moved.event_id, moved.tenant_id, moved.event_type,
                                                   moved.minute + 3, moved.source_id, moved.source_seq)]
    findings = reconcile(inputs(layers)).findings()
    assert sorted(findings.verdict) == ["speed_extra", "speed_missing"]
    assert set(findings.minute) == {moved.minute, moved.minute + 3}


def test_open_windows_are_pending_not_loss(events: list[Ev]) -> None:
    layers = Layers.clean(events)
    last = max(e.minute for e in events)
    late = [e for e in events if e.minute == last - 2][:3]
    layers.speed = drop(layers.speed, *late)  # not applied yet
    # the watermark is past the last minute, but not past its end + 5 minutes of lateness
    result = reconcile(inputs(layers, watermark_minute=last + 1))
    findings = result.findings()
    assert set(findings.verdict) == {"pending"}
    assert not result.unexplained_loss
    assert "speed_missing" in set(",".join(findings.findings).split(","))
    # once the watermark has passed, the same difference is a loss
    assert set(reconcile(inputs(layers)).findings().verdict) == {"speed_missing"}


def test_late_events_are_counted_and_reported_not_lost(events: list[Ev]) -> None:
    target = events[400]
    layers = Layers.clean(mark_late(events, target))
    result = reconcile(inputs(layers))
    assert result.findings().empty
    assert result.summary["late_events"] == 1
    assert list(result.late.itertuples(index=False, name=None)) == [
        (target.tenant_id, target.event_type, target.minute, 1)]


def test_tolerance_accepts_small_differences(events: list[Ev]) -> None:
    layers = Layers.clean(events)
    layers.speed = drop(layers.speed, events[7])
    exact = reconcile(inputs(layers))
    loose = reconcile(inputs(layers), Config(tolerance=Tolerance(absolute=1)))
    assert len(exact.findings()) == 1 and loose.findings().empty


def test_upstream_gap_names_source_numbers_and_minute(events: list[Ev]) -> None:
    lost = events[301]
    layers = Layers.clean(drop(events, lost))
    result = reconcile(inputs(layers))
    assert result.findings().empty  # every layer agrees: the loss is before the stream
    gaps = result.sequences
    assert len(gaps) == 1
    gap = gaps.iloc[0]
    assert (gap.source_id, gap.tenant_id, gap.first_missing, gap.last_missing, gap.missing, gap.verdict) == (
        lost.source_id, lost.tenant_id, lost.source_seq, lost.source_seq, 1, "upstream_gap")
    assert gap.min_minute <= lost.minute <= gap.max_minute
    assert result.unexplained_loss and result.summary["upstream_gap"] == 1


def test_one_number_with_two_event_ids_is_an_upstream_duplicate(events: list[Ev]) -> None:
    twin = events[60]
    copy = Ev("ffffffff-0000-0000-0000-000000000001", twin.tenant_id, twin.event_type, twin.minute,
              twin.source_id, twin.source_seq)
    layers = Layers.clean(events + [copy])
    result = reconcile(inputs(layers))
    dup = result.sequences[result.sequences.verdict == "upstream_duplicate"]
    assert len(dup) == 1 and set(dup.iloc[0].event_ids) == {twin.event_id, copy.event_id}


def test_gap_in_an_open_window_is_pending(events: list[Ev]) -> None:
    last = max(e.minute for e in events)
    lost = [e for e in events if e.minute == last - 1][1]
    layers = Layers.clean(drop(events, lost))
    result = reconcile(inputs(layers, watermark_minute=last + 1))
    assert list(result.sequences.verdict) == ["pending"]


def test_flushed_speed_layer_is_speed_missing_everywhere(events: list[Ev]) -> None:
    layers = Layers.clean(events)
    layers.speed = []
    result = reconcile(inputs(layers))
    assert set(result.findings().verdict) == {"speed_missing"}
    assert result.summary["speed_missing"] == 3 * 2 * 120


def test_time_range_limits_what_is_judged(events: list[Ev]) -> None:
    layers = Layers.clean(events)
    layers.speed = drop(layers.speed, events[0])  # in the first hour
    inp = inputs(layers)
    inp.start_minute = BASE_MINUTE + 60
    result = reconcile(inp)
    assert result.findings().empty and result.summary["ok"] == 3 * 2 * 60


def test_keys_are_data_not_sql() -> None:
    hostile = [Ev(f"00000000-0000-0000-0000-{i:012d}", "o'brien; drop table x", "cl'ick", BASE_MINUTE, "s'1", i + 1)
               for i in range(3)]
    layers = Layers.clean(hostile)
    layers.speed = hostile[:2]
    row = only_finding(reconcile(inputs(layers)))
    assert (row.tenant_id, row.event_type, row.verdict) == ("o'brien; drop table x", "cl'ick", "speed_missing")


def test_missing_key_column_is_a_clear_error(events: list[Ev]) -> None:
    inp = inputs(Layers.clean(events[:10]))
    broken = Inputs(inp.archive.drop(columns=["minute"]), inp.warehouse, inp.speed, inp.watermarks)
    with pytest.raises(ValueError, match="archive table has no `minute`"):
        reconcile(broken)


def test_gap_across_a_range_edge_belongs_to_the_range_of_its_later_neighbour(events: list[Ev]) -> None:
    first_of_hour_two = min((e for e in events if e.minute == BASE_MINUTE + 60), key=lambda e: e.source_seq)
    lost = next(e for e in events if e.source_id == first_of_hour_two.source_id
                and e.source_seq == first_of_hour_two.source_seq - 1)
    assert lost.minute == BASE_MINUTE + 59  # its neighbours straddle the hour boundary
    inp = inputs(Layers.clean(drop(events, lost)))
    found = []
    for start in (BASE_MINUTE, BASE_MINUTE + 60):
        inp.start_minute, inp.end_minute = start, start + 60
        found.append(list(reconcile(inp).sequences.itertuples()))
    assert found[0] == []  # the first hour holds the earlier neighbour only
    assert [(g.first_missing, g.verdict) for g in found[1]] == [(lost.source_seq, "upstream_gap")]


def _rollups(layers: Layers) -> pd.DataFrame:
    """The hour and day counters each layer serves, consistent with its minutes."""
    from collections import Counter

    rows: Counter[tuple[str, str, str, str, int]] = Counter()
    for layer, evs in (("speed", layers.speed), ("warehouse", layers.mart)):
        for e in evs:
            rows[(layer, "hour", e.tenant_id, e.event_type, e.minute // 60)] += 1
            rows[(layer, "day", e.tenant_id, e.event_type, e.minute // 1440)] += 1
    return pd.DataFrame([(*k, n) for k, n in rows.items()],
                        columns=["layer", "grain", "tenant_id", "event_type", "bucket", "n"])


def test_served_rollups_that_disagree_with_their_minutes_are_found(events: list[Ev]) -> None:
    layers = Layers.clean(events)
    inp = inputs(layers)
    inp.rollups = _rollups(layers)
    assert reconcile(inp).rollups.empty
    served = _rollups(layers)
    wrong = (served.layer == "speed") & (served.grain == "hour") & (served.tenant_id == "tenant-2") \
        & (served.event_type == "click") & (served.bucket == BASE_MINUTE // 60 + 1)
    served.loc[wrong, "n"] += 5
    inp.rollups = served
    result = reconcile(inp)
    assert list(result.rollups[["layer", "grain", "tenant_id", "event_type", "bucket", "served", "minutes_sum"]]
                .itertuples(index=False, name=None)) == [
        ("speed", "hour", "tenant-2", "click", BASE_MINUTE // 60 + 1, 125, 120)]
    assert result.summary["speed_rollup_mismatch"] == 1 and result.unexplained_loss
    assert result.findings().empty  # the minutes themselves agree


def test_rollups_of_buckets_not_wholly_in_the_range_are_not_judged(events: list[Ev]) -> None:
    layers = Layers.clean(events)
    inp = inputs(layers)
    served = _rollups(layers)
    served.loc[served.grain == "hour", "n"] += 1
    inp.rollups = served
    inp.start_minute, inp.end_minute = BASE_MINUTE + 30, BASE_MINUTE + 90  # no whole hour inside
    assert reconcile(inp).rollups.empty


def _held(*cells: tuple[Ev, str]) -> pd.DataFrame:
    return pd.DataFrame([(e.tenant_id, e.event_type, e.minute, why) for e, why in cells],
                        columns=["tenant_id", "event_type", "minute", "reason"])


def test_a_cell_the_archive_has_not_reached_is_held_not_speed_extra(events: list[Ev]) -> None:
    """The speed layer applied an event the archive (and so the warehouse) has not read yet: the cell is
    pending with the lagging layer named, never ``speed_extra``."""
    unread = events[500]
    layers = Layers.clean(events)
    layers.archive, layers.raw, layers.mart = (drop(x, unread) for x in (layers.archive, layers.raw, layers.mart))
    blamed = only_finding(reconcile(inputs(layers)))
    assert blamed.verdict == "speed_extra"  # without positions the layer that is ahead is blamed
    inp = inputs(layers)
    inp.held = _held((unread, "archive behind the speed layer by 41 s"))
    result = reconcile(inp)
    row = only_finding(result)
    assert (row.verdict, row.pending_reason) == ("pending", "archive behind the speed layer by 41 s")
    assert (row.tenant_id, row.event_type, row.minute) == (unread.tenant_id, unread.event_type, unread.minute)
    assert not result.unexplained_loss
    assert result.summary["pending"] == 1


def test_a_held_cell_no_layer_holds_yet_is_listed_as_pending(events: list[Ev]) -> None:
    ghost = Ev("ffffffff-0000-0000-0000-0000000000aa", "tenant-9", "custom", BASE_MINUTE + 3, "collector-0", 1)
    inp = inputs(Layers.clean(events))
    inp.held = _held((ghost, "not yet read by the speed layer or the archive"))
    row = only_finding(reconcile(inp))
    assert (row.tenant_id, row.verdict, row.speed, row.archive) == ("tenant-9", "pending", 0, 0)


def test_a_gap_whose_bracket_holds_a_pending_cell_of_its_tenant_is_pending(events: list[Ev]) -> None:
    """The missing number may be in a record a lagging layer has not read: not an upstream gap yet."""
    lost = events[301]
    layers = Layers.clean(drop(events, lost))
    inp = inputs(layers)
    inp.held = _held((lost, "speed layer behind the archive by 3 s"))
    gaps = reconcile(inp).sequences
    assert list(gaps.verdict) == ["pending"]
    assert gaps.iloc[0].pending_reason == "speed layer behind the archive by 3 s"
    other_tenant = next(e for e in events if e.minute == lost.minute and e.tenant_id != lost.tenant_id)
    inp.held = _held((other_tenant, "speed layer behind the archive by 3 s"))
    assert list(reconcile(inp).sequences.verdict) == ["upstream_gap"]  # another tenant's lag explains nothing


def test_a_number_held_by_a_dead_letter_or_an_unread_record_is_not_a_gap(events: list[Ev]) -> None:
    lost = events[301]
    layers = Layers.clean(drop(events, lost))
    inp = inputs(layers)
    inp.numbers = pd.DataFrame([(lost.source_id, lost.tenant_id, lost.source_seq, None, lost.minute)],
                               columns=["source_id", "tenant_id", "source_seq", "event_id", "minute"])
    result = reconcile(inp)
    assert result.sequences.empty and not result.unexplained_loss
    inp.numbers = pd.DataFrame([(lost.source_id, "tenant-other", lost.source_seq, None, lost.minute)],
                               columns=["source_id", "tenant_id", "source_seq", "event_id", "minute"])
    assert list(reconcile(inp).sequences.verdict) == ["upstream_gap"]  # another tenant's number fills nothing


def test_open_windows_say_which_layer_has_read_least(events: list[Ev]) -> None:
    from streaming.reconcile.model import Watermarks

    inp = inputs(Layers.clean(events))
    last = max(e.minute for e in events)
    inp.watermarks = Watermarks(archive=(last + 10) * 60, warehouse=(last + 10) * 60, speed=(last - 2) * 60)
    result = reconcile(inp)
    reasons = set(result.cells[result.cells.verdict == "pending"].pending_reason)
    assert len(reasons) == 1 and reasons.pop().startswith("window not closed: the speed layer has read the stream up to")


def test_an_unbounded_lag_holds_only_cells_where_that_layer_has_less(events: list[Ev]) -> None:
    ahead, lost = events[500], events[40]
    layers = Layers.clean(events)
    layers.archive, layers.raw, layers.mart = (drop(x, ahead) for x in (layers.archive, layers.raw, layers.mart))
    layers.speed = drop(layers.speed, lost)
    inp = inputs(layers)
    inp.unbounded = {"archive": "archive behind beyond the stream's retention"}
    result = reconcile(inp)
    verdicts = {(r.tenant_id, r.event_type, r.minute): (r.verdict, r.pending_reason) for r in result.findings().itertuples()}
    assert verdicts == {
        (ahead.tenant_id, ahead.event_type, ahead.minute): ("pending", "archive behind beyond the stream's retention"),
        (lost.tenant_id, lost.event_type, lost.minute): ("speed_missing", None),  # the archive has more here: judged
    }


def test_a_dead_letters_number_has_no_minute_and_the_bracket_comes_from_its_neighbours(events: list[Ev]) -> None:
    same = sorted((e for e in events if (e.source_id, e.tenant_id) == (events[301].source_id, events[301].tenant_id)),
                  key=lambda e: e.source_seq)
    rejected, lost = same[100], same[101]  # one number held by a dead letter, the next lost upstream
    layers = Layers.clean(drop(events, rejected, lost))
    inp = inputs(layers)
    inp.numbers = pd.DataFrame([(rejected.source_id, rejected.tenant_id, rejected.source_seq, None, None)],
                               columns=["source_id", "tenant_id", "source_seq", "event_id", "minute"])
    gaps = reconcile(inp).sequences
    assert list(gaps[["first_missing", "last_missing", "verdict"]].itertuples(index=False, name=None)) == [
        (lost.source_seq, lost.source_seq, "upstream_gap")]
    assert gaps.iloc[0].min_minute == same[99].minute and gaps.iloc[0].max_minute == same[102].minute
