"""Key rotation, revocation, thresholds and fast-forward recovery, one named row each.

Modelled on python-tuf's tests/test_updater_key_rotations.py: a root chain is a list of versions
(which keys, what threshold, who signed), and only the last version may be refused. Legitimate
rotations go through `ImageRepository.rotate` / `DirectorRepository.rotate`; after each the device
follows, installs a release signed with the new keys, and refuses what the retired key signs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata

from signing import MetadataRejected, SignatureError, VersionError
from tests.security._attacks import (
    DIRECTOR,
    IMAGE,
    Scene,
    assert_refused,
    forge_root,
    installed_scene,
    later,
    meta_path,
    mirror,
    online,
    publish_model_release,
    rotate_key,
    set_root_keys,
    stranger,
    stream_and_commit,
)


def trusted(scene: Scene, repo: str, role: str) -> Metadata[Any]:
    """The device's trusted copy of `role`, from its current generation."""
    metadata = scene.device.state_dir / "metadata"
    generation = metadata / (metadata / "CURRENT").read_text().strip()
    return Metadata.from_file(str(generation / repo / f"{role}.json"))


def install_r2(scene: Scene) -> None:
    publish_model_release(scene, "r2", "2.0.0", counter=2)
    release = scene.check()
    assert release is not None
    stream_and_commit(scene, release)
    assert scene.device.installed().release_id == "r2"


# -- legitimate rotations, and the retired key afterwards ----------------------------------------

# id -> (world options, repository, role)
# fmt: off
ROTATIONS: dict[str, tuple[dict[str, int], str, str]] = {
    "image root key, 1-of-1": ({}, "image", "root"),
    "image root 2-of-3, one key replaced": ({"root_keys": 3, "root_threshold": 2}, "image", "root"),
    "image timestamp key": ({}, "image", "timestamp"),
    "image snapshot key": ({}, "image", "snapshot"),
    "image targets key": ({}, "image", "targets"),
    "image delegated models key": ({}, "image", "models"),
    "image delegated releases key": ({}, "image", "releases"),
    "director root key": ({}, "director", "root"),
    "director root 2-of-3, one key replaced":
        ({"root_keys": 3, "root_threshold": 2}, "director", "root"),
    "director targets key": ({}, "director", "targets"),
    "director snapshot key": ({}, "director", "snapshot"),
    "director timestamp key": ({}, "director", "timestamp"),
}
# fmt: on


@pytest.mark.parametrize(("options", "repo", "role"), ROTATIONS.values(), ids=list(ROTATIONS))
def test_legitimate_rotation_is_accepted(
    tmp_path: Path, options: dict[str, int], repo: str, role: str
) -> None:
    scene = installed_scene(tmp_path, **options)
    old, new = rotate_key(scene.world, repo, role)

    assert scene.check() is None  # followed the rotation; nothing new to install
    install_r2(scene)  # and a release signed after the rotation installs

    if role in ("root", "targets", "snapshot", "timestamp"):
        root = trusted(scene, repo, "root").signed
        assert new.public_key.keyid in root.roles[role].keyids
        assert old.public_key.keyid not in root.roles[role].keyids
    if role != "root":
        assert set(trusted(scene, repo, role).signatures) == {new.public_key.keyid}


def _sign_with_retired(scene: Scene, repo: str, role: str, retired: Signer) -> None:
    """The attacker holds the retired key (and the current online keys where it needs them)."""
    world = scene.world
    prefix = IMAGE if repo == "image" else DIRECTOR
    if role == "root":
        forge_root(
            world,
            prefix,
            lambda r: set_root_keys(r, "timestamp", [retired.public_key], 1),
            [retired],
        )
        return
    held: dict[str, Sequence[Signer]] = {**online(world, repo), role: [retired]}
    m = mirror(world, prefix, **held)
    if role not in ("snapshot", "timestamp"):
        md = m.targets if role == "targets" else m.delegated[role]
        assert md is not None
        m.publish_targets(role, md, later(world))
    if role != "timestamp":
        m.publish_snapshot(later(world))
    m.publish_timestamp(later(world))


@pytest.mark.parametrize(("options", "repo", "role"), ROTATIONS.values(), ids=list(ROTATIONS))
def test_retired_key_is_refused_after_rotation(
    tmp_path: Path, options: dict[str, int], repo: str, role: str
) -> None:
    scene = installed_scene(tmp_path, **options)
    retired, _ = rotate_key(scene.world, repo, role)
    assert scene.check() is None
    _sign_with_retired(scene, repo, role, retired)

    assert_refused(scene, scene.check, SignatureError, f"{role} was signed by 0/")


# -- root chains: thresholds, cross-signing, a stolen key below threshold -------------------------


@dataclass(frozen=True)
class RootVersion:
    keys: tuple[int, ...]  # indexes into the key pool: the world's own root keys first
    threshold: int
    sigs: tuple[int, ...]
    refused: bool = False


