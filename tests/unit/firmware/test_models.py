"""The model builder: committed models are reproducible, versions differ in quality as
documented, and `tinyfleet models build` writes the files the signer reads."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from firmware.models import PREBUILT_DIR, SPECS, build_all
from service.cli import models

# Registered as main.py does (a one-command group would otherwise collapse into its command).
app = typer.Typer()
app.add_typer(models.app, name="models")

SIDECAR_FIELDS = {
    "kind", "modelId", "version", "runtime", "inputShape", "inputDtype", "outputShape",
    "outputDtype", "arenaBytes", "operators", "selfTest", "minFirmwareVersion", "quality",
}  # fmt: skip


def test_prebuilt_models_are_byte_for_byte_reproducible(tmp_path: Path) -> None:
    build_all(tmp_path)
    committed = sorted(p.name for p in PREBUILT_DIR.iterdir() if p.suffix in (".tflite", ".json"))
    assert committed == sorted(p.name for p in tmp_path.iterdir())
    for name in committed:
        assert (tmp_path / name).read_bytes() == (PREBUILT_DIR / name).read_bytes(), name


def test_each_line_has_a_better_v2_and_a_regressed_v3() -> None:
    for line in {s.model_id for s in SPECS}:
        quality = {}
        for version in ("1.0.0", "2.0.0", "3.0.0"):
            sidecar = json.loads((PREBUILT_DIR / f"{line}-v{version}.json").read_text())
            assert set(sidecar) == SIDECAR_FIELDS
            metric = sidecar["quality"]["metric"]
            quality[version] = sidecar["quality"][metric]
        assert quality["2.0.0"] > quality["1.0.0"] > quality["3.0.0"], (line, quality)


def test_the_cli_builds_one_line_and_reports_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["models", "build", "--out", str(tmp_path), "--model", "vibration", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [m["file"] for m in report["models"]] == [
        f"vibration-v{v}.tflite" for v in ("1.0.0", "2.0.0", "3.0.0")
    ]
    assert (tmp_path / "vibration-v2.0.0.json").exists()


def test_the_cli_refuses_an_unknown_model_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "build", "--out", str(tmp_path), "--model", "nope"])
    assert result.exit_code == 1
    assert "unknown model line" in result.output
