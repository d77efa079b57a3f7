"""The attacker's tools and the scene every attack starts from.

A scene is a world in which device `dev-1` (MT3620, both M4 cores) has installed release `r1`
(firmware 1.0.0 and model kws 1.0.0 on each core), so it holds trusted metadata of both
repositories and an installed state that an attack could try to roll back or corrupt.

The attacker controls the mirror (`world.store`) and holds exactly the keys a row says it holds:
`mirror()` is the repository code itself driven by an attacker's keyring, so forged metadata is
built, versioned and chained exactly as a real repository would, and only the signatures differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import Key, Signer
from tuf.api.metadata import Metadata, Root, TargetFile, Targets

from signing import UpdateRejected
from signing._repo import PublishedRepository, serialize
from signing.device import DeviceLimits, DeviceVerifier, VerifiedRelease
from signing.keys import KeyScheme, generate_signer
from signing.store import read_all
from signing.stream import VerifiedDigest
from tests.signing_world import World

IMAGE = "image"
DIRECTOR = "director/devices/dev-1"
ONLINE = ("snapshot", "timestamp")
# Tight caps, so endless-data rows need only a few KiB; legitimate metadata stays well under them.
LIMITS = DeviceLimits(
    root_max=16 * 1024, timestamp_max=2 * 1024, snapshot_max=16 * 1024, targets_max=256 * 1024
)

Action = Callable[[], object]


@dataclass
class Scene:
    world: World
    device: DeviceVerifier
    firmware: str  # r1's firmware path
    model: str  # r1's model path

    def check(self) -> VerifiedRelease | None:
        return self.device.check()


def installed_scene(tmp: Path, **world_options: Any) -> Scene:
    world = World(tmp, **world_options)
    firmware = world.add_firmware("1.0.0")
    model = world.add_model("kws", "1.0.0")
    world.release("r1", [("m4-0", firmware), ("m4-0", model), ("m4-1", firmware), ("m4-1", model)])
    world.director.assign("dev-1", "mt3620", "r1", world.now)
    device = world.device(limits=LIMITS)
    world.install(device)
    return Scene(world, device, firmware, model)


def publish_model_release(
    scene: Scene,
    release_id: str = "r2",
    version: str = "2.0.0",
    *,
    counter: int = 2,
    assign: bool = True,
    **model_fields: Any,
) -> str:
    """Legitimately sign model kws `version` as release `release_id` on both cores."""
    world = scene.world
    path = world.add_model("kws", version, counter=counter, **model_fields)
    world.release(release_id, [("m4-0", path), ("m4-1", path)], counter=counter)
    if assign:
        world.director.assign("dev-1", "mt3620", release_id, world.now)
    return path


def assert_refused(
    scene: Scene, act: Action, expected: type[UpdateRejected], message: str
) -> UpdateRejected:
    """`act` fails with exactly `expected`, saying `message`; the device keeps what it had."""
    before = World.trusted_state(scene.device)
    installed = scene.device.installed()

    with pytest.raises(UpdateRejected) as caught:
        act()

    assert type(caught.value) is expected, repr(caught.value)
    assert caught.value.reason == expected.reason
    assert message in str(caught.value), str(caught.value)
    assert World.trusted_state(scene.device) == before
    assert scene.device.installed() == installed
    return caught.value


# -- keys and times ----------------------------------------------------------------------------


def stranger() -> Signer:
    """A key nobody trusts."""
    return generate_signer(KeyScheme.ED25519)


def past(world: World) -> datetime:
    return (world.now - timedelta(days=1)).replace(microsecond=0)


def later(world: World) -> datetime:
    return (world.now + timedelta(days=1)).replace(microsecond=0)


def online(world: World, repo: str) -> dict[str, list[Signer]]:
    """The online keys of `repo` ("image" or "director"), as a compromise hands them over."""
    return {role: world.signers(repo, role) for role in ONLINE}


class HeldKeys:
    """The attacker's keyring: exactly the signers it holds, by role."""

    def __init__(self, held: Mapping[str, Sequence[Signer]]) -> None:
        self._held = held

    def public_keys(self, repo: str, role: str) -> list[Key]:
        return [s.public_key for s in self._held.get(role, ())]

    def signers(self, repo: str, role: str) -> list[Signer]:
        return list(self._held.get(role, ()))


def mirror(world: World, prefix: str, **held: Sequence[Signer]) -> PublishedRepository:
    """The repository at `prefix` as the attacker sees it on the mirror, signing with `held`."""
    repo = PublishedRepository(world.store, prefix, "attacker", HeldKeys(held))
    repo.load_unverified()  # the attacker trusts nothing and needs nothing trusted
    return repo


