"""Output helpers for CLI commands: rich tables for people, JSON for scripts, one error path.

Whatever the service or a device sent is data, not terminal input: every string the consoles
render shows control and format characters (Unicode category C: ESC, BEL, bidi overrides, ...)
as escapes such as `\\x1b` or `\\u202e`, so a name cannot move the cursor, retitle the terminal
or reorder what is shown. Table cells escape newlines too (one record, one row).
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

__all__ = [
    "JsonOption",
    "SafeConsole",
    "console",
    "emit_json",
    "emit_table",
    "err_console",
    "fail",
    "printable",
]


def printable(text: str, *, keep: str = "") -> str:
    """`text` with each Unicode category C character (less those in `keep`) escaped."""
    if text.isprintable() and text.isascii():
        return text
    out = []
    for char in text:
        if char in keep or not unicodedata.category(char).startswith("C"):
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


class SafeConsole(Console):
    """A rich console that shows control characters escaped (newlines and tabs kept: the CLI's
    own messages use them): in strings before markup is parsed, and in every text segment of
    what is written (so `Text` objects built elsewhere are covered too). Rich's own control
    segments (cursor moves of a progress display) and styles pass untouched."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text, keep="\n\t"), **kwargs)

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            s if s.control else Segment(printable(s.text, keep="\n\t"), s.style) for s in buffer
        )


console = SafeConsole()
err_console = SafeConsole(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def fail(message: str, *, code: int = 1, hint: str | None = None) -> NoReturn:
    """Print an error in one consistent shape and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}")
    if hint:
        err_console.print(f"[dim]hint: {hint}[/]")
    raise typer.Exit(code)


def emit_json(data: Any) -> None:
    # ensure_ascii (the default) writes every control and non-ASCII character as \uXXXX.
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def emit_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=printable(title))
    for column in columns:
        table.add_column(printable(column))
    for row in rows:
        # Text, not markup: a cell's "[...]" is shown as it is, never interpreted.
        table.add_row(*(Text(printable(str(cell))) for cell in row))
    console.print(table)
