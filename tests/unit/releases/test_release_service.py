"""The release service over in-memory ports: drafts, admission, publication, immutability."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.blobs import MemoryBlobStore
from service.releases import (
    MAX_UPLOAD_BYTES,
    AdmissionError,
    ReleaseConflictError,
    ReleaseInvalidError,
    ReleaseNotFoundError,
    ReleaseService,
    ReleaseUnavailableError,
)
from signing.fields import ReleaseManifest
from tests.unit.releases._models import prebuilt
from tests.unit.releases._world import ReleaseWorld, chunks, upload


@pytest.fixture
def world(tmp_path: Path) -> ReleaseWorld:
    return ReleaseWorld(tmp_path)


def test_a_draft_collects_admitted_members(world: ReleaseWorld) -> None:
    releases = world.service
    draft = releases.create_draft("r1", ["mt3620"], 3, "alice", "first")
    assert (draft.status, draft.counter, draft.members) == ("draft", 3, ())
    data, _ = prebuilt("kws-v1.0.0")
    member = upload(releases, "r1", "m4-0", "kws-v1.0.0")
    assert (member.core, member.kind, member.model_id, member.version) == (
        "m4-0",
        "model",
        "kws",
        "1.0.0",
    )
    assert (member.length, member.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert member.path == "models/kws/r1.m4-0.kws-v1.0.0.tflite"
    assert all(c.ok for c in member.admission)
    view = releases.get("r1")
    assert [m.core for m in view.members] == ["m4-0"]
    summary = view.to_dict()
    assert summary["status"] == "draft" and summary["members"][0]["admission"]
    assert set(summary) >= {"id", "counter", "hardware_ids", "members", "created_at", "created_by"}


def test_replacing_a_core_member_keeps_one_per_core(world: ReleaseWorld) -> None:
    releases = world.service
    releases.create_draft("r1", ["mt3620"], 1, "alice")
    first = upload(releases, "r1", "m4-0", "kws-v1.0.0")
    second = upload(releases, "r1", "m4-0", "kws-v2.0.0")
    members = releases.get("r1").members
    assert [m.version for m in members] == ["2.0.0"]
    drafts = [p for p in world.blobs.list("drafts/r1/") if p.endswith(".bin")]
    assert len(drafts) == 1, "the replaced member's bytes are removed"
    assert first.sha256 != second.sha256


def test_a_refused_upload_records_nothing_and_names_the_check(world: ReleaseWorld) -> None:
    releases = world.service
    releases.create_draft("r1", ["mt3620"], 1, "alice")
    data, sidecar = prebuilt("kws-v1.0.0")
    with pytest.raises(AdmissionError) as refused:
        releases.add_artifact("r1", "m4-0", chunks(data[:-100]), sidecar, "alice")
    assert refused.value.failed[0].name == "format"
    assert releases.get("r1").members == ()
    assert [p for p in world.blobs.list("drafts/r1/") if p.endswith(".bin")] == []
    with world.storage.begin(readonly=True) as uow:
        actions = [e.action for e in uow.audit.entries()]
    assert actions == ["release.create", "release.upload-refused"]


def test_an_upload_over_the_hard_limit_is_cut_short(world: ReleaseWorld) -> None:
    releases = world.service
    releases.create_draft("r1", ["mt3620"], 1, "alice")
    pulled = []

    def endless() -> Any:
        while True:
            pulled.append(1)
            yield bytes(1024 * 1024)

    with pytest.raises(AdmissionError) as refused:
        releases.add_artifact("r1", "m4-0", endless(), prebuilt("kws-v1.0.0")[1], "alice")
    assert refused.value.failed[0].name == "budget"
    assert len(pulled) == MAX_UPLOAD_BYTES // (1024 * 1024) + 1
    assert world.blobs.list("drafts/r1/") == ["drafts/r1/draft.json"]


def test_publish_signs_records_and_freezes_the_release(world: ReleaseWorld) -> None:
    releases = world.service
    releases.create_draft("r1", ["mt3620"], 2, "alice")
    upload(releases, "r1", "m4-0", "kws-v1.0.0")
    upload(releases, "r1", "m4-1", "vibration-v1.0.0")
    world.clock.advance(60)
    published = releases.publish("r1", "bob")
    assert (published.status, published.created_by, published.created_at) == (
        "published",
        "bob",
        world.clock(),
    )
    assert [(m.core, m.model_id) for m in published.members] == [
        ("m4-0", "kws"),
        ("m4-1", "vibration"),
    ]
    assert releases.get("r1") == published
    signed = world.trust.image().release("r1")
    assert signed.release_counter == 2
    assert {(m.core, m.path, m.sha256) for m in signed.members} == {
        (m.core, m.path, m.sha256) for m in published.members
    }
    with world.storage.begin(readonly=True) as uow:
        row = uow.releases.get("r1")
        actions = [e.action for e in uow.audit.entries()]
    assert ReleaseManifest.parse(dict(row.manifest)) == signed
    # Each model's score direction, read from its sidecar's quality block at upload (the
    # signed custom fields drop that block), is kept with the row for the health gate.
    directions = {core: d["scoreDirection"] for core, d in row.manifest["details"].items()}
    assert directions == {"m4-0": "higher-is-better", "m4-1": "lower-is-better"}
    assert actions[-1] == "release.publish"
    assert world.blobs.list("drafts/") == [], "the draft is gone once published"
    assert world.blobs.list("repo/image/targets/models/kws/")


IMMUTABLE: dict[str, Callable[[ReleaseService], object]] = {
    "create-again": lambda s: s.create_draft("r1", ["mt3620"], 9, "mallory"),
    "upload": lambda s: upload(s, "r1", "m4-0", "kws-v2.0.0", "mallory"),
    "publish-again": lambda s: s.publish("r1", "mallory"),
}


@pytest.mark.parametrize("change", IMMUTABLE.values(), ids=IMMUTABLE.keys())
def test_a_published_release_refuses_every_change(
    world: ReleaseWorld, change: Callable[[ReleaseService], object]
) -> None:
    releases = world.service
    releases.create_draft("r1", ["mt3620"], 1, "alice")
    upload(releases, "r1", "m4-0", "kws-v1.0.0")
    before = releases.publish("r1", "alice")
    with pytest.raises(ReleaseConflictError):
        change(releases)
    assert releases.get("r1") == before


def test_conflicts_and_missing_releases(world: ReleaseWorld) -> None:
    releases = world.service
    releases.create_draft("r1", ["mt3620"], 1, "alice")
    with pytest.raises(ReleaseConflictError):
        releases.create_draft("r1", ["mt3620"], 1, "alice")
    for call in (
        lambda: releases.get("nope"),
        lambda: releases.publish("nope", "alice"),
        lambda: upload(releases, "nope", "m4-0", "kws-v1.0.0"),
    ):
        with pytest.raises(ReleaseNotFoundError):
            call()
    with pytest.raises(ReleaseInvalidError):
        releases.publish("r1", "alice")  # no members yet


INVALID: dict[str, Callable[[ReleaseService], object]] = {
    "bad-id": lambda s: s.create_draft("R 1", ["mt3620"], 1, "a"),
    "no-hardware": lambda s: s.create_draft("r2", [], 1, "a"),
    "unknown-hardware": lambda s: s.create_draft("r2", ["nrf52"], 1, "a"),
    "negative-counter": lambda s: s.create_draft("r2", ["mt3620"], -1, "a"),
    "unknown-core": lambda s: upload(s, "r1", "m7", "kws-v1.0.0"),
    "bad-kind": lambda s: s.add_artifact("r1", "m4-0", [b"x"], {"kind": "font"}, "a"),
}


@pytest.mark.parametrize("call", INVALID.values(), ids=INVALID.keys())
def test_invalid_requests(world: ReleaseWorld, call: Callable[[ReleaseService], object]) -> None:
    world.service.create_draft("r1", ["mt3620"], 1, "alice")
    with pytest.raises(ReleaseInvalidError):
        call(world.service)


def test_drafts_survive_a_new_service_instance(world: ReleaseWorld) -> None:
    world.service.create_draft("r1", ["mt3620"], 1, "alice", "kept")
    upload(world.service, "r1", "m4-0", "kws-v1.0.0")
    before = world.service.get("r1")
    restarted = world.new_service()
    assert restarted.get("r1") == before
    upload(restarted, "r1", "m4-1", "vibration-v1.0.0")
    assert [m.core for m in restarted.publish("r1", "alice").members] == ["m4-0", "m4-1"]


def test_publish_resumes_after_a_crash_between_signing_and_recording(world: ReleaseWorld) -> None:
    releases = world.service
    releases.create_draft("r1", ["mt3620"], 1, "alice")
    upload(releases, "r1", "m4-0", "kws-v1.0.0")
    draft = world.blobs.list("drafts/r1/")
    releases._sign(releases._drafts.load("r1"), world.clock())  # type: ignore[arg-type]
    assert world.blobs.list("drafts/r1/") == draft  # crashed before the storage row
    assert world.new_service().publish("r1", "alice").status == "published"


def test_an_id_signed_with_other_content_is_a_conflict(world: ReleaseWorld) -> None:
    releases = world.service
    releases.create_draft("r1", ["mt3620"], 1, "alice")
    upload(releases, "r1", "m4-0", "kws-v1.0.0")
    releases._sign(releases._drafts.load("r1"), world.clock())  # type: ignore[arg-type]
    upload(releases, "r1", "m4-0", "kws-v2.0.0")  # the draft changed after signing
    with pytest.raises(ReleaseConflictError, match="other content"):
        releases.publish("r1", "alice")


def test_list_pages_drafts_and_published_releases_by_id(world: ReleaseWorld) -> None:
    releases = world.service
    for release_id in ("r1", "r2", "r3", "r4", "r5"):
        releases.create_draft(release_id, ["mt3620"], 1, "alice")
    for release_id in ("r2", "r4"):
        upload(releases, release_id, "m4-0", "kws-v1.0.0")
        releases.publish(release_id, "alice")
    seen, after, pages = [], None, 0
    while True:
        page = releases.list(after=after, limit=2)
        seen += [(v.id, v.status) for v in page.items]
        pages += 1
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [
        ("r1", "draft"),
        ("r2", "published"),
        ("r3", "draft"),
        ("r4", "published"),
        ("r5", "draft"),
    ]
    assert pages == 3
    with pytest.raises(ReleaseInvalidError):
        releases.list(limit=0)


def test_repositories_may_live_in_their_own_store(tmp_path: Path) -> None:
    world = ReleaseWorld(tmp_path, repo_blobs=MemoryBlobStore())
    world.service.create_draft("r1", ["mt3620"], 1, "alice")
    upload(world.service, "r1", "m4-0", "kws-v1.0.0")
    world.service.publish("r1", "alice")
    assert world.blobs.list() == []
    assert world.repo_blobs is not None and world.repo_blobs.list("repo/image/metadata/")


def test_an_unreadable_draft_is_reported_not_crashed_on(world: ReleaseWorld) -> None:
    world.service.create_draft("r1", ["mt3620"], 1, "alice")
    world.blobs.put("drafts/r1/draft.json", [b'{"id": "r1"'])
    with pytest.raises(ReleaseUnavailableError, match="unreadable"):
        world.service.get("r1")
