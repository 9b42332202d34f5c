"""The HTTP service. `keyed` is run for real: `tiv serve` in a subprocess (API keys, an audit
log, small limits), spoken to over loopback HTTP; so is a two-worker server. Where the
network is not the point, the app runs in this process behind an ASGI transport (`open`:
no keys, no audit log, watching its rule folder). Each serves its own copy of the
repository with a second pack, `acme`, so tenants can be told apart and reloads tried.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import load_rules
from engine.compliance import lock
from engine.compliance.audit import AuditKey, AuditLog, generate_key
from engine.result import Valuation
from engine.service.app import create_app
from engine.service.settings import Settings, check
from engine.service.state import RulesState
from tests.conftest import ROOT, mini, run_cli
from tests.conftest import shipment as base_shipment

TIV = (sys.executable, "-m", "engine.cli")
KEY_A = "insurer-a-key-0123456789"  # packs: standard
KEY_B = "insurer-b-key-0123456789"  # packs: acme
KEY_ADMIN = "operator-key-0123456789"  # every pack, admin and metrics roles

# The mini pack as insurer B's `acme`, with a 20% margin instead of 10%, settling claims
# as the damaged share of the TIV.
ACME = mini(replace={"id: mini": "id: acme", "title: Mini": "title: Acme cargo"}).replace(
    "margin_rate: 0.10", "margin_rate: 0.20"
) + textwrap.dedent("""\
    claims:
      formulas:
        damage: >-
          1 if loss.kind == "total"
          else (loss.damage_percent / 100 if exists(loss.damage_percent)
                else (loss.gross_sound_value - loss.gross_damaged_value) / loss.gross_sound_value)
        indemnity: round(tiv * damage)
      result:
        indemnity: indemnity
        components: [damage]
    """)


def shipment(amount: str = "1000.10", **overrides: Any) -> dict[str, Any]:
    """The shared factory's shipment, with the invoice `amount` and one freight charge."""
    facts = {
        "id": "H-1",
        "date": "2025-03-14",
        "invoice": {"amount": amount},
        "charges": [{"type": "ocean_freight", "amount": "100.05"}],
        **overrides,
    }
    return dict(base_shipment(**facts))


def relock(root: Path) -> None:
    """Record the copy's files in its rules.lock, as `tiv lock` would after a review."""
    lock.write_lock(root, load_rules(root), force=True)


