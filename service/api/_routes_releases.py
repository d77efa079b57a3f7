"""Releases: drafts, streamed artifact uploads with admission checks, publication. The work is
the release service's (`service.releases`), which also writes the audit entries (it is given the
token's name as actor); without one, published releases are read from storage and changes
answer 503 `unavailable`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Depends, File, Form, Path, UploadFile
from pydantic import AfterValidator

from service.api._context import ApiContext, ReleasePort
from service.api._deps import After, Context, Limit, require
from service.api._inputs import check_json, check_name
from service.api._problems import PROBLEM_RESPONSES, ApiProblem, problem_responses
from service.api._schemas import MemberOut, PageOut, ReleaseIn, ReleaseOut
from service.api._views import release_out, stored_release_out
from service.storage import ApiToken, Role

__all__ = ["CHUNK", "router"]

CHUNK = 64 * 1024
MAX_METADATA = 64 * 1024
router = APIRouter(prefix="/releases", tags=["releases"], responses=PROBLEM_RESPONSES)
Viewer = Annotated[ApiToken, Depends(require(Role.VIEWER))]
Signer = Annotated[ApiToken, Depends(require(Role.RELEASE_SIGNER))]
ReleaseId = Annotated[str, Path(min_length=1, max_length=48), AfterValidator(check_name)]
Core = Annotated[str, Path(min_length=1, max_length=32), AfterValidator(check_name)]


def _service(context: ApiContext) -> ReleasePort:
    if context.releases is None:
        raise ApiProblem(503, "unavailable", "the release service is not configured")
    return context.releases


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


@router.get("", response_model=PageOut[ReleaseOut])
def list_releases(
    _token: Viewer, context: Context, after: After = None, limit: Limit = 100
) -> PageOut[ReleaseOut]:
    if context.releases is None:
        with context.storage.begin(readonly=True) as uow:
            page = uow.releases.list(after=after, limit=limit)
        return PageOut(
            items=[stored_release_out(r) for r in page.items], next_after=page.next_after
        )
    views = context.releases.list(after=after, limit=limit)
    return PageOut(items=[release_out(v) for v in views.items], next_after=views.next_after)


@router.get("/{release_id}", response_model=ReleaseOut, responses=problem_responses(404))
def get_release(release_id: ReleaseId, _token: Viewer, context: Context) -> ReleaseOut:
    if context.releases is None:
        with context.storage.begin(readonly=True) as uow:
            return stored_release_out(uow.releases.get(release_id))
    return release_out(context.releases.get(release_id))


@router.post("", status_code=201, response_model=ReleaseOut, responses=problem_responses(409))
def create_release(body: ReleaseIn, token: Signer, context: Context) -> ReleaseOut:
    view = _service(context).create_draft(
        body.id, body.hardware_ids, body.counter, token.name, body.description
    )
    return release_out(view)


@router.put(
    "/{release_id}/artifacts/{core}",
    response_model=MemberOut,
    responses=problem_responses(404, 409),
)
def upload_artifact(
    release_id: ReleaseId,
    core: Core,
    file: Annotated[UploadFile, File(description="the artifact bytes")],
    metadata: Annotated[str, Form(description="the JSON sidecar `tinyfleet models build` wrote")],
    token: Signer,
    context: Context,
) -> MemberOut:
    service = _service(context)
    if len(metadata) > MAX_METADATA:
        raise ApiProblem(422, "invalid", "metadata is too large", errors=[_meta("too large")])
    try:
        sidecar = check_json(json.loads(metadata), where="metadata")
    except json.JSONDecodeError as exc:
        detail = f"metadata is not JSON: {exc}"
        raise ApiProblem(422, "invalid", detail, errors=[_meta("not JSON")]) from exc
    except (ValueError, RecursionError) as exc:
        reason = str(exc) or "metadata is nested too deeply"
        raise ApiProblem(422, "invalid", reason, errors=[_meta(reason)]) from None
    if not isinstance(sidecar, dict):
        raise ApiProblem(422, "invalid", "metadata must be a JSON object", errors=[_meta("object")])
    view = service.add_artifact(release_id, core, _chunks(file.file), sidecar, token.name)
    return MemberOut.model_validate(view.to_dict())


def _meta(msg: str) -> dict[str, Any]:
    return {"loc": ["body", "metadata"], "msg": msg}


@router.post(
    "/{release_id}/publish", response_model=ReleaseOut, responses=problem_responses(404, 409)
)
def publish_release(release_id: ReleaseId, token: Signer, context: Context) -> ReleaseOut:
    return release_out(_service(context).publish(release_id, token.name))