def forge_director(
    world: World, change: Callable[[Targets], None], *, prefix: str = DIRECTOR
) -> None:
    """A compromised director: every director online key, any targets it likes for the device."""
    held = {role: world.signers("director", role) for role in ("targets", *ONLINE)}
    repo = mirror(world, prefix, **held)
    assert repo.targets is not None
    change(repo.targets.signed)
    repo.publish_targets("targets", repo.targets, later(world))
    repo.publish_snapshot(later(world))
    repo.publish_timestamp(later(world))


def forge_root(
    world: World,
    prefix: str,
    change: Callable[[Root], None],
    signers: Sequence[Signer],
) -> Root:
    """Publish the next root version after the newest at `prefix`, changed and signed as given."""
    repo = mirror(world, prefix)
    assert repo.root is not None
    root: Root = Metadata[Root].from_bytes(repo.root.to_bytes()).signed
    root.version += 1
    root.expires = later(world) + timedelta(days=300)
    change(root)
    md = Metadata(root)
    for signer in signers:
        md.sign(signer, append=True)
    world.store.put(f"{prefix}/metadata/{root.version}.root.json", [serialize(md)])
    return root


def director_entry(world: World, path: str, cores: Sequence[str], release_id: str) -> TargetFile:
    """A director targets entry for an image-repository target, as the director writes one."""
    info = world.image.target(path)
    assert info is not None
    custom = {
        "ecuIdentifiers": {core: {"hardwareId": "mt3620"} for core in cores},
        "hardwareId": "mt3620",
        "releaseId": release_id,
        "releaseCounter": info.custom["releaseCounter"],
    }
    return TargetFile(info.length, dict(info.hashes), path, {"custom": custom})


def rotate_key(world: World, repo: str, role: str) -> tuple[Signer, Signer]:
    """The legitimate rotation of one key of `role`: returns (retired signer, new signer)."""
    old = world.signers(repo, role)[0]
    new = world.ring.add(repo, role)
    world.ring.remove(repo, role, old.public_key.keyid)
    previous = [old] if role == "root" else []
    owner = world.image if repo == "image" else world.director
    owner.rotate(role, [old.public_key.keyid], [new.public_key], previous, world.now)
    return old, new


def set_root_keys(root: Root, role: str, keys: Sequence[Key], threshold: int) -> None:
    for keyid in list(root.roles[role].keyids):
        root.revoke_key(keyid, role)
    for key in keys:
        root.add_key(key, role)
    root.roles[role].threshold = threshold


# -- the mirror's bytes --------------------------------------------------------------------------


def stored(world: World, path: str) -> bytes:
    return read_all(world.store, path)


def meta_path(prefix: str, name: str) -> str:
    return f"{prefix}/metadata/{name}"


def listed_name(world: World, prefix: str, role: str) -> str:
    """The versioned file name the mirror's current timestamp/snapshot lists for `role`."""
    repo = mirror(world, prefix)
    assert repo.timestamp is not None and repo.snapshot is not None
    if role == "snapshot":
        return f"{repo.timestamp.signed.snapshot_meta.version}.snapshot.json"
    return f"{repo.snapshot.signed.meta[f'{role}.json'].version}.{role}.json"


def target_blob(world: World, path: str) -> str:
    """The store path of a signed target (consistent-snapshot name)."""
    info = world.image.target(path)
    assert info is not None
    return world.image.published.target_path(path, info.hashes["sha256"])


def custom_of(targets: Targets, path: str) -> dict[str, Any]:
    """The custom fields of a targets entry, to edit in place."""
    custom = targets.targets[path].custom
    assert isinstance(custom, dict)
    return custom


def poison(targets: Targets, path: str, data: bytes = b"attacker's bytes") -> None:
    """Point the entry for `path` at other bytes, keeping its custom fields."""
    entry = targets.targets[path]
    entry.length = len(data)
    entry.hashes = {"sha256": hashlib.sha256(data).hexdigest()}


def stream_and_commit(scene: Scene, release: VerifiedRelease) -> None:
    """What the agent does with a verified release: stream every target from the mirror, commit."""
    verdicts: dict[str, VerifiedDigest] = {}
    for target in release.targets:
        verifier = target.verifier()
        data = stored(scene.world, f"image/targets/{target.url_path()}")
        for i in range(0, len(data), 1024):
            verifier.update(data[i : i + 1024])
        verdicts[target.path] = verifier.finish()
    scene.device.commit_install(release, verdicts)