def make_repo(base: Path) -> Path:
    root = base / "repo"
    for folder in ("policies", "rules", "examples"):
        shutil.copytree(ROOT / folder, root / folder)
    (root / "policies/acme").mkdir()
    (root / "policies/acme/1.0.0.yaml").write_text(ACME, encoding="utf-8")
    relock(root)
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Client:
    """What the tests send: a request with an optional key, or one valuation."""

    root: Path

    def send(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
        raise NotImplementedError

    def request(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return self.send(method, path, headers, **kw)

    def value(self, facts: Any, key: str | None = KEY_A, **params: Any) -> httpx.Response:
        params.setdefault("policy", "standard")
        body = facts if isinstance(facts, bytes) else json.dumps(facts).encode()
        return self.request("POST", "/v1/valuations", key, params=params, content=body)


class Server(Client):
    """`tiv serve` in a process of its own, on a free loopback port."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root.parent / f"server-{self.port}.log"
        quiet = ["--no-access-log"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [*TIV, "--rules", str(root), "serve", "--port", str(self.port), *quiet, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"the server did not come up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def send(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)


class InProcess(Client):
    """The app in this process, reached through httpx.ASGITransport: the same app and
    handlers, no socket. Its lifespan (the rules watcher) runs on an event loop in a
    thread of its own, and each request is handed to that loop."""

    def __init__(self, root: Path, **settings: Any) -> None:
        self.root = root
        app = create_app(check(Settings(rules=root.resolve(), **settings)))
        self._stack = contextlib.ExitStack()
        self.portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        lifespan = app.router.lifespan_context(app)
        self._stack.enter_context(self.portal.wrap_async_context_manager(lifespan))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://tiv.test")

    def send(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
        request = functools.partial(self.client.request, method, path, headers=headers, **kw)
        return self.portal.call(request)

    def stop(self) -> None:
        self.portal.call(self.client.aclose)
        self._stack.close()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("keyed")
    root = make_repo(base)
    (base / "keys.yaml").write_text(
        f"""keys:
  - {{name: insurer-a, key: {KEY_A}, packs: [standard]}}
  - {{name: insurer-b, key: {KEY_B}, packs: [acme]}}
  - {{name: ops, key: {KEY_ADMIN}, packs: ["*"], roles: [admin, metrics]}}
""",
        encoding="utf-8",
    )
    generate_key(base / "audit.key")
    audit = ["--audit", str(base / "audit.sqlite"), "--audit-key", str(base / "audit.key")]
    server = Server(
        root,
        "--keys",
        str(base / "keys.yaml"),
        "--max-batch",
        "50",
        "--max-body",
        "65536",
        "--body-timeout",
        "1",
        *audit,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    root = make_repo(tmp_path_factory.mktemp("open"))
    server = InProcess(root, watch_s=0.2)
    yield server
    server.stop()


def assert_error(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    body = response.json()
    assert body["error"] == kind, body
    assert body["problems"] and all(p["code"] and p["message"] for p in body["problems"])
    return body


# --- valuations ---------------------------------------------------------------------


def test_value_one_shipment_as_the_cli_does(keyed: Server) -> None:
    response = keyed.value(shipment())
    assert response.status_code == 200, response.text
    result = Valuation.model_validate(response.json())  # the `tiv value --format json` model
    # freight = 100.05; margin = (1000.10 + 100.05) x 0.10 = 110.015
    # TIV = 1000.10 + 100.05 + 110.015 + 0 = 1210.165 -> half up -> 1210.17
    assert result.total_insured_value == Decimal("1210.17")
    assert result.components["margin"] == Decimal("110.015")
    assert result.policy.id == "standard" and result.trace
    assert response.headers["Tiv-Rules-Id"] == keyed.request("GET", "/readyz").json()["rules_id"]


def test_same_json_as_tiv_value(keyed: Server, tmp_path: Path) -> None:
    facts = tmp_path / "s.json"
    facts.write_text(json.dumps(shipment()), encoding="utf-8")
    cli = run_cli("--rules", keyed.root, "value", facts, "--format", "json", "--policy", "standard")
    assert cli.returncode == 0, cli.stderr
    served = keyed.value(shipment()).json()
    # The server records each valuation in its audit log; the command line does not.
    assert served.pop("audit_id")
    printed = json.loads(cli.stdout)
    assert printed.pop("audit_id") is None
    assert served == printed


def test_json_numbers_are_read_exactly(keyed: Server) -> None:
    # 12345678901234567.89 as a binary float is 12345678901234568: the cents would be lost.
    body = json.dumps(shipment("AMOUNT", charges=[])).replace('"AMOUNT"', "12345678901234567.89")
    response = keyed.value(body.encode())
    assert response.status_code == 200, response.text
    result = response.json()
    # margin = 12345678901234567.89 x 0.10 = 1234567890123456.789
    # TIV = 12345678901234567.89 + 1234567890123456.789 = 13580246791358024.679 -> .68
    assert result["components"]["invoice"] == "12345678901234567.89"
    assert result["total_insured_value"] == "13580246791358024.68"


def test_batch_each_shipment_its_own_result_or_error(keyed: Server) -> None:
    bad = shipment(invoice={"amount": "-1"})
    body = json.dumps([shipment(), bad, shipment("2000.00")], indent=2).encode()
    response = keyed.request(
        "POST", "/v1/valuations/batch", KEY_A, params={"policy": "standard"}, content=body
    )
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["count"], data["failed"]) == (3, 1)
    first, second, third = data["results"]
    assert first["valuation"]["total_insured_value"] == "1210.17"
    assert second["index"] == 1 and second["error"]["error"] == "invalid_facts"
    assert second["error"]["problems"][0]["path"] == "invoice.amount"
    # margin = (2000.00 + 100.05) x 0.10 = 210.005; TIV = 2310.055 -> 2310.06
    assert third["valuation"]["total_insured_value"] == "2310.06"
    assert first["valuation"]["trace"] == []  # batches leave traces out unless asked


@pytest.mark.parametrize("trace", ["false", "true"])
def test_a_batch_answers_each_shipment_as_the_single_endpoint_does(
    open_server: Client, trace: str
) -> None:
    # The batch endpoint reads the whole body at once and values through `value_many`; the
    # single one reads each body itself. Byte for byte, a batch's body must be the single
    # answers wrapped in {"index", "valuation"} (errors: their own error body).
    from engine.compliance.corpus import generate

    facts: list[Any] = list(generate(12, 3))
    facts[0]["id"] = "café: ünï 中文"  # a ':' in a string: the reader counts ':' for keys
    facts[1]["goods"][0]["description"] = 'quote " back \\ slash\ttab'
    facts[2]["invoice"] = {"amount": "-1"}  # an error among valuations
    body = json.dumps(facts).encode()
    params = {"policy": "standard", "trace": trace}
    before = scrape(open_server, key=None)
    batch = open_server.request("POST", "/v1/valuations/batch", params=params, content=body)
    assert batch.status_code == 200, batch.text
    singles = [
        open_server.request("POST", "/v1/valuations", params=params, content=json.dumps(f).encode())
        for f in facts
    ]
    assert [r.status_code for r in singles] == [200, 200, 422] + [200] * 9
    errors = json.loads(batch.content)["results"][2]["error"]
    assert errors["problems"][0]["path"] == "invoice.amount"
    results = [
        b'{"index":%d,"valuation":%s}' % (i, r.content)
        if r.status_code == 200
        else b'{"index":2,"error":%s}' % json.dumps(errors, separators=(",", ":")).encode()
        for i, r in enumerate(singles)
    ]
    rules_id = batch.headers["Tiv-Rules-Id"].encode()
    expected = b'{"rules_id":"%s","count":12,"failed":1,"results":[%s]}' % (
        rules_id,
        b",".join(results),
    )
    assert batch.content == expected
    # Counted per shipment, as the single answers were (each of those once more).
    after = scrape(open_server, key=None)

    def total(samples: list[tuple[str, dict[str, str], float]], name: str) -> float:
        return sum(v for n, _, v in samples if n == name)

    assert total(after, "tiv_valuations_total") - total(before, "tiv_valuations_total") == 22
    assert total(after, "tiv_errors_total") - total(before, "tiv_errors_total") == 2


def test_settle_a_claim(keyed: Server) -> None:
    body = json.dumps({"shipment": shipment(), "loss": {"kind": "partial", "damage_percent": 25}})
    response = keyed.request(
        "POST", "/v1/claims", KEY_B, params={"policy": "acme"}, content=body.encode()
    )
    assert response.status_code == 200, response.text
    result = response.json()
    # TIV 1320.18 (see test_a_tenant_sees_only_its_packs); 25% of it = 330.045 -> 330.05
    assert result["valuation"]["total_insured_value"] == "1320.18"
    assert (result["indemnity"], result["components"]) == ("330.05", {"damage": "0.25"})
    # A tenant settles only under its own packs, and reads only its own claim records.
    theirs = keyed.request(
        "POST", "/v1/claims", KEY_A, params={"policy": "acme"}, content=body.encode()
    )
    assert_error(theirs, 404, "no_policy")
    record = f"/v1/audit/{result['audit_id']}"
    assert keyed.request("GET", record, KEY_B).json()["kind"] == "claim"
    assert_error(keyed.request("GET", record, KEY_A), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (
            {"shipment": shipment(invoice={"amount": "-1"}), "loss": {"kind": "total"}},
            "shipment.invoice.amount",
        ),
        ({"shipment": shipment(), "loss": {"kind": "partial"}}, "loss"),
        ({"shipment": shipment()}, "loss"),
        ({"shipment": shipment(), "loss": {"kind": "total"}, "extra": 1}, "extra"),
    ],
)
def test_claim_errors_name_the_field(open_server: Client, body: dict[str, Any], path: str) -> None:
    content = json.dumps(body).encode()
    response = open_server.request("POST", "/v1/claims", params={"policy": "acme"}, content=content)
    problems = assert_error(response, 422, "invalid_facts")["problems"]
    assert any(p.get("path", "").startswith(path) for p in problems), problems


def test_concurrent_requests_give_the_sequential_figures(keyed: Server) -> None:
    def figures(amount: str) -> dict[str, Any]:
        result = keyed.value(shipment(amount)).json()
        del result["audit_id"]  # each valuation is its own audit record
        return result

    amounts = [f"{1000 + 37 * i}.{i % 100:02d}" for i in range(16)]
    sequential = {a: figures(a) for a in amounts}
    assert len({r["total_insured_value"] for r in sequential.values()}) == 16
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda a: (a, figures(a)), amounts * 4))
    assert len(concurrent) == 64
    for amount, result in concurrent:
        assert result == sequential[amount]


# --- errors -------------------------------------------------------------------------


def test_invalid_facts_name_every_path(keyed: Server) -> None:
    facts = shipment(charges=[{"type": "ocean_freight", "amount": "abc"}], mode="boat")
    body = assert_error(keyed.value(facts), 422, "invalid_facts")
    paths = {p["path"] for p in body["problems"]}
    assert paths == {"charges[0].amount", "mode"}
    assert body["rules_id"]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"id": "x",', "facts.syntax"),  # cut off
        (b"[1, 2]", "facts.type"),  # not an object
        (b"", "facts.type"),
        (b"\xff\xfe{}", "facts.encoding"),
        (b'{"id": "\xff"}', "facts.encoding"),
        (b'{"id": "a", "id": "b"}', "facts.duplicate_key"),
        (b'{"invoice": {"amount": NaN}}', "facts.not_finite"),
        (b"[" * 50_000, "facts.type"),
        (b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}", "facts.too_deep"),
    ],
)
def test_bad_bodies_are_4xx_not_500(keyed: Server, content: bytes, code: str) -> None:
    body = assert_error(keyed.value(content), 422, "invalid_facts")
    assert code in {p["code"] for p in body["problems"]}


def test_unknown_pack_and_version_are_404(keyed: Server) -> None:
    body = assert_error(keyed.value(shipment(), policy="nope"), 404, "no_policy")
    assert body["problems"][0]["code"] == "policy.unknown"
    body = assert_error(keyed.value(shipment(), policy="standard@9.9.9"), 404, "no_policy")
    assert body["problems"][0]["code"] == "policy.unknown_version"


def test_no_version_in_effect_is_409_with_the_windows(keyed: Server) -> None:
    body = assert_error(keyed.value(shipment(), as_of="2019-06-30"), 409, "no_policy")
    assert body["problems"][0]["code"] == "policy.not_in_effect"
    # The advice names the HTTP parameter, not the CLI flag the library's message names.
    message = body["problems"][0]["message"]
    assert "the as_of parameter" in message and "--as-of" not in message, message
    assert body["versions"] == [
        {
            "version": "1.0.0",
            "status": "published",
            "effective_from": "2020-01-01",
            "effective_to": "2027-01-01",
        },
        {
            "version": "1.1.0",
            "status": "published",
            "effective_from": "2027-01-01",
            "effective_to": None,
        },
    ]


def test_bad_query_is_422(keyed: Server) -> None:
    body = assert_error(keyed.value(shipment(), as_of="yesterday"), 422, "invalid_request")
    assert body["problems"][0]["path"] == "query.as_of"


def test_body_too_large_is_413(keyed: Server) -> None:
    facts = shipment(goods=[{"description": "x" * 70_000}])
    assert_error(keyed.value(facts), 413, "too_large")


def test_too_many_shipments_is_422(keyed: Server) -> None:
    body = json.dumps([shipment()] * 51).encode()
    response = keyed.request(
        "POST", "/v1/valuations/batch", KEY_A, params={"policy": "standard"}, content=body
    )
    assert_error(response, 422, "too_many_shipments")


def test_time_budget_is_503(tmp_path: Path) -> None:
    server = InProcess(make_repo(tmp_path), time_budget_s=0.001)
    try:
        # 1,000 shipments (the batch limit) take far longer than a budget of 1 ms: even at
        # 20 µs each they need 20 ms.
        body = json.dumps([shipment()] * 1_000).encode()
        response = server.request(
            "POST", "/v1/valuations/batch", params={"policy": "standard"}, content=body
        )
        assert_error(response, 503, "time_budget")
        assert int(response.headers["Retry-After"]) >= 1
    finally:
        server.stop()


def test_unknown_route_is_json_404(keyed: Server) -> None:
    assert_error(keyed.request("GET", "/v2/nothing", KEY_A), 404, "not_found")


# --- the edges (issue 12): repeated parameters, exact keys, slow bodies, bad text --------


def raw_exchange(server: Server, head: bytes, body: bytes = b"", pace: float = 0.0) -> bytes:
    """Send `head` then `body` over a raw socket (a byte every `pace` s if given) and read
    what comes back until the server closes; a test of the wire, not of a client."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(head)
        try:
            if pace:
                for byte in body:
                    sock.sendall(bytes([byte]))
                    time.sleep(pace)
            else:
                sock.sendall(body)
        except OSError:
            pass  # the server cut us off mid-body: what it said is read below
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def post_head(length: int, key: bytes = KEY_A.encode(), auth: bytes | None = None) -> bytes:
    auth = auth if auth is not None else b"Authorization: Bearer " + key
    return (
        b"POST /v1/valuations?policy=standard HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + auth
        # Connection: close, so the answer ends when the server closes, not at its
        # keep-alive timeout (5 s per exchange).
        + b"\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % length
    )


def test_a_repeated_query_parameter_is_422_naming_it(keyed: Server) -> None:
    # The exact request of the issue, which used to value with its last value, `standard`.
    response = keyed.request(
        "POST",
        "/v1/valuations?policy=blue-harbour&policy=standard",
        KEY_A,
        content=json.dumps(shipment()).encode(),
    )
    body = assert_error(response, 422, "invalid_request")
    assert [(p["code"], p["path"]) for p in body["problems"]] == [
        ("request.repeated_parameter", "policy")
    ]
    # Also for a parameter the endpoint reads only once, and an empty repeat.
    response = keyed.request(
        "POST", "/v1/valuations?policy=standard&trace=true&trace=", KEY_A, content=b"{}"
    )
    assert assert_error(response, 422, "invalid_request")["problems"][0]["path"] == "trace"


def test_a_key_is_its_exact_bytes(keyed: Server) -> None:
    ok = raw_exchange(keyed, post_head(2), b"{}")
    assert ok.startswith(b"HTTP/1.1 422"), ok[:200]  # the key is good, the facts are not
    for auth in (
        b"Authorization: Bearer " + KEY_A.encode() + b"\xa0",  # a no-break space after it
        b"Authorization: Bearer  " + KEY_A.encode(),  # two spaces: the key starts with one
        b"Authorization: Bearer " + KEY_A.encode() + b" x",
        b"X-API-Key: " + KEY_A.encode() + b"\xa0",
        b"X-API-Key: " + KEY_A.upper().encode(),
    ):
        answer = raw_exchange(keyed, post_head(2, auth=auth), b"{}")
        assert answer.startswith(b"HTTP/1.1 401"), (auth, answer[:200])
        assert b"auth.invalid" in answer


def test_a_trailing_space_is_part_of_the_key() -> None:
    # Over HTTP/1.1 the server never sees a trailing ASCII space (RFC 9110 strips the
    # whitespace around a field value before the app); an ASGI server that passed it on
    # would present another key, which is refused.
    from engine.service.auth import presented

    key = KEY_A.encode()
    assert presented([(b"authorization", b"Bearer " + key + b" ")]) == key + b" "
    assert presented([(b"x-api-key", key + b" ")]) == key + b" "
    assert presented([(b"authorization", b"Basic " + key)]) is None


@pytest.mark.parametrize("declared, sent", [(1000, 10), (100, 0)])
def test_a_short_body_is_cut_off_with_408(keyed: Server, declared: int, sent: int) -> None:
    # A Content-Length larger than the body used to hold the connection for 25 s.
    started = time.monotonic()
    answer = raw_exchange(keyed, post_head(declared), b"{" * sent)
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request.body_timeout" in answer and b"connection: close" in answer.lower()
    assert took < 4, took  # --body-timeout 1, plus the time to send 10 bytes at 10 kB/s


def test_a_trickling_body_is_cut_off_with_408(keyed: Server) -> None:
    # One byte every 0.4 s (the client sent one every 2 s and was held 130 s).
    body = json.dumps(shipment()).encode()
    started = time.monotonic()
    answer = raw_exchange(keyed, post_head(len(body)), body[:12], pace=0.4)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 6
    # The server is not held: the next request is answered at once.
    assert keyed.value(shipment()).status_code == 200


def test_unbounded_numbers_are_422_at_their_path(keyed: Server) -> None:
    # The 12-byte amount took 5 s and a MemoryError (HTTP 500).
    facts = json.dumps(shipment()).replace('"1000.10"', "1e-999999999").encode()
    started = time.monotonic()
    body = assert_error(keyed.value(facts), 422, "invalid_facts")
    assert time.monotonic() - started < 2
    assert body["problems"][0]["code"] == "facts.number_bounds"
    assert body["problems"][0]["path"] == "invoice.amount"
    # The same in a batch is that shipment's error.
    response = keyed.request(
        "POST",
        "/v1/valuations/batch",
        KEY_A,
        params={"policy": "standard"},
        content=b"[" + facts + b"," + json.dumps(shipment()).encode() + b"]",
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert results[0]["error"]["problems"][0]["path"] == "invoice.amount"
    # margin = (1000.10 + 100.05) x 0.10 = 110.015; TIV = 1210.165 -> 1210.17
    assert results[1]["valuation"]["total_insured_value"] == "1210.17"


def test_1e40_on_an_excluded_charge_is_not_a_500(keyed: Server) -> None:
    # 1e40 is beyond the bounds of an amount (below 10^20): a 422 at its path, before any
    # arithmetic; never a 500.
    facts = shipment(charges=[{"type": "demurrage", "amount": "1"}])
    text = json.dumps(facts).replace('"amount": "1"', '"amount": 1e40').encode()
    body = assert_error(keyed.value(text), 422, "invalid_facts")
    assert body["problems"][0]["code"] == "facts.number_bounds"
    assert body["problems"][0]["path"] == "charges[0].amount"


@pytest.mark.parametrize(
    "content, path",
    [
        (b'{"id": "\\ud800"}', "id"),  # a lone surrogate, escaped
        (b'{"id": "ok", "goods": [{"description": "\\udfff x"}]}', "goods[0].description"),
        (b'{"id": "\xed\xa0\x80"}', None),  # a surrogate encoded as UTF-8 is not UTF-8
        (b'{"id": "\xc3\x28"}', None),
    ],
)
def test_surrogates_and_bad_utf8_are_422(keyed: Server, content: bytes, path: str | None) -> None:
    body = assert_error(keyed.value(content), 422, "invalid_facts")
    problem = body["problems"][0]
    assert problem["code"] == "facts.encoding"
    assert problem.get("path") == path


# --- access -------------------------------------------------------------------------


def test_keys_are_required(keyed: Server) -> None:
    response = keyed.value(shipment(), key=None)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert_error(keyed.value(shipment(), key="not-a-key-at-all-000"), 401, "unauthorized")
    response = keyed.request("GET", "/v1/packs", headers={"X-API-Key": KEY_A})
    assert response.status_code == 200


def test_a_tenant_sees_only_its_packs(keyed: Server) -> None:
    listed = keyed.request("GET", "/v1/packs", KEY_A).json()
    assert [p["id"] for p in listed["packs"]] == ["standard"]
    # Insurer B's pack answers exactly as a pack that does not exist.
    theirs = assert_error(keyed.value(shipment(), key=KEY_A, policy="acme"), 404, "no_policy")
    missing = assert_error(keyed.value(shipment(), key=KEY_A, policy="zzz"), 404, "no_policy")
    assert (
        theirs["problems"][0]["message"].replace("acme", "zzz")
        == (missing["problems"][0]["message"])
    )
    assert_error(keyed.request("GET", "/v1/packs/acme", KEY_A), 404, "no_policy")
    assert_error(keyed.request("GET", "/v1/packs/acme/1.0.0", KEY_A), 404, "no_policy")
    batch = keyed.request(
        "POST", "/v1/valuations/batch", KEY_A, params={"policy": "acme"}, content=b"[]"
    )
    assert_error(batch, 404, "no_policy")
    # B values with its own pack: margin = (1000.10 + 100.05) x 0.20 = 220.03
    # TIV = 1000.10 + 100.05 + 220.03 = 1320.18
    own = keyed.value(shipment(), key=KEY_B, policy="acme")
    assert own.json()["total_insured_value"] == "1320.18"


def test_the_service_signs_its_audit_records(keyed: Server) -> None:
    assert keyed.value(shipment()).status_code == 200
    key = AuditKey.from_file(keyed.root.parent / "audit.key")
    report = AuditLog(keyed.root.parent / "audit.sqlite", key=None).verify(keys=[key])
    assert report.ok and report.records >= 1 and report.signed == report.records


def test_audit_records_are_tenant_isolated(keyed: Server) -> None:
    result = keyed.value(shipment(), key=KEY_B, policy="acme").json()
    record_id = result["audit_id"]
    assert record_id
    record = keyed.request("GET", f"/v1/audit/{record_id}", KEY_B)
    assert record.status_code == 200, record.text
    assert record.json()["result"]["total_insured_value"] == "1320.18"
    assert_error(keyed.request("GET", f"/v1/audit/{record_id}", KEY_A), 404, "not_found")
    assert_error(keyed.request("GET", "/v1/audit/last", KEY_B), 404, "not_found")
    unknown = "00000000-0000-0000-0000-000000000000"
    assert_error(keyed.request("GET", f"/v1/audit/{unknown}", KEY_B), 404, "not_found")


def test_admin_and_metrics_need_their_roles(keyed: Server) -> None:
    assert_error(keyed.request("POST", "/v1/admin/reload", KEY_A), 403, "forbidden")
    assert_error(keyed.request("GET", "/metrics", KEY_A), 403, "forbidden")


def test_no_keys_means_loopback_only(open_server: Client, tmp_path: Path) -> None:
    # (The two-worker server, which has no keys, says "listening on loopback only".)
    proc = run_cli("--rules", open_server.root, "serve", "--host", "0.0.0.0")
    assert proc.returncode == 64
    assert "refusing to listen on 0.0.0.0 with no API keys" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Open means open: no key needed, on loopback.
    assert open_server.value(shipment(), key=None).status_code == 200


# --- rules --------------------------------------------------------------------------


def test_pack_version_text_and_sha256(keyed: Server) -> None:
    data = keyed.request("GET", "/v1/packs/standard/1.0.0", KEY_A).json()
    raw = (keyed.root / "policies/standard/1.0.0.yaml").read_bytes()
    assert data["yaml"].encode("utf-8") == raw
    import hashlib

    assert data["sha256"] == hashlib.sha256(raw).hexdigest()
    assert data["effective_from"] == "2020-01-01"
    versions = keyed.request("GET", "/v1/packs/standard", KEY_A).json()["versions"]
    assert [v["version"] for v in versions] == ["1.0.0", "1.1.0"]


def test_country_rules_listed_with_windows(keyed: Server) -> None:
    data = keyed.request("GET", "/v1/countries", KEY_B).json()
    rules = load_rules(keyed.root)
    expected = {
        (c.id, c.version, c.effective_from.isoformat())
        for versions in getattr(rules, "duty_rules", {}).values()
        for c in versions
    }
    listed = {
        (v["id"], v["version"], v["effective_from"])
        for country in data["countries"]
        for v in country["versions"]
    }
    assert listed == expected


def scrape(server: Client, key: str | None = KEY_ADMIN) -> list[tuple[str, dict[str, str], float]]:
    text = server.request("GET", "/metrics", key).text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def test_metrics(keyed: Server) -> None:
    keyed.value(shipment())
    keyed.value(shipment(invoice={"amount": "-1"}))
    samples = scrape(keyed)
    valued = [v for n, labels, v in samples if n == "tiv_valuations_total"]
    assert sum(valued) >= 1
    errors = {labels["class"]: v for n, labels, v in samples if n == "tiv_errors_total"}
    assert errors["invalid_facts"] >= 1
    packs = {(lb["pack"], lb["version"]) for n, lb, _ in samples if n == "tiv_pack_version_info"}
    assert {("standard", "1.0.0"), ("acme", "1.0.0")} <= packs
    buckets = [
        (lb["le"], v)
        for n, lb, v in samples
        if n == "tiv_http_request_duration_seconds_bucket" and lb["route"] == "/v1/valuations"
    ]
    counts = [v for _, v in buckets]
    assert buckets[-1][0] == "+Inf" and counts == sorted(counts) and counts[-1] >= 2


def started(server: Client) -> set[str]:
    """The pids of the workers that have started, as /metrics lists them."""
    samples = scrape(server, key=None)
    return {lb["pid"] for n, lb, _ in samples if n == "tiv_process_start_time_seconds"}


def test_health_ready_openapi_docs(keyed: Server) -> None:
    assert keyed.request("GET", "/healthz").json() == {"status": "ok"}
    ready = keyed.request("GET", "/readyz").json()
    assert ready["status"] == "ready" and len(ready["rules_id"]) == 16
    spec = keyed.request("GET", "/openapi.json").json()
    assert {"/v1/valuations", "/v1/valuations/batch", "/v1/admin/reload"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert set(schemas["Valuation"]["properties"]) == set(Valuation.model_fields)
    assert "charges" in schemas["Shipment"]["properties"]
    body = spec["paths"]["/v1/valuations"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Shipment"
    }
    assert "swagger" in keyed.request("GET", "/docs").text.lower()


# --- reload -------------------------------------------------------------------------


def test_reload_refuses_broken_rules_and_keeps_serving(keyed: Server) -> None:
    before = keyed.request("GET", "/readyz").json()["rules_id"]
    broken = keyed.root / "policies/acme/1.1.0.yaml"
    broken.write_text(
        ACME.replace("version: 1.0.0", "version: 1.1.0").replace(
            "tiv: round(", "tiv: round(nonsense + "
        ),
        encoding="utf-8",
    )
    try:
        response = keyed.request("POST", "/v1/admin/reload", KEY_ADMIN)
        body = assert_error(response, 422, "invalid_rules")
        assert any(p.get("file") == "policies/acme/1.1.0.yaml" for p in body["problems"])
        assert body["rules_id"] == before
        # The old rules keep serving.
        served = keyed.value(shipment())
        assert served.status_code == 200
        assert served.headers["Tiv-Rules-Id"] == before
    finally:
        broken.unlink()
    # A valid change is swapped in: a draft version of acme.
    draft = keyed.root / "policies/acme/1.1.0.yaml"
    draft.write_text(
        ACME.replace("version: 1.0.0", "version: 1.1.0").replace("published", "draft"),
        encoding="utf-8",
    )
    response = keyed.request("POST", "/v1/admin/reload", KEY_ADMIN)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["previous_rules_id"] == before and data["changed"]
    refused = keyed.value(shipment(), key=KEY_B, policy="acme@1.1.0")
    message = assert_error(refused, 409, "no_policy")["problems"][0]["message"]
    assert "allow_draft=true" in message and "--allow-draft" not in message, message
    after = keyed.value(shipment(), key=KEY_B, policy="acme@1.1.0", allow_draft="true")
    assert after.status_code == 200 and after.headers["Tiv-Rules-Id"] == data["rules_id"]


def test_reload_refuses_a_changed_published_file(keyed: Server) -> None:
    pack = keyed.root / "policies/acme/1.0.0.yaml"
    original = pack.read_text(encoding="utf-8")
    pack.write_text(original.replace("margin_rate: 0.20", "margin_rate: 0.25"), encoding="utf-8")
    try:
        body = assert_error(
            keyed.request("POST", "/v1/admin/reload", KEY_ADMIN), 422, "invalid_rules"
        )
        assert "lock.immutable" in {p["code"] for p in body["problems"]}
        assert (
            keyed.value(shipment(), key=KEY_B, policy="acme").json()["total_insured_value"]
            == "1320.18"
        )
    finally:
        pack.write_text(original, encoding="utf-8")


def test_watch_reloads_on_file_change(open_server: Client) -> None:
    before = open_server.request("GET", "/readyz").json()["rules_id"]
    draft = open_server.root / "policies/acme/1.2.0.yaml"
    draft.write_text(
        ACME.replace("version: 1.0.0", "version: 1.2.0").replace("published", "draft"),
        encoding="utf-8",
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = open_server.request("GET", "/readyz").json()["rules_id"]
        if now != before:
            break
        time.sleep(0.1)
    assert now != before
    versions = open_server.request("GET", "/v1/packs/acme").json()["versions"]
    assert [v["version"] for v in versions] == ["1.0.0", "1.2.0"]


def test_in_flight_requests_keep_their_rules(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    state = RulesState(root)
    held = state.current  # what a request took when it started
    pack = root / "policies/acme/1.0.0.yaml"
    pack.write_text(pack.read_text().replace("margin_rate: 0.20", "margin_rate: 0.30"))
    relock(root)
    outcome = state.reload()
    assert outcome.changed and state.current is not held
    from engine import value

    # The request holding the old snapshot still values at 20%: TIV 1320.18 (see above);
    # new requests at 30%: margin = 1100.15 x 0.30 = 330.045; TIV = 1430.195 -> 1430.20
    old = value(held.rules, shipment(), policy="acme")
    new = value(state.current.rules, shipment(), policy="acme")
    assert (old.total_insured_value, new.total_insured_value) == (
        Decimal("1320.18"),
        Decimal("1430.20"),
    )


def test_several_worker_processes(tmp_path: Path) -> None:
    """--workers 2: one listener with TCP_NODELAY, and /metrics summing both workers."""
    server = Server(make_repo(tmp_path), "--workers", "2")
    try:
        assert "listening on loopback only" in server.log()
        assert "watching the rules every 2 s" in server.log()
        deadline = time.monotonic() + 60  # the server answers once one worker is up
        while len(started(server)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        body = json.dumps(shipment()).encode()
        latencies, results = [], set()
        with httpx.Client(base_url=server.url, timeout=30) as client:  # one kept-alive connection
            for _ in range(21):
                begun = time.perf_counter()
                response = client.post("/v1/valuations?policy=standard&trace=false", content=body)
                latencies.append(time.perf_counter() - begun)
                results.add(response.json()["total_insured_value"])
        assert results == {"1210.17"}
        # Without TCP_NODELAY on the workers' shared listener every answer waited ~40 ms for
        # the client's delayed ACK; a valuation takes a few milliseconds.
        assert sorted(latencies)[10] < 0.035
        with ThreadPoolExecutor(max_workers=8) as pool:  # new connections: both workers work
            statuses = list(pool.map(lambda _: server.value(shipment(), key=None), range(24)))
        assert {r.status_code for r in statuses} == {200}
        for _ in range(6):  # each scrape is answered by either worker, and counts both
            valued = [v for n, _, v in scrape(server, key=None) if n == "tiv_valuations_total"]
            assert sum(valued) == 21 + 24
            assert len(started(server)) == 2
        # Kept-alive connections opened together are shared by the workers: asyncio's own
        # accept gave all 4 to one worker in a third of the tries (the other sat idle).
        for _ in range(3):
            held = held_connections(server, 4)
            assert len(held) == 2 and min(held.values()) >= 1, held
    finally:
        server.stop()


def held_connections(server: Server, count: int) -> dict[int, int]:
    """Open `count` connections to `server` at once, each answered once and left open:
    how many of them each worker process holds (Linux: read from /proc)."""
    request = b"GET /healthz HTTP/1.1\r\nHost: tiv\r\n\r\n"
    connections = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(count)]
    try:
        for connection in connections:
            connection.sendall(request)
        for connection in connections:
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
        # /proc/net/tcp: local address:port (hex), state 01 = established, socket inode.
        established = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == server.port and fields[3] == "01":
                established.add(fields[9])
        held: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != server.proc.pid:
                    continue  # not a worker of this server
                pid = int(stat.parent.name)
                inodes = {
                    os.readlink(fd).removeprefix("socket:[").removesuffix("]")
                    for fd in (stat.parent / "fd").iterdir()
                }
                if inodes & established:
                    held[pid] = len(inodes & established)
        assert sum(held.values()) == count, held
        return held
    finally:
        for connection in connections:
            connection.close()


def test_results_written_by_pydantic_core_are_the_bytes_jsonresponse_wrote() -> None:
    # The valuation endpoints write `model_dump_json()` instead of handing the dumped dict
    # to JSONResponse (a third of the cost): the bytes must be the same, trace or not,
    # whatever characters the facts carry into the result.
    from starlette.responses import JSONResponse

    from engine import value_many
    from engine.compliance.corpus import generate

    rules = load_rules(ROOT)
    odd = ["café ünï 中文", 'quote " back \\ slash', "tab\there\nnewline \x1f \u2028 \x7f"]
    facts = list(generate(40, 5))
    for number, text in enumerate(odd):
        facts[number]["id"] = text
    for trace in (True, False):
        results = list(value_many(rules, facts, policy="standard", trace=trace))
        assert all(isinstance(result, Valuation) for result in results)
        for result in results:
            assert isinstance(result, Valuation)
            wrote = JSONResponse(result.model_dump(mode="json")).body
            assert result.model_dump_json().encode("utf-8") == wrote


def test_a_reload_lets_the_replaced_rules_be_collected_then_freezes_again() -> None:
    # `tiv serve` freezes what is loaded (engine.service.heap): frozen objects are never
    # collected, so a reload must unfreeze for the old rules to go, and freeze again later.
    import gc
    import weakref

    from engine.service.heap import FrozenHeap

    class Rules:
        pass

    old = Rules()
    old.cycle = old  # type: ignore[attr-defined]  # only the cycle collector frees it
    gone = weakref.ref(old)
    heap = FrozenHeap(grace_s=0.05)
    try:
        heap.freeze()
        assert gc.get_freeze_count() > 0
        del old
        gc.collect()
        assert gone() is not None  # frozen: kept
        heap.replaced()
        assert gc.get_freeze_count() == 0
        deadline = time.monotonic() + 5
        while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gone() is None  # collected by the refreeze's collection
        assert gc.get_freeze_count() > 0  # and the rest frozen again
    finally:
        heap.stop()
        gc.unfreeze()
