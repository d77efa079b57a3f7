"""The device agent: the loop that ties the hub, the trust chain, the cores and telemetry together.

One thread owns the cores and the update workflow; hub callbacks (desired patches, direct methods,
reconnects) only enqueue. Between two workflow commands the loop reads its inbox and reports, so
a cancel reaches the workflow between phases (and a stream into a core stops at its next chunk)
and the twin shows each phase as it starts. Every workflow event is persisted before its commands
run, so a crash at any instant resumes through `UpdateWorkflow.restore`. The agent never holds a
whole target: bytes flow from the target source through the signed-length/sha256 verifier into
the core's inactive slot.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import resource
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tuf.ngclient import FetcherInterface

from device_agent import commands as ops
from device_agent.intercore import (
    CoreClient,
    CoreEvent,
    CoreHeartbeat,
    CoreLinkError,
    CoreReverted,
    HostPhase,
    InferenceResult,
    crash_code,
    crash_reason,
)
from device_agent.liveness import Liveness
from device_agent.protocol import (
    AgentState,
    DesiredService,
    EventRecord,
    HealthRecord,
    InferenceRecord,
    ReportedAgent,
    ResultReport,
    TwinError,
    WorkflowAction,
    WorkflowPhase,
    ack_patch,
    agent_patch,
    parse_desired,
)
from device_agent.state import AgentStateStore
from device_agent.target_source import TargetSource
from device_agent.telemetry_buffer import TelemetryBuffer, encode_message
from device_agent.workflow import Command, Event, UpdateWorkflow, WorkflowError
from signing.device import DeviceIdentity, DeviceVerifier, InstalledState, VerifiedRelease
from signing.files import atomic_write

__all__ = ["Agent", "AgentConfig", "HubPort"]

# The event that reports a command's unexpected failure to the workflow (report: none).
_FAILED = {
    "check": "check_failed",
    "stage": "stage_failed",
    "abort": "aborted",
    "activate": "activate_failed",
    "confirm": "confirm_failed",
    "revert": "reverted",  # the core's own confirm deadline or boot reverts a trial
    "record": "record_failed",
}


_SKIPPED_ON_CANCEL = frozenset(("activate", "confirm"))


def _failure_of(command: Command, exc: Exception) -> Event | None:
    kind = _FAILED.get(command.kind)
    if kind is None:
        return None
    return Event(kind, core=command.core, reason="agent-error", detail=repr(exc)[:300])


log = logging.getLogger(__name__)
AGENT_VERSION = "0.1.0"


class CoreHost(Protocol):
    """What boots the cores: restart one (into another firmware image), say which it runs, and
    how a core's last process ended (None while it runs, or if the host cannot tell)."""

    def restart_core(self, core: str, firmware: Path | None = None) -> CoreClient: ...

    def firmware_path(self, core: str) -> Path: ...

    def exit_status(self, core: str) -> int | None: ...


class HubPort(Protocol):
    connected: threading.Event

    def get_twin(self) -> dict[str, Any]: ...

    def patch_reported(self, body: bytes) -> int | None: ...

    def send_telemetry(self, body: bytes, properties: dict[str, str]) -> None: ...


@dataclass(frozen=True)
class AgentConfig:
    device_id: str
    hardware_id: str
    profile: str
    allowed_kinds: frozenset[str]
    state_dir: Path
    image_root: bytes
    director_root: bytes
    telemetry_capacity: int = 5000
    health_interval_s: float = 30.0
    poll_interval_s: float = 0.1
    agent_version: str = AGENT_VERSION
    # A core whose link is gone (its process exited, it stopped answering) is restarted through
    # the host after a back-off that doubles from the first delay up to the cap; it resets once
    # the core has stayed up for the cap.
    restart_cores: bool = True
    core_restart_first_s: float = 1.0
    core_restart_max_s: float = 30.0
    # How often, at most, new heartbeats and inference results refresh the reported twin (the
    # service ages a core by its last reported heartbeat).
    liveness_report_s: float = 5.0
    # Telemetry summaries (`tinyfleet.summary/1`): with an interval > 0 the agent sends one
    # summary per core, model version and interval instead of a row per inference, and keeps raw
    # inference rows only for `raw_sample_rate` of them (health and events always go as rows).
    summary_interval_s: float = 0.0
    raw_sample_rate: float = 1.0
    # At most one telemetry send round per this many seconds (0: every turn of the loop), so
    # records gather into fuller batches: fewer messages per device, each later by up to this.
    telemetry_flush_s: float = 0.0


