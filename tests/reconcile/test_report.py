"""Reports: the Markdown and the self-contained HTML name what was found."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from streaming.reconcile.engine import reconcile
from streaming.reconcile.report import RunInfo, minute_iso, to_markdown, write_report
from tests.reconcile.builders import BASE_MINUTE, Layers, drop, inputs, traffic

pytestmark = pytest.mark.unit


def test_report_files_name_the_finding(tmp_path: Path) -> None:
    events = traffic(minutes=90)
    lost = events[250]
    layers = Layers.clean(events)
    layers.speed = drop(layers.speed, lost)
    layers.raw = drop(layers.raw, events[10])
    result = reconcile(inputs(layers))
    info = RunInfo(BASE_MINUTE, BASE_MINUTE + 90, dt.datetime(2026, 1, 7, 3, tzinfo=dt.timezone.utc), "run-1", "ci")
    path = write_report(result, info, tmp_path / "reports")
    html = path.read_text()
    assert path == tmp_path / "reports" / "run-1.html"
    assert "<svg" in html and "<script" not in html and "src=" not in html  # offline, no CDN
    assert "UNEXPLAINED LOSS" in html
    assert minute_iso(lost.minute) in html and lost.tenant_id in html and "speed_missing" in html
    assert events[10].event_id in html  # the exact warehouse-missing id
    assert 'fill="#d62728"' in html  # the mismatching hour is marked on the chart
    md = (tmp_path / "reports" / "run-1.md").read_text()
    assert "| speed_missing | " + lost.tenant_id in md and events[10].event_id in md
    assert (tmp_path / "reports" / "run-1.json").exists()


def test_clean_report_says_everything_agrees() -> None:
    result = reconcile(inputs(Layers.clean(traffic(minutes=60))))
    info = RunInfo(BASE_MINUTE, BASE_MINUTE + 60, dt.datetime(2026, 1, 7, tzinfo=dt.timezone.utc), "run-2")
    md = to_markdown(result, info)
    assert "all closed cells agree: 360 ok" in md and "UNEXPLAINED" not in md


def test_rollup_findings_are_in_the_report() -> None:
    from tests.reconcile.test_engine import _rollups

    layers = Layers.clean(traffic(minutes=120))
    inp = inputs(layers)
    served = _rollups(layers)
    served.loc[(served.layer == "warehouse") & (served.grain == "hour"), "n"] -= 1
    inp.rollups = served
    result = reconcile(inp)
    info = RunInfo(BASE_MINUTE, BASE_MINUTE + 120, dt.datetime(2026, 1, 7, tzinfo=dt.timezone.utc), "run-3")
    md = to_markdown(result, info)
    assert "| warehouse_rollup_mismatch | warehouse | hour | tenant-0 | click | 2026-01-07T00:00Z | 119 | 120 |" in md


def _with_sequences(result, rows):  # type: ignore[no-untyped-def]
    import dataclasses

    import pandas as pd

    columns = ["source_id", "first_missing", "last_missing", "missing", "min_minute", "max_minute", "verdict",
               "explained_by", "event_ids"]
    return dataclasses.replace(result, sequences=pd.DataFrame(rows, columns=columns))


def test_a_duplicate_is_not_called_loss_and_each_count_says_what_it_counts() -> None:
    from orchestration.commands.reconcile import EXIT_CODES
    from streaming.reconcile.report import outcome, verdict_counts, verdict_line

    clean = reconcile(inputs(Layers.clean(traffic(minutes=60))))
    dup = _with_sequences(clean, [["src-1", 7, 7, 1, BASE_MINUTE, BASE_MINUTE, "upstream_duplicate", None, ["a", "b"]]])
    assert outcome(dup) == "duplicates" and EXIT_CODES[outcome(dup)] == 3
    assert verdict_line(dup).startswith("UNEXPLAINED DUPLICATES (nothing lost)") and "LOSS" not in verdict_line(dup)
    gap = _with_sequences(clean, [["src-1", 3, 7, 5, BASE_MINUTE, BASE_MINUTE + 1, "upstream_gap", None, []],
                                  ["src-2", 9, 9, 1, BASE_MINUTE, BASE_MINUTE, "upstream_duplicate", None, ["a", "b"]]])
    counts = {r["verdict"]: r for r in verdict_counts(gap)}
    assert counts["upstream_gap"]["count"] == 5 and counts["upstream_gap"]["of"] == "sequence numbers"
    assert counts["upstream_gap"]["detail"] == "in 1 gaps" and counts["ok"]["of"] == "cells"
    assert outcome(gap) == "loss" and "upstream_gap=5 sequence numbers" in verdict_line(gap)
    assert outcome(clean) == "ok" and EXIT_CODES["ok"] == 0


def test_a_column_the_engine_adds_flows_into_every_output() -> None:
    """Renderers are generic over the Result's columns: a new one (e.g. the lagging layer of a pending
    cell) reaches the JSON report, the Markdown and the plain lines without code changes."""
    import dataclasses

    from orchestration.output import plain_line
    from streaming.reconcile.report import display, report_json

    events = traffic(minutes=90)
    layers = Layers.clean(events)
    layers.speed = drop(layers.speed, events[250])
    result = reconcile(inputs(layers))
    result = dataclasses.replace(result, cells=result.cells.assign(pending_reason="speed behind [/x]"))
    info = RunInfo(BASE_MINUTE, BASE_MINUTE + 90, dt.datetime(2026, 1, 7, tzinfo=dt.timezone.utc), "run-4")
    doc = report_json(result, info)
    assert doc["findings"]["cells"][0]["pending_reason"] == "speed behind [/x]"
    assert "speed behind [/x]" in to_markdown(result, info)
    row = display(result.findings()).to_dict("records")[0]
    assert 'pending_reason="speed behind [/x]"' in plain_line("cell", row)


def test_html_report_escapes_what_it_is_given(tmp_path: Path) -> None:
    """The page is a Jinja2 template with autoescape on: a hostile run id or author is text, not markup."""
    result = reconcile(inputs(Layers.clean(traffic(minutes=5))))
    hostile = '<script>alert("x")</script>'
    info = RunInfo(BASE_MINUTE, BASE_MINUTE + 5, dt.datetime(2026, 1, 7, 3, tzinfo=dt.timezone.utc), "r<b>&1", hostile)
    html = write_report(result, info, tmp_path / "reports").read_text()
    assert "<script" not in html and "<b>" not in html
    assert "by &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; at" in html
    assert "<code>r&lt;b&gt;&amp;1</code>" in html
