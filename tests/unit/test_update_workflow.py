"""The agent's update workflow: a pure table; every path through it, and crash recovery."""

from __future__ import annotations

import pytest

from device_agent.protocol import WorkflowPhase
from device_agent.workflow import Command, Event, Phase, StagePlan, UpdateWorkflow, WorkflowError

M0 = StagePlan("m4-0", "model", "models/kws/kws-v2.0.0.tflite", 100, "a" * 64)
M1 = StagePlan("m4-1", "model", "models/vib/vib-v2.0.0.tflite", 200, "b" * 64)
FW = StagePlan("m4-0", "firmware", "firmware/m4/fw-v1.1.0.bin", 300, "c" * 64)


def kinds(commands: list[Command]) -> list[str]:
    return [f"{c.kind}:{c.core}" if c.core else c.kind for c in commands]


def started(plans: tuple[StagePlan, ...] = (M0, M1), **options: object) -> UpdateWorkflow:
    machine = UpdateWorkflow(**options)  # type: ignore[arg-type]
    assert kinds(machine.handle(Event("deploy", workflow_id="wf-1"))) == ["report", "check"]
    machine.handle(Event("checked", release_id="r2", plans=plans))
    return machine


def test_happy_path_stages_each_core_then_activates_confirms_and_records() -> None:
    machine = UpdateWorkflow()
    machine.handle(Event("deploy", workflow_id="wf-1"))
    assert kinds(machine.handle(Event("checked", release_id="r2", plans=(M0, M1)))) == [
        "stage:m4-0"
    ]
    assert kinds(machine.handle(Event("staged", core="m4-0"))) == ["stage:m4-1"]
    staged = machine.handle(Event("staged", core="m4-1"))
    assert kinds(staged) == ["report", "report", "activate:m4-0"]
    assert [c.phase for c in staged[:2]] == [WorkflowPhase.STAGED, WorkflowPhase.ACTIVATING]
    assert kinds(machine.handle(Event("activated", core="m4-0"))) == ["activate:m4-1"]
    trial = machine.handle(Event("activated", core="m4-1"))
    assert kinds(trial) == ["report", "confirm:m4-0"]
    assert (trial[0].phase, trial[0].workflow_id) == (WorkflowPhase.TRIAL, "wf-1")
    assert kinds(machine.handle(Event("confirmed", core="m4-0"))) == ["confirm:m4-1"]
    assert kinds(machine.handle(Event("confirmed", core="m4-1"))) == ["record"]
    revived = UpdateWorkflow()
    assert kinds(revived.restore(machine.snapshot())) == ["record"]  # a crash before recording
    final = machine.handle(Event("recorded"))
    assert (final[0].kind, final[0].state, final[0].release_id) == ("report", "idle", "r2")
    assert final[0].phase is WorkflowPhase.CONFIRMED
    assert machine.phase is Phase.IDLE and machine.last_completed == "wf-1"


def test_one_core_failing_its_self_test_reverts_both() -> None:
    machine = started()
    machine.handle(Event("staged", core="m4-0"))
    machine.handle(Event("staged", core="m4-1"))
    machine.handle(Event("activated", core="m4-0"))
    revert = machine.handle(Event("activate_failed", core="m4-1", reason="selftest-failed"))
    assert kinds(revert) == ["revert:m4-0"]
    assert kinds(machine.handle(Event("reverted", core="m4-0"))) == ["revert:m4-1"]
    [report] = machine.handle(Event("reverted", core="m4-1"))
    assert (report.state, report.reason, report.step) == ("failed", "selftest-failed", "activate")
    assert report.detail.startswith("every core reverted")


def test_the_first_failed_activation_stops_the_others_and_reverts_every_core() -> None:
    machine = started()
    machine.handle(Event("staged", core="m4-0"))
    machine.handle(Event("staged", core="m4-1"))
    revert = machine.handle(Event("activate_failed", core="m4-0", reason="selftest-failed"))
    assert kinds(revert) == ["revert:m4-0"]  # m4-1 is never activated
    assert kinds(machine.handle(Event("reverted", core="m4-0"))) == ["revert:m4-1"]
    [report] = machine.handle(Event("reverted", core="m4-1"))
    assert (report.state, report.step) == ("failed", "activate")


def test_stage_failure_aborts_every_core_and_activates_nothing() -> None:
    machine = started()
    machine.handle(Event("staged", core="m4-0"))
    abort = machine.handle(Event("stage_failed", core="m4-1", reason="target-hash"))
    assert kinds(abort) == ["abort:m4-0"]
    assert kinds(machine.handle(Event("aborted", core="m4-0"))) == ["abort:m4-1"]
    [report] = machine.handle(Event("aborted", core="m4-1"))
    assert (report.state, report.reason) == ("failed", "target-hash")


