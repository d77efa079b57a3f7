"""End to end through real parts: a simulated device (its agent and two real core processes
running the prebuilt TFLM models) sends its telemetry into the real ingest worker and the real
telemetry store (SQLite). The vibration model's own anomaly decisions arrive as flagged rows and
are counted in its slot's rollup (the keyword model's rows report no flag); a core killed with
SIGKILL is exactly one crash event, counted for that device and core on the release it ran."""

from __future__ import annotations

import time
from pathlib import Path

from device_agent.intercore import HostPhase
from device_agent.protocol.telemetry import TelemetryBatch
from service.domain.rollups import CohortRollup, merge_all
from service.telemetry import IngestWorker, MemorySource
from tests.agent_world import MemoryHub, deploy, sign_prebuilt, simulated_device, wait_for
from tests.integration.telemetry.conftest import Db
from tests.signing_world import World


class FeedHub(MemoryHub):
    """The in-memory hub port that also appends every D2C body to a telemetry feed, as the
    hub's Event Hubs endpoint would."""

    def __init__(self, device_id: str, source: MemorySource) -> None:
        super().__init__(device_id)
        self.source = source

    def send_telemetry(self, body: bytes, properties: dict[str, str]) -> None:
        super().send_telemetry(body, properties)
        self.source.append(
            self.device_id,
            body,
            enqueued_ms=int(time.time() * 1000),
            message_id=properties["$.mid"],
        )


def _on_r1(hub: MemoryHub) -> list[TelemetryBatch]:
    return [b for b in list(hub.batches) if b.release == "r1"]


def test_flags_and_a_sigkill_reach_the_store_as_anomaly_and_crash_counts(tmp_path: Path) -> None:
    source = MemorySource(2)
    hub = FeedHub("dev-1", source)
    world = World(tmp_path / "world")
    device = simulated_device(tmp_path, world, hub, period_s=0.02)
    db = Db("sqlite", f"sqlite:///{tmp_path / 'tinyfleet.db'}")
    device.start()
    try:
        sign_prebuilt(world, "r1", {"m4-0": "kws-v1.0.0", "m4-1": "vibration-v2.0.0"})
        world.director.assign("dev-1", "mt3620", "r1", world.now)
        device.agent.on_desired(hub.set_desired(deploy("wf-1", "dev-1")))
        wait_for(lambda: hub.agent().get("installedReleaseId") == "r1", what="r1 installed")

        def flagged() -> int:
            return sum(bool(r.anomaly) for b in _on_r1(hub) for r in b.inference)

        wait_for(lambda: flagged() >= 5, what="flagged vibration windows")

        assert device.kill_core("m4-1") == -9
        wait_for(
            lambda: any(e.kind == "crash" for b in _on_r1(hub) for e in b.events),
            what="the crash event",
        )
        wait_for(lambda: device.agent.cores["m4-1"].phase is HostPhase.READY, what="m4-1 restarted")
        mark = len(hub.batches)
        wait_for(lambda: len(hub.batches) >= mark + 3, what="more batches after the restart")
    finally:
        device.stop()
    try:
        IngestWorker(source, db.store).drain()
        sent = _on_r1(hub)
        rows = db.store.rollup_rows(release_id="r1")

        def slot(core: str, model_id: str) -> CohortRollup:
            return merge_all(r for k, r in rows if (k["core"], k["model_id"]) == (core, model_id))

        vibration = [r for b in sent for r in b.inference if r.model_id == "vibration"]
        stored = slot("m4-1", "vibration")
        assert stored.anomaly_reported == len(vibration) == stored.inferences
        assert stored.anomalies == sum(bool(r.anomaly) for r in vibration) >= 5
        assert 0 < stored.anomaly_rate < 0.6
        kws = slot("m4-0", "kws")
        assert kws.inferences > 0 and kws.anomaly_reported == 0

        crashes = [e for b in sent for e in b.events if e.kind == "crash"]
        assert [(e.core, e.code) for e in crashes] == [("m4-1", -9)]
        assert crashes[0].reason.startswith("killed by SIGKILL while running vibration 2.0.0")
        events = slot("m4-1", "")
        assert (events.crashes, events.devices_crashed) == (1, frozenset({"dev-1"}))
        assert slot("m4-0", "").crashes == 0
    finally:
        db.close()
