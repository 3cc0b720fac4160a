"""The dbt project for Dagster, with its manifest prepared once.

`dagster dev` would otherwise re-parse dbt in every process that loads the definitions (the webserver,
the daemon, each run). Here the manifest is parsed only when it is missing or the project's files
changed since (a fingerprint of them sits next to the manifest), under a file lock so concurrent
processes parse at most once.

dbt reuses its partial-parse state only for the profile it was parsed with (the connection settings
are part of the state's hash): a DuckDB path that differs makes every `dbt build` parse the whole
project again (~5 s). So the manifest is parsed with the environment the runs will have
(``profile_env``, e.g. the warehouse's absolute ``TALLY_DUCKDB_PATH``), and that environment is part of
the fingerprint.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from dagster_dbt import DbtProject

from assets.dbt.segment_seeds import check_segment_seeds

_SOURCES = ("dbt_project.yml", "profiles.yml", "models", "macros", "tests", "seeds")


def project_fingerprint(project_dir: Path, profile_env: Mapping[str, str] | None = None) -> str:
    digest = hashlib.sha256()
    for key, value in sorted((profile_env or {}).items()):
        digest.update(f"{key}={value}\n".encode())
    for name in _SOURCES:
        root = project_dir / name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            digest.update(str(path.relative_to(project_dir)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def prepare_manifest(project_dir: Path, dbt_executable: str, target: str = "local",
                     profile_env: Mapping[str, str] | None = None) -> Path:
    """Make ``target/manifest.json`` current for ``profile_env``; parse only if needed. Returns the
    manifest path."""
    target_dir = project_dir / "target"
    target_dir.mkdir(exist_ok=True)
    manifest = target_dir / "manifest.json"
    stamp = target_dir / "tally_fingerprint.txt"
    with open(target_dir / ".tally_parse.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        check_segment_seeds(project_dir / "seeds")
        fingerprint = project_fingerprint(project_dir, profile_env)
        if manifest.exists() and stamp.exists() and stamp.read_text() == fingerprint:
            return manifest
        subprocess.run(
            [dbt_executable, "parse", "--quiet", "--project-dir", str(project_dir),
             "--profiles-dir", str(project_dir), "--target", target],
            check=True, cwd=project_dir,
            env={**os.environ, **(profile_env or {}), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        )
        stamp.write_text(fingerprint)
    return manifest


def build_dbt_project(project_dir: Path, dbt_executable: str, target: str,
                      profile_env: Mapping[str, str] | None = None) -> DbtProject:
    prepare_manifest(project_dir, dbt_executable, target, profile_env)
    return DbtProject(project_dir=project_dir, profiles_dir=project_dir, target=target)
