"""A gated rollout on a fleet of in-process simulated devices, end to end inside `make test`: the
smaller version of `tinyfleet fleet rehearse --devices 10000`.

Every device is real (its own TLS session with the mock hub, agent, Uptane verification, signed
downloads, and two cores running TFLM on a fleet host's reactor), the fleet is split across two
fleet host processes, and the service runs on SQLite. The rehearsal installs v1 everywhere, rolls
v2 out to `main` in three gated stages, and fails unless both complete and every device ends on
exactly one release (canary on v1, main on v2) with every core running that release's model.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.cli._rehearsal import Rehearsal, run

DEVICES = int(os.environ.get("TINYFLEET_LIGHT_FLEET_DEVICES", "100"))


@pytest.mark.timeout(1800)
def test_a_gated_rollout_completes_on_a_fleet_of_in_process_devices(tmp_path: Path) -> None:
    plan = Rehearsal(hosts=2, period_s=1.0, liveness_s=5.0, flush_s=1.0, soak_s=10)
    figures = run(DEVICES, tmp_path / "fleet", plan)
    canary = max(1, DEVICES // 20)
    assert figures["ended_on"] == {"models-v1": canary, "models-v2": DEVICES - canary}
    assert len(figures["stages_s"]) == 3 and figures["devices_per_minute"] > 0
