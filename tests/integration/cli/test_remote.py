"""Where the CLI sends requests (options, environment, config profiles, defaults) and the exit
codes of failures that are not the server's answer: unreachable server, bad configuration."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.cli._client import ApiClient, AuthError, BadResponse, Refused, api_base
from service.cli._remote import DEFAULT_SERVER, ConfigError, resolve
from tests.integration.cli.conftest import Stack

CONFIG = """
default_profile = "lab"

[profiles.lab]
server = "http://lab.example:8080"
token = "lab-secret"
timeout = 5

[profiles.ci]
server = "http://ci.example:8080/api/v1/"
token_file = "{token_file}"
"""


def _config(tmp_path: Path) -> Path:
    token_file = tmp_path / "ci-token"
    token_file.write_text("ci-secret\n")
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(token_file=token_file))
    return path


def test_defaults_use_the_local_admin_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "admin-token").write_text("bootstrap-secret\n")
    env = {"TINYFLEET_DATA_DIR": str(data), "XDG_CONFIG_HOME": str(tmp_path / "none")}
    remote = resolve(None, None, None, env)
    assert (remote.server, remote.token) == (DEFAULT_SERVER, "bootstrap-secret")
    no_file = resolve(None, None, None, {**env, "TINYFLEET_DATA_DIR": str(tmp_path / "empty")})
    assert no_file.token is None and "no token" in no_file.source


def test_precedence_options_then_environment_then_profile(tmp_path: Path) -> None:
    env = {"TINYFLEET_CONFIG": str(_config(tmp_path))}
    from_profile = resolve(None, None, None, env)
    assert (from_profile.server, from_profile.token) == ("http://lab.example:8080", "lab-secret")
    assert from_profile.timeout == 5

    named = resolve(None, None, "ci", env)
    assert (named.server, named.token) == ("http://ci.example:8080/api/v1/", "ci-secret")
    by_env = resolve(None, None, None, {**env, "TINYFLEET_PROFILE": "ci"})
    assert by_env.token == "ci-secret"

    env_wins = resolve(None, None, None, {**env, "TINYFLEET_SERVER": "http://e:1"})
    assert (env_wins.server, env_wins.token) == ("http://e:1", "lab-secret")
    options_win = resolve("http://o:2", "o-secret", None, {**env, "TINYFLEET_TOKEN": "e"})
    assert (options_win.server, options_win.token) == ("http://o:2", "o-secret")


def test_xdg_config_home_holds_the_default_file(tmp_path: Path) -> None:
    folder = tmp_path / "xdg" / "tinyfleet"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text('[profiles.default]\nserver = "http://d:3"\n')
    remote = resolve(None, None, None, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert remote.server == "http://d:3"


@pytest.mark.parametrize(
    ("document", "profile", "message"),
    [
        (None, None, "does not exist"),
        ("not = [valid", None, "cannot read config file"),
        ('[profiles.a]\nserver = "http://a:1"\n', "b", "no profile 'b'"),
        ('[profiles.a]\ntoken_file = "/nonexistent/token"\n', "a", "not readable"),
        ('[profiles.a]\ntimeout = "soon"\n', "a", "timeout must be a number"),
        ("profiles = 3\n", None, "must be a table"),
    ],
    ids=["missing-file", "bad-toml", "unknown-profile", "token-file", "bad-timeout", "shape"],
)
def test_bad_configuration_is_a_config_error(
    tmp_path: Path, document: str | None, profile: str | None, message: str
) -> None:
    path = tmp_path / "config.toml"
    if document is not None:
        path.write_text(document)
    with pytest.raises(ConfigError, match=message):
        resolve(None, None, profile, {"TINYFLEET_CONFIG": str(path)})


def test_api_base_accepts_the_usual_spellings() -> None:
    for spelling in ("http://h:1", "http://h:1/", "http://h:1/api/v1", " http://h:1/api/v1/ "):
        assert api_base(spelling) == "http://h:1/api/v1"
    with pytest.raises(ValueError, match="http"):
        api_base("h:1")


def _answer(status: int, body: bytes, kind: str) -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda _request: httpx.Response(status, content=body, headers={"content-type": kind})
    )


def test_error_bodies_that_are_not_problems_still_read_clearly() -> None:
    html = _answer(502, b"<html>bad gateway</html>", "text/html")
    with ApiClient("http://h:1", "t", transport=html) as api, pytest.raises(Refused) as refused:
        api.get("/groups")
    assert refused.value.status == 502 and "bad gateway" in refused.value.message()

    empty = _answer(403, b"", "text/plain")
    with ApiClient("http://h:1", "t", transport=empty) as api, pytest.raises(AuthError) as auth:
        api.get("/groups")
    assert auth.value.message() == "403 Forbidden"

    not_json = _answer(200, b"<html>", "text/html")
    with ApiClient("http://h:1", "t", transport=not_json) as api, pytest.raises(BadResponse):
        api.get("/groups")


def test_problem_details_list_validation_errors_and_failed_checks() -> None:
    problem = {
        "title": "Admission failed",
        "detail": "the model was refused",
        "code": "admission",
        "errors": [{"loc": ["body", "counter"], "msg": "must be >= 0"}, {"loc": [], "msg": "x"}],
        "checks": [{"name": "parses", "ok": True}, {"name": "fits", "ok": False, "detail": "big"}],
    }
    transport = _answer(422, json.dumps(problem).encode(), "application/problem+json")
    with ApiClient("http://h:1", "t", transport=transport) as api, pytest.raises(Refused) as exc:
        api.post("/releases", {})
    assert exc.value.code == "admission"
    assert exc.value.message() == "422 Admission failed [admission]: the model was refused"
    assert exc.value.details() == ["counter: must be >= 0", "x", "check fits: big"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_server_down_is_exit_3(stack: Stack) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = stack.bare("devices", "list", "--server", url, "--token", "t")
    assert result.exit_code == 3, result.output
    assert "cannot reach" in result.stderr and "tinyfleet serve" in result.stderr


def test_bad_server_url_and_bad_config_are_exit_2(stack: Stack, tmp_path: Path) -> None:
    bad_url = stack.bare("devices", "list", "--server", "localhost:8080")
    assert bad_url.exit_code == 2, bad_url.output
    missing = stack.bare("devices", "list", TINYFLEET_CONFIG=str(tmp_path / "nope.toml"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_a_config_profile_reaches_the_service(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[profiles.here]\nserver = "{stack.url}"\ntoken = "{stack.admin}"\n'
        '[profiles.elsewhere]\nserver = "http://127.0.0.1:9"\ntoken = "x"\n'
    )
    result = stack.bare(
        "groups", "list", "--json", "--config-profile", "here", TINYFLEET_CONFIG=str(path)
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    by_env = stack.bare("groups", "list", TINYFLEET_CONFIG=str(path), TINYFLEET_PROFILE="elsewhere")
    assert by_env.exit_code == 3, by_env.output


def test_the_installed_command_exits_with_the_same_codes(stack: Stack) -> None:
    """One run through a real process: the entry point, not only the Typer app in process."""
    base = [sys.executable, "-c", "from service.cli.main import main; main()"]
    env = {k: v for k, v in {**os.environ, **stack.env()}.items() if v is not None}
    ok = subprocess.run(
        [*base, "devices", "list", "--json", "--server", stack.url, "--token", stack.admin],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)) == len(stack.device_ids)
    denied = subprocess.run(
        [*base, "devices", "list", "--server", stack.url, "--token", "wrong"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert denied.returncode == 4, denied.stderr
