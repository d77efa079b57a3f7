"""Device-side verification: Uptane full verification on the A7 core, with streaming targets.

`DeviceVerifier.check()` refreshes the director and image repositories with python-tuf from the
roots pinned at provisioning, then checks, in order:
  1. the director metadata names this device, does not delegate, and names one release;
  2. every director target is signed in the image repository with the same length and hashes;
  3. hardware id and core of each target fit this device; the release counter has not gone down;
  4. the set of targets is exactly what the image repository's signed release puts on those cores,
     and each model's minimum firmware version is met.
It returns the verified release (or None when there is nothing new), whose targets hand out
`TargetStreamVerifier`s; `commit_install()` records what was installed once every target passed.

Invariants:
- Any rejection leaves the trusted metadata and the installed state unchanged (generations).
- No target byte is trusted before its metadata passed every check above.
- Every metadata file is capped (`DeviceLimits`); targets are capped by their signed length.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from signing._errors import (
    ArtifactError,
    ExpiredError,
    FetchError,
    ImageMismatchError,
    IncompleteReleaseError,
    MalformedDirectorError,
    MetadataMismatchError,
    MetadataRejected,
    MixedBundleError,
    OversizeError,
    ReleaseRollbackError,
    SignatureError,
    UnknownTargetError,
    VersionError,
    WrongCoreError,
    WrongDeviceError,
    WrongHardwareError,
)
from signing._generations import Generations
from signing.director import DIRECTOR_FIELD
from signing.fields import CORES, ArtifactFields, ReleaseManifest, parse_version
from signing.files import atomic_write
from signing.stream import TargetStreamVerifier, VerifiedDigest

__all__ = [
    "DeviceIdentity",
    "DeviceLimits",
    "DeviceVerifier",
    "InstalledState",
    "VerifiedRelease",
    "VerifiedTarget",
]


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    hardware_id: str
    cores: tuple[str, ...] = CORES


@dataclass(frozen=True)
class DeviceLimits:
    """Caps on everything the device downloads before it is verified (bytes, counts)."""

    root_max: int = 64 * 1024
    timestamp_max: int = 8 * 1024
    snapshot_max: int = 64 * 1024
    targets_max: int = 1024 * 1024
    max_root_rotations: int = 32
    max_delegations: int = 8

    def config(self) -> UpdaterConfig:
        return UpdaterConfig(
            max_root_rotations=self.max_root_rotations,
            max_delegations=self.max_delegations,
            root_max_length=self.root_max,
            timestamp_max_length=self.timestamp_max,
            snapshot_max_length=self.snapshot_max,
            targets_max_length=self.targets_max,
        )


@dataclass(frozen=True)
class VerifiedTarget:
    core: str
    path: str
    length: int
    sha256: str
    fields: ArtifactFields

    @property
    def kind(self) -> str:
        return self.fields.kind

    def url_path(self) -> str:
        """The target's path in the image repository's consistent-snapshot layout."""
        directory, _, base = self.path.rpartition("/")
        return f"{directory}/{self.sha256}.{base}"

    def verifier(self) -> TargetStreamVerifier:
        return TargetStreamVerifier(self.path, self.length, self.sha256)


@dataclass(frozen=True)
class VerifiedRelease:
    release_id: str
    release_counter: int
    targets: tuple[VerifiedTarget, ...]


@dataclass
class InstalledState:
    release_id: str | None = None
    release_counter: int = 0
    # core -> kind -> {"path", "sha256", "counter", "version"}
    cores: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def counter(self, core: str, kind: str) -> int:
        return int(self.cores.get(core, {}).get(kind, {}).get("counter", 0))

    def firmware_version(self, core: str) -> tuple[int, int, int] | None:
        version = self.cores.get(core, {}).get("firmware", {}).get("version")
        return parse_version(version) if version else None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "releaseId": self.release_id,
                "releaseCounter": self.release_counter,
                "cores": self.cores,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> InstalledState:
        raw = json.loads(data)
        return cls(raw["releaseId"], int(raw["releaseCounter"]), raw["cores"])


def _translate(exc: Exception) -> Exception:
    """python-tuf's errors, mapped once onto ours."""
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return SignatureError(str(exc))
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return VersionError(str(exc) or "version did not increase")
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return ExpiredError(str(exc))
    if isinstance(exc, tuf_errors.LengthOrHashMismatchError):
        return MetadataMismatchError(str(exc))
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return OversizeError(str(exc))
    if isinstance(exc, tuf_errors.RepositoryError):
        return MetadataRejected(str(exc))
    return FetchError(str(exc))


