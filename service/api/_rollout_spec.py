"""The `POST /rollouts` body turned into the domain's `RolloutSpec` (which checks every limit and
raises `SpecError` naming the field)."""

from __future__ import annotations

from service.api._schemas import RolloutIn
from service.domain.spec import RolloutSpec
from service.engine import spec_from_document

__all__ = ["spec_from_body"]


def spec_from_body(body: RolloutIn, *, production: bool, time_zone: str) -> RolloutSpec:
    """Raises SpecError naming the offending field. The engine's spec codec is the one reading
    of the document, for the API, the CLI and the tests."""
    document = body.model_dump(mode="json", exclude_unset=True)
    return spec_from_document(document, time_zone=time_zone, production=production)
