"""The application lifecycle on a real PostgreSQL: the same checks as on SQLite.

A throwaway cluster (initdb + pg_ctl from Debian's `postgresql` package, in a temporary
folder, on a free loopback port) is started for this module and stopped after it; each
test gets a database of its own. Without the package these tests skip, naming it; with
CI=true they fail instead, so CI cannot pass without having run them.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from engine import RuleSet
from engine.applications import Book
from tests import test_applications as cases
from tests.postgres import PACKAGE_HINT, Cluster, find_binaries

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Any:
    binaries = find_binaries()
    if binaries is None:
        if os.environ.get("CI") == "true":
            pytest.fail(PACKAGE_HINT)
        pytest.skip(PACKAGE_HINT)
    running = Cluster(binaries).start()
    yield running
    running.stop()


@pytest.fixture
def books(cluster: Cluster, tmp_path: Path, shipped: RuleSet) -> Any:
    url = cluster.create_database(f"book_{uuid.uuid4().hex[:12]}")
    made = cases.Books(url, tmp_path / "audit.db", shipped)
    yield made
    made.close()


def test_lifecycle(books: cases.Books) -> None:
    cases.check_lifecycle(books)


def test_refusals(books: cases.Books) -> None:
    cases.check_refusals(books)


def test_expiry_by_date(books: cases.Books) -> None:
    cases.check_expiry(books)


def test_review_override_sits_next_to_the_rule_figure(books: cases.Books) -> None:
    cases.check_review(books)


def test_endorse_and_cancel_premiums(books: cases.Books) -> None:
    cases.check_endorse_and_cancel(books)


def test_two_racing_binds_one_wins(books: cases.Books) -> None:
    for _ in range(3):
        cases.check_race(books)


def test_racing_binds_across_processes(books: cases.Books) -> None:
    cases.check_race_across_processes(books)


def test_certificate_pdf_shows_the_figures(books: cases.Books, tmp_path: Path) -> None:
    cases.check_certificate_pdf(books, tmp_path)


def test_money_is_numeric_in_postgresql(books: cases.Books) -> None:
    import psycopg

    quote = books().quote(cases.blue(), policy="blue-harbour", insured="Acme")
    with psycopg.connect(books.db) as conn:
        row = conn.execute(
            "SELECT pg_typeof(premium)::text, premium::text FROM tiv_quotes WHERE id = %s",
            (quote.id,),
        ).fetchone()
    assert row == ("numeric", "812.88")  # the scale as written, not 812.880000


def test_the_migrated_schema_is_the_tables_module(books: cases.Books) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from engine.applications.tables import metadata

    book: Book = books()
    with book.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": "tiv_applications_version"}
        )
        assert compare_metadata(context, metadata) == []