def test_firmware_is_refused_before_transfer_on_a_models_only_profile() -> None:
    machine = UpdateWorkflow(allowed_kinds=frozenset({"model"}))
    machine.handle(Event("deploy", workflow_id="wf-1"))
    [report] = machine.handle(Event("checked", release_id="r3", plans=(FW, M0)))
    assert (report.state, report.reason) == ("failed", "kind-not-allowed")
    assert machine.phase is Phase.IDLE


def test_nothing_new_returns_to_idle_and_duplicate_workflow_is_ignored() -> None:
    machine = UpdateWorkflow()
    machine.handle(Event("deploy", workflow_id="wf-1"))
    [report] = machine.handle(Event("checked", plans=()))
    assert report.state == "idle"
    assert machine.handle(Event("deploy", workflow_id="wf-1")) == []
    assert kinds(machine.handle(Event("deploy", workflow_id="wf-1", retry=True))) == [
        "report",
        "check",
    ]


def test_cancel_during_staging_finishes_the_transfer_then_aborts() -> None:
    machine = started()
    assert machine.handle(Event("cancel")) == []
    abort = machine.handle(Event("staged", core="m4-0"))
    assert kinds(abort) == ["abort:m4-0"]
    assert kinds(machine.handle(Event("aborted", core="m4-0"))) == ["abort:m4-1"]
    [report] = machine.handle(Event("aborted", core="m4-1"))
    assert (report.state, report.reason) == ("idle", "cancelled")
    assert report.phase is WorkflowPhase.REVERTED


# (phase the cancel arrives in, the events before it, the answer under way, what undoes it)
_CANCEL_AT = [
    ("downloading", [], Event("staged", core="m4-0"), "abort"),
    ("downloading-stream-stopped", [], Event("stage_failed", core="m4-0", reason="x"), "abort"),
    ("staged", [Event("staged", core="m4-0")], Event("staged", core="m4-1"), "abort"),
    (
        "activating",
        [Event("staged", core="m4-0"), Event("staged", core="m4-1")],
        Event("activated", core="m4-0"),
        "revert",
    ),
    (
        "activating-failed-answer",
        [Event("staged", core="m4-0"), Event("staged", core="m4-1")],
        Event("activate_failed", core="m4-0", reason="selftest-failed"),
        "revert",
    ),
    (
        "trial",
        [
            Event("staged", core="m4-0"),
            Event("staged", core="m4-1"),
            Event("activated", core="m4-0"),
            Event("activated", core="m4-1"),
        ],
        Event("confirmed", core="m4-0"),
        "revert",
    ),
]


@pytest.mark.parametrize(
    ("before", "answer", "undo"),
    [row[1:] for row in _CANCEL_AT],
    ids=[row[0] for row in _CANCEL_AT],
)
def test_a_cancel_at_each_phase_undoes_every_core_and_reports_reverted(
    before: list[Event], answer: Event, undo: str
) -> None:
    machine = started()
    for event in before:
        machine.handle(event)
    assert machine.handle(Event("cancel")) == []  # the step under way answers first
    commands = machine.handle(answer)
    done = {"abort": "aborted", "revert": "reverted"}[undo]
    for core in ("m4-0", "m4-1"):
        assert kinds(commands) == [f"{undo}:{core}"]
        commands = machine.handle(Event(done, core=core))
    [report] = commands
    # A failure that overtook the cancel keeps its own reason; either way every core is back.
    reason = answer.reason if answer.kind == "activate_failed" else "cancelled"
    assert (report.kind, report.phase, report.reason) == ("report", WorkflowPhase.REVERTED, reason)
    assert report.workflow_id == "wf-1" and machine.phase is Phase.IDLE


def test_a_cancel_while_checking_reports_reverted_at_once() -> None:
    machine = UpdateWorkflow()
    machine.handle(Event("deploy", workflow_id="wf-1"))
    [report] = machine.handle(Event("cancel"))
    assert (report.phase, report.reason) == (WorkflowPhase.REVERTED, "cancelled")


def test_a_cancel_while_recording_is_too_late_and_the_run_confirms() -> None:
    machine = started((M0,))
    machine.handle(Event("staged", core="m4-0"))
    machine.handle(Event("activated", core="m4-0"))
    assert kinds(machine.handle(Event("confirmed", core="m4-0"))) == ["record"]
    assert machine.handle(Event("cancel")) == []
    [report] = machine.handle(Event("recorded"))
    assert report.phase is WorkflowPhase.CONFIRMED


