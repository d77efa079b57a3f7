"""Releases through the API, over the real release service: drafts, streamed multipart uploads
with admission results, refusals as `admission` problems, publication and immutability."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from service.storage import Role
from tests.integration.api._api import PROBLEM, Session, open_session
from tests.unit.releases._models import prebuilt
from tests.unit.releases._world import ReleaseWorld


@pytest.fixture
def releases(tmp_path: Path) -> Iterator[Session]:
    world = ReleaseWorld(tmp_path)
    with ExitStack() as stack:
        for session in open_session(world.storage, stack):
            session.world.context.releases = world.service
            yield session


def _upload(session: Session, release_id: str, core: str, name: str) -> httpx.Response:
    data, sidecar = prebuilt(name)
    token = session.world.tokens[Role.RELEASE_SIGNER]
    return session.api.put(
        f"/releases/{release_id}/artifacts/{core}",
        files={"file": (f"{name}.tflite", data, "application/octet-stream")},
        data={"metadata": json.dumps(sidecar)},
        token=token,
    )


def test_draft_upload_publish(releases: Session) -> None:
    api, signer = releases.api, releases.world.tokens[Role.RELEASE_SIGNER]
    body = {"id": "kws-2", "hardware_ids": ["mt3620"], "counter": 2, "description": "better"}
    created = api.post("/releases", json=body, token=signer)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "draft" and created.json()["members"] == []
    member = _upload(releases, "kws-2", "m4-0", "kws-v2.0.0")
    assert member.status_code == 200, member.text
    m = member.json()
    assert m["core"] == "m4-0" and m["kind"] == "model" and m["length"] > 0
    assert m["admission"] and all(c["ok"] for c in m["admission"])
    draft = api.get("/releases/kws-2").json()
    assert [x["core"] for x in draft["members"]] == ["m4-0"]
    published = api.post("/releases/kws-2/publish", token=signer)
    assert published.status_code == 200, published.text
    assert published.json()["status"] == "published"
    assert api.get("/releases").json()["items"][0]["id"] == "kws-2"
    again = _upload(releases, "kws-2", "m4-1", "vibration-v2.0.0")
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"
    republish = api.post("/releases/kws-2/publish", token=signer)
    assert republish.status_code == 409
    duplicate = api.post("/releases", json=body, token=signer)
    assert duplicate.status_code == 409
    actions = [e["action"] for e in api.get("/audit").json()["items"]]
    assert actions[:2] == ["release.create", "release.upload"]
    assert "release.publish" in actions
    assert {e["actor"] for e in api.get("/audit").json()["items"]} == {"release-signer"}


def test_refused_model_is_an_admission_problem(releases: Session) -> None:
    api, signer = releases.api, releases.world.tokens[Role.RELEASE_SIGNER]
    api.post("/releases", json={"id": "r", "hardware_ids": ["mt3620"], "counter": 1}, token=signer)
    data, sidecar = prebuilt("kws-v2.0.0")
    answer = api.put(
        "/releases/r/artifacts/m4-0",
        files={"file": ("broken.tflite", data[: len(data) // 3], "application/octet-stream")},
        data={"metadata": json.dumps(sidecar)},
        token=signer,
    )
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = answer.json()
    assert problem["code"] == "admission"
    assert problem["checks"] and not all(c["ok"] for c in problem["checks"])
    assert {"name", "ok", "detail"} <= set(problem["checks"][0])
    assert api.get("/releases/r").json()["members"] == []


@pytest.mark.parametrize(
    "metadata", ["not json", "[1, 2]", "x" * 70_000], ids=["not-json", "not-object", "too-big"]
)
def test_bad_metadata_is_invalid(releases: Session, metadata: str) -> None:
    api, signer = releases.api, releases.world.tokens[Role.RELEASE_SIGNER]
    api.post("/releases", json={"id": "r", "hardware_ids": ["mt3620"], "counter": 1}, token=signer)
    answer = api.put(
        "/releases/r/artifacts/m4-0",
        files={"file": ("m.tflite", b"TFL3", "application/octet-stream")},
        data={"metadata": metadata},
        token=signer,
    )
    assert answer.status_code == 422
    assert answer.json()["code"] == "invalid"


def test_missing_parts_and_release(releases: Session) -> None:
    api, signer = releases.api, releases.world.tokens[Role.RELEASE_SIGNER]
    assert api.get("/releases/nope").status_code == 404
    assert api.post("/releases/nope/publish", token=signer).status_code == 404
    no_file = api.put("/releases/nope/artifacts/m4-0", data={"metadata": "{}"}, token=signer)
    assert no_file.status_code == 422
    missing = _upload(releases, "nope", "m4-0", "kws-v2.0.0")
    assert missing.status_code == 404


def test_without_a_release_service_reads_storage_and_refuses_changes(session: Session) -> None:
    session.world.seed_release("rel-1")
    api = session.api
    listed = api.get("/releases").json()
    assert [r["id"] for r in listed["items"]] == ["rel-1"]
    assert listed["items"][0]["status"] == "published"
    assert api.get("/releases/rel-1").json()["counter"] == 1
    refused = api.post("/releases", json={"id": "r", "hardware_ids": ["mt3620"], "counter": 1})
    assert refused.status_code == 503 and refused.json()["code"] == "unavailable"


def test_release_pages(releases: Session) -> None:
    api, signer = releases.api, releases.world.tokens[Role.RELEASE_SIGNER]
    for n in range(5):
        body = {"id": f"r{n}", "hardware_ids": ["mt3620"], "counter": n}
        assert api.post("/releases", json=body, token=signer).status_code == 201
    first = api.get("/releases", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_after"]
    seen = [r["id"] for r in first["items"]]
    after = first["next_after"]
    while after:
        page = api.get("/releases", params={"limit": 2, "after": after}).json()
        seen += [r["id"] for r in page["items"]]
        after = page["next_after"]
    assert sorted(seen) == [f"r{n}" for n in range(5)]
