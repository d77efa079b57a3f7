"""Schema migrations with Alembic, configured in code so they run from any directory.

The scripts live in `service/storage/migrations/` inside the package, and run on a connection
from our own engine (so SQLite gets the same pragmas as at run time).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy.exc as sa_exc
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.storage._sql import create_engine
from service.storage._sql_base import translate

__all__ = ["current_revision", "head_revision", "upgrade"]

SCRIPTS = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the migrations directory has no revisions"
    return head


def upgrade(url: str, revision: str = "head") -> str:
    """Migrate the database at `url` up to `revision`; returns the revision it is at.

    Raises:
        ValueError: unsupported URL. UnavailableError / StorageError: the database failed.
    """
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            config = _config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
            return MigrationContext.configure(conn).get_current_revision() or ""
    except sa_exc.SQLAlchemyError as exc:
        raise translate(exc) from exc
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except sa_exc.SQLAlchemyError as exc:
        raise translate(exc) from exc
    finally:
        engine.dispose()
