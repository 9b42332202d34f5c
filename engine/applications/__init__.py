"""Insurance applications: quote, underwriter review, bind, cancel, endorse, certificate.

A `Book` keeps quotes and policies in a database (SQLite by default, PostgreSQL by URL),
prices with the engine's public API and records every change in the audit chain:

    from pathlib import Path

    from engine import load_rules
    from engine.applications import Book

    with Book("book.db", load_rules("."), audit="audit.db") as book:
        quote = book.quote(Path("shipment.yaml"), policy="blue-harbour", insured="Acme Ltd")
        policy = book.bind(quote.id, payment_ref="PAY-1", amount=quote.premium_due)
        pdf = book.certificate_pdf(policy.id)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.applications.errors import ApplicationError
from engine.applications.models import (
    Certificate,
    Endorsement,
    Policy,
    Quote,
    Reproduction,
    Review,
)
from engine.compliance.audit import canonical_json

if TYPE_CHECKING:
    from engine.applications.workflow import Book


def __getattr__(name: str) -> Any:
    # Book needs SQLAlchemy (the `applications` extra); importing the package, as the
    # HTTP service does for its router, must not.
    if name == "Book":
        from engine.applications.workflow import Book

        return Book
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ApplicationError",
    "Book",
    "Certificate",
    "Endorsement",
    "Policy",
    "Quote",
    "Reproduction",
    "Review",
    "canonical_json",
]
