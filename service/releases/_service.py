"""The release service: drafts, streamed uploads with admission, signing and publication.

A release is a draft (in the blob store, see `_drafts.py`) until `publish` signs its members and
the release manifest into the image repository (through `TrustService`, whose store is the blob
store's repository prefix, see `_publication.py`) and creates the immutable storage `Release` row,
with its audit entry in the same unit of work. Then the draft is removed.

Invariants:
- An id is a draft or a published release, never both for long: `publish` creates the storage
  row before it removes the draft, and every reader prefers the row.
- Only admitted artifacts are recorded; an upload that fails admission leaves no trace but its
  audit entry.
- `publish` is safe to retry after a crash at any point: signing an artifact or a release that is
  already signed with the same bytes is accepted, anything else is a conflict.
- Upload memory is bounded: chunks are hashed and written through, never joined.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from service.blobs import BlobError, BlobStore
from service.domain.directions import score_direction
from service.releases._admission import Prober, admit
from service.releases._budgets import budget_for
from service.releases._drafts import Draft, DraftMember, DraftStore
from service.releases._errors import (
    AdmissionCheck,
    AdmissionError,
    ReleaseConflictError,
    ReleaseError,
    ReleaseInvalidError,
    ReleaseNotFoundError,
    ReleaseTrustError,
    ReleaseUnavailableError,
)
from service.releases._probe import probe
from service.releases._views import (
    MemberView,
    ReleasePage,
    ReleaseView,
    draft_view,
    member_view,
    published_view,
    row_details,
)
from service.storage import (
    AlreadyExistsError,
    NotFoundError,
    Release,
    Storage,
    StorageError,
)
from service.trust import ArtifactSpec, TrustService
from signing import (
    ArtifactError,
    KeystoreError,
    ReleaseExistsError,
    RepositoryTamperedError,
    SigningError,
)
from signing.fields import CORES

__all__ = ["MAX_UPLOAD_BYTES", "ReleaseService"]

MAX_UPLOAD_BYTES = 16 * 1024 * 1024
MAX_PAGE = 1000
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_VERSION = re.compile(r"^\d{1,6}\.\d{1,6}\.\d{1,6}$")
_SUFFIX = {"model": "tflite", "firmware": "bin"}


class _TooLarge(Exception):
    pass


def _check_id(what: str, value: object) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ReleaseInvalidError(f"{what} {value!r} must match {_ID.pattern}")
    return value


def _score_direction(metadata: Mapping[str, Any]) -> str:
    try:
        return score_direction(metadata).value
    except ValueError as exc:
        raise ReleaseInvalidError(f"model sidecar: {exc}") from exc


def _file_name(release_id: str, core: str, custom: Mapping[str, Any]) -> str:
    """The member's target file name: unique per release and core, as targets are immutable."""
    kind = custom.get("kind")
    version = custom.get("version")
    version = version if isinstance(version, str) and _VERSION.match(version) else "0.0.0"
    if kind == "model":
        model_id = custom.get("modelId")
        stem = model_id if isinstance(model_id, str) and _ID.match(model_id) else "model"
    else:
        stem = "m4"
    return f"{release_id}.{core}.{stem}-v{version}.{_SUFFIX.get(str(kind), 'bin')}"


