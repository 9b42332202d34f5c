"""Opening the book's database: the URL, the engine, the migrations, one transaction.

`--db` takes a file path (SQLite, the default: embedded, nothing to start) or a URL:
`sqlite:///book.db`, `postgresql://user@host:5432/db` (driven by psycopg 3). Opening
runs the Alembic migrations in `migrations/` up to head, so a new file or an empty
PostgreSQL database becomes a book, and an older book is upgraded in place.

Transactions: `transaction(engine)` is one database transaction. On SQLite it starts
with BEGIN IMMEDIATE, which takes the write lock at once: two writers (threads or
processes) take turns instead of both reading a quote as bindable and one failing at
commit. On PostgreSQL the workflow locks the rows it changes (SELECT ... FOR UPDATE),
so the second of two racing binds waits, then sees the quote already bound.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from engine.applications.errors import ApplicationError

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_S = 60
# Any fixed 64-bit number: the PostgreSQL advisory lock that serialises migrations.
_MIGRATION_LOCK = 0x7469765F61707073
_READ_ONLY = "tiv_read_only"


def database_url(given: str | os.PathLike[str]) -> str:
    """A file path -> a SQLite URL; postgresql:// -> the psycopg 3 driver; else as given."""
    text_ = os.fspath(given)
    if "://" not in text_:
        return f"sqlite:///{Path(text_).resolve()}"
    if text_.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + text_.partition("://")[2]
    return text_


def open_engine(given: str | os.PathLike[str]) -> Engine:
    """An engine on the book's database, migrated to the current schema."""
    url = database_url(given)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ApplicationError("db.url", f"{given}: not a database path or URL") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ApplicationError(
            "db.url", f"{given}: the book runs on SQLite or PostgreSQL (postgresql://...)"
        )
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite(url)
        else:
            engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        migrate(engine)
    except SQLAlchemyError as exc:
        raise ApplicationError(
            "db.open", f"cannot open the book {_safe(parsed)}: {_first(exc)}"
        ) from None
    return engine


def _sqlite(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:" and not Path(database).parent.is_dir():
        raise ApplicationError("db.open", f"{database}: its folder does not exist")
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})

    # pysqlite's own transaction handling begins lazily and DEFERRED; the book needs
    # IMMEDIATE (see the module doc), so SQLAlchemy is told to leave BEGIN to us.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # A reader needs no write lock: under WAL it reads a snapshot beside the writer.
        reading = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

    return engine


def migrate(engine: Engine) -> None:
    """Run the migrations up to head, one process at a time."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@contextlib.contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction: committed when the block ends, rolled back if it raises."""
    try:
        with engine.begin() as connection:
            yield connection
    except SQLAlchemyError as exc:
        raise ApplicationError("db.error", f"the book's database failed: {_first(exc)}") from None


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction: one consistent snapshot, taking no write lock."""
    try:
        with engine.connect() as connection:
            yield connection.execution_options(**{_READ_ONLY: True})
    except SQLAlchemyError as exc:
        raise ApplicationError("db.error", f"the book's database failed: {_first(exc)}") from None


def _first(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _safe(url: Any) -> str:
    return str(url.render_as_string(hide_password=True))
