"""The Uptane director: per device, exactly what it must install now, signed with online keys.

One TUF repository per device under `director/devices/<segment>/` (the id made a safe path
segment by `signing.device_ids.device_segment`), all sharing one director root
(published under `director/root/` and copied into each device's folder, since a TUF client walks the
root chain at its own metadata URL). The rollout engine calls `assign` and `revoke`; a scheduler
calls `refresh` so that no device's metadata expires while nothing changes.

Invariants:
- Director targets never delegate, and name each core at most once.
- Every director targets file names its device (`x-tinyfleet.deviceId`), even an empty one, so one
  device's metadata replayed to another is refused.
- A director entry copies length and hashes from the image repository and names the release, so
  the device can check that both repositories agree and that a signed release binds the set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from securesystemslib.signer import Key, Signer
from tuf.api.metadata import Metadata, Root, TargetFile, Targets

from signing._errors import ArtifactError, PublishError
from signing._repo import (
    KeyRing,
    PublishedRepository,
    expiry,
    new_root,
    serialize,
)
from signing.device_ids import InvalidDeviceId, device_from_segment, device_segment
from signing.device_ids import check_device_id as _check_hub_id
from signing.image_repo import ExpiryPolicy, ImageRepository
from signing.store import MemoryAnchor, RepositoryStore, RootAnchor, read_all

__all__ = [
    "DIRECTOR_EXPIRY",
    "DIRECTOR_FIELD",
    "Assignment",
    "DirectorRepository",
    "check_device_id",
]

DIRECTOR_FIELD = "x-tinyfleet"


# Director metadata is online and per device: targets expire within a week, not a quarter.
DIRECTOR_EXPIRY = ExpiryPolicy(targets=timedelta(days=7))


@dataclass(frozen=True)
class Assignment:
    device_id: str
    release_id: str | None
    targets_version: int


def check_device_id(device_id: str) -> str:
    """Every IoT Hub device id (`signing.device_ids`); anything else is a PublishError."""
    try:
        return _check_hub_id(device_id)
    except InvalidDeviceId as exc:
        raise PublishError(str(exc)) from exc


def _folder(device_id: str) -> str:
    return device_segment(check_device_id(device_id))


class DirectorRepository:
    REPO = "director"

    def __init__(
        self,
        store: RepositoryStore,
        keyring: KeyRing,
        image: ImageRepository,
        policy: ExpiryPolicy | None = None,
        prefix: str = "director",
        anchor: RootAnchor | None = None,
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.image = image
        self.policy = policy or DIRECTOR_EXPIRY
        self.prefix = prefix
        self._root_repo = PublishedRepository(store, f"{prefix}/root", self.REPO, keyring, anchor)

    @classmethod
    def create(
        cls,
        store: RepositoryStore,
        keyring: KeyRing,
        image: ImageRepository,
        now: datetime,
        *,
        root_threshold: int = 1,
        policy: ExpiryPolicy | None = None,
        prefix: str = "director",
        anchor: RootAnchor | None = None,
    ) -> DirectorRepository:
        director = cls(store, keyring, image, policy, prefix, anchor or MemoryAnchor())
        if director._root_repo.exists():
            raise PublishError(f"a director repository exists already at {prefix}")
        root = new_root(
            keyring, cls.REPO, {"root": root_threshold}, expiry(now, director.policy.root)
        )
        director._root_repo.publish_root(root)
        return director

    @classmethod
    def open(
        cls,
        store: RepositoryStore,
        keyring: KeyRing,
        image: ImageRepository,
        policy: ExpiryPolicy | None = None,
        prefix: str = "director",
        anchor: RootAnchor | None = None,
    ) -> DirectorRepository:
        director = cls(store, keyring, image, policy, prefix, anchor)
        if not director._root_repo.exists():
            raise PublishError(f"no director repository at {prefix} (run `tinyfleet repo init`)")
        director._root_repo.load()
        return director

    def metadata_prefix(self, device_id: str) -> str:
        return f"{self.prefix}/devices/{_folder(device_id)}/metadata/"

    def root_bytes(self) -> bytes:
        """The verified current director root, to pin on devices at provisioning."""
        assert self._root_repo.root is not None
        return serialize(self._root_repo.root)

    def devices(self) -> list[str]:
        names = self.store.list(f"{self.prefix}/devices/")
        folders = {n[len(self.prefix) + 9 :].split("/", 1)[0] for n in names}
        ids = []
        for folder in folders:
            try:
                ids.append(device_from_segment(folder))
            except InvalidDeviceId:
                continue  # not a folder this director wrote
        return sorted(ids)

    def _device_repo(
        self, device_id: str, verify_with: Metadata[Root] | None = None
    ) -> PublishedRepository:
        """A device's repository, verified under the director root (or `verify_with`, the root
        that signed it when a rotation is re-signing it under a new one)."""
        repo = PublishedRepository(
            self.store,
            f"{self.prefix}/devices/{_folder(device_id)}",
            self.REPO,
            self.keyring,
        )
        trusted = self._root_repo.root
        assert trusted is not None
        have = set(repo.root_versions())
        for version in range(1, trusted.signed.version + 1):  # only roots the chain verified
            if version not in have:
                name = f"{version}.root.json"
                self.store.put(
                    repo.meta_path(name), [read_all(self.store, self._root_repo.meta_path(name))]
                )
        repo.load(trusted_root=verify_with or trusted)
        repo.root = trusted
        return repo

    def _publish(
        self, device_id: str, targets: dict[str, TargetFile], release_id: str | None, now: datetime
    ) -> Assignment:
        repo = self._device_repo(device_id)
        version = repo.targets.signed.version + 1 if repo.targets else 1
        md = Metadata(
            Targets(
                version=version,
                targets=targets,
                unrecognized_fields={
                    DIRECTOR_FIELD: {"deviceId": device_id, "releaseId": release_id}
                },
            )
        )
        repo.publish_targets("targets", md, expiry(now, self.policy.targets), bump=False)
        repo.publish_snapshot(expiry(now, self.policy.snapshot))
        repo.publish_timestamp(expiry(now, self.policy.timestamp))
        return Assignment(device_id, release_id, md.signed.version)

    def assign(
        self,
        device_id: str,
        hardware_id: str,
        release_id: str,
        now: datetime,
        cores: Sequence[str] | None = None,
    ) -> Assignment:
        """Tell `device_id` to install `release_id` (on `cores` only, if given) and nothing else."""
        manifest = self.image.release(release_id)
        if hardware_id not in manifest.hardware_ids:
            raise ArtifactError(f"release {release_id} is not built for hardware {hardware_id}")
        entries: dict[str, TargetFile] = {}
        for member in manifest.members:
            if cores is not None and member.core not in cores:
                continue
            info = self.image.target(member.path)
            assert info is not None  # the image repository signed the release over its members
            entry = entries.get(member.path)
            if entry is None:
                custom: dict[str, Any] = {
                    "ecuIdentifiers": {},
                    "hardwareId": hardware_id,
                    "releaseId": release_id,
                    "releaseCounter": info.custom["releaseCounter"],
                }
                entry = TargetFile(info.length, dict(info.hashes), member.path, {"custom": custom})
                entries[member.path] = entry
            entry.custom["ecuIdentifiers"][member.core] = {"hardwareId": hardware_id}
        release_path = f"releases/{release_id}.json"
        release_info = self.image.target(release_path)
        assert release_info is not None
        entries[release_path] = TargetFile(
            release_info.length,
            dict(release_info.hashes),
            release_path,
            {"custom": {"releaseId": release_id, "releaseCounter": manifest.release_counter}},
        )
        return self._publish(device_id, entries, release_id, now)

    def revoke(self, device_id: str, now: datetime) -> Assignment:
        """Withdraw whatever was assigned: an empty targets list that still names the device."""
        return self._publish(device_id, {}, None, now)

    def assignment(self, device_id: str) -> Assignment | None:
        repo = self._device_repo(device_id)
        if repo.targets is None:
            return None
        field = repo.targets.signed.unrecognized_fields.get(DIRECTOR_FIELD, {})
        return Assignment(device_id, field.get("releaseId"), repo.targets.signed.version)

    def refresh(self, now: datetime, within: timedelta) -> list[str]:
        """Re-sign each device's timestamp (and whatever else is close to expiry) when due."""
        renewed = []
        for device_id in self.devices():
            repo = self._device_repo(device_id)
            if repo.targets is None or repo.snapshot is None or repo.timestamp is None:
                continue
            horizon = now + within
            changed = False
            if repo.targets.signed.expires <= horizon:
                repo.publish_targets("targets", repo.targets, expiry(now, self.policy.targets))
                changed = True
            if changed or repo.snapshot.signed.expires <= horizon:
                repo.publish_snapshot(expiry(now, self.policy.snapshot))
                changed = True
            if changed or repo.timestamp.signed.expires <= horizon:
                repo.publish_timestamp(expiry(now, self.policy.timestamp))
                renewed.append(device_id)
        return renewed

    def rotate(
        self,
        role: str,
        old_keyids: Sequence[str],
        new_keys: Sequence[Key],
        previous_root_signers: Sequence[Signer],
        now: datetime,
    ) -> None:
        """Rotate a director key: a new shared root, then every device's metadata re-signed.

        The keyring must already serve the new keys; `previous_root_signers` cross-sign the root.
        """
        assert self._root_repo.root is not None
        if role not in ("root", "targets", "snapshot", "timestamp"):
            raise PublishError(f"the director has no {role} role")
        root: Root = Metadata[Root].from_bytes(self._root_repo.root.to_bytes()).signed
        for keyid in old_keyids:
            root.revoke_key(keyid, role)
        for key in new_keys:
            root.add_key(key, role)
        root.version += 1
        root.expires = expiry(now, self.policy.root)
        previous = self._root_repo.root
        self._root_repo.publish_root(root, previous_signers=previous_root_signers)
        for device_id in self.devices():
            # verified under the root that signed it, re-signed under the new one; the new root is
            # copied into the device's folder. (A crash midway leaves devices this loop did not
            # reach signed by the old key: rerun the rotation's re-signing; see docs/signing.md.)
            repo = self._device_repo(device_id, verify_with=previous)
            if repo.targets is None or role == "root":
                continue
            if role == "targets":
                repo.publish_targets("targets", repo.targets, expiry(now, self.policy.targets))
            if role in ("targets", "snapshot"):
                repo.publish_snapshot(expiry(now, self.policy.snapshot))
            repo.publish_timestamp(expiry(now, self.policy.timestamp))