class ReleaseService:
    def __init__(
        self,
        storage: Storage,
        blobs: BlobStore,
        trust: TrustService,
        clock: Callable[[], datetime],
        *,
        prober: Prober = probe,
        spool_dir: Path | None = None,
    ) -> None:
        """`blobs` holds the drafts; `trust.store` is where the repositories are published."""
        self._storage = storage
        self._drafts = DraftStore(blobs)
        self._trust = trust
        self._clock = clock
        self._prober = prober
        self._spool_dir = spool_dir
        self._lock = threading.RLock()  # one draft document writer at a time in this process

    # -- reading -------------------------------------------------------------------------------

    def _published(self, release_id: str) -> Release | None:
        try:
            with self._storage.begin(readonly=True) as uow:
                return uow.releases.get(release_id)
        except NotFoundError:
            return None
        except StorageError as exc:
            raise ReleaseUnavailableError(f"reading release {release_id}: {exc}") from exc

    def get(self, release_id: str) -> ReleaseView:
        published = self._published(release_id)
        if published is not None:
            return published_view(published)
        draft = self._drafts.load(release_id)
        if draft is None:
            raise ReleaseNotFoundError(release_id)
        return draft_view(draft)

    def list(self, after: str | None = None, limit: int = 100) -> ReleasePage:
        """Drafts and published releases together, by id; `next_after` continues."""
        if not 1 <= limit <= MAX_PAGE:
            raise ReleaseInvalidError(f"limit must be 1..{MAX_PAGE}")
        try:
            with self._storage.begin(readonly=True) as uow:
                rows = uow.releases.list(after=after, limit=limit + 1).items
        except StorageError as exc:
            raise ReleaseUnavailableError(f"listing releases: {exc}") from exc
        published = {r.id: published_view(r) for r in rows}
        ids = sorted(set(published) | {i for i in self._drafts.ids() if after is None or i > after})
        views: list[ReleaseView] = []
        for release_id in ids:
            if len(views) > limit:
                break
            if release_id in published:
                views.append(published[release_id])
            elif (draft := self._drafts.load(release_id)) is not None:
                views.append(draft_view(draft))
        more = len(views) > limit
        views = views[:limit]
        return ReleasePage(views, views[-1].id if more and views else None)

    # -- drafts --------------------------------------------------------------------------------

    def create_draft(
        self,
        release_id: str,
        hardware_ids: Iterable[str],
        counter: int,
        actor: str,
        description: str = "",
    ) -> ReleaseView:
        _check_id("release id", release_id)
        hardware = tuple(hardware_ids)
        if not hardware:
            raise ReleaseInvalidError("a release names at least one hardware id")
        for hardware_id in hardware:
            _check_id("hardware id", hardware_id)
            if budget_for(hardware_id) is None:
                raise ReleaseInvalidError(f"unknown hardware id {hardware_id!r}")
        if isinstance(counter, bool) or not isinstance(counter, int) or not 0 <= counter < 2**31:
            raise ReleaseInvalidError(f"counter {counter!r} must be 0..2^31-1")
        if len(description) > 1000:
            raise ReleaseInvalidError("description is at most 1000 characters")
        now = self._clock()
        with self._lock:
            if self._published(release_id) is not None:
                raise ReleaseConflictError(f"release {release_id} is published; ids are final")
            if self._drafts.load(release_id) is not None:
                raise ReleaseConflictError(f"a draft {release_id} exists already")
            draft = Draft(release_id, counter, hardware, description, now, actor)
            self._drafts.save(draft)
        details = {"counter": counter, "hardware_ids": list(hardware)}
        self._audit(actor, "release.create", release_id, details)
        return draft_view(draft)

    def _draft(self, release_id: str) -> Draft:
        if self._published(release_id) is not None:
            raise ReleaseConflictError(f"release {release_id} is published and immutable")
        draft = self._drafts.load(release_id)
        if draft is None:
            raise ReleaseNotFoundError(release_id)
        return draft

    def add_artifact(
        self,
        release_id: str,
        core: str,
        chunks: Iterable[bytes],
        metadata: Mapping[str, Any],
        actor: str,
    ) -> MemberView:
        """Stream the artifact into the blob store, admit it, record it as the core's member.

        Raises AdmissionError (nothing recorded), ReleaseConflictError (published),
        ReleaseNotFoundError, ReleaseInvalidError (unknown core, sidecar not an object).
        """
        if core not in CORES:
            raise ReleaseInvalidError(f"core {core!r} is not one of {', '.join(CORES)}")
        if not isinstance(metadata, Mapping):
            raise ReleaseInvalidError("the metadata sidecar must be a JSON object")
        draft = self._draft(release_id)
        kind = str(metadata.get("kind"))
        if kind not in _SUFFIX:
            raise ReleaseInvalidError(f"sidecar kind {metadata.get('kind')!r}: model or firmware")
        direction = _score_direction(metadata) if kind == "model" else None
        custom = dict(metadata)
        custom.pop("quality", None)  # build-time evaluation figures, not device instructions
        custom.update(
            {"hardwareIds": list(draft.hardware_ids), "core": core, "releaseCounter": draft.counter}
        )
        name = _file_name(release_id, core, custom)
        target_path = ArtifactSpec(Path(name), core, custom).target_path
        blob = f"{self._drafts.folder(release_id)}{core}.{uuid.uuid4().hex[:16]}.bin"
        with tempfile.TemporaryDirectory(prefix="tinyfleet-upload-", dir=self._spool_dir) as tmp:
            spool = Path(tmp) / name
            with open(spool, "wb") as handle:
                digest = hashlib.sha256()
                counted = [0]
                try:
                    self._drafts.blobs.put(blob, _tee(chunks, handle, digest, counted))
                except _TooLarge:
                    self._drafts.delete_blob(blob)
                    check = AdmissionCheck(
                        "budget", False, f"upload over {MAX_UPLOAD_BYTES} bytes, stopped there"
                    )
                    raise AdmissionError(f"{release_id}/{core}", [check]) from None
                except BlobError as exc:
                    raise ReleaseUnavailableError(f"storing the upload: {exc}") from exc
            length, sha = counted[0], digest.hexdigest()
            checks = admit(
                kind, spool, length, target_path, custom, core, draft.hardware_ids, self._prober
            )
        details = {"core": core, "kind": kind, "length": length, "sha256": sha}
        if not all(c.ok for c in checks):
            self._drafts.delete_blob(blob)
            failed = [c.to_dict() for c in checks if not c.ok]
            self._audit(actor, "release.upload-refused", release_id, {**details, "failed": failed})
            raise AdmissionError(f"{release_id}/{core}", checks)
        member = DraftMember(
            core,
            kind,
            target_path,
            blob,
            length,
            sha,
            custom,
            tuple(checks),
            self._clock(),
            actor,
            score_direction=direction,
        )
        with self._lock:
            try:
                current = self._draft(release_id)
            except ReleaseError:
                self._drafts.delete_blob(blob)
                raise
            replaced = current.members.get(core)
            self._drafts.save(current.with_member(member))
        if replaced is not None:
            self._drafts.delete_blob(replaced.blob)
        self._audit(actor, "release.upload", release_id, details)
        return member_view(member)

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, release_id: str, actor: str) -> ReleaseView:
        """Sign every member and the release, publish them, create the immutable row.

        Raises ReleaseConflictError (published already, or the id is signed with other
        content), ReleaseInvalidError (no members), ReleaseNotFoundError.
        """
        with self._lock:
            published = self._published(release_id)
            if published is not None:
                self._drafts.delete(release_id)  # a crash after the row, before the cleanup
                raise ReleaseConflictError(f"release {release_id} is published already")
            draft = self._drafts.load(release_id)
            if draft is None:
                raise ReleaseNotFoundError(release_id)
            if not draft.members:
                raise ReleaseInvalidError(f"release {release_id} has no artifact yet")
            now = self._clock()
            manifest = self._sign(draft, now)
            row = Release(
                id=draft.id,
                counter=draft.counter,
                hardware_ids=draft.hardware_ids,
                manifest={**manifest, **row_details(draft)},
                created_at=now,
                created_by=actor,
            )
            try:
                with self._storage.begin() as uow:
                    uow.releases.create(row)
                    uow.audit.append(
                        at=now,
                        actor=actor,
                        action="release.publish",
                        subject=release_id,
                        details={"counter": draft.counter, "members": manifest["members"]},
                    )
            except AlreadyExistsError as exc:
                raise ReleaseConflictError(f"release {release_id} is published already") from exc
            except StorageError as exc:
                raise ReleaseUnavailableError(f"recording release {release_id}: {exc}") from exc
            self._drafts.delete(release_id)
        return published_view(row)

    def _sign(self, draft: Draft, now: datetime) -> dict[str, Any]:
        members = [draft.members[core] for core in sorted(draft.members)]
        with tempfile.TemporaryDirectory(prefix="tinyfleet-sign-", dir=self._spool_dir) as tmp:
            specs = []
            for member in members:
                source = Path(tmp) / member.target_path.rsplit("/", 1)[1]
                try:
                    with open(source, "wb") as handle:
                        for chunk in self._drafts.blobs.get(member.blob):
                            handle.write(chunk)
                except BlobError as exc:
                    raise ReleaseUnavailableError(f"reading {member.blob}: {exc}") from exc
                specs.append(ArtifactSpec(source, member.core, dict(member.custom)))
            try:
                signed = self._trust.sign_release(
                    draft.id, draft.counter, draft.hardware_ids, specs, now
                )
                return signed.to_custom()
            except ReleaseExistsError:
                return self._signed_already(draft)
            except SigningError as exc:
                _translate(exc, f"signing {draft.id}")

    def _signed_already(self, draft: Draft) -> dict[str, Any]:
        """After a crash between signing and recording: accept the same release, refuse another."""
        try:
            signed = self._trust.image().release(draft.id)
        except SigningError as exc:
            _translate(exc, f"reading signed release {draft.id}")
        ours = sorted((m.core, m.target_path, m.sha256) for m in draft.members.values())
        theirs = sorted((m.core, m.path, m.sha256) for m in signed.members)
        if ours != theirs or signed.release_counter != draft.counter:
            raise ReleaseConflictError(
                f"release {draft.id} is signed already with other content; ids are final"
            )
        return signed.to_custom()

    # -- audit ---------------------------------------------------------------------------------

    def _audit(self, actor: str, action: str, subject: str, details: Mapping[str, Any]) -> None:
        try:
            with self._storage.begin() as uow:
                uow.audit.append(
                    at=self._clock(), actor=actor, action=action, subject=subject, details=details
                )
        except StorageError as exc:
            raise ReleaseUnavailableError(f"auditing {action} {subject}: {exc}") from exc


def _translate(exc: SigningError, doing: str) -> NoReturn:
    if isinstance(exc, ArtifactError):
        raise ReleaseInvalidError(f"{doing}: {exc}") from exc
    if isinstance(exc, RepositoryTamperedError | KeystoreError):
        raise ReleaseTrustError(f"{doing}: {exc}") from exc
    raise ReleaseUnavailableError(f"{doing}: {exc}") from exc


def _tee(
    chunks: Iterable[bytes], spool: BinaryIO, digest: Any, counted: list[int]
) -> Iterator[bytes]:
    for chunk in chunks:
        counted[0] += len(chunk)
        if counted[0] > MAX_UPLOAD_BYTES:
            raise _TooLarge
        digest.update(chunk)
        spool.write(chunk)
        yield chunk
    spool.flush()
