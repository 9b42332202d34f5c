"""A real `tiv serve` for the workbench tests: a copy of the shipped rules, two tenants'
keys and an audit log, on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT

KEY_A = "ui-insurer-a-key-0123456789"  # standard, acme-marine, forwarder-all-risks
KEY_B = "ui-insurer-b-key-0123456789"  # blue-harbour only
SEED = ROOT / "examples/shipments/seed-electronics.yaml"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class UiServer:
    def __init__(self, base: Path) -> None:
        self.root = base / "repo"
        for folder in ("policies", "rules", "examples"):
            shutil.copytree(ROOT / folder, self.root / folder)
        shutil.copy(ROOT / "rules.lock", self.root / "rules.lock")
        keys = base / "keys.yaml"
        keys.write_text(
            "keys:\n"
            f"  - {{name: insurer-a, key: {KEY_A}, "
            "packs: [standard, acme-marine, forwarder-all-risks]}\n"
            f"  - {{name: insurer-b, key: {KEY_B}, packs: [blue-harbour]}}\n",
            encoding="utf-8",
        )
        self.audit = base / "audit.sqlite"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        command = [sys.executable, "-m", "engine.cli", "--rules", str(self.root), "serve"]
        options = ["--port", str(self.port), "--keys", str(keys), "--audit", str(self.audit)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*command, *options, "--no-access-log"], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not come up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def get(self, path: str, key: str | None = KEY_A, **kw: Any) -> httpx.Response:
        cookies = {"tiv_ui_key": key} if key else None
        return httpx.get(self.url + path, cookies=cookies, timeout=30, **kw)

    def post(self, path: str, data: dict[str, str], key: str | None = KEY_A) -> httpx.Response:
        cookies = {"tiv_ui_key": key} if key else None
        return httpx.post(self.url + path, data=data, cookies=cookies, timeout=60)

    def value_seed(self, key: str = KEY_A, policy: str = "standard") -> str:
        """Value the seed shipment through the API (recorded in the audit log); its id."""
        response = httpx.post(
            self.url + "/v1/valuations",
            params={"policy": policy},
            content=_seed_json(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["audit_id"])


def _seed_json() -> bytes:
    import json

    import yaml

    # The seed file's amounts are quoted strings and its date text once dumped: exact.
    return json.dumps(yaml.safe_load(SEED.read_text(encoding="utf-8")), default=str).encode()


def tamper(path: Path, statement: str, params: tuple[Any, ...] = ()) -> None:
    """Change the audit file as someone with sqlite3 would: drop the guards, then edit
    (as tests/test_audit.py does)."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS records_no_update")
    conn.execute("DROP TRIGGER IF EXISTS records_no_delete")
    conn.execute(statement, params)
    conn.close()
