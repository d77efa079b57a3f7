"""Names cannot carry terminal or log control: every user-given name refuses Unicode category C
characters (ESC, newline, NUL, bidi overrides, zero-width format characters) with a 422 problem,
the CLI shows any that reach it escaped, and token names (the audit actor, the approver
identity) are unique."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rich.text import Text

from service.cli import _output
from service.storage import AlreadyExistsError, Role, SqlStorage, upgrade
from service.storage._schema import api_tokens
from tests.integration.api._api import PROBLEM, Api, ApiWorld
from tests.security._api_world import full_api

HOSTILE = {
    "esc": "ops\x1b[2J\x1b[31mroot",
    "osc-title": "ops\x1b]0;pwned\x07",
    "newline": "ops\nINFO forged line",
    "carriage-return": "ops\rroot",
    "nul": "ops\x00",
    "del": "ops\x7f",
    "c1-csi": "ops\x9b31m",
    "bidi-override": "ops\u202egnp.exe",
    "bidi-isolate": "ops\u2066x\u2069",
    "zero-width-joiner": "op\u200ds",
    "bom": "\ufeffops",
}


def _bodies(bad: str) -> list[tuple[str, str, dict[str, Any], Role]]:
    rollout = {"id": "r1", "release_id": "rel-1", "group_id": "g1", "stages": [{"name": "s"}]}
    return [
        ("PUT", "/groups/g1", {"name": bad, "kind": "tag", "selector": "a=b"}, Role.OPERATOR),
        (
            "PUT",
            "/groups/g1",
            {"name": "g", "kind": "tag", "selector": f"site={bad}"},
            Role.OPERATOR,
        ),
        (
            "PUT",
            "/groups/g1",
            {"name": "g", "kind": "query", "selector": f"tags.{bad}=x"},
            Role.OPERATOR,
        ),
        ("POST", "/rollouts", {**rollout, "id": bad}, Role.OPERATOR),
        ("POST", "/rollouts", {**rollout, "stages": [{"name": bad}]}, Role.OPERATOR),
        ("POST", "/rollouts", {**rollout, "group_id": bad}, Role.OPERATOR),
        (
            "POST",
            "/releases",
            {"id": bad[:40], "hardware_ids": ["mt3620"], "counter": 1},
            Role.RELEASE_SIGNER,
        ),
        (
            "POST",
            "/releases",
            {"id": "r9", "hardware_ids": [bad], "counter": 1},
            Role.RELEASE_SIGNER,
        ),
        ("POST", "/tokens", {"name": bad, "role": "viewer"}, Role.ADMIN),
    ]


KINDS = [
    "group-name",
    "group-tag-selector",
    "group-query-tag-key",
    "rollout-id",
    "stage-name",
    "rollout-group-id",
    "release-id",
    "release-hardware-id",
    "token-name",
]
ROWS = [
    (kind, char, method, url, body, role)
    for char, bad in HOSTILE.items()
    for kind, (method, url, body, role) in zip(KINDS, _bodies(bad), strict=True)
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiWorld, Api]]:
    with full_api(tmp_path_factory.mktemp("names")) as (world, api):
        yield world, api


@pytest.mark.parametrize(
    ("kind", "char", "method", "url", "body", "role"),
    ROWS,
    ids=[f"{kind}-{char}" for kind, char, *_ in ROWS],
)
def test_control_characters_in_names_are_refused(
    api: tuple[ApiWorld, Api],
    kind: str,
    char: str,
    method: str,
    url: str,
    body: dict[str, Any],
    role: Role,
) -> None:
    world, client = api
    answer = client.request(method, url, json=body, token=world.tokens[role])
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert problem["code"] == "invalid" and problem["errors"]
    assert "\x1b" not in answer.text and "\u202e" not in answer.text


def test_plain_unicode_names_are_kept(api: tuple[ApiWorld, Api]) -> None:
    _world, client = api
    body = {"name": "Zürich-Süd 東京", "kind": "tag", "selector": "site=zürich"}
    answer = client.put("/groups/g-unicode", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["name"] == "Zürich-Süd 東京"


DUPLICATES = ["same-role", "other-role", "revoked-holder", "name-of-a-world-token"]


@pytest.mark.parametrize("case", DUPLICATES, ids=DUPLICATES)
def test_token_names_are_unique(api: tuple[ApiWorld, Api], case: str) -> None:
    _world, client = api
    name = f"dup-{case}"
    if case == "name-of-a-world-token":
        name = "operator"  # the world issued it
    else:
        first = client.post("/tokens", json={"name": name, "role": "operator"})
        assert first.status_code == 201, first.text
        if case == "revoked-holder":
            assert client.delete(f"/tokens/{first.json()['id']}").status_code == 204
    role = "admin" if case == "other-role" else "operator"
    again = client.post("/tokens", json={"name": name, "role": role})
    assert again.status_code == 409, again.text
    assert again.headers["content-type"] == PROBLEM
    assert again.json()["code"] == "conflict"
    assert [t["name"] for t in client.get("/tokens").json()["items"]].count(name) == 1


def test_migration_0006_renames_existing_duplicates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0004")
    engine = sa.create_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for n, token_id in enumerate(["a" * 32, "b" * 32, "c" * 32]):
            conn.execute(
                sa.text(
                    "INSERT INTO api_tokens (id, name, role, token_hash, created_at)"
                    " VALUES (:id, 'ci', 'operator', :hash, :at)"
                ),
                {"id": token_id, "hash": token_id * 2, "at": now.replace(microsecond=n)},
            )
    engine.dispose()
    upgrade(url)
    storage = SqlStorage(url)
    try:
        with storage.engine.connect() as conn:
            rows = conn.execute(sa.select(api_tokens.c.id, api_tokens.c.name)).all()
        names = {token_id[0]: name for token_id, name in rows}
        assert names == {"a": "ci", "b": "ci#" + "b" * 12, "c": "ci#" + "c" * 12}
        with storage.begin() as uow, pytest.raises(AlreadyExistsError):
            uow.tokens.create("ci", Role.VIEWER, now)
    finally:
        storage.close()


SHOWN = [
    ("esc", "a\x1b[31mb", "a\\x1b[31mb"),
    ("osc-title", "a\x1b]0;t\x07b", "a\\x1b]0;t\\x07b"),
    ("newline", "a\nb", "a\\x0ab"),
    ("bidi-override", "a\u202eb", "a\\u202eb"),
    ("c1-csi", "a\x9bb", "a\\x9bb"),
    ("markup", "[red]a[/red]", "[red]a[/red]"),
    ("unicode-kept", "Zürich 東京", "Zürich 東京"),
]


@pytest.mark.parametrize(("case", "cell", "shown"), SHOWN, ids=[c for c, *_ in SHOWN])
def test_cli_tables_escape_control_characters(
    monkeypatch: pytest.MonkeyPatch, case: str, cell: str, shown: str
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(
        _output, "console", _output.SafeConsole(file=out, force_terminal=False, width=200)
    )
    _output.emit_table("t", ["name"], [[cell]])
    text = out.getvalue()
    assert shown in text, text
    assert not any(c in text for c in "\x1b\x07\x9b\u202e")


@pytest.mark.parametrize("form", ["str", "text"], ids=["string", "rich-text"])
@pytest.mark.parametrize(("case", "cell", "shown"), SHOWN[:5], ids=[c for c, *_ in SHOWN[:5]])
def test_cli_messages_escape_control_characters(
    case: str, cell: str, shown: str, form: str
) -> None:
    out = io.StringIO()
    console = _output.SafeConsole(file=out, force_terminal=True, width=200)
    message = f"token {cell} created"
    console.print(message if form == "str" else Text(message, style="bold"), markup=False)
    # Without rich's own styling (SGR sequences); the escaped form must be there besides.
    text = re.sub("\x1b\\[[0-9;]*m", "", out.getvalue())
    assert not any(c in text for c in "\x1b\x07\x9b\u202e"), repr(text)
    if case != "newline" and form == "str":  # messages may span lines; rich drops BEL in Text
        assert shown in text
