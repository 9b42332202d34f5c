"""Insurance applications on a real SQLite book: quote, review, bind, cancel, endorse, certificate.

The lifecycle checks are functions of a `Books` factory, so tests/test_applications_postgres.py
runs the very same checks on a real PostgreSQL. Figures are blue-harbour 1.1.0's, worked
by hand in the comments (the pack: TIV = (invoice + freight + insurance charges) x 1.10 +
duties; premium = TIV x 0.0035 for electronics by ocean from Asia to Europe; deductible
0.5% of the sum insured, at least 250 USD).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import FactsError, RuleSet
from engine.applications import ApplicationError, Book, canonical_json
from engine.compliance.audit import AuditLog
from tests.conftest import ROOT

TODAY = datetime.datetime(2026, 11, 29, 11, 0, tzinfo=datetime.UTC)
Clock = Callable[[], datetime.datetime]


def at(day: str, hour: int = 12) -> Clock:
    moment = datetime.datetime.fromisoformat(day).replace(hour=hour, tzinfo=datetime.UTC)
    return lambda: moment


def blue(**overrides: Any) -> dict[str, Any]:
    """Laptops, FOB Shanghai-Hamburg, departing 2026-12-10: accepted under blue-harbour."""
    facts: dict[str, Any] = {
        "id": "APP-1",
        "date": "2026-12-10",
        "currency": "USD",
        "incoterm": "FOB",
        "mode": "ocean",
        "origin": {"country": "CN", "port": "CNSHA"},
        "destination": {"country": "DE", "port": "DEHAM"},
        "payment_method": "prepaid",
        "expected_transit_days": 34,
        "invoice": {"amount": "200000.00"},
        "goods": [
            {
                "description": "Laptop computers",
                "category": "electronics",
                "quantity": "800",
                "weight_kg": "2100",
                "dimensions_cm": {"length": "120", "width": "100", "height": "150"},
                "value": "200000.00",
            }
        ],
        "charges": [
            {"type": "ocean_freight", "amount": "6000.00"},
            {"type": "origin_charges", "amount": "800.00"},
            {"type": "destination_charges", "amount": "700.00"},
        ],
        "duties": [{"type": "import_duty", "amount": "4000.00"}],
    }
    facts.update(overrides)
    return facts


def referred() -> dict[str, Any]:
    facts = blue(id="APP-REF")
    del facts["duties"]  # blue-harbour refers a shipment without duty lines
    return facts


def declined() -> dict[str, Any]:
    return blue(id="APP-DEC", transit_countries=["SG", "IR"])  # sanctioned transit


class Books:
    """Opens books on one database (a SQLite file or a PostgreSQL URL), one audit store."""

    def __init__(self, db: str, audit: Path, rules: RuleSet) -> None:
        self.db, self.audit, self.rules = db, audit, rules
        self.opened: list[Book] = []

    def __call__(self, clock: Clock = lambda: TODAY) -> Book:
        book = Book(self.db, self.rules, audit=self.audit, clock=clock)
        self.opened.append(book)
        return book

    def close(self) -> None:
        for book in self.opened:
            book.close()


@pytest.fixture
def books(tmp_path: Path, shipped: RuleSet) -> Any:
    made = Books(str(tmp_path / "book.db"), tmp_path / "audit.db", shipped)
    yield made
    made.close()


def refused(code: str, work: Callable[[], Any]) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        work()
    assert caught.value.code == code, caught.value.message
    assert "\n" not in caught.value.message
    return caught.value


# --- the checks, shared with the PostgreSQL tests ------------------------------------


def check_lifecycle(books: Books) -> None:
    book = books()
    quote = book.quote(
        blue(), policy="blue-harbour", insured="Acme Trading Ltd", conveyance="MV Nordic Star"
    )
    # TIV = 200,000.00 + 7,500.00 freight + 20,750.00 margin (10% of 207,500) + 4,000 duties
    #     = 232,250.00; premium 232,250.00 x 0.0035 = 812.875 -> 812.88;
    # deductible 232,250.00 x 0.005 = 1,161.25
    assert (quote.state, quote.decision, quote.reasons) == ("accepted", "accept", [])
    assert (quote.total_insured_value, quote.premium, quote.deductible) == (
        "232250.00",
        "812.88",
        "1161.25",
    )
    assert quote.premium_due == "812.88"
    assert (quote.policy.id, quote.policy.version) == ("blue-harbour", "1.1.0")
    assert quote.as_of == datetime.date(2026, 12, 10)
    assert quote.valid_until == datetime.date(2026, 12, 29)  # 2026-11-29 + 30 days (pack)
    assert len(quote.rules_id) == 16 and quote.audit_id

    policy = book.bind(quote.id, payment_ref="WIRE-001", amount="812.88")
    assert (policy.state, policy.premium, policy.payment.amount) == ("in_force", "812.88", "812.88")
    assert policy.effective_date == datetime.date(2026, 11, 29)
    assert policy.sum_insured == "232250.00"  # none declared: the TIV
    assert policy.clauses[0] == "Institute Cargo Clauses (A) 1/1/09"
    assert book.get_quote(quote.id).state == "bound"
    assert book.get_quote(quote.id).policy_id == policy.id
    assert [p.id for p in book.policies()] == [policy.id]

    # Another book on the same database (another worker) sees the same policy.
    other = books()
    assert other.get_policy(policy.id) == policy

    certificate = book.certificate(policy.id)
    assert certificate.record == policy.record()
    recomputed = hashlib.sha256(canonical_json(certificate.record).encode()).hexdigest()
    assert certificate.record_sha256 == recomputed
    assert (certificate.sum_insured, certificate.premium, certificate.deductible) == (
        "232250.00",
        "812.88",
        "1161.25",
    )
    assert certificate.conveyance == "ocean: MV Nordic Star"
    assert certificate.route.origin == "CN (CNSHA)"

    assert book.reproduce(quote.id).same

    # Every change is in the audit chain, which verifies.
    with AuditLog(books.audit, create=False) as log:
        kinds = [r.kind for r in log]
        assert kinds == ["application.quote", "application.bind"]
        assert log.verify().ok


def check_refusals(books: Books) -> None:
    book = books()
    quote = book.quote(blue(), policy="blue-harbour", insured="Acme")
    refused("bind.amount", lambda: book.bind(quote.id, payment_ref="W", amount="812.87"))
    refused("bind.amount", lambda: book.bind(quote.id, payment_ref="W", amount="813"))
    book.bind(quote.id, payment_ref="W", amount="812.880")  # the same amount, written longer
    refused("bind.already_bound", lambda: book.bind(quote.id, payment_ref="W2", amount="812.88"))

    ref = book.quote(referred(), policy="blue-harbour", insured="Acme")
    assert (ref.state, [r.rule for r in ref.reasons]) == ("referred", ["duties-not-declared"])
    refused("bind.referred", lambda: book.bind(ref.id, payment_ref="W", amount=ref.premium_due))

    dec = book.quote(declined(), policy="blue-harbour", insured="Acme")
    assert dec.state == "declined"
    refused("bind.declined", lambda: book.bind(dec.id, payment_ref="W", amount="1"))
    refused("review.not_referred", lambda: book.review(dec.id, approve=True, by="U", reason="r"))

    error = refused("quote.unknown", lambda: book.bind("Q-NONE", payment_ref="W", amount="1"))
    assert error.http_status == 404 and error.exit_code == 2
    refused("policy.unknown", lambda: book.cancel("P-NONE"))


def check_expiry(books: Books) -> None:
    quote = books().quote(blue(), policy="blue-harbour", insured="Acme")
    assert quote.valid_until == datetime.date(2026, 12, 29)
    # The last valid day binds; the day after does not.
    late = books(clock=at("2026-12-30", hour=0))
    error = refused("bind.expired", lambda: late.bind(quote.id, payment_ref="W", amount="812.88"))
    assert "expired on 2026-12-29" in error.message
    on_time = books(clock=at("2026-12-29", hour=23))
    assert on_time.bind(quote.id, payment_ref="W", amount="812.88").state == "in_force"
    # A referred quote past its validity cannot be approved either: it is quoted again.
    waiting = books().quote(referred(), policy="blue-harbour", insured="Acme")
    refused("review.expired", lambda: late.review(waiting.id, approve=True, by="U", reason="r"))


def check_review(books: Books) -> None:
    book = books()
    ref = book.quote(referred(), policy="blue-harbour", insured="Acme")
    # No duties: TIV = 200,000 + 7,500 + 20,750 = 228,250.00; 228,250.00 x 0.0035 = 798.875
    assert (ref.total_insured_value, ref.premium) == ("228250.00", "798.88")
    refused(
        "input.premium",
        lambda: book.review(ref.id, approve=True, by="U", reason="r", premium="900.001"),
    )
    approved = book.review(
        ref.id,
        approve=True,
        by="Jane Smith",
        reason="Duties follow on arrival; loaded for the uncertainty",
        premium="900.00",
        conditions="Duty lines to be declared before arrival",
    )
    assert approved.state == "approved"
    review = approved.review
    assert review is not None
    # The override sits next to the rule figure.
    assert (review.rule_premium, review.override_premium) == ("798.88", "900.00")
    assert (review.by, review.decision) == ("Jane Smith", "approve")
    assert approved.premium == "798.88" and approved.premium_due == "900.00"
    refused("review.not_referred", lambda: book.review(ref.id, approve=False, by="U", reason="r"))
    refused("bind.amount", lambda: book.bind(ref.id, payment_ref="W", amount="798.88"))
    policy = book.bind(ref.id, payment_ref="W", amount="900.00")
    assert (policy.premium, policy.rule_premium) == ("900.00", "798.88")
    assert policy.conditions == "Duty lines to be declared before arrival"

    other = book.quote(referred(), policy="blue-harbour", insured="Acme")
    gone = book.review(other.id, approve=False, by="Jane Smith", reason="Outside appetite")
    assert gone.state == "declined" and gone.review is not None
    assert gone.review.decision == "decline" and gone.premium_due == "798.88"
    refused("bind.declined", lambda: book.bind(other.id, payment_ref="W", amount="798.88"))
    refused("review.not_referred", lambda: book.review(other.id, approve=True, by="U", reason="r"))


def check_endorse_and_cancel(books: Books) -> None:
    book = books()
    quote = book.quote(blue(), policy="blue-harbour", insured="Acme")
    policy = book.bind(quote.id, payment_ref="W", amount="812.88")

    more = book.endorse(
        policy.id,
        {
            "invoice": {"amount": "250000.00"},
            "goods": [
                {"description": "Laptop computers", "category": "electronics", "value": "250000.00"}
            ],
        },
        by="broker",
        reason="Another 200 laptops",
    )
    # TIV = 250,000 + 7,500 + 25,750 (10% of 257,500) + 4,000 = 287,250.00
    # premium 287,250.00 x 0.0035 = 1,005.375 -> 1,005.38; additional 1,005.38 - 812.88 = 192.50
    last = more.endorsements[-1]
    assert (last.total_insured_value, last.rule_premium_before, last.rule_premium_after) == (
        "287250.00",
        "812.88",
        "1005.38",
    )
    assert (last.premium_change, last.premium_after, more.premium) == (
        "192.50",
        "1005.38",
        "1005.38",
    )
    assert more.deductible == "1436.25"  # 287,250.00 x 0.005

    less = book.endorse(policy.id, {"sum_insured": "250000.00"})
    # A declared sum insured changes the deductible (250,000.00 x 0.005 = 1,250.00), not the
    # premium, which rates the TIV: no additional or returned premium.
    assert (less.endorsements[-1].premium_change, less.premium) == ("0.00", "1005.38")
    assert (less.sum_insured, less.deductible) == ("250000.00", "1250.00")

    # Back to 200,000 of goods: returned 812.88 - 1,005.38 = -192.50
    back = book.endorse(
        policy.id,
        {
            "invoice": {"amount": "200000.00"},
            "goods": [
                {"description": "Laptop computers", "category": "electronics", "value": "200000.00"}
            ],
        },
    )
    assert (back.endorsements[-1].premium_change, back.premium) == ("-192.50", "812.88")

    refused("endorse.not_accepted", lambda: book.endorse(policy.id, {"transit_countries": ["IR"]}))
    with pytest.raises(FactsError):
        book.endorse(policy.id, {"invoice": {"amount": "lots"}})

    after_departure = books(clock=at("2026-12-10"))
    refused("cancel.departed", lambda: after_departure.cancel(policy.id))
    cancelled = book.cancel(policy.id, by="broker", reason="Sale fell through")
    # Before departure the whole premium charged is returned: 812.88 + 192.50 + 0.00 - 192.50
    assert (cancelled.state, cancelled.returned_premium) == ("cancelled", "812.88")
    assert (cancelled.endorsements[-1].kind, cancelled.endorsements[-1].premium_change) == (
        "cancel",
        "-812.88",
    )
    refused("policy.cancelled", lambda: book.cancel(policy.id))
    refused("policy.cancelled", lambda: book.endorse(policy.id, {"sum_insured": "1.00"}))
    refused("certificate.cancelled", lambda: book.certificate(policy.id))

    with AuditLog(books.audit, create=False) as log:
        kinds = [r.kind for r in log]
    assert kinds == [
        "application.quote",
        "application.bind",
        "application.endorse",
        "application.endorse",
        "application.endorse",
        "application.cancel",
    ]


def check_race(books: Books, contenders: int = 8) -> None:
    """Contenders on their own connections bind one quote at once: exactly one wins."""
    quote = books().quote(blue(), policy="blue-harbour", insured="Acme")
    racers = [books() for _ in range(contenders)]
    start = threading.Barrier(contenders)
    won: list[str] = []
    lost: list[str] = []

    def bind(book: Book, n: int) -> None:
        start.wait()
        try:
            won.append(book.bind(quote.id, payment_ref=f"W{n}", amount="812.88").id)
        except ApplicationError as exc:
            lost.append(exc.code)

    threads = [threading.Thread(target=bind, args=(b, n)) for n, b in enumerate(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1, (won, lost)
    assert lost == ["bind.already_bound"] * (contenders - 1)
    assert books().get_quote(quote.id).policy_id == won[0]


# --- SQLite ----------------------------------------------------------------------------


def test_lifecycle(books: Books) -> None:
    check_lifecycle(books)


def test_refusals(books: Books) -> None:
    check_refusals(books)


def test_expiry_by_date(books: Books) -> None:
    check_expiry(books)


def test_review_override_sits_next_to_the_rule_figure(books: Books) -> None:
    check_review(books)


def test_endorse_and_cancel_premiums(books: Books) -> None:
    check_endorse_and_cancel(books)


def test_two_racing_binds_one_wins(books: Books) -> None:
    for _ in range(3):
        check_race(books)


def check_race_across_processes(books: Books) -> None:
    """Four processes, each with its own Book on the same database, bind one quote."""
    quote = books().quote(blue(), policy="blue-harbour", insured="Acme")
    script = (
        "import sys; from engine import load_rules; from engine.applications import *\n"
        f"book = Book({books.db!r}, load_rules({str(ROOT)!r}))\n"
        "try:\n"
        f"    print('won', book.bind({quote.id!r}, payment_ref=sys.argv[1], amount='812.88').id)\n"
        "except ApplicationError as e:\n"
        "    print('lost', e.code)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, f"W{n}"], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        for n in range(4)
    ]
    outcomes = sorted(p.communicate(timeout=120)[0].split()[0] for p in procs)
    assert outcomes == ["lost", "lost", "lost", "won"]


def test_racing_binds_across_processes(books: Books) -> None:
    check_race_across_processes(books)


def test_money_is_stored_as_decimal_text_in_sqlite(books: Books) -> None:
    book = books()
    quote = book.quote(blue(), policy="blue-harbour", insured="Acme")
    with sqlite3.connect(books.db) as conn:
        row = conn.execute(
            "SELECT typeof(premium), premium, typeof(total_insured_value) FROM tiv_quotes "
            "WHERE id = ?",
            (quote.id,),
        ).fetchone()
    assert row == ("text", "812.88", "text")


def test_the_migrated_schema_is_the_tables_module(books: Books) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from engine.applications.tables import metadata

    book = books()
    with book.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": "tiv_applications_version"}
        )
        assert compare_metadata(context, metadata) == []
        version = conn.exec_driver_sql("SELECT version_num FROM tiv_applications_version")
        assert version.scalar() == "0001"


def test_a_pack_without_quote_terms_is_refused(books: Books) -> None:
    facts = blue(date="2025-03-14")  # standard has no quote_validity_days or clauses
    error = refused("quote.no_terms", lambda: books().quote(facts, policy="standard", insured="A"))
    assert "quote_validity_days" in error.message
    # blue-harbour 1.0.0, in effect before 2026-12-01, has no terms either.
    refused("quote.no_terms", lambda: books().quote(facts, policy="blue-harbour", insured="A"))


def test_bad_facts_are_facts_errors_and_nothing_is_stored(books: Books) -> None:
    book = books()
    with pytest.raises(FactsError) as caught:
        book.quote(blue(invoice={"amount": "abc"}), policy="blue-harbour", insured="A")
    assert caught.value.problems[0].location.path == "invoice.amount"
    refused("input.missing", lambda: book.quote(blue(), policy="blue-harbour", insured=" "))
    refused("input.amount", lambda: book.bind("Q-X", payment_ref="W", amount=812.88))
    assert book.policies() == []
    with sqlite3.connect(books.db) as conn:
        assert conn.execute("SELECT count(*) FROM tiv_quotes").fetchone() == (0,)


def test_an_audit_log_object_may_be_given(tmp_path: Path, shipped: RuleSet) -> None:
    log = AuditLog(tmp_path / "audit.db")  # opened on this thread; the book writes on its own
    with Book(str(tmp_path / "b.db"), shipped, audit=log, clock=lambda: TODAY) as book:
        quote = book.quote(blue(), policy="blue-harbour", insured="A")
    assert [r.id for r in log] == [quote.audit_id]
    log.close()


def test_a_refused_audit_write_rolls_the_change_back(tmp_path: Path, shipped: RuleSet) -> None:
    class Broken:
        def record(self, *args: Any) -> str:
            raise OSError("disk full")

    book = Book(str(tmp_path / "b.db"), shipped, audit=Broken(), clock=lambda: TODAY)
    refused("db.audit", lambda: book.quote(blue(), policy="blue-harbour", insured="A"))
    with sqlite3.connect(tmp_path / "b.db") as conn:
        assert conn.execute("SELECT count(*) FROM tiv_quotes").fetchone() == (0,)
    book.close()


# --- the certificate PDF ------------------------------------------------------------------


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    tool = shutil.which("pdftotext")
    if tool is None:
        message = "pdftotext is missing: apt-get install poppler-utils"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    path = tmp_path / "certificate.pdf"
    path.write_bytes(pdf)
    done = subprocess.run(
        [tool, "-layout", str(path), "-"], capture_output=True, text=True, check=True
    )
    return done.stdout


def check_certificate_pdf(books: Books, tmp_path: Path) -> None:
    book = books()
    quote = book.quote(
        blue(sum_insured="250000.00"),
        policy="blue-harbour",
        insured="Acme Trading Ltd",
        conveyance="MV Nordic Star",
    )
    # Declared 250,000.00: deductible 250,000.00 x 0.005 = 1,250.00; the premium rates the TIV.
    policy = book.bind(quote.id, payment_ref="W", amount=quote.premium_due)
    pdf = book.certificate_pdf(policy.id)
    assert pdf.startswith(b"%PDF-")
    text = pdf_text(pdf, tmp_path)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    expected = [
        f"Certificate number {policy.certificate_number}",
        "Insured Acme Trading Ltd",
        "Effective date 2026-11-29",
        "- Laptop computers, quantity 800, 2100 kg, 120 x 100 x 150 cm, value 200000.00",
        "Conveyance ocean: MV Nordic Star",
        "From CN (CNSHA)",
        "To DE (DEHAM)",
        "Departure 2026-12-10",
        "Sum insured USD 250000.00",
        "Total insured value USD 232250.00",
        "Premium USD 812.88",
        "Deductible USD 1250.00",
        "- Institute Cargo Clauses (A) 1/1/09",
        "- Institute War Clauses (Cargo) 1/1/09",
        "- Institute Strikes Clauses (Cargo) 1/1/09",
        policy.record_sha256(),
    ]
    for line in expected:
        assert line in lines, (line, lines)
    # The printed hash is the one anyone recomputes from the JSON certificate's record.
    record = book.certificate(policy.id).record
    assert hashlib.sha256(canonical_json(record).encode()).hexdigest() in lines


def test_certificate_pdf_shows_the_figures(books: Books, tmp_path: Path) -> None:
    check_certificate_pdf(books, tmp_path)


# --- CLI ---------------------------------------------------------------------------------


def tiv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TIV_AUDIT": "", **(env or {})},
    )


def one_line_error(proc: subprocess.CompletedProcess[str], status: int, *fragments: str) -> None:
    assert proc.returncode == status, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr


def test_cli_quote_bind_certificate_list(tmp_path: Path) -> None:
    # The CLI uses the real clock: a departure far enough ahead that nothing has expired.
    today = datetime.datetime.now(datetime.UTC).date()
    departure = max(today + datetime.timedelta(days=7), datetime.date(2026, 12, 10))
    facts = tmp_path / "shipment.json"
    facts.write_text(json.dumps(blue(date=departure.isoformat())))
    book = ["--db", str(tmp_path / "book.db"), "--audit", str(tmp_path / "audit.db")]

    made = tiv(
        "quote",
        str(facts),
        "--policy",
        "blue-harbour",
        "--insured",
        "Acme",
        *book,
        "--format",
        "json",
    )
    assert made.returncode == 0, made.stderr
    quote = json.loads(made.stdout)
    assert (quote["state"], quote["premium"], quote["total_insured_value"]) == (
        "accepted",
        "812.88",
        "232250.00",
    )
    valid = today + datetime.timedelta(days=30)
    assert quote["valid_until"] == valid.isoformat()

    wrong = tiv("bind", quote["id"], "--payment-ref", "W1", "--amount", "800", *book)
    one_line_error(wrong, 5, "bind.amount", "812.88")
    bound = tiv("bind", quote["id"], "--payment-ref", "W1", "--amount", "812.88", *book)
    assert bound.returncode == 0, bound.stderr
    assert "Policy P-" in bound.stdout and "premium        812.88 USD" in bound.stdout
    policy_id = bound.stdout.split()[1].rstrip(":")
    again = tiv("bind", quote["id"], "--payment-ref", "W2", "--amount", "812.88", *book)
    one_line_error(again, 5, "bind.already_bound")

    pdf = tmp_path / "cert.pdf"
    made_pdf = tiv("certificate", policy_id, "-o", str(pdf), *book)
    assert made_pdf.returncode == 0, made_pdf.stderr
    assert "Premium USD 812.88" in " ".join(pdf_text(pdf.read_bytes(), tmp_path).split())
    cert = json.loads(tiv("certificate", policy_id, "--format", "json", *book).stdout)
    assert (
        cert["record_sha256"] == hashlib.sha256(canonical_json(cert["record"]).encode()).hexdigest()
    )

    listed = tiv("policies", "list", *book)
    assert policy_id in listed.stdout and "812.88" in listed.stdout
    endorsed = tiv(
        "policies",
        "endorse",
        policy_id,
        "--set",
        "sum_insured=300000.00",
        *book,
        "--format",
        "json",
    )
    assert endorsed.returncode == 0, endorsed.stderr
    # 300,000.00 x 0.005 = 1,500.00 deductible; the premium does not move.
    assert json.loads(endorsed.stdout)["deductible"] == "1500.00"
    gone = tiv("policies", "cancel", policy_id, "--reason", "sold", *book)
    assert gone.returncode == 0 and "cancelled" in gone.stdout
    one_line_error(tiv("certificate", policy_id, *book), 5, "certificate.cancelled")
    one_line_error(tiv("bind", "Q-NOPE", "--payment-ref", "W", "--amount", "1", *book), 2)


def test_cli_review_flow(tmp_path: Path) -> None:
    today = datetime.datetime.now(datetime.UTC).date()
    departure = max(today + datetime.timedelta(days=7), datetime.date(2026, 12, 10))
    facts = referred()
    facts["date"] = departure.isoformat()
    path = tmp_path / "shipment.json"
    path.write_text(json.dumps(facts))
    book = ["--db", str(tmp_path / "book.db")]
    quote = json.loads(
        tiv(
            "quote",
            str(path),
            "--policy",
            "blue-harbour",
            "--insured",
            "Acme",
            *book,
            "--format",
            "json",
        ).stdout
    )
    assert quote["state"] == "referred"
    early = tiv("bind", quote["id"], "--payment-ref", "W", "--amount", "798.88", *book)
    one_line_error(early, 5, "bind.referred", "tiv review")
    review = tiv(
        "review",
        quote["id"],
        "--approve",
        "--by",
        "Jane Smith",
        "--reason",
        "ok",
        "--premium",
        "850.00",
        *book,
    )
    assert review.returncode == 0, review.stderr
    assert "850.00 USD (rules: 798.88)" in review.stdout
    usage = tiv("review", quote["id"], "--by", "J", "--reason", "r", *book)
    assert usage.returncode == 2 and "--approve" in usage.stderr  # argparse: one is required
    assert (
        tiv("bind", quote["id"], "--payment-ref", "W", "--amount", "850.00", *book).returncode == 0
    )


def test_cli_quote_help_names_the_exit_statuses() -> None:
    shown = tiv("quote", "--help")
    assert shown.returncode == 0 and "5 refused" in shown.stdout


@settings(max_examples=60, deadline=None)
@given(
    amount=st.decimals(
        min_value=Decimal("-1e15"), max_value=Decimal("1e15"), places=None, allow_nan=False
    ).filter(lambda d: d.is_finite())
)
def test_money_columns_give_back_the_decimal_as_written(amount: Decimal) -> None:
    from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select

    from engine.applications.tables import Money

    table = Table("t", MetaData(), Column("k", Integer, primary_key=True), Column("m", Money))
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(table).values(k=1, m=amount))
        back = conn.execute(select(table.c.m)).scalar_one()
    assert (back, str(back)) == (amount, str(amount))  # the value and its written scale


def test_decimal_amounts_survive_a_round_trip(books: Books) -> None:
    book = books()
    quote = book.quote(referred(), policy="blue-harbour", insured="Acme")
    approved = book.review(quote.id, approve=True, by="U", reason="r", premium=Decimal("0.10"))
    assert approved.premium_due == "0.10"
    assert book.bind(quote.id, payment_ref="W", amount="0.1").premium == "0.10"
