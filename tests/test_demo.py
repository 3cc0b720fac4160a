"""`make demo` with a broken setting fails fast with one sentence naming it, and leaves nothing running."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streaming.stack.process import pid_alive

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "env, words",
    [
        ({"TALLY_REDIS_URL": "redis://127.0.0.1:1/0"}, ["TALLY_REDIS_URL", "does not answer", "Fix:"]),
        ({"TALLY_STREAM_SHARDS": "many"}, ["TALLY_STREAM_SHARDS='many'", "Fix:"]),
    ],
)
def test_demo_fails_fast_on_a_broken_setting(tmp_path: Path, env: dict[str, str], words: list[str]) -> None:
    home = tmp_path / "home"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "orchestration.demo"],
                          env={"PATH": "/usr/bin:/bin", "TALLY_HOME": str(home), **env},
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert all(w in out for w in words), out
    assert "Traceback" not in out
    assert time.monotonic() - started < 120
    state = home / "stack.json"
    if state.exists():  # whatever the demo started before it failed is stopped again
        for component in json.loads(state.read_text()).values():
            assert not pid_alive(component.get("pid"))


def _run_demo(module: str, tmp_path: Path) -> Path:
    """Run a demo at TALLY_DEMO_SCALE=0.05 with no TALLY_ variable but its home; check that its summary equals
    the ledger in every row with no unexplained loss, and that it stopped all it started; return its home."""
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TALLY_HOME": str(home),
           "DAGSTER_HOME": str(home / "dagster_home"), "TALLY_DEMO_SCALE": "0.05"}
    (home / "dagster_home").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True,
                          timeout=900, cwd=Path(__file__).resolve().parents[1])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "stopped cleanly" in out and "Traceback" not in out
    summary = json.loads((home / "runs" / "demo" / "summary.json").read_text())
    compared = [r for r in summary["rows"] if r["ledger"] is not None and r["tally"] is not None]
    assert len(compared) >= 5
    assert [r for r in compared if r["ledger"] != r["tally"]] == []
    assert not summary["unexplained_loss"]
    judged = {k: v for k, v in summary["verdicts"].items() if k in ("archive_missing", "warehouse_missing",
              "warehouse_extra", "speed_missing", "speed_extra", "upstream_gap", "upstream_duplicate")}
    assert set(judged.values()) == {0}, judged
    assert summary["verdicts"]["ok"] > 0
    state = home / "stack.json"
    for component in json.loads(state.read_text()).values() if state.exists() else []:
        assert not pid_alive(component.get("pid"))
    return home


@pytest.mark.slow
def test_the_demos_happy_path_equals_the_ledger_in_every_row(tmp_path: Path) -> None:
    """`make demo` at a reduced size (TALLY_DEMO_SCALE): every layer equals the generator's ledger, both
    consumers stop at the tip, and reconciliation finds nothing but ok, pending and late."""
    _run_demo("orchestration.demo", tmp_path)


@pytest.mark.slow
def test_the_migration_demos_happy_path_finds_exactly_the_legacys_losses(tmp_path: Path) -> None:
    """`make demo-migration` at a reduced size, with no TALLY_ variable but its home: the stack it starts
    is found by every phase (the parallel-run report included), every layer equals the ledger, the
    legacy_missing cells are the stand-in's own ledger of what it lost, and no tally layer is blamed."""
    home = _run_demo("orchestration.demo_migration", tmp_path)
    migration = json.loads((home / "runs" / "demo" / "migration.json").read_text())
    assert migration["forward_spool_empty"] and migration["forwarded"] > 0
    assert migration["legacy_lost"] > 0 and migration["legacy_missing_cells"] > 0
    assert migration["legacy_missing_equal_to_ledger"], migration
    assert migration["tally_loss_cells"] == 0 and "tally_loss" not in migration["verdicts"]
    assert not migration["cutover_ready"] and "TALLY_MIGRATION_READY_DAYS" in migration["cutover_reason"]
