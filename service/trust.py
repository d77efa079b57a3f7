"""The service's trust operations: keys, the two repositories, releases, assignments.

This composes `signing` with the service's configuration and a repository store, so the CLI (and
later the HTTP API and the rollout engine) stay glue. Time is a parameter of every operation that
signs, so schedules and tests control it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from service.config import Settings
from signing import ArtifactError, KeystoreError, PublishError
from signing.device import DeviceIdentity, DeviceVerifier, VerifiedRelease
from signing.director import Assignment, DirectorRepository
from signing.fields import ReleaseManifest
from signing.image_repo import DELEGATED_ROLES, ImageRepository
from signing.keys import KeyEntry, KeyScheme, Keystore, KeystoreKeyRing
from signing.store import DirectoryStore, FileAnchor, RepositoryStore, StoreFetcher
from signing.stream import VerifiedDigest

__all__ = ["ArtifactSpec", "RoleStatus", "TrustService", "stream_targets"]

TOP_ROLES = ("root", "targets", "snapshot", "timestamp")
ONLINE_ROLES = ("snapshot", "timestamp")
REPO_ROLES: dict[str, tuple[str, ...]] = {
    "image": (*TOP_ROLES, *DELEGATED_ROLES),
    "director": TOP_ROLES,
}


@dataclass(frozen=True)
class ArtifactSpec:
    """A file to sign, where it goes, and its custom fields (from its sidecar or flags)."""

    source: Path
    core: str
    custom: dict[str, Any]

    @property
    def target_path(self) -> str:
        kind = self.custom.get("kind")
        if kind == "model":
            return f"models/{self.custom.get('modelId')}/{self.source.name}"
        if kind == "firmware":
            return f"firmware/m4/{self.source.name}"
        raise ArtifactError(f"{self.source}: kind must be model or firmware, not {kind!r}")

    @classmethod
    def from_file(
        cls,
        source: Path,
        core: str,
        hardware: Sequence[str],
        counter: int,
        target_core: str | None = None,
    ) -> ArtifactSpec:
        """Read `<file>.json` beside the artifact (what `tinyfleet models build` writes)."""
        if not source.is_file():
            raise ArtifactError(f"{source}: no such file")
        sidecar = source.with_suffix(".json")
        if not sidecar.is_file():
            raise ArtifactError(
                f"{source}: metadata sidecar {sidecar.name} is missing",
            )
        try:
            custom = json.loads(sidecar.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{sidecar}: not JSON ({exc})") from exc
        if not isinstance(custom, dict):
            raise ArtifactError(f"{sidecar}: must hold a JSON object")
        custom.pop("quality", None)  # build-time evaluation figures, not device instructions
        custom.update(
            {"hardwareIds": list(hardware), "core": target_core or core, "releaseCounter": counter}
        )
        return cls(source, core, custom)


@dataclass(frozen=True)
class RoleStatus:
    repo: str
    role: str
    version: int
    expires: datetime
    keyids: tuple[str, ...]
    threshold: int


class TrustService:
    def __init__(
        self,
        settings: Settings,
        passphrase: Callable[[], str],
        store: RepositoryStore | None = None,
    ) -> None:
        self.settings = settings
        self._passphrase = passphrase
        self.store = store or DirectoryStore(settings.repo_dir)
        self._keystore: Keystore | None = None
        self._ring: KeystoreKeyRing | None = None

    # -- keys ----------------------------------------------------------------------------------

    @property
    def keystore(self) -> Keystore:
        if self._keystore is None:
            keystore = Keystore(self.settings.keys_dir, self._passphrase)
            if keystore.dev_mode and not self.settings.dev_mode:
                raise KeystoreError(
                    "this keystore was made in dev mode; refused in production mode"
                )
            self._keystore = keystore
        return self._keystore

    @property
    def keyring(self) -> KeystoreKeyRing:
        if self._ring is None:
            self._ring = KeystoreKeyRing(self.keystore)
        return self._ring

    def init_keys(
        self, scheme: KeyScheme, online_scheme: KeyScheme | None = None
    ) -> list[KeyEntry]:
        """Generate every key both repositories need; several root keys outside dev mode."""
        keystore = Keystore.create(
            self.settings.keys_dir, self._passphrase, dev_mode=self.settings.dev_mode
        )
        self._keystore = keystore
        root_keys = 1 if self.settings.dev_mode else self.settings.root_keys
        created = []
        for repo, roles in REPO_ROLES.items():
            for role in roles:
                count = root_keys if role == "root" else 1
                chosen = online_scheme if online_scheme and role in ONLINE_ROLES else scheme
                for n in range(1, count + 1):
                    created.append(keystore.generate(f"{repo}-{role}-{n}", repo, role, chosen))
        return created

    def _root_threshold(self) -> int:
        return 1 if self.settings.dev_mode else self.settings.root_threshold

    # -- repositories --------------------------------------------------------------------------

    def init_repos(self, now: datetime) -> tuple[ImageRepository, DirectorRepository]:
        threshold = self._root_threshold()
        image = ImageRepository.create(
            self.store, self.keyring, now, root_threshold=threshold, anchor=self._anchor("image")
        )
        director = DirectorRepository.create(
            self.store,
            self.keyring,
            image,
            now,
            root_threshold=threshold,
            anchor=self._anchor("director"),
        )
        return image, director

    def image(self) -> ImageRepository:
        return ImageRepository.open(self.store, self.keyring, anchor=self._anchor("image"))

    def director(self, image: ImageRepository | None = None) -> DirectorRepository:
        return DirectorRepository.open(
            self.store, self.keyring, image or self.image(), anchor=self._anchor("director")
        )

    def _anchor(self, repo: str) -> FileAnchor:
        """The last root this service published, kept beside the keys, not in the store."""
        return FileAnchor(self.settings.data_dir / "anchors" / f"{repo}-root.json")

    def status(self) -> list[RoleStatus]:
        image = self.image()
        rows: list[RoleStatus] = []
        published = image.published
        assert published.root is not None
        root = published.root.signed
        for role in TOP_ROLES:
            md = {
                "root": published.root,
                "targets": published.targets,
                "snapshot": published.snapshot,
                "timestamp": published.timestamp,
            }[role]
            if md is not None:
                rows.append(
                    RoleStatus(
                        "image",
                        role,
                        md.signed.version,
                        md.signed.expires,
                        tuple(root.roles[role].keyids),
                        root.roles[role].threshold,
                    )
                )
        assert published.targets is not None and published.targets.signed.delegations is not None
        delegations = published.targets.signed.delegations.roles or {}
        for role, md in published.delegated.items():
            rows.append(
                RoleStatus(
                    "image",
                    role,
                    md.signed.version,
                    md.signed.expires,
                    tuple(delegations[role].keyids),
                    delegations[role].threshold,
                )
            )
        return rows

    def refresh(self, now: datetime) -> dict[str, list[str]]:
        image = self.image()
        director = self.director(image)
        within = self.settings.refresh_within
        return {"image": image.refresh(now, within), "director": director.refresh(now, within)}

    def rotate(
        self,
        repo: str,
        role: str,
        now: datetime,
        scheme: KeyScheme,
        external: tuple[str, bytes] | None = None,
    ) -> list[KeyEntry]:
        """Replace the keys of `role` by as many new ones (or by the external key `(uri, PEM)`).

        The old keys sign the new root next to the new ones; they are retired only once the
        rotation is published, and restored if it fails.
        """
        if role not in REPO_ROLES.get(repo, ()):
            raise PublishError(f"{repo} has no role {role}")
        keystore = self.keystore
        old = keystore.entries(repo=repo, role=role)
        previous_root = self.keyring.signers(repo, "root")
        stamp = now.strftime("%Y%m%d%H%M%S")
        if external is not None:
            if role == "root":
                raise PublishError("root keys stay offline: rotate them to generated keys")
            new = [keystore.add_external(f"{repo}-{role}-{stamp}", repo, role, *external)]
        else:
            new = [
                keystore.generate(f"{repo}-{role}-{stamp}-{n}", repo, role, scheme)
                for n in range(1, max(1, len(old)) + 1)
            ]
        for entry in old:
            keystore.retire(entry.name)
        self._ring = KeystoreKeyRing(keystore)
        keyids = [e.keyid for e in old]
        public = [e.public_key for e in new]
        try:
            image = ImageRepository.open(self.store, self._ring, anchor=self._anchor("image"))
            if repo == "image":
                image.rotate(role, keyids, public, previous_root, now)
            else:
                DirectorRepository.open(
                    self.store, self._ring, image, anchor=self._anchor("director")
                ).rotate(role, keyids, public, previous_root, now)
        except BaseException:
            for entry in old:
                keystore.restore(entry.name)
            for entry in new:
                keystore.retire(entry.name)
            self._ring = None
            raise
        return new

    # -- releases ------------------------------------------------------------------------------

    def sign_release(
        self,
        release_id: str,
        counter: int,
        hardware: Sequence[str],
        artifacts: Sequence[ArtifactSpec],
        now: datetime,
    ) -> ReleaseManifest:
        image = self.image()
        members = []
        for spec in artifacts:
            image.add_artifact(spec.target_path, spec.source, spec.custom, now)
            members.append((spec.core, spec.target_path))
        manifest = image.add_release(release_id, counter, hardware, members, now)
        image.commit(now)
        return manifest

    def assign(self, device_id: str, hardware: str, release_id: str, now: datetime) -> Assignment:
        return self.director().assign(device_id, hardware, release_id, now)

    # -- verifying as a device would -----------------------------------------------------------

    def device_verifier(
        self,
        device_id: str,
        hardware: str,
        state_dir: Path,
        *,
        image_root: bytes | None = None,
        director_root: bytes | None = None,
    ) -> DeviceVerifier:
        """A device reading this service's store, with the roots pinned at provisioning.

        By default it pins the service's current roots (verified from its anchors), as a device
        provisioned today would.
        """
        director = self.director()
        return DeviceVerifier(
            DeviceIdentity(device_id, hardware),
            state_dir,
            image_root=image_root or director.image.root_bytes(),
            director_root=director_root or director.root_bytes(),
            fetcher=StoreFetcher(self.store),
            image_url="store:///image/metadata/",
            director_url=f"store:///{director.metadata_prefix(device_id)}",
        )

    def stream_targets(self, release: VerifiedRelease) -> dict[str, VerifiedDigest]:
        return stream_targets(self.store, release)


def stream_targets(store: RepositoryStore, release: VerifiedRelease) -> dict[str, VerifiedDigest]:
    """Stream each target's bytes from `store` through its verifier; never whole in memory."""
    verdicts = {}
    for target in release.targets:
        verifier = target.verifier()
        for chunk in store.get(f"image/targets/{target.url_path()}"):
            verifier.update(chunk)
        verdicts[target.path] = verifier.finish()
    return verdicts
