"""The signing commands end to end through the real CLI, on a directory store."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from service.cli.main import app

runner = CliRunner()


def _model(folder: Path, version: str = "1.0.0", size: int = 30000) -> Path:
    path = folder / f"kws-v{version}.tflite"
    path.write_bytes(bytes([int(version[0])]) * size)
    sidecar = {
        "kind": "model",
        "modelId": "kws",
        "version": version,
        "runtime": "tflm",
        "inputShape": [1, 4],
        "inputDtype": "int8",
        "outputShape": [1, 2],
        "outputDtype": "int8",
        "arenaBytes": 2048,
        "operators": ["FULLY_CONNECTED"],
        "selfTest": [
            {
                "input": base64.b64encode(bytes(4)).decode(),
                "expected": base64.b64encode(bytes(2)).decode(),
                "tolerance": 1,
            }
        ],
        "quality": {"accuracy": 0.9},
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def _ok(*args: str, env: dict[str, str] | None = None) -> str:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_sign_assign_verify_in_dev_mode(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    _ok("keys", "init", "--data", data)
    _ok("repo", "init", "--data", data)
    model = _model(tmp_path)
    signed = json.loads(
        _ok(
            "release",
            "sign",
            str(model),
            "--id",
            "r1",
            "--core",
            "m4-0",
            "--core",
            "m4-1",
            "--data",
            data,
            "--json",
        )
    )
    assert [m["core"] for m in signed["members"]] == ["m4-0", "m4-1"]
    _ok("release", "assign", "r1", "--device", "dev-1", "--data", data)

    verified = json.loads(_ok("release", "verify", "--device", "dev-1", "--data", data, "--json"))
    assert verified["update"] == "r1"
    assert {t["bytes"] for t in verified["targets"]} == {30000}
    again = json.loads(_ok("release", "verify", "--device", "dev-1", "--data", data, "--json"))
    assert again == {"device": "dev-1", "update": None, "installed": "r1"}
    listed = json.loads(_ok("release", "list", "--data", data, "--json"))
    assert [r["releaseId"] for r in listed] == ["r1"]


def test_production_mode_threshold_root_and_rotation(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    env = {"TINYFLEET_MODE": "production", "TINYFLEET_KEY_PASSPHRASE": "a real secret"}
    _ok(
        "keys",
        "init",
        "--mode",
        "production",
        "--online-scheme",
        "ecdsa-p256",
        "--data",
        data,
        env=env,
    )
    _ok("repo", "init", "--data", data, env=env)
    status = json.loads(_ok("repo", "status", "--data", data, "--json", env=env))
    root = next(r for r in status if r["role"] == "root")
    assert (len(root["keyids"]), root["threshold"]) == (3, 2)
    _ok(
        "release",
        "sign",
        str(_model(tmp_path)),
        "--id",
        "r1",
        "--core",
        "m4-0",
        "--data",
        data,
        env=env,
    )
    _ok("release", "assign", "r1", "--device", "dev-1", "--data", data, env=env)

    for role in ("root", "timestamp", "models"):
        _ok("keys", "rotate", role, "--data", data, env=env)
    _ok("keys", "rotate", "timestamp", "--repo", "director", "--data", data, env=env)

    verified = json.loads(
        _ok("release", "verify", "--device", "dev-1", "--data", data, "--json", env=env)
    )
    assert verified["update"] == "r1"
    status = json.loads(_ok("repo", "status", "--data", data, "--json", env=env))
    assert next(r for r in status if r["role"] == "root")["version"] == 3  # root and timestamp


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["repo", "init"], {}, "keys init"),
        (
            ["keys", "init", "--mode", "production"],
            {"TINYFLEET_MODE": "production"},
            "no passphrase",
        ),
        (
            ["keys", "list"],
            {"TINYFLEET_MODE": "production", "TINYFLEET_KEY_PASSPHRASE": "tinyfleet-dev-only"},
            "dev passphrase",
        ),
        (["release", "sign", "missing.tflite", "--id", "r1", "--core", "m4-0"], {}, "no such file"),
        (
            [
                "release",
                "sign",
                "a",
                "b",
                "--id",
                "r1",
                "--core",
                "m4-0",
                "--core",
                "m4-1",
                "--core",
                "m4-0",
            ],
            {},
            "once per file",
        ),
        (["release", "sign", "a", "--id", "r1", "--core", "m9"], {}, "unknown core"),
        (["keys", "rotate", "timestamp", "--uri", "azurekms://v/keys/k/1"], {}, "go together"),
    ],
    ids=[
        "no-keystore",
        "production-without-passphrase",
        "dev-passphrase-in-production",
        "missing-file",
        "cores-mismatch",
        "unknown-core",
        "uri-without-public-key",
    ],
)
def test_bad_input_gives_a_clear_error_and_nonzero_exit(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = runner.invoke(app, [*args, "--data", str(tmp_path / "data")], env=env)
    assert result.exit_code != 0
    assert message in result.output


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if hasattr(command, "commands"):
            found.extend(_commands(command, (*prefix, name)))
    return found


def test_every_command_has_help() -> None:
    commands = _commands(get_command(app))
    assert ("release", "verify") in commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, path


def test_console_script_entry_point_runs(tmp_path: Path) -> None:
    tinyfleet = Path(sys.executable).parent / "tinyfleet"
    result = subprocess.run(
        [str(tinyfleet), "keys", "init", "--data", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 11
