"""What every SQL repository shares: error translation, dialect-specific inserts, limits, and
bulk writes on the driver (binary COPY on PostgreSQL, executemany on SQLite)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from service.storage._errors import ConflictError, StorageError, UnavailableError
from service.storage._schema import UtcDateTime

__all__ = [
    "PG_COPY_TYPES",
    "bulk_insert",
    "chunks",
    "copy_rows",
    "executemany",
    "translate_errors",
    "translated",
    "upsert_insert",
]

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)
T = TypeVar("T")

# Statement parameters per chunk: well under SQLite's 32766 variables and PostgreSQL's 65535.
CHUNK = 1000
# PostgreSQL types of the column types that binary COPY writes (it needs them spelled out).
PG_COPY_TYPES: dict[type[Any], str] = {
    sa.String: "text",
    sa.BigInteger: "int8",
    sa.Integer: "int4",
    sa.Float: "float8",
    sa.Boolean: "bool",
    sa.JSON: "jsonb",
    UtcDateTime: "timestamptz",
}


def translate(exc: sa_exc.SQLAlchemyError) -> StorageError:
    """Map a SQLAlchemy or driver error onto the storage family (see `_errors.py`)."""
    if isinstance(exc, sa_exc.IntegrityError):
        return ConflictError(f"the write conflicts with stored data: {exc.orig}")
    if isinstance(
        exc,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.DisconnectionError
        | sa_exc.TimeoutError,
    ):
        return UnavailableError(f"database unavailable: {getattr(exc, 'orig', None) or exc}")
    return StorageError(f"database error: {exc}")


def translated(func: Callable[P, R]) -> Callable[P, R]:
    """Wrap one callable so that SQLAlchemy errors leave it as StorageErrors."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except sa_exc.SQLAlchemyError as exc:
            raise translate(exc) from exc

    return wrapper


def translate_errors(cls: C) -> C:
    """Class decorator: translate errors in every public method of a repository."""
    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_"):
            setattr(cls, name, translated(value))
    return cls


def upsert_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT that supports ON CONFLICT on this connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise StorageError(f"unsupported database dialect {conn.dialect.name!r}")


def chunks(items: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def unique(items: Sequence[T]) -> list[T]:
    return list(dict.fromkeys(items))


@contextmanager
def _driver(conn: sa.Connection, statement: str) -> Iterator[Any]:
    """The driver connection under `conn`; its errors leave as SQLAlchemy's (DBAPIError and
    subclasses), as if the statement had gone through SQLAlchemy, so that `translate` maps them."""
    dbapi: Any = conn.dialect.loaded_dbapi
    try:
        yield conn.connection.driver_connection
    except dbapi.Error as exc:
        raise sa_exc.DBAPIError.instance(statement, None, exc, dbapi.Error) from exc


def copy_rows(
    conn: sa.Connection,
    table: str,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """PostgreSQL: binary COPY of `rows` (values in `columns` order, PostgreSQL `types`) into
    `table`. No text formatting or escaping per value (about 4x faster than text COPY)."""
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with (
        _driver(conn, statement) as driver,
        driver.cursor() as cursor,
        cursor.copy(statement) as copy,
    ):
        copy.set_types(list(types))
        write = copy.write_row
        for row in rows:
            write(row)


def executemany(conn: sa.Connection, statement: str, rows: Sequence[Sequence[Any]]) -> None:
    """One driver `executemany` of a SQL string with positional parameters: no per-row work by
    SQLAlchemy (parameter dicts, type processors), which costs more than SQLite's own."""
    with _driver(conn, statement) as driver:
        driver.executemany(statement, rows)


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """Many rows in the table's column order: COPY on PostgreSQL, executemany on SQLite.

    Values go to the driver as they are (no SQLAlchemy type processing), so they must already
    be what the driver takes for each column.
    """
    if not rows:
        return
    names = [c.name for c in table.columns]
    if conn.dialect.name == "postgresql":
        types = [PG_COPY_TYPES[type(c.type)] for c in table.columns]
        copy_rows(conn, table.name, names, types, rows)
    else:
        marks = ", ".join("?" * len(names))
        executemany(conn, f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})", rows)
