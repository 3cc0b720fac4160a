"""The parallel run's pure core: verdicts per cell, explanations, days and the cutover."""

from __future__ import annotations

import pandas as pd
import pytest

from streaming.migration.compare import DayVerdict, compare, cutover, day_verdicts, evidence_from, tenant_days

pytestmark = pytest.mark.unit

H = 491_000  # an epoch hour (2026-01-05 08:00 UTC)


def tally(*rows: tuple[str, str, int, int, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["tenant_id", "event_type", "hour", "warehouse_mart", "verdict"])


def legacy(*rows: tuple[str, str, int, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["tenant_id", "event_type", "hour", "n"])


def ids(*rows: tuple[str, str, int, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["tenant_id", "event_type", "hour", "event_id"])


def verdicts(cells: pd.DataFrame) -> dict[tuple[str, str, int], str]:
    return {(r.tenant_id, r.event_type, r.hour): r.verdict for r in cells.itertuples()}


def test_verdicts_follow_the_tolerance_and_tallys_own_reconciliation() -> None:
    cells = compare(
        tally(("a", "click", H, 1000, "ok"), ("a", "click", H + 1, 1000, "ok"), ("b", "click", H, 1000, "ok"),
              ("b", "page_view", H, 500, "archive_missing"), ("c", "click", H, 10, "pending"),
              ("c", "click", H + 1, 100, "ok")),
        legacy(("a", "click", H, 996), ("a", "click", H + 1, 990), ("b", "click", H, 1010),
               ("b", "page_view", H, 520), ("c", "click", H, 3), ("d", "click", H, 7)),
        tolerance=0.005)
    assert verdicts(cells) == {
        ("a", "click", H): "ok",  # 4 of 1000: within 0.5%
        ("a", "click", H + 1): "legacy_missing",
        ("b", "click", H): "legacy_extra",
        ("b", "page_view", H): "tally_loss",  # the legacy has more, but tally's archive lost events: tally's
        ("c", "click", H): "pending",
        ("c", "click", H + 1): "legacy_missing",  # the legacy has no row at all
        ("d", "click", H): "legacy_extra",  # only the legacy has it
    }
    row = cells.set_index(["tenant_id", "event_type", "hour"]).loc[("b", "page_view", H)]
    assert "archive_missing" in row["why"] and "not the legacy's loss" in row["why"] and not row["explained"]
    # without ids a surplus cannot be explained
    assert not cells.set_index(["tenant_id", "event_type", "hour"]).loc[("b", "click", H)]["explained"]


def test_event_ids_name_what_the_legacy_lacks_and_explain_its_double_counts() -> None:
    t_ids = ids(("a", "click", H, "e1"), ("a", "click", H, "e2"), ("a", "click", H, "e3"),
                ("b", "click", H, "f1"), ("b", "click", H, "f2"))
    l_ids = ids(("a", "click", H, "e1"), ("b", "click", H, "f1"), ("b", "click", H, "f1"), ("b", "click", H, "f2"))
    evidence = evidence_from(t_ids, l_ids)
    cells = compare(tally(("a", "click", H, 3, "ok"), ("b", "click", H, 2, "ok")),
                    legacy(("a", "click", H, 1), ("b", "click", H, 3)), 0.0, evidence).set_index(
                        ["tenant_id", "event_type", "hour"])
    assert cells.loc[("a", "click", H)]["missing_ids"] == ["e2", "e3"]
    b = cells.loc[("b", "click", H)]
    assert b["verdict"] == "legacy_extra" and b["duplicate_ids"] == ["f1"] and b["explained"]
    unknown = compare(tally(("b", "click", H, 2, "ok")), legacy(("b", "click", H, 3)), 0.0,
                      evidence_from(t_ids, ids(("b", "click", H, "f1"), ("b", "click", H, "f2"), ("b", "click", H, "zz"))))
    assert unknown.iloc[0]["unknown_ids"] == ["zz"] and not unknown.iloc[0]["explained"]


def test_the_cutover_needs_n_consecutive_good_days_ending_with_the_last() -> None:
    good, bad = (lambda d: DayVerdict(d, True, "")), (lambda d: DayVerdict(d, False, "tally lost events"))
    assert cutover([good(d) for d in range(14)], 14).ready
    c = cutover([bad(0)] + [good(d) for d in range(1, 14)], 14)
    assert not c.ready and c.consecutive_good_days == 13 and "tally lost events" in c.reason and "1970-01-01" in c.reason
    assert not cutover([good(d) for d in range(13)] + [bad(13)], 1).ready
    assert "only 3 of the 14" in cutover([good(d) for d in range(3)], 14).reason


def test_a_day_is_good_only_with_events_no_tally_loss_no_pending_and_explained_deviations() -> None:
    day = H // 24
    cells = compare(tally(("a", "click", H, 100, "ok"), ("a", "click", H + 48, 100, "ok")),
                    legacy(("a", "click", H, 90), ("a", "click", H + 48, 120)), 0.0)
    found = day_verdicts(cells, [day, day + 1, day + 2])
    assert [v.good for v in found] == [True, False, False]
    assert found[1].reason == "no events on either side" and "not explained" in found[2].reason
    per_tenant = tenant_days(cells)
    assert list(per_tenant["deviation"]) == [-10, 20] and list(per_tenant["legacy_missing"]) == [1, 0]


def test_a_surplus_where_tally_lost_events_before_its_stream_is_tallys_loss() -> None:
    gaps = {("a", H): 2}
    cells = compare(tally(("a", "click", H, 10, "ok"), ("a", "page_view", H, 10, "ok")),
                    legacy(("a", "click", H, 12), ("a", "page_view", H, 9)), 0.0, gaps=gaps)
    found = verdicts(cells)
    assert found[("a", "click", H)] == "tally_loss" and found[("a", "page_view", H)] == "legacy_missing"
    assert "upstream_gap" in cells.iloc[0]["why"]
    (day,) = day_verdicts(cells, [H // 24], gaps)
    assert not day.good and "upstream_gap" in day.reason and "a" in day.reason
