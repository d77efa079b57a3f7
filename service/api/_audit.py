"""Audit entries for changes made through the API: actor = the token's name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.api._context import ApiContext
from service.storage import ApiToken, UnitOfWork

__all__ = ["record"]


def record(
    uow: UnitOfWork,
    context: ApiContext,
    token: ApiToken,
    action: str,
    subject: str,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Append inside the caller's unit of work (so the change and its entry commit together)."""
    uow.audit.append(
        at=context.clock(),
        actor=token.name,
        action=action,
        subject=subject,
        details=dict(details or {}),
    )
