"""A throwaway PostgreSQL cluster from Debian's `postgresql` package, for tests and benches.

`Cluster.start()` runs `initdb` into a new temporary folder and `pg_ctl start` on a free
loopback port; `stop()` stops it and removes the folder. PostgreSQL refuses to run as
root, so under root the cluster belongs to the `postgres` user the package creates and
its commands run through `runuser`.

`find_binaries()` says where initdb and pg_ctl are, or None; the tests skip (or, with
CI=true, fail) with a message naming the package when they are missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PACKAGE_HINT = "PostgreSQL is missing: apt-get install -y postgresql (Debian's package)"


def find_binaries() -> Path | None:
    """The folder with initdb and pg_ctl: $TIV_PG_BIN, else the newest Debian install."""
    given = os.environ.get("TIV_PG_BIN")
    candidates = [given] if given else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major)
    for folder in reversed([c for c in candidates if c]):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path and shutil.which("pg_ctl") else None


def _major(path: str) -> int:
    name = Path(path).parent.name
    return int(name) if name.isdigit() else 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    def __init__(self, binaries: Path, *, durable: bool = False) -> None:
        self.bin = binaries
        # Tests need no crash safety (fsync off, faster); a bench compares durable commits.
        self.durable = durable
        self.folder = Path(tempfile.mkdtemp(prefix="tiv-pg-"))
        self.data = self.folder / "data"
        self.port = 0
        self.user = "tiv"
        self._as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=120, cwd=self.folder
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> Cluster:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        for _attempt in range(5):  # another process may take the free port first
            self.port = free_port()
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
                "-c max_connections=200" + ("" if self.durable else " -c fsync=off")
            )
            try:
                self._run(
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.folder / "log"),
                    "-o",
                    options,
                    "-w",
                    "start",
                )
                return self
            except RuntimeError:
                continue
        raise RuntimeError(f"pg_ctl could not start: {(self.folder / 'log').read_text()}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if self.port:
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
