"""What every signing command needs: settings, the passphrase source, the trust service, errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from pydantic import ValidationError

from service.cli._output import fail
from service.config import Mode, Settings
from service.trust import TrustService
from signing import SigningError
from signing.keys import DEV_PASSPHRASE

DataOption = typer.Option(
    None, "--data", help="Data directory [env TINYFLEET_DATA_DIR; default .tinyfleet]"
)


def settings(data: Path | None, mode: Mode | None = None) -> Settings:
    overrides: dict[str, object] = {}
    if data is not None:
        overrides["data_dir"] = data
    if mode is not None:
        overrides["mode"] = mode
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        fail(f"invalid configuration: {exc.errors()[0]['msg']}", code=2)


def passphrase_source(cfg: Settings) -> Callable[[], str]:
    """Environment first; the dev default in dev mode; otherwise one prompt on a terminal."""
    cache: list[str] = []

    def get() -> str:
        if cache:
            return cache[0]
        if cfg.key_passphrase is not None:
            value = cfg.key_passphrase.get_secret_value()
        elif cfg.dev_mode:
            value = DEV_PASSPHRASE
        elif sys.stdin.isatty() and not os.environ.get("CI"):
            value = typer.prompt("Keystore passphrase", hide_input=True)
        else:
            value = ""
        cache.append(value)
        return value

    return get


def trust(data: Path | None, mode: Mode | None = None) -> TrustService:
    cfg = settings(data, mode)
    return TrustService(cfg, passphrase_source(cfg))


@contextmanager
def errors() -> Iterator[None]:
    """Every failure of ours becomes one clear line and a non-zero exit code."""
    try:
        yield
    except SigningError as exc:
        fail(f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