class DeviceVerifier:
    def __init__(
        self,
        identity: DeviceIdentity,
        state_dir: Path,
        *,
        image_root: bytes,
        director_root: bytes,
        fetcher: FetcherInterface,
        image_url: str,
        director_url: str,
        limits: DeviceLimits | None = None,
    ) -> None:
        self.identity = identity
        self.state_dir = state_dir
        self._roots = {"image": image_root, "director": director_root}
        self._urls = {"image": image_url, "director": director_url}
        self._fetcher = fetcher
        self._limits = limits or DeviceLimits()
        self._generations = Generations(state_dir / "metadata")
        self._generations.collect()

    # -- installed state ---------------------------------------------------------------------

    @property
    def _installed_path(self) -> Path:
        return self.state_dir / "installed.json"

    def installed(self) -> InstalledState:
        path = self._installed_path
        return InstalledState.from_json(path.read_bytes()) if path.exists() else InstalledState()

    def commit_install(
        self, release: VerifiedRelease, verdicts: Mapping[str, VerifiedDigest]
    ) -> None:
        """Record `release` as installed; every one of its targets must have a passing verdict."""
        for target in release.targets:
            verdict = verdicts.get(target.path)
            if (
                verdict is None
                or verdict.sha256 != target.sha256
                or verdict.length != target.length
            ):
                raise IncompleteReleaseError(
                    f"{target.path} has no passing verdict; nothing recorded"
                )
        state = self.installed()
        state.release_id = release.release_id
        state.release_counter = release.release_counter
        for target in release.targets:
            state.cores.setdefault(target.core, {})[target.kind] = {
                "path": target.path,
                "sha256": target.sha256,
                "counter": target.fields.release_counter,
                "version": ".".join(map(str, target.fields.version)),
            }
        atomic_write(self._installed_path, state.to_json())

    def forget_release(self) -> None:
        """The cores were rolled back outside a release (an operator's emergency rollback): the
        installed release is no longer what runs, so the next check offers it again. Counters
        stay: anti-rollback protection does not loosen because an operator acted locally."""
        state = self.installed()
        if state.release_id is not None:
            state.release_id = None
            atomic_write(self._installed_path, state.to_json())

    # -- the update check --------------------------------------------------------------------

    def check(self) -> VerifiedRelease | None:
        work = self._generations.begin()
        try:
            result = self._check_in(work)
        except BaseException:
            self._generations.abandon(work)
            raise
        self._generations.commit(work)
        return result

    def _updater(self, work: Path, repo: str) -> Updater:
        metadata_dir = work / repo
        metadata_dir.mkdir(exist_ok=True)
        try:
            return Updater(
                str(metadata_dir),
                self._urls[repo],
                fetcher=self._fetcher,
                config=self._limits.config(),
                bootstrap=self._roots[repo],
            )
        except (tuf_errors.RepositoryError, ValueError) as exc:
            raise SignatureError(f"pinned {repo} root is not usable: {exc}") from exc

    def _refresh(self, updater: Updater) -> None:
        try:
            updater.refresh()
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise _translate(exc) from exc

    def _check_in(self, work: Path) -> VerifiedRelease | None:
        director = self._updater(work, "director")
        self._refresh(director)
        assigned = self._director_targets(work)
        if not assigned.targets:
            return None
        image = self._updater(work, "image")
        self._refresh(image)
        return self._verify_release(assigned, image)

    def _director_targets(self, work: Path) -> Targets:
        md = Metadata[Targets].from_file(str(work / "director" / "targets.json"))
        targets = md.signed
        device = targets.unrecognized_fields.get(DIRECTOR_FIELD, {})
        if not isinstance(device, dict) or device.get("deviceId") != self.identity.device_id:
            raise WrongDeviceError(
                f"director metadata is for {device.get('deviceId')!r}"
                if isinstance(device, dict)
                else "director metadata names no device"
            )
        if targets.delegations is not None:
            raise MalformedDirectorError("director targets must not delegate")
        return targets

    def _image_info(self, image: Updater, path: str) -> TargetFile:
        try:
            info = image.get_targetinfo(path)
        except (tuf_errors.RepositoryError, tuf_errors.DownloadError) as exc:
            raise _translate(exc) from exc
        if info is None:
            raise UnknownTargetError(f"{path} is not signed in the image repository")
        return info

    def _verify_release(self, assigned: Targets, image: Updater) -> VerifiedRelease | None:
        ident = self.identity
        releases = [p for p in assigned.targets if p.startswith("releases/")]
        if len(releases) != 1:
            raise MalformedDirectorError(f"director names {len(releases)} releases, not one")
        release_entry = assigned.targets[releases[0]]
        release_info = self._image_info(image, release_entry.path)
        _same_bytes(release_entry, release_info)
        try:
            manifest = ReleaseManifest.parse(release_info.custom)
        except ArtifactError as exc:
            raise ImageMismatchError(f"signed release is malformed: {exc}") from exc
        if ident.hardware_id not in manifest.hardware_ids:
            raise WrongHardwareError(
                f"release {manifest.release_id} is not for {ident.hardware_id}"
            )

        verified: list[VerifiedTarget] = []
        seen: set[tuple[str, str]] = set()
        for path, entry in assigned.targets.items():
            if path == release_entry.path:
                continue
            ecus = entry.custom.get("ecuIdentifiers") if isinstance(entry.custom, dict) else None
            if not isinstance(ecus, dict) or not ecus:
                raise MalformedDirectorError(f"{path} names no ECU")
            info = self._image_info(image, path)
            _same_bytes(entry, info)
            try:
                fields = ArtifactFields.parse(path, info.custom)
            except ArtifactError as exc:
                raise ImageMismatchError(f"{path}: signed fields are malformed: {exc}") from exc
            if entry.custom.get("releaseCounter") != fields.release_counter:
                raise ImageMismatchError(
                    f"{path}: director and image disagree on the release counter"
                )
            if ident.hardware_id not in fields.hardware_ids:
                raise WrongHardwareError(f"{path} is built for {list(fields.hardware_ids)}")
            for core, ecu in ecus.items():
                if core not in ident.cores:
                    raise WrongCoreError(
                        f"{path} is addressed to {core}, this device has {ident.cores}"
                    )
                if not isinstance(ecu, dict) or ecu.get("hardwareId") != ident.hardware_id:
                    raise WrongHardwareError(f"{path} is addressed to other hardware on {core}")
                if fields.core not in (core, "any"):
                    raise WrongCoreError(f"{path} is built for {fields.core}, addressed to {core}")
                if (core, fields.kind) in seen:
                    raise MalformedDirectorError(f"two {fields.kind} targets for {core}")
                seen.add((core, fields.kind))
                verified.append(
                    VerifiedTarget(core, path, info.length, info.hashes["sha256"], fields)
                )

        self._check_bundle(manifest, verified)
        self._check_counters(manifest, verified)
        installed = self.installed()
        if installed.release_id == manifest.release_id and all(
            installed.cores.get(t.core, {}).get(t.kind, {}).get("sha256") == t.sha256
            for t in verified
        ):
            return None
        order = {"firmware": 0, "model": 1}
        verified.sort(key=lambda t: (order[t.kind], t.core))
        return VerifiedRelease(manifest.release_id, manifest.release_counter, tuple(verified))

    def _check_bundle(self, manifest: ReleaseManifest, verified: list[VerifiedTarget]) -> None:
        cores = {t.core for t in verified}
        expected = {(m.core, m.kind, m.path) for m in manifest.members if m.core in cores}
        actual = {(t.core, t.kind, t.path) for t in verified}
        if not cores or expected != actual:
            raise MixedBundleError(
                f"targets {sorted(actual)} are not what release {manifest.release_id} signs"
                f" for those cores ({sorted(expected)})"
            )
        # The release pins each member's bytes: a role that re-signs a released path (a stolen
        # model key) must not slip other bytes into the bundle under the same name.
        pinned = {(m.core, m.kind, m.path): (m.length, m.sha256) for m in manifest.members}
        for target in verified:
            if pinned[(target.core, target.kind, target.path)] != (target.length, target.sha256):
                raise MixedBundleError(
                    f"{target.path}: release {manifest.release_id} signs other bytes for it"
                )
        installed = self.installed()
        firmware = {t.core: t.fields.version for t in verified if t.kind == "firmware"}
        for target in verified:
            minimum = target.fields.min_firmware_version
            if target.kind != "model" or minimum is None:
                continue
            have = firmware.get(target.core) or installed.firmware_version(target.core)
            if have is not None and have < minimum:
                raise MixedBundleError(
                    f"{target.path} needs firmware {minimum}, {target.core} has {have}"
                )

    def _check_counters(self, manifest: ReleaseManifest, verified: list[VerifiedTarget]) -> None:
        installed = self.installed()
        if manifest.release_counter < installed.release_counter:
            raise ReleaseRollbackError(
                f"release counter {manifest.release_counter} < installed "
                f"{installed.release_counter}"
            )
        for target in verified:
            if target.fields.release_counter < installed.counter(target.core, target.kind):
                raise ReleaseRollbackError(
                    f"{target.path}: counter {target.fields.release_counter} < installed"
                    f" {installed.counter(target.core, target.kind)} on {target.core}"
                )


def _same_bytes(director: TargetFile, image: TargetFile) -> None:
    if director.length != image.length or director.hashes != image.hashes:
        raise ImageMismatchError(
            f"{director.path}: director and image repository disagree on the bytes"
        )
