"""A signing world for tests: image repository, director and devices over an in-memory store.

Everything is real (python-tuf metadata, Ed25519 signatures, the device's python-tuf refresh and
on-disk state); only the store and the keyring are the in-memory implementations of their ports.
Attack tests change the store as an attacker who controls the mirror would, or sign with keys the
attacker is assumed to hold.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata

from signing._repo import serialize
from signing.device import DeviceIdentity, DeviceLimits, DeviceVerifier, VerifiedRelease
from signing.director import DirectorRepository
from signing.image_repo import DELEGATED_ROLES, ImageRepository
from signing.keys import MemoryKeyRing
from signing.store import MemoryStore, StoreFetcher, read_all
from signing.stream import VerifiedDigest

TOP = ("root", "targets", "snapshot", "timestamp")


def model_custom(
    model_id: str = "kws",
    version: str = "1.0.0",
    *,
    counter: int = 1,
    core: str = "any",
    hardware: Iterable[str] = ("mt3620",),
    min_firmware: str | None = None,
) -> dict[str, Any]:
    custom: dict[str, Any] = {
        "kind": "model",
        "modelId": model_id,
        "version": version,
        "runtime": "tflm",
        "inputShape": [1, 8],
        "inputDtype": "int8",
        "outputShape": [1, 2],
        "outputDtype": "int8",
        "arenaBytes": 4096,
        "operators": ["FULLY_CONNECTED", "SOFTMAX"],
        "selfTest": [
            {
                "input": base64.b64encode(bytes(8)).decode(),
                "expected": base64.b64encode(bytes(2)).decode(),
                "tolerance": 1,
            }
        ],
        "hardwareIds": list(hardware),
        "core": core,
        "releaseCounter": counter,
    }
    if min_firmware:
        custom["minFirmwareVersion"] = min_firmware
    return custom


def firmware_custom(
    version: str = "1.0.0",
    *,
    counter: int = 1,
    core: str = "any",
    hardware: Iterable[str] = ("mt3620",),
) -> dict[str, Any]:
    return {
        "kind": "firmware",
        "version": version,
        "hardwareIds": list(hardware),
        "core": core,
        "releaseCounter": counter,
        "runtimeVersion": "tflm-2026.10",
    }


class World:
    def __init__(self, tmp: Path, *, root_keys: int = 1, root_threshold: int = 1) -> None:
        self.tmp = tmp
        self.now = datetime.now(UTC)
        self.ring = MemoryKeyRing()
        for _ in range(root_keys):
            self.ring.add("image", "root")
            self.ring.add("director", "root")
        for role in (*TOP[1:], *DELEGATED_ROLES):
            self.ring.add("image", role)
        for role in TOP[1:]:
            self.ring.add("director", role)
        self.store = MemoryStore()
        self.image = ImageRepository.create(
            self.store, self.ring, self.now, root_threshold=root_threshold
        )
        self.director = DirectorRepository.create(
            self.store, self.ring, self.image, self.now, root_threshold=root_threshold
        )
        self.image_root = self.image.root_bytes()
        self.director_root = self.director.root_bytes()
        self._files = 0

    # -- publishing ----------------------------------------------------------------------------

    def blob(self, size: int, seed: str | int = 0) -> Path:
        self._files += 1
        self.tmp.mkdir(parents=True, exist_ok=True)
        path = self.tmp / f"blob-{self._files}.bin"
        block = hashlib.sha256(f"{seed}".encode()).digest()
        path.write_bytes((block * (size // len(block) + 1))[:size])
        return path

    def add_model(
        self, model_id: str = "kws", version: str = "1.0.0", *, size: int = 3000, **fields: Any
    ) -> str:
        path = f"models/{model_id}/{model_id}-v{version}.tflite"
        self.image.add_artifact(
            path, self.blob(size, path), model_custom(model_id, version, **fields), self.now
        )
        return path

    def add_firmware(self, version: str = "1.0.0", *, size: int = 2000, **fields: Any) -> str:
        path = f"firmware/m4/m4-fw-v{version}.bin"
        self.image.add_artifact(
            path, self.blob(size, path), firmware_custom(version, **fields), self.now
        )
        return path

    def release(
        self,
        release_id: str,
        members: Iterable[tuple[str, str]],
        *,
        counter: int = 1,
        hardware: Iterable[str] = ("mt3620",),
    ) -> None:
        self.image.add_release(release_id, counter, list(hardware), list(members), self.now)
        self.image.commit(self.now)

    def simple_release(
        self, release_id: str = "r1", version: str = "1.0.0", counter: int = 1
    ) -> str:
        path = self.add_model("kws", version, counter=counter)
        self.release(release_id, [("m4-0", path), ("m4-1", path)], counter=counter)
        return path

    # -- devices -------------------------------------------------------------------------------

    def device(
        self,
        device_id: str = "dev-1",
        hardware: str = "mt3620",
        *,
        limits: DeviceLimits | None = None,
        url_device: str | None = None,
    ) -> DeviceVerifier:
        return DeviceVerifier(
            DeviceIdentity(device_id, hardware),
            self.tmp / "devices" / device_id,
            image_root=self.image_root,
            director_root=self.director_root,
            fetcher=StoreFetcher(self.store),
            image_url="store:///image/metadata/",
            director_url=f"store:///director/devices/{url_device or device_id}/metadata/",
            limits=limits,
        )

    def stream(self, release: VerifiedRelease, *, chunk: int = 1024) -> dict[str, VerifiedDigest]:
        verdicts = {}
        for target in release.targets:
            verifier = target.verifier()
            data = read_all(self.store, f"image/targets/{target.url_path()}")
            for i in range(0, len(data), chunk):
                verifier.update(data[i : i + chunk])
            verdicts[target.path] = verifier.finish()
        return verdicts

    def install(self, device: DeviceVerifier) -> VerifiedRelease:
        release = device.check()
        assert release is not None, "nothing to install"
        device.commit_install(release, self.stream(release))
        return release

    @staticmethod
    def trusted_state(device: DeviceVerifier) -> dict[str, bytes]:
        """Every byte of the device's trusted state, to assert that an attack changed none."""
        root = device.state_dir
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    # -- attacker's tools ----------------------------------------------------------------------

    def meta(self, repo_prefix: str, name: str) -> Metadata[Any]:
        return Metadata.from_bytes(read_all(self.store, f"{repo_prefix}/metadata/{name}"))

    def put_meta(
        self, repo_prefix: str, name: str, md: Metadata[Any], signers: Iterable[Signer] = ()
    ) -> None:
        """Re-sign `md` with `signers` (none: keep its signatures) and publish it under `name`."""
        signers = list(signers)
        if signers:
            md.signatures.clear()
            for signer in signers:
                md.sign(signer, append=True)
        self.store.replace_bytes(f"{repo_prefix}/metadata/{name}", serialize(md))

    def signers(self, repo: str, role: str) -> list[Signer]:
        return self.ring.signers(repo, role)
