"""The application endpoints, run for real: `tiv serve` in a subprocess with a SQLite book
($TIV_BOOK) and an audit log, spoken to over loopback HTTP with the service's own API keys.

Keys: broker A may use blue-harbour, broker B only standard, the underwriter blue-harbour
with the `underwriter` role. Figures are those of tests/test_applications.py (premium
812.88 on a TIV of 232,250.00; 798.88 when the duties are missing and the quote referred).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.applications import canonical_json
from tests import test_applications as cases
from tests.conftest import ROOT
from tests.postgres import free_port

BROKER_A = "broker-a-key-0123456789"
BROKER_B = "broker-b-key-0123456789"
UNDERWRITER = "underwriter-key-0123456789"
KEYS = f"""\
keys:
  - {{name: broker-a, key: "{BROKER_A}", packs: [blue-harbour]}}
  - {{name: broker-b, key: "{BROKER_B}", packs: [standard]}}
  - {{name: jane-smith, key: "{UNDERWRITER}", packs: [blue-harbour], roles: [underwriter]}}
"""


def departure() -> str:
    # The server runs on the real clock: a departure ahead of today, under blue-harbour 1.1.0.
    today = datetime.datetime.now(datetime.UTC).date()
    return max(today + datetime.timedelta(days=7), datetime.date(2026, 12, 10)).isoformat()


class Server:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        keys = folder / "keys.yaml"
        keys.write_text(KEYS, encoding="utf-8")
        self.log = folder / "server.log"
        env = {**os.environ, "TIV_BOOK": str(folder / "book.db"), "TIV_AUDIT": ""}
        with self.log.open("wb") as log:
            command = [sys.executable, "-m", "engine.cli", "--rules", str(ROOT), "serve"]
            command += ["--port", str(self.port), "--keys", str(keys), "--no-access-log"]
            command += ["--audit", str(folder / "audit.db")]
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"the server did not come up: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def call(self, method: str, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("http-book"))
    yield running
    running.stop()


def quote(server: Server, facts: dict[str, Any], key: str = BROKER_A) -> httpx.Response:
    return server.call(
        "POST",
        "/v1/quotes?policy=blue-harbour",
        key,
        json={"insured": "Acme Trading Ltd", "conveyance": "MV Nordic Star", "shipment": facts},
    )


def test_quote_bind_policy_certificate(server: Server, tmp_path: Path) -> None:
    made = quote(server, cases.blue(date=departure()))
    assert made.status_code == 201, made.text
    q = made.json()
    assert (q["state"], q["total_insured_value"], q["premium"], q["deductible"]) == (
        "accepted",
        "232250.00",
        "812.88",
        "1161.25",
    )
    assert server.call("GET", f"/v1/quotes/{q['id']}", BROKER_A).json() == q

    wrong = server.call(
        "POST", f"/v1/quotes/{q['id']}/bind", BROKER_A, json={"payment_ref": "W", "amount": "800"}
    )
    assert wrong.status_code == 409
    assert wrong.json()["problems"][0]["code"] == "bind.amount"
    # A JSON number is read as the exact decimal it spells, never as a binary float.
    bound = server.call(
        "POST",
        f"/v1/quotes/{q['id']}/bind",
        BROKER_A,
        content=b'{"payment_ref": "WIRE-7", "amount": 812.88}',
        headers={"Content-Type": "application/json"},
    )
    assert bound.status_code == 201, bound.text
    policy = bound.json()
    assert (policy["state"], policy["premium"], policy["payment"]["amount"]) == (
        "in_force",
        "812.88",
        "812.88",
    )
    assert server.call("GET", f"/v1/policies/{policy['id']}", BROKER_A).json() == policy

    cert = server.call("GET", f"/v1/policies/{policy['id']}/certificate", BROKER_A).json()
    digest = hashlib.sha256(canonical_json(cert["record"]).encode()).hexdigest()
    assert cert["record_sha256"] == digest and cert["record"] == policy

    pdf = server.call("GET", f"/v1/policies/{policy['id']}/certificate.pdf", BROKER_A)
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = " ".join(cases.pdf_text(pdf.content, tmp_path).split())
    for shown in ("Premium USD 812.88", "Total insured value USD 232250.00", digest):
        assert shown in text


def test_tenants_and_keys(server: Server) -> None:
    q = quote(server, cases.blue(date=departure())).json()
    bound = server.call(
        "POST",
        f"/v1/quotes/{q['id']}/bind",
        BROKER_A,
        json={"payment_ref": "W", "amount": "812.88"},
    ).json()
    # Broker B's key may not use blue-harbour: its quotes and policies do not exist for it.
    assert server.call("GET", f"/v1/quotes/{q['id']}", BROKER_B).status_code == 404
    assert server.call("GET", f"/v1/policies/{bound['id']}", BROKER_B).status_code == 404
    pdf = server.call("GET", f"/v1/policies/{bound['id']}/certificate.pdf", BROKER_B)
    assert pdf.status_code == 404
    assert quote(server, cases.blue(date=departure()), key=BROKER_B).status_code == 404
    assert server.call("GET", f"/v1/policies/{bound['id']}", None).status_code == 401
    assert server.call("GET", "/v1/policies/P-0123456789ABCDEF", BROKER_A).status_code == 404


def test_review_needs_the_underwriter_role(server: Server) -> None:
    facts = cases.referred()
    facts["date"] = departure()
    q = quote(server, facts).json()
    assert q["state"] == "referred" and q["premium"] == "798.88"
    early = server.call(
        "POST",
        f"/v1/quotes/{q['id']}/bind",
        BROKER_A,
        json={"payment_ref": "W", "amount": "798.88"},
    )
    assert (early.status_code, early.json()["problems"][0]["code"]) == (409, "bind.referred")
    decision = {"decision": "approve", "reason": "Duties follow", "premium": "900.00"}
    path = f"/v1/quotes/{q['id']}/review"
    denied = server.call("POST", path, BROKER_A, json=decision)
    assert (denied.status_code, denied.json()["problems"][0]["code"]) == (403, "auth.role")
    approved = server.call("POST", path, UNDERWRITER, json=decision)
    assert approved.status_code == 200, approved.text
    review = approved.json()["review"]
    # The underwriter is the key's name when the body names nobody; the rule figure stays.
    assert (review["by"], review["rule_premium"], review["override_premium"]) == (
        "jane-smith",
        "798.88",
        "900.00",
    )
    again = server.call("POST", path, UNDERWRITER, json={"decision": "decline", "reason": "no"})
    assert again.status_code == 409
    bound = server.call(
        "POST",
        f"/v1/quotes/{q['id']}/bind",
        BROKER_A,
        json={"payment_ref": "W", "amount": "900.00"},
    )
    assert bound.status_code == 201 and bound.json()["premium"] == "900.00"


def test_racing_binds_over_http_one_wins(server: Server) -> None:
    q = quote(server, cases.blue(date=departure())).json()

    def bind(n: int) -> int:
        return server.call(
            "POST",
            f"/v1/quotes/{q['id']}/bind",
            BROKER_A,
            json={"payment_ref": f"W{n}", "amount": "812.88"},
        ).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(bind, range(8)))
    assert statuses == [201] + [409] * 7


def test_bad_facts_name_their_path(server: Server) -> None:
    bad = quote(server, cases.blue(date=departure(), invoice={"amount": "abc"}))
    assert bad.status_code == 422
    assert bad.json()["problems"][0]["path"] == "shipment.invoice.amount"
    missing = server.call(
        "POST", "/v1/quotes?policy=blue-harbour", BROKER_A, json={"shipment": cases.blue()}
    )
    assert (missing.status_code, missing.json()["problems"][0]["path"]) == (422, "insured")
    not_json = server.call("POST", "/v1/quotes?policy=blue-harbour", BROKER_A, content=b"{oops")
    assert not_json.status_code == 422


def test_a_service_without_a_book_says_how_to_configure_one(monkeypatch: Any) -> None:
    # No network needed to check a configuration message: the app in-process over ASGI.
    from engine.service.app import create_app
    from engine.service.settings import Settings

    monkeypatch.delenv("TIV_BOOK", raising=False)
    app = create_app(Settings(rules=ROOT))

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tiv") as client:
            return await client.post(
                "/v1/quotes?policy=blue-harbour", json={"insured": "A", "shipment": {}}
            )

    import anyio

    answer = anyio.run(ask)
    assert answer.status_code == 503
    assert answer.json()["problems"][0]["code"] == "book.none"
    assert "TIV_BOOK" in answer.json()["problems"][0]["message"]


def test_a_repeated_key_in_a_request_body_is_refused_at_its_path(server: Server) -> None:
    # {"amount": "1", "amount": "812.88"}: which one would a reader keep? None: 422.
    q = quote(server, cases.blue(date=departure())).json()
    body = b'{"payment_ref": "W", "amount": "1", "amount": "812.88"}'
    refused = server.call(
        "POST",
        f"/v1/quotes/{q['id']}/bind",
        BROKER_A,
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert refused.status_code == 422, refused.text
    problem = refused.json()["problems"][0]
    assert (problem["code"], problem["path"]) == ("facts.duplicate_key", "amount")
    # nothing was bound: the quote still accepts its exact premium
    state = server.call("GET", f"/v1/quotes/{q['id']}", BROKER_A).json()["state"]
    assert state == "accepted"
