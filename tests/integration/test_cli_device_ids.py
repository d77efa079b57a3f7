"""`tinyfleet release assign|verify` for device ids that look like paths: each keeps its own
director folder and device state folder, inside the data directory's `devices/`."""

from __future__ import annotations

import json
from pathlib import Path

from signing.device_ids import device_segment
from tests.integration.test_cli_signing import _model, _ok


def test_path_like_device_ids_stay_in_their_own_folders(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _ok("keys", "init", "--data", str(data))
    _ok("repo", "init", "--data", str(data))
    model = _model(tmp_path)
    _ok("release", "sign", str(model), "--id", "r1", "--core", "m4-0", "--data", str(data))
    before = {p.name for p in data.iterdir()}
    for device_id in ("..", ".", "x?y*", "sensor:01"):
        _ok("release", "assign", "r1", "--device", device_id, "--data", str(data))
        verified = json.loads(
            _ok("release", "verify", "--device", device_id, "--data", str(data), "--json")
        )
        assert verified["update"] == "r1"
        again = json.loads(
            _ok("release", "verify", "--device", device_id, "--data", str(data), "--json")
        )
        assert again == {"device": device_id, "update": None, "installed": "r1"}
        assert (data / "devices" / device_segment(device_id)).is_dir()
    assert {p.name for p in data.iterdir()} <= before | {"devices"}
    assert sorted(p.name for p in (data / "devices").iterdir()) == sorted(
        device_segment(d) for d in ("..", ".", "x?y*", "sensor:01")
    )
