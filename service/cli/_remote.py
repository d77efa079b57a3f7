"""Which server and token a remote command talks to, and the exit codes of its failures.

Resolution, first match wins, each of `server` and `token` on its own:

    1. the `--server` / `--token` options;
    2. the environment: TINYFLEET_SERVER, TINYFLEET_TOKEN;
    3. a profile of the config file ($TINYFLEET_CONFIG, else $XDG_CONFIG_HOME or ~/.config, then
       `tinyfleet/config.toml`): `--config-profile`, else TINYFLEET_PROFILE, else the file's
       `default_profile`, else a profile named `default` if there is one;
    4. the defaults: http://127.0.0.1:8080 and the token in DATA/admin-token, if readable
       (DATA is the service's data directory: TINYFLEET_DATA_DIR, default .tinyfleet).

The config file:

    default_profile = "lab"
    [profiles.lab]
    server = "http://10.0.0.5:8080"
    token = "tf_..."              # or: token_file = "~/secrets/lab-token"
    timeout = 10                  # seconds, optional

Exit codes: 0 ok, 1 the server refused, 2 usage or configuration error, 3 the server cannot be
reached, 4 unauthorized or forbidden.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.markup import escape

from service.cli._client import ApiClient, AuthError, BadResponse, ProblemError, Unreachable
from service.cli._output import err_console

DEFAULT_SERVER = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        help=f"API server URL (env TINYFLEET_SERVER, config profile, or {DEFAULT_SERVER})",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="API token (env TINYFLEET_TOKEN, config profile, or DATA/admin-token)",
        show_default=False,
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--config-profile",
        help="Profile of ~/.config/tinyfleet/config.toml (env TINYFLEET_PROFILE)",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class ConfigError(Exception):
    """The remote configuration cannot be used as given (a usage error, exit 2)."""


@dataclass(frozen=True)
class Remote:
    """Where to send requests, with what token; `source` says where each came from."""

    server: str
    token: str | None
    timeout: float
    source: str

    def client(self) -> ApiClient:
        try:
            return ApiClient(self.server, self.token, timeout=self.timeout)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


def config_path(env: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file and whether it was named explicitly (then it must exist)."""
    if explicit := env.get("TINYFLEET_CONFIG"):
        return Path(explicit).expanduser(), True
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "tinyfleet" / "config.toml", False


def _load_profile(env: Mapping[str, str], name: str | None) -> tuple[dict[str, Any], str]:
    path, explicit = config_path(env)
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file {path} (TINYFLEET_CONFIG) does not exist")
        if name:
            raise ConfigError(f"profile {name!r} asked for, but there is no config file {path}")
        return {}, ""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    profiles = document.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: [profiles] must be a table of profiles")
    wanted = name or document.get("default_profile")
    if wanted is None:
        wanted = "default" if "default" in profiles else None
    if wanted is None:
        return {}, ""
    profile = profiles.get(wanted)
    if not isinstance(profile, dict):
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"{path}: no profile {wanted!r} (profiles: {known})")
    return profile, f"profile {wanted!r} of {path}"


def _read_token(path: Path) -> str | None:
    try:
        text = path.expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def data_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("TINYFLEET_DATA_DIR") or ".tinyfleet").expanduser()


def resolve(
    server: str | None,
    token: str | None,
    profile: str | None,
    env: Mapping[str, str] | None = None,
) -> Remote:
    """Apply the resolution order of the module docstring."""
    env = os.environ if env is None else env
    settings, where = _load_profile(env, profile or env.get("TINYFLEET_PROFILE") or None)
    sources: list[str] = []

    if server:
        sources.append("server from --server")
    elif server := env.get("TINYFLEET_SERVER"):
        sources.append("server from TINYFLEET_SERVER")
    elif server := settings.get("server"):
        sources.append(f"server from {where}")
    else:
        server = DEFAULT_SERVER
        sources.append("default server")

    if token:
        sources.append("token from --token")
    elif token := env.get("TINYFLEET_TOKEN"):
        sources.append("token from TINYFLEET_TOKEN")
    elif token := settings.get("token"):
        sources.append(f"token from {where}")
    elif file := settings.get("token_file"):
        token = _read_token(Path(str(file)))
        if token is None:
            raise ConfigError(f"{where}: token_file {file} is not readable")
        sources.append(f"token from {file}")
    else:
        default_file = data_dir(env) / "admin-token"
        token = _read_token(default_file)
        sources.append(f"token from {default_file}" if token else "no token")

    try:
        timeout = float(settings.get("timeout", DEFAULT_TIMEOUT))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: timeout must be a number of seconds") from exc
    return Remote(str(server), token, timeout, "; ".join(sources))


def abort(message: str, code: int, *, details: list[str] | None = None, hint: str = "") -> NoReturn:
    """Print an error (markup-safe: server text may hold brackets), its details, and exit."""
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    for line in details or []:
        if line not in message:  # a one-error problem often repeats it as its detail
            err_console.print(f"  {escape(line)}")
    if hint:
        err_console.print(f"[dim]hint: {escape(hint)}[/]")
    raise typer.Exit(code)


@contextmanager
def connect(server: str | None, token: str | None, profile: str | None) -> Iterator[ApiClient]:
    """A client for the resolved remote; every failure becomes a message and its exit code."""
    try:
        remote = resolve(server, token, profile)
        client = remote.client()
    except ConfigError as exc:
        abort(str(exc), EXIT_USAGE)
    try:
        with client:
            yield client
    except Unreachable as exc:
        abort(str(exc), EXIT_UNREACHABLE, hint="is `tinyfleet serve` running? see --server")
    except AuthError as exc:
        hint = (
            "the token's role is too low for this command"
            if exc.status == 403
            else f"give a valid token ({remote.source})"
        )
        abort(exc.message(), EXIT_AUTH, details=exc.details(), hint=hint)
    except ProblemError as exc:
        abort(exc.message(), EXIT_REFUSED, details=exc.details())
    except BadResponse as exc:
        abort(str(exc), EXIT_REFUSED)
