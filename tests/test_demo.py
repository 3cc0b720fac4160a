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