def test_failures_before_activation_report_failed_with_the_reason() -> None:
    machine = UpdateWorkflow()
    machine.handle(Event("deploy", workflow_id="wf-1"))
    [report] = machine.handle(Event("check_failed", reason="target-hash"))
    assert (report.phase, report.reason) == (WorkflowPhase.FAILED, "target-hash")


def test_unexpected_event_names_state_and_event() -> None:
    with pytest.raises(WorkflowError, match="'confirmed' is not expected in state idle"):
        UpdateWorkflow().handle(Event("confirmed", core="m4-0"))


@pytest.mark.parametrize(
    "events",
    [[], [Event("staged", core="m4-0")]],
    ids=["crash-while-staging-first", "crash-between-stages"],
)
def test_crash_before_activation_starts_the_update_over(events: list[Event]) -> None:
    machine = started()
    for event in events:
        machine.handle(event)
    revived = UpdateWorkflow()
    assert kinds(revived.restore(machine.snapshot())) == ["report", "check"]
    assert kinds(revived.handle(Event("checked", release_id="r2", plans=(M0, M1)))) == [
        "stage:m4-0"
    ]


def test_crash_while_activating_reverts_every_core() -> None:
    machine = started()
    for event in (
        Event("staged", core="m4-0"),
        Event("staged", core="m4-1"),
        Event("activated", core="m4-0"),
    ):
        machine.handle(event)
    revived = UpdateWorkflow()
    assert kinds(revived.restore(machine.snapshot())) == ["revert:m4-0"]
    assert kinds(revived.handle(Event("reverted", core="m4-0"))) == ["revert:m4-1"]
    [report] = revived.handle(Event("reverted", core="m4-1"))
    assert (report.state, report.reason) == ("failed", "interrupted")


def _confirming() -> UpdateWorkflow:
    machine = started()
    for event in (
        Event("staged", core="m4-0"),
        Event("staged", core="m4-1"),
        Event("activated", core="m4-0"),
        Event("activated", core="m4-1"),
    ):
        machine.handle(event)
    assert machine.phase is Phase.CONFIRMING
    return machine


def test_crash_while_confirming_finishes_forwards() -> None:
    revived = UpdateWorkflow()
    commands = revived.restore(_confirming().snapshot())
    assert kinds(commands) == ["confirm:m4-0"]
    assert commands[0].plan == M0
    assert kinds(revived.handle(Event("confirmed", core="m4-0"))) == ["confirm:m4-1"]
    assert kinds(revived.handle(Event("confirmed", core="m4-1"))) == ["record"]


def test_a_core_that_cannot_confirm_reverts_every_core() -> None:
    machine = _confirming()
    machine.handle(Event("confirmed", core="m4-0"))
    revert = machine.handle(Event("confirm_failed", core="m4-1", reason="trial-expired"))
    assert kinds(revert) == ["revert:m4-0"]
    assert kinds(machine.handle(Event("reverted", core="m4-0"))) == ["revert:m4-1"]
    [report] = machine.handle(Event("reverted", core="m4-1"))
    assert (report.state, report.reason, report.step) == ("failed", "trial-expired", "confirm")


def test_a_failed_first_confirm_sends_no_second_confirm_and_reverts_both() -> None:
    machine = _confirming()
    revert = machine.handle(Event("confirm_failed", core="m4-0", reason="core-unavailable"))
    assert kinds(revert) == ["revert:m4-0"]  # no confirm of m4-1 is left to run
    assert machine.handle(Event("confirmed", core="m4-1")) == []  # a late answer: ignored
    assert kinds(machine.handle(Event("reverted", core="m4-0"))) == ["revert:m4-1"]
    [report] = machine.handle(Event("reverted", core="m4-1"))
    assert (report.state, report.step) == ("failed", "confirm")


def test_a_failed_record_reverts_every_core() -> None:
    machine = _confirming()
    machine.handle(Event("confirmed", core="m4-0"))
    assert kinds(machine.handle(Event("confirmed", core="m4-1"))) == ["record"]
    assert kinds(machine.handle(Event("record_failed", reason="agent-error"))) == ["revert:m4-0"]
    machine.handle(Event("reverted", core="m4-0"))
    [report] = machine.handle(Event("reverted", core="m4-1"))
    assert (report.state, report.step) == ("failed", "record")
