"""Every Lua script is a file beside apply.lua, read by one loader (streaming.speed.scripts)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from streaming.speed import scripts

ROOT = Path(__file__).resolve().parents[2]
#: What only Lua (or Python that holds Lua in a string) says.
_LUA_IN_PYTHON = re.compile(r"redis\.call\(|redis\.pcall\(")


@pytest.mark.unit
def test_no_python_module_holds_lua() -> None:
    found = [f"{path.relative_to(ROOT)}:{n}" for folder in ("streaming", "orchestration", "assets")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if _LUA_IN_PYTHON.search(line)]
    assert found == [], f"Lua inline in Python (move it to a .lua file beside apply.lua): {found}"


@pytest.mark.unit
def test_the_loader_knows_every_script_and_names_them_on_a_typo() -> None:
    assert {"apply", "deadletters", "deadletters_erase", "deadletters_replayed", "heal_counts", "heal_segments",
            "heal_top_pages", "heal_uniques", "position"} <= set(scripts.names())
    with pytest.raises(FileNotFoundError, match="no Lua script 'aply'.*apply, "):
        scripts.source("aply")


@pytest.mark.integration
@pytest.mark.parametrize("name", scripts.names())
def test_every_script_compiles_and_is_called_by_its_sha(name: str, redis_client: redis.Redis) -> None:
    script = scripts.register(redis_client, name)
    assert redis_client.script_load(scripts.source(name)) == script.sha  # SCRIPT LOAD compiles it
    assert redis_client.script_exists(script.sha) == [True]
