"""The update workflow on the agent: one state machine, written as a table, with no I/O.

Events come in (a deploy request, the outcome of a metadata check, a core's answer); commands go
out (check metadata, stage a target into a core, activate, confirm, revert, record, report). A
thin driver (`device_agent.agent`, `device_agent.commands`) executes the commands and feeds
the outcomes back.

    IDLE        deploy          -> CHECKING
    CHECKING    nothing new     -> IDLE            a release          -> STAGING
    STAGING     all staged      -> ACTIVATING      failure or cancel  -> ABORTING -> IDLE
    ACTIVATING  all passed      -> CONFIRMING      a core failed      -> REVERTING -> IDLE
    CONFIRMING  all confirmed   -> RECORDING       a core failed      -> REVERTING -> IDLE
    RECORDING   recorded        -> IDLE (installed)  failed           -> REVERTING -> IDLE

Invariants:
- One command is outstanding at a time: the next core's command goes out only when the last one
  answered, so a failure on one core is never followed by a stale step queued for another (the
  first failure of an activation or confirmation stops the steps and reverts every core).
- A release is atomic across cores: nothing is activated before every target is staged, nothing
  is confirmed before every core activated and passed its self-test, and if any step fails on
  any core after activation began (activate, self-test, confirm, record) every core is reverted.
- Targets that a profile may not install (firmware on `mt3620`) are refused before any transfer.
- `revert` means "put this core back on the model it ran before the release": the driver reverts
  only a core that runs the plan's model, so reverting a core whose activation failed (it went
  back by itself) changes nothing.
- An event that the current state does not expect raises `WorkflowError` naming both; the
  answer of a step that a failure overtook (a late `confirmed` while reverting) is ignored.
- Every report names the run's `WorkflowPhase` (downloading, staged, activating, trial,
  confirmed, reverted, failed). A cancel is honoured up to recording: before activation it
  aborts (undoing any firmware switch), from activation on it reverts every core; the run
  then reports `reverted` with reason `cancelled`. The answer under way finishes first (one
  command at a time), so a cancel never leaves a core half-switched. Once recording began the
  release is installed and the run reports `confirmed`: the service rolls the device back.
- `restore()` rebuilds the machine after a crash from its persisted snapshot: a crash before
  activation starts the update over, during activation reverts every core, during confirmation
  confirms every core (or reverts all if one cannot be confirmed): never a half-installed release.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from device_agent.protocol import WorkflowPhase

__all__ = [
    "Command",
    "Event",
    "Phase",
    "StagePlan",
    "UpdateWorkflow",
    "WorkflowError",
]


class WorkflowError(RuntimeError):
    pass


class Phase(StrEnum):
    IDLE = "idle"
    CHECKING = "checking"
    STAGING = "staging"
    ABORTING = "aborting"
    ACTIVATING = "activating"
    CONFIRMING = "confirming"
    REVERTING = "reverting"
    RECORDING = "recording"


@dataclass(frozen=True)
class StagePlan:
    """One target to put on one core: what the verified metadata says about it."""

    core: str
    kind: str
    path: str
    length: int
    sha256: str


@dataclass(frozen=True)
class Event:
    kind: str  # deploy, cancel, checked, staged, stage_failed, activated, activate_failed,
    #            confirmed, reverted, aborted
    workflow_id: str | None = None
    release_id: str | None = None
    plans: tuple[StagePlan, ...] = ()
    core: str | None = None
    reason: str = ""
    detail: str = ""
    retry: bool = False  # the service asked to run the same workflow id again


@dataclass(frozen=True)
class Command:
    kind: str  # check, stage, activate, confirm, revert, abort, record, report
    core: str | None = None
    plan: StagePlan | None = None
    state: str = ""  # for report: idle | deploying | failed
    release_id: str | None = None
    reason: str = ""
    detail: str = ""
    step: str = ""
    phase: WorkflowPhase | None = None  # for report: the run's phase
    workflow_id: str | None = None  # for report: the run the phase is about


@dataclass
class _Run:
    workflow_id: str
    release_id: str | None = None
    plans: tuple[StagePlan, ...] = ()
    staged: int = 0
    activated: frozenset[str] = frozenset()
    answered: frozenset[str] = frozenset()
    confirmed: frozenset[str] = frozenset()
    failure: tuple[str, str, str] | None = None  # (reason, detail, step)
    cancel: bool = False

    @property
    def cores(self) -> frozenset[str]:
        return frozenset(p.core for p in self.plans)


# Answers of a step that a failure overtook; while reverting they change nothing (the revert
# covers that core whatever it answered).
_LATE_ANSWERS = ("activated", "activate_failed", "confirmed", "confirm_failed", "recorded")


def _ignored(event: Event) -> list[Command]:
    return []


def _report(
    state: str,
    run: _Run | None,
    phase: WorkflowPhase,
    *,
    reason: str = "",
    detail: str = "",
    step: str = "",
) -> Command:
    return Command(
        "report",
        state=state,
        release_id=run.release_id if run else None,
        reason=reason,
        detail=detail,
        step=step,
        phase=phase,
        workflow_id=run.workflow_id if run else None,
    )


_P = WorkflowPhase


@dataclass
class UpdateWorkflow:
    """The machine. `allowed_kinds` comes from the device profile (e.g. only models on mt3620)."""

    allowed_kinds: frozenset[str] = frozenset({"model", "firmware"})
    phase: Phase = Phase.IDLE
    run: _Run | None = None
    last_completed: str | None = None
    _table: dict[tuple[Phase, str], Callable[[Event], list[Command]]] = field(
        init=False, repr=False
    )

    def __post_init__(self) -> None:
        self._table = {
            (Phase.IDLE, "deploy"): self._deploy,
            (Phase.IDLE, "cancel"): lambda e: [],
            (Phase.CHECKING, "checked"): self._checked,
            (Phase.CHECKING, "check_failed"): self._check_failed,
            (Phase.CHECKING, "cancel"): self._cancel_before_transfer,
            (Phase.STAGING, "staged"): self._staged,
            (Phase.STAGING, "stage_failed"): self._stage_failed,
            (Phase.STAGING, "cancel"): self._cancel_later,
            (Phase.ACTIVATING, "cancel"): self._cancel_later,
            (Phase.CONFIRMING, "cancel"): self._cancel_later,
            (Phase.ABORTING, "aborted"): self._aborted,
            (Phase.ACTIVATING, "activated"): self._activated,
            (Phase.ACTIVATING, "activate_failed"): self._activate_failed,
            (Phase.CONFIRMING, "confirmed"): self._confirmed,
            (Phase.CONFIRMING, "confirm_failed"): self._confirm_failed,
            (Phase.RECORDING, "recorded"): self._recorded,
            (Phase.RECORDING, "record_failed"): self._record_failed,
            (Phase.REVERTING, "reverted"): self._reverted,
            (Phase.ABORTING, "stage_failed"): _ignored,
            (Phase.ABORTING, "staged"): _ignored,
            **{(Phase.REVERTING, late): _ignored for late in _LATE_ANSWERS},
        }

    # -- the driver's interface ------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        action = self._table.get((self.phase, event.kind))
        if action is None:
            if event.kind == "deploy" and self.run and event.workflow_id == self.run.workflow_id:
                return []  # the same workflow again (twin re-delivered): already running
            if event.kind == "cancel":
                return []  # past the point of no return; confirm or revert finishes the run
            raise WorkflowError(f"event {event.kind!r} is not expected in state {self.phase.value}")
        return action(event)

    def snapshot(self) -> dict[str, Any]:
        """What must survive a crash (the driver persists it atomically after every event)."""
        run = self.run
        return {
            "phase": self.phase.value,
            "lastCompleted": self.last_completed,
            "run": None
            if run is None
            else {
                "workflowId": run.workflow_id,
                "releaseId": run.release_id,
                "plans": [vars(p) for p in run.plans],
                "staged": run.staged,
                "activated": sorted(run.activated),
                "failure": run.failure,
            },
        }

    def restore(self, snapshot: dict[str, Any]) -> list[Command]:
        """Resume after a crash; returns the commands that finish or undo what was under way."""
        self.last_completed = snapshot.get("lastCompleted")
        raw = snapshot.get("run")
        phase = Phase(snapshot.get("phase", "idle"))
        if raw is None or phase is Phase.IDLE:
            self.phase, self.run = Phase.IDLE, None
            return []
        failure = raw.get("failure")
        self.run = _Run(
            workflow_id=raw["workflowId"],
            release_id=raw["releaseId"],
            plans=tuple(StagePlan(**p) for p in raw["plans"]),
            staged=raw["staged"],
            activated=frozenset(raw["activated"]),
            failure=tuple(failure) if failure else None,
        )
        if phase in (Phase.CHECKING, Phase.STAGING):
            # Nothing was activated (a staged slot is never run unless activated): start over.
            self.phase = Phase.CHECKING
            self.run = _Run(self.run.workflow_id)
            return [
                _report("deploying", self.run, _P.DOWNLOADING, step="resume"),
                Command("check"),
            ]
        if phase is Phase.RECORDING:
            # Every core confirmed; what is left is to write down what they run.
            self.phase = Phase.RECORDING
            return [Command("record", release_id=self.run.release_id)]
        if phase is Phase.ABORTING:
            return self._end_aborted(self.run.failure or ("interrupted", "", "stage"))
        self.run.answered = frozenset()
        if phase is Phase.CONFIRMING:
            # Every core passed its self-test: finish forwards; a core that reverted on its own
            # answers confirm_failed and then every core is reverted.
            self.phase = Phase.CONFIRMING
            return self._each("confirm")
        # Activation was under way: put every core back on its old model.
        self.phase = Phase.REVERTING
        self.run.failure = self.run.failure or (
            "interrupted",
            "agent restarted during activation",
            "activate",
        )
        return self._each("revert")

    # -- transitions -----------------------------------------------------------------------------

    def _deploy(self, event: Event) -> list[Command]:
        if event.workflow_id is None:
            raise WorkflowError("a deploy event needs a workflow id")
        if event.workflow_id == self.last_completed and not event.retry:
            return []  # a duplicate deployment, as Azure Device Update treats it
        self.run = _Run(event.workflow_id)
        self.phase = Phase.CHECKING
        return [_report("deploying", self.run, _P.DOWNLOADING, step="check"), Command("check")]

    def _checked(self, event: Event) -> list[Command]:
        assert self.run is not None
        if not event.plans:
            return self._finish("idle", _P.CONFIRMED, step="check", detail="up to date")
        refused = [p for p in event.plans if p.kind not in self.allowed_kinds]
        self.run.release_id, self.run.plans = event.release_id, event.plans
        if refused:
            return self._finish(
                "failed",
                _P.FAILED,
                reason="kind-not-allowed",
                step="check",
                detail=f"{refused[0].path}: this profile does not install "
                f"{refused[0].kind} targets",
            )
        self.phase = Phase.STAGING
        return [Command("stage", core=event.plans[0].core, plan=event.plans[0])]

    def _check_failed(self, event: Event) -> list[Command]:
        return self._finish(
            "failed", _P.FAILED, reason=event.reason, detail=event.detail, step="check"
        )

    def _cancel_before_transfer(self, event: Event) -> list[Command]:
        return self._finish("idle", _P.REVERTED, reason="cancelled", step="check")

    def _staged(self, event: Event) -> list[Command]:
        run = self.run
        assert run is not None
        expected = run.plans[run.staged]
        if event.core != expected.core:
            raise WorkflowError(f"staged {event.core} while {expected.core} was being staged")
        run.staged += 1
        if run.cancel:
            return self._abort(("cancelled", "", "stage"))
        if run.staged < len(run.plans):
            plan = run.plans[run.staged]
            return [Command("stage", core=plan.core, plan=plan)]
        self.phase = Phase.ACTIVATING
        return [
            _report("deploying", run, _P.STAGED, step="stage"),
            _report("deploying", run, _P.ACTIVATING, step="activate"),
            *self._each("activate"),
        ]

    def _stage_failed(self, event: Event) -> list[Command]:
        assert self.run is not None
        reason = "cancelled" if self.run.cancel else event.reason
        return self._abort((reason, event.detail, "stage"))

    def _cancel_later(self, event: Event) -> list[Command]:
        assert self.run is not None
        self.run.cancel = True  # the step under way answers first; that answer turns back
        return []

    def _abort(self, failure: tuple[str, str, str]) -> list[Command]:
        assert self.run is not None
        self.run.failure = failure
        self.run.answered = frozenset()
        self.phase = Phase.ABORTING
        return self._each("abort")

    def _aborted(self, event: Event) -> list[Command]:
        run = self.run
        assert run is not None
        run.answered |= {event.core or ""}
        if run.answered < run.cores:
            return self._each("abort")
        return self._end_aborted(run.failure or ("aborted", "", "stage"))

    def _end_aborted(self, failure: tuple[str, str, str]) -> list[Command]:
        """A run undone before activation: `reverted` when cancelled, else `failed`."""
        reason, detail, step = failure
        if reason == "cancelled":
            return self._finish("idle", _P.REVERTED, reason=reason, detail=detail, step=step)
        return self._finish("failed", _P.FAILED, reason=reason, detail=detail, step=step)

    def _activated(self, event: Event) -> list[Command]:
        run = self.run
        assert run is not None
        run.activated |= {event.core or ""}
        run.answered |= {event.core or ""}
        if run.cancel:
            return self._revert_all(("cancelled", "", "activate"))
        if run.answered < run.cores:
            return self._each("activate")
        run.answered = frozenset()
        self.phase = Phase.CONFIRMING
        return [_report("deploying", run, _P.TRIAL, step="confirm"), *self._each("confirm")]

    def _activate_failed(self, event: Event) -> list[Command]:
        # The cores not yet activated are not activated: every core goes back (a revert of a
        # core that never ran the new model changes nothing).
        return self._revert_all((event.reason, event.detail, "activate"))

    def _revert_all(self, failure: tuple[str, str, str]) -> list[Command]:
        run = self.run
        assert run is not None
        run.failure = run.failure or failure
        run.answered = frozenset()
        self.phase = Phase.REVERTING
        return self._each("revert")

    def _each(self, kind: str) -> list[Command]:
        """The command for the next core that has not answered this step, carrying the plan
        that core is being moved to (its model); cores go in name order, one at a time."""
        run = self.run
        assert run is not None
        plans = {p.core: p for p in sorted(run.plans, key=lambda p: p.kind == "model")}
        waiting = sorted(run.cores - run.answered)
        return [Command(kind, core=waiting[0], plan=plans[waiting[0]])] if waiting else []

    def _confirmed(self, event: Event) -> list[Command]:
        run = self.run
        assert run is not None
        run.confirmed |= {event.core or ""}
        run.answered |= {event.core or ""}
        if run.cancel:
            return self._revert_all(("cancelled", "", "confirm"))
        if run.confirmed < run.cores:
            return self._each("confirm")
        self.phase = Phase.RECORDING
        return [Command("record", release_id=run.release_id)]

    def _recorded(self, event: Event) -> list[Command]:
        return self._finish("idle", _P.CONFIRMED, step="confirm")

    def _record_failed(self, event: Event) -> list[Command]:
        return self._revert_all((event.reason, event.detail, "record"))

    def _confirm_failed(self, event: Event) -> list[Command]:
        return self._revert_all((event.reason, event.detail, "confirm"))

    def _reverted(self, event: Event) -> list[Command]:
        run = self.run
        assert run is not None
        run.answered |= {event.core or ""}
        if run.answered < run.cores:
            return self._each("revert")
        reason, detail, step = run.failure or ("reverted", "", "activate")
        detail = f"every core reverted to its previous release; {detail}".rstrip("; ")
        state = "idle" if reason == "cancelled" else "failed"
        return self._finish(state, _P.REVERTED, reason=reason, detail=detail, step=step)

    def _finish(
        self,
        state: str,
        phase: WorkflowPhase,
        *,
        reason: str = "",
        detail: str = "",
        step: str = "",
    ) -> list[Command]:
        run = self.run
        report = _report(state, run, phase, reason=reason, detail=detail, step=step)
        self.last_completed = run.workflow_id if run else self.last_completed
        self.phase, self.run = Phase.IDLE, None
        return [report]
