"""Alembic environment for the applications book: run only programmatically.

`engine.applications.store.migrate` passes an open connection in `config.attributes`;
there is no alembic.ini and no URL here, so the migrations always run against the
database the book was opened on, inside the transaction the store began.
"""

from __future__ import annotations

from alembic import context

from engine.applications.tables import metadata

VERSION_TABLE = "tiv_applications_version"

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
