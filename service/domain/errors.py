"""The errors of the rollout domain, split by who must act.

    DomainError                      root: catch this to handle every refusal of the domain
    ├── SpecError                    the rollout spec (or a cron expression in it) is invalid:
    │   └── CronError                    the operator must fix the input; `field` names it
    ├── InvalidTransitionError       a machine got an event its current state does not accept:
    │                                    a bug or a race in the caller; carries `state`, `event`
    └── PreconditionError            a legal event whose precondition the operator can supply:
        └── ApprovalRequiredError        a production start lacks a second, distinct approver

The domain never catches foreign exceptions: it does no I/O, and its inputs are plain values.
"""

from __future__ import annotations

__all__ = [
    "ApprovalRequiredError",
    "CronError",
    "DomainError",
    "InvalidTransitionError",
    "PreconditionError",
    "SpecError",
]


class DomainError(Exception):
    """Root of every error raised by `service.domain`."""


class SpecError(DomainError, ValueError):
    """An invalid rollout spec. `field` names the offending field for the API and the CLI."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class CronError(SpecError):
    """A cron expression that does not parse; `field` is the cron field (minute, hour, ...)."""


class InvalidTransitionError(DomainError):
    """An event that the current state does not accept; names both, as h11's errors do."""

    def __init__(self, machine: str, state: str, event: str, allowed: tuple[str, ...]) -> None:
        accepted = ", ".join(allowed) or "nothing (terminal state)"
        super().__init__(f"{machine} in state {state!r} cannot take {event!r}; accepts {accepted}")
        self.machine = machine
        self.state = state
        self.event = event
        self.allowed = allowed


class PreconditionError(DomainError):
    """A legal event whose guard failed for a reason an operator can fix (`reason` says how)."""

    def __init__(self, state: str, event: str, reason: str) -> None:
        super().__init__(f"{event} refused in state {state!r}: {reason}")
        self.state = state
        self.event = event
        self.reason = reason


class ApprovalRequiredError(PreconditionError):
    """Starting a production rollout needs approvals from two distinct operators."""
