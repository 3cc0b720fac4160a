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
