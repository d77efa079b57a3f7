"""Alembic environment: runs on the connection that `service.storage.upgrade` passes in."""

from __future__ import annotations

from alembic import context

from service.storage._schema import METADATA

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations through `tinyfleet db upgrade` (service.storage.upgrade)")

context.configure(
    connection=connection,
    target_metadata=METADATA,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
