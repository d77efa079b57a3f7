"""The SQL storage adapter: engines for SQLite (default) and PostgreSQL, units of work, locks.

SQLite connections run in WAL mode (readers do not block the writer), with foreign keys on, a
busy timeout instead of an immediate "database is locked", and synchronous=FULL so that a
committed unit survives a power cut as well as a SIGKILL. pysqlite's own implicit transaction
handling is switched off and `BEGIN IMMEDIATE` (write units) or `BEGIN` (read units) is issued
here, so a writer takes SQLite's write lock up front instead of failing half-way when it
upgrades a read lock.

Units of work are short database transactions; nothing here sleeps or calls the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from service.storage._sql_base import translate, translated
from service.storage._sql_jobs import SqlDeviceJobs
from service.storage._sql_ops import SqlAuditLog, SqlEngineLeases, SqlOutbox, SqlTokens
from service.storage._sql_registry import SqlDeviceGroups, SqlDevices, SqlReleases
from service.storage._sql_rollouts import SqlRollouts

__all__ = ["PgAdvisoryLock", "SqlStorage", "create_engine", "normalize_url", "sqlite_url"]

BUSY_TIMEOUT_MS = 10_000
_READONLY = "tinyfleet_readonly"


def sqlite_url(data_dir: Path) -> str:
    """The default database: `tinyfleet.db` in the data directory."""
    return f"sqlite:///{(data_dir / 'tinyfleet.db').resolve()}"


def normalize_url(url: str) -> str:
    """Accept `postgresql://` and `postgres://` for PostgreSQL through psycopg 3.

    Raises:
        ValueError: not a SQLite or PostgreSQL URL.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    if url.startswith(("postgresql+psycopg://", "sqlite://")):
        return url
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see module docstring)
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "foreign_keys=ON",
        f"busy_timeout={BUSY_TIMEOUT_MS}",
        "synchronous=FULL",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _on_sqlite_begin(conn: sa.Connection) -> None:
    readonly = conn.get_execution_options().get(_READONLY, False)
    conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def create_engine(url: str) -> sa.Engine:
    """An engine for a SQLite or PostgreSQL URL, configured as the module docstring says.

    Raises:
        ValueError: the URL is not one we support.
    """
    url = normalize_url(url)
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        sa.event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class SqlUnit:
    """One unit of work on one connection; see `service.storage.UnitOfWork`."""

    def __init__(self, conn: sa.Connection) -> None:
        self.devices = SqlDevices(conn)
        self.groups = SqlDeviceGroups(conn, self.devices)
        self.releases = SqlReleases(conn)
        self.rollouts = SqlRollouts(conn)
        self.jobs = SqlDeviceJobs(conn)
        self.outbox = SqlOutbox(conn)
        self.audit = SqlAuditLog(conn)
        self.tokens = SqlTokens(conn)
        self.leases = SqlEngineLeases(conn)


class SqlStorage:
    """Storage in a SQL database. Create the schema first with `upgrade(url)`."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = create_engine(self.url)

    @contextmanager
    def begin(self, *, readonly: bool = False) -> Iterator[SqlUnit]:
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{_READONLY: readonly})
                with conn.begin():
                    yield SqlUnit(conn)
        except sa_exc.SQLAlchemyError as exc:
            # Errors from connecting, BEGIN and COMMIT; repositories translate their own.
            raise translate(exc) from exc

    def advisory_lock(self, key: int) -> PgAdvisoryLock:
        """A PostgreSQL session advisory lock (see `PgAdvisoryLock`).

        Raises:
            ValueError: the database is not PostgreSQL.
        """
        if self.engine.dialect.name != "postgresql":
            raise ValueError("advisory locks need PostgreSQL; use the engine lease on SQLite")
        return PgAdvisoryLock(self.engine, key)

    def close(self) -> None:
        self.engine.dispose()


class PgAdvisoryLock:
    """A leader lock held by one dedicated PostgreSQL session.

    PostgreSQL releases it by itself when that session ends, so a killed leader frees it as
    soon as the server notices the dead connection; `check` tells a leader it has lost it.
    """

    def __init__(self, engine: sa.Engine, key: int) -> None:
        self._engine = engine
        self._key = key
        self._conn: sa.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    @translated
    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; never waits."""
        if self._conn is not None:
            return True
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(self._key))).scalar_one()
        except BaseException:
            conn.close()
            raise
        if got:
            self._conn = conn
        else:
            conn.close()
        return bool(got)

    @translated
    def check(self) -> None:
        """Raises UnavailableError if the session holding the lock has died (lock lost)."""
        if self._conn is None:
            raise RuntimeError("the advisory lock is not held")
        try:
            self._conn.execute(sa.select(1))
        except sa_exc.SQLAlchemyError:
            self._conn.invalidate()
            self._conn = None
            raise

    @translated
    def release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(self._key)))
        finally:
            conn.close()
