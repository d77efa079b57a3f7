"""What every SQL repository shares: error translation, dialect-specific inserts, limits."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from service.storage._errors import ConflictError, StorageError, UnavailableError

__all__ = ["chunks", "translate_errors", "translated", "upsert_insert"]

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)
T = TypeVar("T")

# Statement parameters per chunk: well under SQLite's 32766 variables and PostgreSQL's 65535.
CHUNK = 1000


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