V = RootVersion
# id -> (root keys the device starts with and their threshold, the versions that follow)
# fmt: off
ROOT_CHAINS: dict[str, tuple[tuple[int, int], list[RootVersion]]] = {
    "1-of-1 rotated": ((1, 1), [V((1,), 1, (0, 1))]),
    "1-of-1 rotated, not signed by the old key": ((1, 1), [V((1,), 1, (1,), refused=True)]),
    "1-of-1 rotated, not signed by the new key": ((1, 1), [V((1,), 1, (0,), refused=True)]),
    "2-of-3, one key replaced": ((3, 2), [V((0, 1, 3), 2, (0, 1, 3))]),
    "2-of-3, one key replaced, one old signature":
        ((3, 2), [V((0, 1, 3), 2, (0, 3), refused=True)]),
    "2-of-3, all keys replaced at once": ((3, 2), [V((3, 4, 5), 2, (0, 1, 3, 4))]),
    "2-of-3, all keys replaced, one new signature":
        ((3, 2), [V((3, 4, 5), 2, (0, 1, 3), refused=True)]),
    "threshold raised 1 -> 2": ((1, 1), [V((0, 1), 2, (0, 1))]),
    "threshold raised 1 -> 2, one signature": ((1, 1), [V((0, 1), 2, (0,), refused=True)]),
    "threshold lowered 2 -> 1": ((3, 2), [V((0, 1, 2), 1, (0, 1))]),
    "threshold lowered 2 -> 1, one signature": ((3, 2), [V((0, 1, 2), 1, (0,), refused=True)]),
    "two steps: 1-of-1 to 2-of-3 to other keys":
        ((1, 1), [V((0, 1, 2), 2, (0, 1, 2)), V((1, 2, 3), 2, (1, 2, 3))]),
    "two steps, the second without the previous threshold":
        ((1, 1), [V((0, 1, 2), 2, (0, 1, 2)), V((3, 4, 5), 2, (0, 3, 4), refused=True)]),
    "below threshold: one stolen key of a 2-of-3 root hands root to the attacker":
        ((3, 2), [V((0, 3), 1, (0, 3), refused=True)]),
}
# fmt: on


@pytest.mark.parametrize(("start", "versions"), ROOT_CHAINS.values(), ids=list(ROOT_CHAINS))
def test_root_chain(tmp_path: Path, start: tuple[int, int], versions: list[RootVersion]) -> None:
    scene = installed_scene(tmp_path, root_keys=start[0], root_threshold=start[1])
    world = scene.world
    pool = world.signers("image", "root") + [stranger() for _ in range(6 - start[0])]

    def publish(version: RootVersion) -> None:
        keys = [pool[i].public_key for i in version.keys]
        forge_root(
            world,
            IMAGE,
            lambda root: set_root_keys(root, "root", keys, version.threshold),
            [pool[i] for i in version.sigs],
        )

    for version in versions:
        publish(version)

    if versions[-1].refused:
        assert_refused(scene, scene.check, SignatureError, "root was signed by")
    else:
        assert scene.check() is None
        root = trusted(scene, "image", "root").signed
        assert root.version == 1 + len(versions)
        assert root.roles["root"].threshold == versions[-1].threshold
        assert set(root.roles["root"].keyids) == {
            pool[i].public_key.keyid for i in versions[-1].keys
        }


def test_one_stolen_key_signing_twice_does_not_meet_a_threshold_of_two(tmp_path: Path) -> None:
    scene = installed_scene(tmp_path, root_keys=3, root_threshold=2)
    world = scene.world
    stolen = world.signers("image", "root")[0]
    attacker = stranger()
    forge_root(
        world,
        IMAGE,
        lambda r: set_root_keys(r, "root", [attacker.public_key], 1),
        [stolen, attacker],
    )
    path = meta_path(IMAGE, "2.root.json")
    raw = json.loads(b"".join(world.store.get(path)))
    ours = [sig for sig in raw["signatures"] if sig["keyid"] == stolen.public_key.keyid]
    raw["signatures"] += ours  # the stolen key's signature listed a second time
    world.store.replace_bytes(path, json.dumps(raw).encode())

    # duplicate signatures make the file malformed: refused before any counting
    error: BaseException | None = assert_refused(scene, scene.check, MetadataRejected, "deserial")
    causes = []
    while error is not None:
        causes.append(str(error))
        error = error.__cause__
    assert any("Multiple signatures found for keyid" in cause for cause in causes), causes


# -- fast-forward attacks and recovery by key rotation --------------------------------------------


def inflate_timestamp(scene: Scene) -> None:
    m = mirror(scene.world, IMAGE, timestamp=scene.world.signers("image", "timestamp"))
    assert m.timestamp is not None
    m.timestamp.signed.version = 10**6 - 1  # published as 10**6
    m.publish_timestamp(later(scene.world))


def inflate_snapshot(scene: Scene) -> None:
    m = mirror(scene.world, IMAGE, **online(scene.world, "image"))
    assert m.snapshot is not None
    m.snapshot.signed.version = 10**6 - 1
    m.publish_snapshot(later(scene.world))
    m.publish_timestamp(later(scene.world))


# id -> (the attacker's inflation with a stolen online key, the keys rotated to recover)
# fmt: off
FAST_FORWARD: dict[str, tuple[Callable[[Scene], None], tuple[str, ...]]] = {
    "fast-forward: image timestamp, recovered by rotating the timestamp key":
        (inflate_timestamp, ("timestamp",)),
    "fast-forward: image snapshot, recovered by rotating the snapshot and timestamp keys":
        (inflate_snapshot, ("snapshot", "timestamp")),
}
# fmt: on


@pytest.mark.parametrize(("inflate", "rotated"), FAST_FORWARD.values(), ids=list(FAST_FORWARD))
def test_fast_forward_is_recovered_by_rotating_the_stolen_key(
    tmp_path: Path, inflate: Callable[[Scene], None], rotated: tuple[str, ...]
) -> None:
    scene = installed_scene(tmp_path)
    world = scene.world
    inflate(scene)
    assert scene.check() is None  # signed by a trusted key: the device cannot tell, and follows

    for _ in range(2):  # the legitimate repository moves on at its own versions
        world.image.refresh(world.now, timedelta(days=1000))
    assert_refused(scene, scene.check, VersionError, "must be >= 1000000")

    for role in rotated:
        rotate_key(world, "image", role)
    assert scene.check() is None
    assert trusted(scene, "image", "timestamp").signed.version < 10**3
    assert trusted(scene, "image", "snapshot").signed.version < 10**3
    install_r2(scene)