@dataclass
class _Method:
    name: str
    payload: bytes
    reply: Future[tuple[int, bytes]]


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        hub: HubPort,
        cores: dict[str, CoreClient],
        *,
        fetcher_for: Callable[[DesiredService], FetcherInterface],
        source_for: Callable[[DesiredService], TargetSource],
        host: CoreHost | None = None,
        clock: Callable[[], float] = time.time,
        before_command: Callable[[Command], None] = lambda command: None,
    ) -> None:
        self.config = config
        self.hub = hub
        self.cores = cores
        self._fetcher_for, self._source_for = fetcher_for, source_for
        self.host = host
        self._clock = clock
        self._before_command = before_command  # fault injection: raise here to "lose power"
        self._store = AgentStateStore(config.state_dir / "agent.json")
        saved = self._store.load()
        self.workflow = UpdateWorkflow(allowed_kinds=config.allowed_kinds)
        self._pending: deque[Command] = deque(self.workflow.restore(saved.get("workflow") or {}))
        self.desired: DesiredService | None = None
        self._last_retry: str | None = saved.get("lastRetry")
        # core -> the firmware image it ran before this run switched it (survives a crash)
        self.previous_firmware: dict[str, str] = dict(saved.get("previousFirmware") or {})
        self.telemetry = TelemetryBuffer(
            config.device_id,
            config.telemetry_capacity,
            next_seq=int(saved.get("nextSeq", 1)),
            summary_interval_ms=round(config.summary_interval_s * 1000),
            raw_sample_rate=config.raw_sample_rate,
            # Seeded by the device, so a simulated fleet samples the same rows on every run.
            sample=random.Random(f"raw-sample/{config.device_id}").random,
        )
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._release: VerifiedRelease | None = None
        self._slots: dict[str, int] = {}
        self._verdicts: dict[str, Any] = {}
        self.last_result: ResultReport | None = None
        self._report_dirty = True
        self._next_health = 0.0
        self._next_flush = 0.0
        self._started = clock()
        self.logs: deque[str] = deque(maxlen=200)
        self.stop_event = threading.Event()
        self._restart_due: dict[str, float] = {}  # core -> when to restart it
        self._restart_delay: dict[str, float] = {}  # core -> the back-off of its next restart
        self._restarted_at: dict[str, float] = {}  # core -> when it was last restarted
        self._lost: dict[str, CoreClient] = {}  # core -> the client whose loss was reported
        self.core_restarts = 0
        self.liveness = Liveness(config.liveness_report_s)
        phase = saved.get("phase") or {}
        self.phase = WorkflowPhase(phase.get("name", "idle"))
        self.phase_workflow_id: str | None = phase.get("workflowId")
        self.phase_reason: str = phase.get("reason", "")
        self._cancel_for: str | None = None  # a cancelled workflow id, set by the hub's thread
        self._deferred: Event | None = None  # a deploy that waits for the run it cancelled

    # -- inputs from other threads ---------------------------------------------------------------

    def on_desired(self, document: dict[str, Any]) -> None:
        try:
            desired = parse_desired(document)
        except TwinError:
            desired = None  # refused (and logged) by the loop
        run = self.workflow.run
        if desired is not None and run is not None and self._ends_run(desired, run.workflow_id):
            self._cancel_for = run.workflow_id  # a stream under way stops at its next chunk
        self._inbox.put(("desired", document))

    @staticmethod
    def _ends_run(desired: DesiredService, running: str) -> bool:
        """A cancel of the run, or a deploy of another workflow (a rollback's offer)."""
        if desired.action is WorkflowAction.CANCEL:
            return desired.workflow_id == running
        return desired.workflow_id != running

    def cancel_requested(self) -> bool:
        run = self.workflow.run
        return run is not None and self._cancel_for == run.workflow_id

    def on_connected(self) -> None:
        self._inbox.put(("connected", None))

    def on_method(self, name: str, payload: bytes) -> tuple[int, bytes]:
        reply: Future[tuple[int, bytes]] = Future()
        self._inbox.put(("method", _Method(name, payload, reply)))
        try:
            return reply.result(timeout=30)
        except TimeoutError:
            return 504, b'{"error": "the agent is busy"}'

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        for core_id, client in self.cores.items():
            try:
                client.connect()
            except CoreLinkError as exc:
                self.logs.append(f"{core_id}: not connected: {exc}")
        while not self.stop_event.is_set():
            try:
                self.step(self.config.poll_interval_s)
            except Exception as exc:  # the loop never dies; the next turn starts afresh
                log.exception("agent step failed")
                self.logs.append(f"step failed: {exc!r}"[:300])
                self.stop_event.wait(self.config.poll_interval_s)

    def close_cores(self) -> None:
        """At shutdown: close every core link (transport EOF), so each core exits cleanly
        instead of waiting out its retransmissions for a host that went silent."""
        for client in self.cores.values():
            client.close()

    def step(self, wait_s: float = 0.0) -> None:
        """One turn: inputs, workflow commands, core events, telemetry, reporting."""
        try:
            kind, value = self._inbox.get(timeout=wait_s) if wait_s else self._inbox.get_nowait()
            self._dispatch(kind, value)
        except queue.Empty:
            pass
        self._drain_inbox()
        while self._pending:
            self._execute(self._pending.popleft())
            self._drain_inbox()  # a cancel between two phases
            if self._report_dirty:
                self._report()
            if not self._pending and self.workflow.run is None and self._deferred is not None:
                deferred, self._deferred = self._deferred, None
                self._cancel_for = None
                self._feed(deferred)
        for core_id, client in self.cores.items():
            try:
                events = client.poll(0)
            except CoreLinkError as exc:
                self.logs.append(f"{core_id}: poll failed: {exc}")
                continue
            for event in events:
                self._core_event(core_id, event)
        now = self._clock()
        if self.liveness.due(int(now * 1000)):
            self._report_dirty = True
        self._revive_cores(now)
        if now >= self._next_health:
            self._next_health = now + self.config.health_interval_s
            self.telemetry.add(self._health(now))
        self.telemetry.close_intervals(int(now * 1000))
        if now >= self._next_flush and not self._flush_telemetry():
            self._next_flush = now + self.config.telemetry_flush_s  # else a backlog: next turn
        if self._report_dirty:
            self._report()

    # -- cores that exit ---------------------------------------------------------------------------

    def restart_core(self, core: str, firmware: Path | None = None) -> CoreClient:
        """Power-cycle `core` through the host (optionally into another firmware image); the
        old client stops servicing its link first. The caller connects the new client."""
        if self.host is None:
            raise RuntimeError("this agent cannot restart cores")
        old = self.cores.get(core)
        if old is not None:
            old.close()
        client = self.host.restart_core(core, firmware)
        self.cores[core] = client
        return client

    def _revive_cores(self, now: float) -> None:
        """Report each core whose link is gone (one crash event per loss), and restart it with
        back-off; a core that stays up for the cap starts over at the first delay."""
        self._report_lost_cores()
        if self.host is None or not self.config.restart_cores:
            return
        first, cap = self.config.core_restart_first_s, self.config.core_restart_max_s
        for core, client in list(self.cores.items()):
            if client.phase is not HostPhase.DISCONNECTED:
                restarted = self._restarted_at.get(core)
                if restarted is not None and now - restarted >= cap:
                    del self._restarted_at[core]
                    self._restart_delay.pop(core, None)
                continue
            due = self._restart_due.get(core)
            if due is None:
                delay = self._restart_delay.get(core, first)
                self._restart_due[core] = now + delay
                self.logs.append(f"{core}: link lost; restarting it in {delay:g} s")
                log.warning("%s: core link lost; restarting it in %g s", core, delay)
                continue
            if now < due:
                continue
            delay = self._restart_delay.get(core, first)
            del self._restart_due[core]
            self._restart_delay[core] = min(cap, delay * 2)
            self._restarted_at[core] = now
            self.core_restarts += 1
            before = client.running
            try:
                status = self.restart_core(core).connect()
            except (CoreLinkError, OSError) as exc:
                self.logs.append(f"{core}: restarted, not connected: {exc}")
                self.record_event("crash", core, 1, f"restart failed: {exc}"[:200])
                continue
            self.logs.append(f"{core}: restarted after {delay:g} s ({status.state})")
            log.info("%s: core restarted after %g s (%s)", core, delay, status.state)
            booted = status.running
            was = (before.model_id, before.version) if before else None
            if was and booted and (booted.model_id, booted.version) != was:
                booted_text = f"booted {booted.model_id} {booted.version} after the crash"
                self.record_event("revert", core, 1, f"{status.last_reason}: {booted_text}")
            self._report_dirty = True

    def _drain_inbox(self) -> None:
        while not self._inbox.empty():
            self._dispatch(*self._inbox.get_nowait())

    def _report_lost_cores(self) -> None:
        """One crash event per lost link: the exit status (from the host) and the model the
        core ran."""
        for core, client in self.cores.items():
            if not client.lost or self._lost.get(core) is client:
                continue
            self._lost[core] = client
            status = self.host.exit_status(core) if self.host is not None else None
            self.record_event(
                "crash", core, crash_code(status), crash_reason(status, client.running)
            )

    def _dispatch(self, kind: str, value: Any) -> None:
        if kind == "desired":
            self._handle_desired(value)
        elif kind == "connected":
            try:
                twin = self.hub.get_twin()
                self._handle_desired(twin.get("desired", {}))
            except Exception as exc:  # the hub's own error family varies by adapter
                self.logs.append(f"twin GET failed: {exc}")
            self._report_dirty = True
        elif kind == "method":
            method: _Method = value
            try:
                method.reply.set_result(ops.handle(self, method.name, method.payload))
            except Exception as exc:
                log.exception("method %s", method.name)
                method.reply.set_result((500, json.dumps({"error": str(exc)}).encode()))

    def _handle_desired(self, document: dict[str, Any]) -> None:
        try:
            desired = parse_desired(document)
        except TwinError as exc:
            version = document.get("$version") if isinstance(document, dict) else None
            self.logs.append(f"desired v{version} refused: {exc}")
            return
        if desired is None:
            return
        retry = desired.retry_timestamp is not None and desired.retry_timestamp != self._last_retry
        self._last_retry = desired.retry_timestamp
        self.desired = desired
        kind = "deploy" if desired.action is WorkflowAction.DEPLOY else "cancel"
        event = Event(kind, workflow_id=desired.workflow_id, retry=retry)
        run = self.workflow.run
        if run is not None and self._ends_run(desired, run.workflow_id):
            self._cancel_for = run.workflow_id
            self._feed(Event("cancel", workflow_id=run.workflow_id))
            self._deferred = event if kind == "deploy" else None  # runs once the run is undone
        elif kind == "deploy" or run is None:
            if run is None and kind == "deploy":
                self._cancel_for = None  # a retry of a cancelled workflow id runs afresh
            self._feed(event)
        # else: a cancel of another (older) workflow than the one running: nothing to do
        self._send_patch(ack_patch(desired))

    # -- the workflow's commands -----------------------------------------------------------------

    def _feed(self, event: Event) -> None:
        commands = self.workflow.handle(event)
        self._persist()
        self._pending.extend(commands)

    def _persist(self) -> None:
        self._store.save(
            {
                "workflow": self.workflow.snapshot(),
                "nextSeq": self.telemetry.next_seq,
                "lastRetry": self._last_retry,
                "previousFirmware": self.previous_firmware,
                "phase": {
                    "name": self.phase.value,
                    "workflowId": self.phase_workflow_id,
                    "reason": self.phase_reason,
                },
            }
        )

    def persist(self) -> None:
        self._persist()

    def _execute(self, command: Command) -> None:
        """Run one command and feed its outcome back. Whatever goes wrong inside a step (a bug,
        an unexpected error from a port) becomes that step's failure, so the workflow reverts
        and the loop lives on; only a power cut (a BaseException) stops it."""
        try:
            self._before_command(command)
            if command.kind in _SKIPPED_ON_CANCEL and self.cancel_requested():
                # Cancelled: this core is not switched (or confirmed) at all; the failure
                # turns the workflow back, and it reverts every core.
                event: Event | None = Event(
                    _FAILED[command.kind], core=command.core, reason="cancelled"
                )
            else:
                event = getattr(ops, f"do_{command.kind}")(self, command)
        except Exception as exc:
            log.exception("%s %s failed", command.kind, command.core or "")
            self.logs.append(f"{command.kind} {command.core or ''}: failed: {exc!r}"[:300])
            event = _failure_of(command, exc)
        if event is None:
            return
        try:
            self._feed(event)
        except WorkflowError as exc:  # an answer the workflow no longer expects: keep going
            log.error("workflow: %s", exc)
            self.logs.append(f"workflow: {exc}")

    def verifier(self) -> DeviceVerifier:
        desired = self.desired
        if desired is None or desired.image_url is None or desired.director_url is None:
            raise RuntimeError("no repository location is known yet")
        return DeviceVerifier(
            DeviceIdentity(
                self.config.device_id, self.config.hardware_id, tuple(sorted(self.cores))
            ),
            self.config.state_dir / "trust",
            image_root=self.config.image_root,
            director_root=self.config.director_root,
            fetcher=self._fetcher_for(desired),
            image_url=desired.image_url,
            director_url=desired.director_url,
        )

    def source(self) -> TargetSource:
        assert self.desired is not None
        return self._source_for(self.desired)

    def forget_installed_release(self) -> None:
        if self.desired is not None:
            self.verifier().forget_release()
        else:  # no repository known yet: the same file, through a verifier-free path
            path = self.config.state_dir / "trust" / "installed.json"
            if path.exists():
                state = InstalledState.from_json(path.read_bytes())
                state.release_id = None
                atomic_write(path, state.to_json())

    def installed(self) -> InstalledState:
        path = self.config.state_dir / "trust" / "installed.json"
        return InstalledState.from_json(path.read_bytes()) if path.exists() else InstalledState()

    # -- cores and telemetry ---------------------------------------------------------------------

    def _core_event(self, core_id: str, event: CoreEvent) -> None:
        now_ms = int(self._clock() * 1000)
        if isinstance(event, CoreHeartbeat):
            self.liveness.heartbeat(core_id, now_ms)
            self.logs.append(f"{core_id}: {event}")
        elif isinstance(event, InferenceResult):
            self.liveness.inference(core_id)
            self.telemetry.add(
                InferenceRecord(
                    core_id,
                    event.model_id,
                    event.version,
                    now_ms,
                    event.latency_us,
                    min(1.0, max(0.0, event.score)),
                    None if event.label is None else str(event.label),
                    event.anomaly,
                )
            )
        elif isinstance(event, CoreReverted):
            self.telemetry.add(EventRecord(now_ms, "revert", core_id, None, 1, event.reason))
            self._report_dirty = True
        else:
            self.logs.append(f"{core_id}: {event}")

    def record_event(self, kind: str, core: str | None, code: int, reason: str = "") -> None:
        release = self._release.release_id if self._release else None
        self.telemetry.add(
            EventRecord(int(self._clock() * 1000), kind, core, release, code, reason)
        )

    def _health(self, now: float) -> HealthRecord:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        online = sum(1 for c in self.cores.values() if c.phase.value != "disconnected")
        link = getattr(self.hub, "link_errors", 0)
        return HealthRecord(
            int(now * 1000),
            rss,
            int(now - self._started),
            int(link),
            self.telemetry.dropped,
            online,
        )

    def _flush_telemetry(self) -> bool:
        """Send a few batches; True when more are waiting (the loop comes back soon)."""
        if not self.hub.connected.is_set():
            return False
        for _ in range(4):
            batch = self.telemetry.batch(self.installed().release_id)
            if batch is None:
                return False
            try:
                self.hub.send_telemetry(*encode_message(batch))
            except Exception as exc:
                self.logs.append(f"telemetry not sent: {exc}")
                return False
            self.telemetry.acknowledge(batch)
            self._persist()
        return True

    # -- reporting ---------------------------------------------------------------------------------

    def reported(self) -> ReportedAgent:
        run = self.workflow.run
        failed = self.last_result is not None and self.last_result.code != 0
        state = (
            AgentState.DEPLOYING
            if run is not None
            else AgentState.FAILED
            if failed
            else AgentState.IDLE
        )
        desired = self.desired
        return ReportedAgent(
            agent_version=self.config.agent_version,
            profile=self.config.profile,
            hardware_id=self.config.hardware_id,
            state=state,
            workflow_action=desired.action if desired else None,
            workflow_id=desired.workflow_id if desired else None,
            installed_release=self.installed().release_id,
            last_result=self.last_result,
            cores=ops.core_reports(self),
            phase=self.phase,
            phase_workflow_id=self.phase_workflow_id,
            phase_reason=self.phase_reason,
        )

    def _report(self) -> None:
        self._send_patch(agent_patch(self.reported()))

    def _send_patch(self, body: bytes) -> None:
        if not self.hub.connected.is_set():
            self._report_dirty = True
            return
        try:
            self.hub.patch_reported(body)
            self._report_dirty = False
        except Exception as exc:
            self.logs.append(f"reported patch failed: {exc}")
            self._report_dirty = True

    def mark_dirty(self) -> None:
        self._report_dirty = True
