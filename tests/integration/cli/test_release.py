"""`tinyfleet release create|upload|publish|list|show` against `ServiceRuntime` (the composition
root of `tinyfleet serve`), with the token taken from DATA/admin-token as an operator would."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from service.cli.main import app as cli_app
from service.config import Settings
from service.runtime import ServiceRuntime

PREBUILT = Path(__file__).resolve().parents[3] / "firmware" / "models" / "prebuilt"


@dataclass
class Served:
    url: str
    data: Path
    home: Path

    def run(self, *args: str, **env: str | None) -> Result:
        base: dict[str, str | None] = {
            "TINYFLEET_SERVER": self.url,
            "TINYFLEET_TOKEN": None,
            "TINYFLEET_PROFILE": None,
            "TINYFLEET_CONFIG": None,
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "TINYFLEET_DATA_DIR": str(self.data),
            "COLUMNS": "200",
        }
        base.update(env)
        return CliRunner().invoke(cli_app, list(args), env=base)

    def ok(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data = tmp_path / "data"
    runtime = ServiceRuntime(Settings(data_dir=data, api_port=0))  # no hub: no engine needed
    addresses = runtime.start()
    try:
        yield Served(addresses.api_url, data, tmp_path)
    finally:
        runtime.stop()


def _model(folder: Path, name: str = "kws-v1.0.0") -> Path:
    for suffix in (".tflite", ".json"):
        shutil.copy(PREBUILT / f"{name}{suffix}", folder / f"{name}{suffix}")
    return folder / f"{name}.tflite"


def test_create_upload_publish_show_list(served: Served, tmp_path: Path) -> None:
    model = _model(tmp_path)
    draft = served.ok("release", "create", "kws-1", "--counter", "3", "--description", "first")
    assert draft["status"] == "draft" and draft["counter"] == 3
    assert draft["hardware_ids"] == ["mt3620"]

    member = served.ok("release", "upload", "kws-1", str(model), "--core", "m4-0")
    assert member["core"] == "m4-0" and member["length"] == model.stat().st_size
    assert all(check["ok"] for check in member["admission"])

    shown = served.ok("release", "show", "kws-1")
    assert [m["core"] for m in shown["members"]] == ["m4-0"]
    published = served.ok("release", "publish", "kws-1")
    assert published["status"] == "published"

    listed = served.ok("release", "list")
    assert [r["id"] for r in listed] == ["kws-1"]
    for args in (("release", "list"), ("release", "show", "kws-1")):
        table = served.run(*args)
        assert table.exit_code == 0, table.output
        assert "kws-1" in table.stdout and "published" in table.stdout


def test_upload_shows_a_progress_bar_and_the_admission_table(
    served: Served, tmp_path: Path
) -> None:
    model = _model(tmp_path, "kws-v2.0.0")
    served.ok("release", "create", "kws-2")
    result = served.run("release", "upload", "kws-2", str(model), "--core", "m4-1")
    assert result.exit_code == 0, result.output
    assert "kws-v2.0.0.tflite" in result.stderr  # the progress bar's label
    assert "13.4" in result.stderr  # ...and its byte count (13,384 bytes)
    assert "uploaded" in result.stdout and "admission" in result.stdout


def test_upload_refused_by_admission_prints_the_failed_checks(
    served: Served, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer" * 100)
    shutil.copy(PREBUILT / "kws-v1.0.0.json", tmp_path / "junk.json")
    served.ok("release", "create", "kws-3")
    result = served.run("release", "upload", "kws-3", str(junk), "--core", "m4-0")
    assert result.exit_code == 1, result.output
    assert "422" in result.stderr and "admission" in result.stderr
    assert "check " in result.stderr  # one line per failed check


def test_published_releases_are_immutable(served: Served, tmp_path: Path) -> None:
    model = _model(tmp_path)
    served.ok("release", "create", "kws-4")
    served.ok("release", "upload", "kws-4", str(model), "--core", "m4-0")
    served.ok("release", "publish", "kws-4")
    again = served.run("release", "upload", "kws-4", str(model), "--core", "m4-1")
    assert again.exit_code == 1, again.output
    assert "409" in again.stderr


def test_upload_usage_errors(served: Served, tmp_path: Path) -> None:
    lonely = tmp_path / "lonely.tflite"
    lonely.write_bytes(b"x")
    no_sidecar = served.run("release", "upload", "kws-1", str(lonely), "--core", "m4-0")
    assert no_sidecar.exit_code == 2 and "sidecar" in no_sidecar.stderr
    bad_core = served.run("release", "upload", "kws-1", str(lonely), "--core", "a7")
    assert bad_core.exit_code == 2 and "unknown core" in bad_core.stderr


def test_release_list_local_needs_no_server(tmp_path: Path) -> None:
    """`--local` reads the data directory's image repository, as `release list` always did."""
    data = str(tmp_path / "data")
    runner = CliRunner()
    for init in (["keys", "init", "--data", data], ["repo", "init", "--data", data]):
        assert runner.invoke(cli_app, init).exit_code == 0
    nowhere = {"TINYFLEET_SERVER": "http://127.0.0.1:9", "TINYFLEET_DATA_DIR": data}
    result = runner.invoke(cli_app, ["release", "list", "--local", "--json"], env=nowhere)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
