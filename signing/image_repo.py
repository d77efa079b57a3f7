"""The Uptane image repository: what tinyfleet has signed, for any device, with offline keys.

Top-level targets lists nothing itself; it delegates each artifact line to its own key:
`firmware/*/*` to the firmware signer, `models/*/*` to the model signer, `releases/*` to the
release manager. Delegations are terminating, so a model signer cannot sign firmware: a firmware
path signed in `models.json` is never found by a client.

Invariants:
- Targets are immutable: a path, once signed, keeps its length and hashes.
- Every change publishes the changed roles, then a new snapshot, then a new timestamp.
- A release names artifacts already signed in this repository, each at most once per core and kind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Root, TargetFile, Targets

from signing._errors import ArtifactError, PublishError, ReleaseExistsError
from signing._repo import (
    KeyRing,
    PublishedRepository,
    expiry,
    new_root,
    serialize,
)
from signing.fields import ArtifactFields, ReleaseManifest, ReleaseMember, kind_for_path
from signing.store import MemoryAnchor, RepositoryStore, RootAnchor

__all__ = ["DELEGATED_ROLES", "ExpiryPolicy", "ImageRepository"]

# role name -> (path pattern, artifact kind)
DELEGATED_ROLES: dict[str, tuple[str, str]] = {
    "firmware": ("firmware/*/*", "firmware"),
    "models": ("models/*/*", "model"),
    "releases": ("releases/*", "release"),
}
ROLE_FOR_KIND = {kind: role for role, (_, kind) in DELEGATED_ROLES.items()}


@dataclass(frozen=True)
class ExpiryPolicy:
    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=90)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)

    def for_role(self, role: str) -> timedelta:
        top = {"root": self.root, "snapshot": self.snapshot, "timestamp": self.timestamp}
        return top.get(role, self.targets)


class ImageRepository:
    REPO = "image"

    def __init__(
        self,
        store: RepositoryStore,
        keyring: KeyRing,
        policy: ExpiryPolicy | None = None,
        prefix: str = "image",
        anchor: RootAnchor | None = None,
    ) -> None:
        self.policy = policy or ExpiryPolicy()
        self._repo = PublishedRepository(store, prefix, self.REPO, keyring, anchor)
        self._keyring = keyring

    @property
    def published(self) -> PublishedRepository:
        return self._repo

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        store: RepositoryStore,
        keyring: KeyRing,
        now: datetime,
        *,
        root_threshold: int = 1,
        policy: ExpiryPolicy | None = None,
        prefix: str = "image",
        anchor: RootAnchor | None = None,
    ) -> ImageRepository:
        """Publish a new repository; `anchor` keeps its root for later verified loads."""
        repo = cls(store, keyring, policy, prefix, anchor or MemoryAnchor())
        if repo._repo.exists():
            raise PublishError(f"an image repository exists already at {prefix}")
        root = new_root(keyring, cls.REPO, {"root": root_threshold}, expiry(now, repo.policy.root))
        repo._repo.publish_root(root)
        targets = Targets(version=1, delegations=Delegations(keys={}, roles={}))
        for role, (pattern, _) in DELEGATED_ROLES.items():
            repo._delegate(targets, role, pattern)
        repo._repo.publish_targets(
            "targets", Metadata(targets), repo._expires(now, "targets"), bump=False
        )
        for role in DELEGATED_ROLES:
            repo._repo.publish_targets(
                role, Metadata(Targets(version=1)), repo._expires(now, role), bump=False
            )
        repo._publish_snapshot_and_timestamp(now)
        return repo

    @classmethod
    def open(
        cls,
        store: RepositoryStore,
        keyring: KeyRing,
        policy: ExpiryPolicy | None = None,
        prefix: str = "image",
        anchor: RootAnchor | None = None,
    ) -> ImageRepository:
        """Load the published repository, verified from `anchor` (`PublishedRepository.load`)."""
        repo = cls(store, keyring, policy, prefix, anchor)
        repo._repo.load()
        return repo

    def _delegate(self, targets: Targets, role: str, pattern: str) -> None:
        keys = self._keyring.public_keys(self.REPO, role)
        if not keys:
            raise PublishError(f"no {self.REPO} key for the {role} role")
        assert targets.delegations is not None and targets.delegations.roles is not None
        targets.delegations.roles[role] = DelegatedRole(
            name=role, keyids=[], threshold=1, terminating=True, paths=[pattern]
        )
        for key in keys:
            targets.add_key(key, role)

    def _expires(self, now: datetime, role: str) -> datetime:
        return expiry(now, self.policy.for_role(role))

    def _publish_snapshot_and_timestamp(self, now: datetime) -> None:
        self._repo.publish_snapshot(self._expires(now, "snapshot"))
        self._repo.publish_timestamp(self._expires(now, "timestamp"))

    # -- reading -----------------------------------------------------------------------------

    def _role(self, role: str) -> Metadata[Targets]:
        md = self._repo.delegated.get(role)
        if md is None:
            raise PublishError(f"the image repository has no {role} role")
        return md

    def target(self, path: str) -> TargetFile | None:
        role = ROLE_FOR_KIND[kind_for_path(path)]
        return self._role(role).signed.targets.get(path)

    def targets(self, kind: str) -> list[TargetFile]:
        return list(self._role(ROLE_FOR_KIND[kind]).signed.targets.values())

    def release(self, release_id: str) -> ReleaseManifest:
        info = self.target(f"releases/{release_id}.json")
        if info is None:
            raise PublishError(f"no release {release_id}")
        return ReleaseManifest.parse(info.custom)

    def releases(self) -> list[ReleaseManifest]:
        return [ReleaseManifest.parse(t.custom) for t in self.targets("release")]

    def root_bytes(self) -> bytes:
        """The verified current root, to pin on devices at provisioning."""
        assert self._repo.root is not None
        return serialize(self._repo.root)

    # -- changing ----------------------------------------------------------------------------

    def add_artifact(
        self, path: str, source: Path, custom: dict[str, Any], now: datetime
    ) -> TargetFile:
        fields = ArtifactFields.parse(path, custom)  # raises ArtifactError on bad input
        role = ROLE_FOR_KIND[fields.kind]
        length, sha = self._repo.publish_target_file(path, source)
        existing = self.target(path)
        if existing is not None:
            if existing.length != length or existing.hashes.get("sha256") != sha:
                raise ArtifactError(
                    f"{path} is signed already with other bytes; targets are immutable"
                )
            return existing
        info = TargetFile(
            length=length,
            hashes={"sha256": sha},
            path=path,
            unrecognized_fields={"custom": fields.raw},
        )
        md = self._role(role)
        md.signed.targets[path] = info
        self._repo.publish_targets(role, md, self._expires(now, role))
        return info

    def add_release(
        self,
        release_id: str,
        release_counter: int,
        hardware_ids: Sequence[str],
        members: Iterable[tuple[str, str]],
        now: datetime,
    ) -> ReleaseManifest:
        """Sign a release: `members` are (core, target path) pairs of artifacts signed already."""
        path = f"releases/{release_id}.json"
        if self.target(path) is not None:
            raise ReleaseExistsError(f"release {release_id} exists; releases are immutable")
        entries = []
        for core, member_path in members:
            info = self.target(member_path)
            if info is None:
                raise ArtifactError(f"{member_path} is not signed in the image repository")
            fields = ArtifactFields.parse(member_path, info.custom)
            if fields.core not in (core, "any"):
                raise ArtifactError(f"{member_path} is built for core {fields.core}, not {core}")
            if missing := set(hardware_ids) - set(fields.hardware_ids):
                raise ArtifactError(f"{member_path} does not support hardware {sorted(missing)}")
            entries.append(
                ReleaseMember(core, fields.kind, member_path, info.length, info.hashes["sha256"])
            )
        manifest = ReleaseManifest.parse(
            ReleaseManifest(
                release_id, release_counter, tuple(hardware_ids), tuple(entries)
            ).to_custom()
        )
        _check_compatibility(manifest, self)
        body = _canonical(manifest.to_custom())
        length, sha = self._repo.publish_target_bytes_inline(path, body)
        info = TargetFile(
            length=length,
            hashes={"sha256": sha},
            path=path,
            unrecognized_fields={"custom": manifest.to_custom()},
        )
        md = self._role("releases")
        md.signed.targets[path] = info
        self._repo.publish_targets("releases", md, self._expires(now, "releases"))
        return manifest

    def commit(self, now: datetime) -> None:
        """Publish the snapshot and timestamp that make the changes so far visible to devices."""
        self._publish_snapshot_and_timestamp(now)

    def refresh(self, now: datetime, within: timedelta) -> list[str]:
        """Re-sign whatever expires within `within` of `now`, so the fleet never freezes itself."""
        renewed = []
        for role, md in [("targets", self._repo.targets), *self._repo.delegated.items()]:
            assert md is not None
            if md.signed.expires <= now + within:
                self._repo.publish_targets(role, md, self._expires(now, role))
                renewed.append(role)
        snapshot = self._repo.snapshot
        if renewed or snapshot is None or snapshot.signed.expires <= now + within:
            self._repo.publish_snapshot(self._expires(now, "snapshot"))
            renewed.append("snapshot")
        timestamp = self._repo.timestamp
        if renewed or timestamp is None or timestamp.signed.expires <= now + within:
            self._repo.publish_timestamp(self._expires(now, "timestamp"))
            renewed.append("timestamp")
        return renewed

    def rotate(
        self,
        role: str,
        old_keyids: Sequence[str],
        new_keys: Sequence[Key],
        previous_root_signers: Sequence[Signer],
        now: datetime,
    ) -> None:
        """Replace `old_keyids` of `role` by `new_keys` (which the keyring must already serve).

        `previous_root_signers` sign the new root next to the new root keys, as the TUF root chain
        requires (a threshold of the old root and of the new).
        """
        rotate_role(self._repo, role, old_keyids, new_keys, previous_root_signers, now, self.policy)


def rotate_role(
    repo: PublishedRepository,
    role: str,
    old_keyids: Sequence[str],
    new_keys: Sequence[Key],
    previous_root_signers: Sequence[Signer],
    now: datetime,
    policy: ExpiryPolicy,
) -> None:
    assert repo.root is not None and repo.targets is not None
    if role in ("root", "targets", "snapshot", "timestamp"):
        root: Root = Metadata.from_bytes(repo.root.to_bytes()).signed  # a deep copy
        for keyid in old_keyids:
            root.revoke_key(keyid, role)
        for key in new_keys:
            root.add_key(key, role)
        root.version += 1
        root.expires = expiry(now, policy.root)
        repo.publish_root(root, previous_signers=previous_root_signers)
        if role == "targets":
            repo.publish_targets("targets", repo.targets, expiry(now, policy.targets))
    elif role in repo.delegated:
        for keyid in old_keyids:
            repo.targets.signed.revoke_key(keyid, role)
        for key in new_keys:
            repo.targets.signed.add_key(key, role)
        repo.publish_targets("targets", repo.targets, expiry(now, policy.targets))
        repo.publish_targets(role, repo.delegated[role], expiry(now, policy.targets))
    else:
        raise PublishError(f"no role {role} to rotate")
    if role != "root":
        repo.publish_snapshot(expiry(now, policy.snapshot))
        repo.publish_timestamp(expiry(now, policy.timestamp))


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _check_compatibility(manifest: ReleaseManifest, repo: ImageRepository) -> None:
    """A model's minimum firmware version must be met by the firmware released with it, if any."""
    firmware = {m.core: m for m in manifest.members if m.kind == "firmware"}
    for member in manifest.members:
        if member.kind != "model" or member.core not in firmware:
            continue
        model = ArtifactFields.parse(member.path, repo.target(member.path).custom)  # type: ignore[union-attr]
        fw_info = repo.target(firmware[member.core].path)
        assert fw_info is not None
        fw = ArtifactFields.parse(fw_info.path, fw_info.custom)
        if model.min_firmware_version and fw.version < model.min_firmware_version:
            raise ArtifactError(
                f"{member.path} needs firmware >= "
                f"{'.'.join(map(str, model.min_firmware_version))}, "
                f"the release carries {'.'.join(map(str, fw.version))}"
            )
