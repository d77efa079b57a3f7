"""`tinyfleet db`: the service database's schema (Alembic migrations packaged with the service)."""

from __future__ import annotations

from pathlib import Path

import typer

from service.cli import _context
from service.cli._output import JsonOption, console, emit_json, fail

app = typer.Typer(help="The service database: create or migrate its schema.", no_args_is_help=True)

DbOption = typer.Option(
    None,
    "--db",
    help="Database URL: sqlite:///PATH or postgresql://USER@HOST/DB "
    "(default: the SQLite file tinyfleet.db in the data directory).",
)


@app.command("upgrade")
def upgrade(
    db: str | None = DbOption,
    data: Path | None = _context.DataOption,
    json_out: bool = JsonOption,
) -> None:
    """Apply every pending migration, creating the schema on an empty database."""
    from service.storage import StorageError, current_revision, sqlite_url
    from service.storage import upgrade as run_upgrade

    url = db if db is not None else sqlite_url(_context.settings(data).data_dir)
    try:
        before = current_revision(url)
        after = run_upgrade(url)
    except ValueError as exc:
        fail(str(exc), code=2)
    except StorageError as exc:
        fail(f"cannot migrate the database: {exc}", hint="check --db and that the server runs")
    shown = _redacted(url)
    if json_out:
        emit_json({"database": shown, "from": before, "to": after})
    elif before == after:
        console.print(f"{shown} is up to date at revision {after}")
    else:
        console.print(f"{shown} migrated from {before or 'empty'} to revision {after}")


def _redacted(url: str) -> str:
    """The URL without its password, for output."""
    import sqlalchemy as sa

    return sa.make_url(url.replace("postgres://", "postgresql://", 1)).render_as_string(
        hide_password=True
    )
