"""A throwaway PostgreSQL server for the tests and `make demo-migration`: initdb + pg_ctl on a directory and a
free loopback port (Debian's ``postgresql`` package; `make postgresql` installs it when initdb is missing)."""

from __future__ import annotations

import getpass
import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streaming.stack.process import free_port


def find_bin(name: str) -> str | None:
    """``name`` on PATH, else under Debian's /usr/lib/postgresql/<version>/bin (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0, reverse=True)
    return candidates[0] if candidates else None


def _give(path: Path, user: str) -> None:
    """Let ``user`` write ``path`` and traverse its parents (pytest's temp directories are private)."""
    shutil.chown(path, user)
    for parent in path.parents:
        if parent == Path("/") or parent == Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o711)


@dataclass
class PostgresServer:
    data_dir: Path
    port: int
    user: str
    run_as: tuple[str, ...] = ()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls, root: Path) -> PostgresServer:
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("initdb/pg_ctl not found: run `make postgresql` (apt-get install postgresql)")
        data = root / "pgdata"
        user, run_as = getpass.getuser(), []
        if os.geteuid() == 0:  # initdb refuses root: run the server as the package's postgres user
            # runuser is in /usr/sbin, which a minimal PATH (cron, CI, a test's environment) may leave out
            runuser = shutil.which("runuser") or next((p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(p)), None)
            if runuser is None:
                raise RuntimeError("running as root, PostgreSQL needs runuser (util-linux) to start as the postgres user")
            user, run_as = "postgres", [runuser, "-u", "postgres", "--"]
            _give(root, "postgres")
        env = {**os.environ, "TZ": "UTC", "LC_ALL": "C.UTF-8"}
        subprocess.run([*run_as, initdb, "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, env=env)
        port = free_port()
        sockets = root / "sockets"
        sockets.mkdir()
        if run_as:
            shutil.chown(sockets, "postgres")
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-l", str(root / "postgres.log"), "-w", "-t", "60", "-o",
                        f"-p {port} -h 127.0.0.1 -k {sockets} -c fsync=off -c timezone=UTC", "start"],
                       check=True, capture_output=True, env=env)
        return cls(data, port, user, tuple(run_as))

    def stop(self) -> None:
        pg_ctl = find_bin("pg_ctl")
        if pg_ctl:
            subprocess.run([*self.run_as, pg_ctl, "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"], capture_output=True)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'create database "{name}"')  # a test's own name, not user input
        return self.dsn(name)
