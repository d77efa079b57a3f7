""" "Done" is observed on the cores: a core killed after activation keeps its job unconfirmed.

Before, the service confirmed a soaking job from the hub's last-activity time, which the agent's
telemetry keeps fresh, and the twin still said "running" for a core whose process was gone. Now
the agent reports each core's last heartbeat and its inference count since activation, and the
job machine confirms only when every core is alive (`retry.core_silence`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra.simdevice import SimulatedDevice
from service.domain.job_events import Confirmed, DeviceReport, HealthFailed
from service.domain.job_reports import observe
from service.domain.jobs import Job, JobState
from service.domain.spec import RetryPolicy
from tests.agent_world import MemoryHub, offer_v1, running_device, wait_for
from tests.signing_world import World

POLICY = RetryPolicy()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[World, MemoryHub, SimulatedDevice]]:
    options = {"period_s": 0.05, "health_interval_s": 0.5, "restart_cores": False}
    with running_device(tmp_path, **options) as rig:
        yield rig


def _alive_since_activation(hub: MemoryHub) -> bool:
    cores = hub.agent().get("cores") or {}
    return len(cores) == 2 and all(
        (c.get("heartbeatAtMs") or 0) >= (c.get("activatedAtMs") or 1 << 62)
        and c.get("inferences", 0) >= 1
        for c in cores.values()
    )


def _soaking(release: str) -> Job:
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)  # the soak is over; only the cores decide
    return Job(
        "ro-1",
        "dev-1",
        release,
        0,
        timedelta(0),
        state=JobState.SOAKING,
        attempt=1,
        workflow_id="wf-1",
        soak_until=long_ago,
        deadline=long_ago + POLICY.confirm_grace,
    )


def test_a_core_killed_after_activation_is_never_confirmed(
    rig: tuple[World, MemoryHub, SimulatedDevice],
) -> None:
    world, hub, device = rig
    offer_v1(world, hub, device, "wf-1")
    wait_for(lambda: _alive_since_activation(hub), what="both cores alive after activation")
    job = _soaking("r1")
    now = datetime.now(UTC)
    assert observe(job, DeviceReport.from_twin(hub.agent(), now), now, POLICY) == Confirmed()

    device.kill_core("m4-1")
    killed_ms = int(time.time() * 1000)

    def m4_0_beat() -> int:
        return int((hub.agent().get("cores") or {}).get("m4-0", {}).get("heartbeatAtMs") or 0)

    # The device stays busy: m4-0 beats and telemetry flows, so the hub's activity is fresh.
    wait_for(lambda: m4_0_beat() > killed_ms + 1000, what="m4-0 heartbeat after the kill")
    now = datetime.fromtimestamp(m4_0_beat() / 1000, UTC)
    tight = RetryPolicy(core_silence=timedelta(seconds=1))
    report = DeviceReport.from_twin(hub.agent(), now)
    assert "m4-1" in report.silent_cores(now, tight.core_silence) + [
        c.split(":")[0] for c in report.unhealthy_cores()
    ]
    event = observe(job, report, now, tight)
    assert event is None or isinstance(event, HealthFailed), event
