"""`tinyfleet demo` (what `make demo` runs) completes and shows every step working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    tinyfleet = Path(sys.executable).parent / "tinyfleet"
    result = subprocess.run(
        [str(tinyfleet), "demo", "--data", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "installed demo-r2" in out
    for refusal in ("TargetHashError", "WrongDeviceError", "SignatureError", "VersionError"):
        assert f"refused: {refusal}" in out
    assert "ACCEPTED" not in out and "CHANGED" not in out
    assert "the twin reports state 'idle'" in out
    telemetry = out.split("inference telemetry")[1]
    for core, model in (("m4-0", "kws"), ("m4-1", "vibration")):
        assert any(
            core in line and model in line and "2.0.0" in line for line in telemetry.splitlines()
        ), telemetry
