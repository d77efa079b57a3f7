"""Alembic migration scripts for the service database (run them with `tinyfleet db upgrade`)."""
