"""The Prometheus alert rules tally ships (orchestration/alerts/) are valid, and every rule has unit tests
in which it fires and in which it stays quiet (`promtool test rules`, Debian's prometheus package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "orchestration" / "alerts" / "tally-rules.yml"
TESTS = Path(__file__).with_name("tally-rules.test.yml")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


def test_rules_are_valid() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_passes_its_unit_tests() -> None:
    result = _promtool("test", "rules", str(TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_is_tested_firing_and_quiet_and_has_a_runbook() -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    evals = [e for t in yaml.safe_load(TESTS.read_text())["tests"] for e in t.get("alert_rule_test", [])]
    for rule in rules:
        name = rule["alert"]
        mine = [e for e in evals if e["alertname"] == name]
        assert any(e.get("exp_alerts") for e in mine), f"{name} is never tested firing"
        assert any(not e.get("exp_alerts") for e in mine), f"{name} is never tested quiet"
        assert rule["annotations"].get("runbook"), f"{name} has no runbook line"
        assert rule["labels"]["severity"] in ("warning", "critical")
