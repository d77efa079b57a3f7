"""What the agent does for each workflow command and each direct method.

Each `do_<command>` performs one step against the trust chain or a core and returns the event
that reports its outcome to the workflow. Every failure becomes an event with a reason code;
nothing here decides what happens next (the workflow does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_agent.intercore import CoreLinkError, CoreRefusedError, ModelTarget
from device_agent.protocol import CoreReport, CoreState, ResultReport
from device_agent.target_source import SourceError, resumable
from device_agent.workflow import Command, Event, StagePlan
from signing import FetchError, SigningError, UpdateRejected
from signing.device import VerifiedTarget
from signing.stream import VerifiedDigest

if TYPE_CHECKING:
    from device_agent.agent import Agent

__all__ = ["core_reports", "handle", "verified_chunks"]


class Cancelled(SourceError):
    """The service cancelled the workflow while its bytes streamed into a core."""

    def __init__(self) -> None:
        super().__init__("the workflow was cancelled", transient=False)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, Cancelled):
        return "cancelled"
    if isinstance(exc, UpdateRejected):
        return exc.reason
    if isinstance(exc, CoreRefusedError):
        return exc.reason.name.lower().replace("_", "-")
    if isinstance(exc, SourceError):
        return "download"
    if isinstance(exc, FetchError):
        return "fetch"
    if isinstance(exc, CoreLinkError):
        return "core-unavailable"
    return "error"


def _target(agent: Agent, plan: StagePlan) -> VerifiedTarget:
    release = agent._release
    if release is None:
        raise SigningError("no verified release is held (restarted mid-update?)")
    for target in release.targets:
        if target.core == plan.core and target.path == plan.path:
            return target
    raise SigningError(f"{plan.path} for {plan.core} is not in the verified release")


def verified_chunks(agent: Agent, target: VerifiedTarget) -> Iterator[bytes]:
    """Target bytes as they arrive, each checked against the signed length; the hash at the end.

    Raising here (too long, wrong hash, source gone) makes the core discard the partial slot.
    """
    verifier = target.verifier()
    for chunk in resumable(agent.source(), target.url_path(), target.length):
        if agent.cancel_requested():
            raise Cancelled()  # checked per chunk: the core discards the partial slot
        verifier.update(chunk)
        yield chunk
    agent._verdicts[target.path] = verifier.finish()


def do_check(agent: Agent, command: Command) -> Event:
    try:
        release = agent.verifier().check()
    except (SigningError, RuntimeError) as exc:
        return Event("check_failed", reason=_reason(exc), detail=str(exc)[:300])
    agent._release, agent._slots, agent._verdicts = release, {}, {}
    if release is None:
        return Event("checked")
    plans = tuple(StagePlan(t.core, t.kind, t.path, t.length, t.sha256) for t in release.targets)
    return Event("checked", release_id=release.release_id, plans=plans)


def _stage_firmware(agent: Agent, target: VerifiedTarget) -> None:
    """Write the verified image beside the agent's state, then boot the core into it.

    Firmware goes first in a release, so the models that follow are staged under the firmware
    they need. The image the core ran before is remembered (persisted) until the run ends, so an
    abort or a revert, even after a crash, boots the core back into it.
    """
    host = agent.host
    if host is None:
        raise SigningError("this agent cannot boot core firmware")
    folder = agent.config.state_dir / "firmware"
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / f"{target.sha256}.json"
    partial = image.with_suffix(".partial")
    with open(partial, "wb") as handle:
        for chunk in verified_chunks(agent, target):
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, image)
    if target.core not in agent.previous_firmware:
        agent.previous_firmware[target.core] = str(host.firmware_path(target.core))
        agent.persist()
    status = agent.restart_core(target.core, image).connect()
    wanted = ".".join(map(str, target.fields.version))
    if status.firmware_version != wanted:
        raise SigningError(f"{target.core} booted firmware {status.firmware_version}, not {wanted}")


def _restore_firmware(agent: Agent, core: str) -> None:
    previous = agent.previous_firmware.get(core)
    if previous is None or agent.host is None:
        return
    if agent.host.firmware_path(core) != Path(previous):
        agent.restart_core(core, Path(previous)).connect()
        agent.record_event("revert", core, 0, "firmware restored")


def do_stage(agent: Agent, command: Command) -> Event:
    plan = command.plan
    assert plan is not None and command.core is not None
    if plan.kind == "firmware":
        try:
            _stage_firmware(agent, _target(agent, plan))
        except (SigningError, SourceError, CoreLinkError, OSError) as exc:
            agent.record_event("reject", plan.core, 1, _reason(exc))
            return Event(
                "stage_failed",
                core=plan.core,
                reason="firmware-boot" if isinstance(exc, CoreLinkError) else _reason(exc),
                detail=str(exc)[:300],
            )
        return Event("staged", core=plan.core)
    try:
        target = _target(agent, plan)
        model = ModelTarget.from_custom(
            target.fields.raw, length=target.length, sha256=bytes.fromhex(target.sha256)
        )
        slot = agent.cores[plan.core].stage(model, verified_chunks(agent, target))
    except (SigningError, SourceError, CoreLinkError) as exc:
        agent.record_event("reject", plan.core, 1, _reason(exc))
        return Event("stage_failed", core=plan.core, reason=_reason(exc), detail=str(exc)[:300])
    agent._slots[plan.core] = slot
    return Event("staged", core=plan.core)


def do_abort(agent: Agent, command: Command) -> Event:
    # A staged slot that was never activated is never run; only a firmware switch is undone.
    assert command.core is not None
    try:
        _restore_firmware(agent, command.core)
    except CoreLinkError as exc:
        agent.logs.append(f"{command.core}: firmware not restored: {exc}")
    return Event("aborted", core=command.core)


def do_activate(agent: Agent, command: Command) -> Event:
    core = command.core
    assert core is not None
    if core not in agent._slots:  # a firmware-only change: the core booted it while staging
        return Event("activated", core=core)
    try:
        report = agent.cores[core].activate(agent._slots[core])
    except (CoreLinkError, KeyError) as exc:
        agent.record_event("selftest", core, 1, _reason(exc))
        return Event("activate_failed", core=core, reason=_reason(exc), detail=str(exc)[:300])
    agent.record_event("activate", core, 0, report.summary)
    agent.liveness.activated(core, int(agent._clock() * 1000))
    return Event("activated", core=core)


def _runs_plan(agent: Agent, core: str, plan: StagePlan | None) -> tuple[bool, bool]:
    """(does the core run the plan's model, is it on trial)."""
    status = agent.cores[core].status()
    running = status.running
    runs = plan is not None and running is not None and running.sha256 == plan.sha256
    return runs, status.trial_slot is not None


def do_confirm(agent: Agent, command: Command) -> Event:
    core = command.core
    assert core is not None
    plan = command.plan
    if plan is not None and plan.kind == "firmware":  # a firmware-only change on this core
        booted = agent.host.firmware_path(core).stem if agent.host else None
        if booted != plan.sha256:
            return Event(
                "confirm_failed",
                core=core,
                reason="firmware-not-running",
                detail=f"{core} does not run the release's firmware",
            )
        agent.record_event("confirm", core, 0)
        return Event("confirmed", core=core)
    try:
        runs, trial = _runs_plan(agent, core, plan)
        if not runs:
            return Event(
                "confirm_failed",
                core=core,
                reason="trial-ended",
                detail="the core no longer runs the new model",
            )
        if trial:
            status = agent.cores[core].status()
            assert status.trial_slot is not None
            agent.cores[core].confirm(status.trial_slot)
    except CoreLinkError as exc:
        return Event("confirm_failed", core=core, reason=_reason(exc), detail=str(exc)[:300])
    agent.record_event("confirm", core, 0)
    return Event("confirmed", core=core)


def do_revert(agent: Agent, command: Command) -> Event:
    core = command.core
    assert core is not None
    try:
        runs, _trial = _runs_plan(agent, core, command.plan)
        if runs:
            agent.cores[core].revert()
            agent.record_event("revert", core, 0, "release failed on another core")
        _restore_firmware(agent, core)
    except CoreLinkError as exc:
        agent.logs.append(f"{core}: revert failed: {exc}")  # the core's deadline reverts it
    return Event("reverted", core=core)


def do_record(agent: Agent, command: Command) -> Event:
    verifier = agent.verifier()
    release = agent._release or verifier.check()  # after a restart the release is re-verified
    if release is None:
        return Event("recorded")  # recorded before the restart: nothing new to write
    verdicts = dict(agent._verdicts)
    for target in release.targets:
        # After a restart mid-confirmation the stream's verdict is gone; every core checked the
        # sha256 of its slot before accepting END, and do_confirm saw it run exactly this hash.
        verdicts.setdefault(target.path, VerifiedDigest(target.path, target.length, target.sha256))
    verifier.commit_install(release, verdicts)
    agent.record_event("install", None, 0, release.release_id)
    return Event("recorded")


def do_report(agent: Agent, command: Command) -> None:
    if command.phase is not None:
        agent.phase, agent.phase_workflow_id = command.phase, command.workflow_id
        agent.phase_reason = command.reason
    if command.state in ("idle", "failed"):
        agent.previous_firmware.clear()  # the run is over: its firmware choice is final
        agent.persist()
        agent.last_result = ResultReport(
            0 if command.state == "idle" else 1, command.reason, command.detail, command.step
        )
    agent.mark_dirty()


def core_reports(agent: Agent) -> dict[str, CoreReport]:
    reports = {}
    for core_id, client in agent.cores.items():
        try:
            status = client.status()
        except CoreLinkError:
            reports[core_id] = CoreReport("unknown", CoreState.OFFLINE)
            continue
        running = status.running
        live = agent.liveness.core(core_id)
        reports[core_id] = CoreReport(
            status.firmware_version,
            _core_state(status.state, status.trial_slot is not None),
            None if running is None else "AB"[running.slot % 2],
            running.model_id if running else None,
            running.version if running else None,
            running.sha256 if running else None,
            None if status.last_reason in ("OK", "NONE") else ResultReport(1, status.last_reason),
            live.activated_at_ms,
            live.heartbeat_at_ms,
            live.inferences,
        )
    return reports


def _core_state(state: str, trial: bool) -> CoreState:
    """The reported state of a core's own state name; one the contract does not know is a
    fault (the service must not read an unknown state as healthy)."""
    if trial or state == "trial":
        return CoreState.SELFTEST
    try:
        return CoreState(state)
    except ValueError:
        return CoreState.FAULT


# -- direct methods -----------------------------------------------------------------------------


def _reply(status: int, body: Any) -> tuple[int, bytes]:
    return status, json.dumps(body, sort_keys=True).encode()


def handle(agent: Agent, name: str, payload: bytes) -> tuple[int, bytes]:
    try:
        params = json.loads(payload) if payload.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _reply(400, {"error": "the payload is not JSON"})
    if not isinstance(params, dict):
        params = {}
    if name == "get-status":
        return _reply(200, agent.reported().to_json())
    if name == "collect-diagnostics":
        links = {}
        for core_id, client in agent.cores.items():
            links[core_id] = client.link_stats
        return _reply(
            200,
            {
                "logs": list(agent.logs)[-50:],
                "links": links,
                "telemetry": {
                    "buffered": len(agent.telemetry),
                    "dropped": agent.telemetry.dropped_total,
                    "nextSeq": agent.telemetry.next_seq,
                },
            },
        )
    if name not in ("reboot-core", "rollback"):
        return _reply(404, {"error": f"no method {name!r}"})
    if agent.workflow.run is not None:
        return _reply(409, {"error": "an update is in progress"})
    cores = [params["core"]] if "core" in params else sorted(agent.cores)
    if unknown := [c for c in cores if c not in agent.cores]:
        return _reply(400, {"error": f"no core {unknown[0]!r}"})
    results = {}
    for core in cores:
        try:
            if name == "reboot-core":
                if agent.host is None:
                    return _reply(501, {"error": "this agent cannot restart cores"})
                results[core] = agent.restart_core(core).connect().state
            else:
                slot = agent.cores[core].revert()
                agent.record_event("revert", core, 0, "operator rollback")
                results[core] = "no model" if slot is None else f"slot {slot}"
        except CoreLinkError as exc:
            return _reply(500, {"error": f"{core}: {exc}"})
    if name == "rollback":
        agent.forget_installed_release()  # what runs is no longer the recorded release
    agent.mark_dirty()
    return _reply(200, {"cores": results})
