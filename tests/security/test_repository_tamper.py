"""The service itself never signs over what an attacker with write access to the store put there.

Before any change the repositories load the store like a client: the root chain from the anchor
the service keeps outside the store, every signature, every length and hash. Each row edits the
store with no keys (or with keys the anchor does not trust) and the service refuses to open it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata

from signing import RepositoryTamperedError
from signing._repo import serialize
from signing.director import DirectorRepository
from signing.image_repo import ImageRepository
from tests.security._attacks import (
    IMAGE,
    forge_root,
    installed_scene,
    listed_name,
    meta_path,
    mirror,
    poison,
    stored,
    stranger,
)
from tests.signing_world import World


def _edit_models_unsigned(world: World) -> None:
    """The exploit: point a released model at other bytes, re-serialized, signatures kept."""
    name = listed_name(world, IMAGE, "models")
    md = Metadata.from_bytes(stored(world, meta_path(IMAGE, name)))
    poison(md.signed, next(iter(md.signed.targets)))
    world.store.replace_bytes(meta_path(IMAGE, name), serialize(md))


def _models_signed_by_stranger(world: World) -> None:
    repo = mirror(
        world,
        IMAGE,
        models=[stranger()],
        snapshot=world.signers("image", "snapshot"),
        timestamp=world.signers("image", "timestamp"),
    )
    poison(repo.delegated["models"].signed, next(iter(repo.delegated["models"].signed.targets)))
    repo.publish_targets("models", repo.delegated["models"], world.now)
    repo.publish_snapshot(world.now)
    repo.publish_timestamp(world.now)


def _planted_root(world: World) -> None:
    attacker = stranger()
    forge_root(world, IMAGE, lambda root: root.add_key(attacker.public_key, "targets"), [attacker])


def _snapshot_bytes_swapped(world: World) -> None:
    name = listed_name(world, IMAGE, "snapshot")
    data = stored(world, meta_path(IMAGE, name))
    world.store.replace_bytes(
        meta_path(IMAGE, name), data.replace(b'"version":', b'"version": ', 1)
    )


def _timestamp_unsigned(world: World) -> None:
    md = Metadata.from_bytes(stored(world, meta_path(IMAGE, "timestamp.json")))
    md.signatures.clear()
    world.store.replace_bytes(meta_path(IMAGE, "timestamp.json"), serialize(md))


ROWS: list[tuple[str, Callable[[World], None]]] = [
    ("released model re-pointed in models.json without a signature", _edit_models_unsigned),
    ("models.json re-signed by a key nobody delegated to", _models_signed_by_stranger),
    ("next root planted, signed only by the attacker", _planted_root),
    ("snapshot bytes changed under the listed hash", _snapshot_bytes_swapped),
    ("timestamp with its signatures stripped", _timestamp_unsigned),
]


@pytest.mark.parametrize(("name", "tamper"), ROWS, ids=[r[0] for r in ROWS])
def test_service_refuses_to_open_a_tampered_image_repository(
    tmp_path: Path, name: str, tamper: Callable[[World], None]
) -> None:
    scene = installed_scene(tmp_path)
    world = scene.world
    anchor = world.image.published.anchor
    tamper(world)
    with pytest.raises(RepositoryTamperedError):
        ImageRepository.open(world.store, world.ring, anchor=anchor)


def test_director_device_metadata_edited_in_the_store_is_refused(tmp_path: Path) -> None:
    scene = installed_scene(tmp_path)
    world = scene.world
    name = "director/devices/dev-1/metadata/timestamp.json"
    md = Metadata.from_bytes(stored(world, name))
    md.signed.version += 1000
    world.store.replace_bytes(name, serialize(md))
    director = DirectorRepository.open(
        world.store, world.ring, world.image, anchor=world.director._root_repo.anchor
    )
    with pytest.raises(RepositoryTamperedError):
        director.assign("dev-1", "mt3620", "r1", world.now)


def test_an_untampered_store_opens_and_the_anchor_follows_rotations(tmp_path: Path) -> None:
    scene = installed_scene(tmp_path)
    world = scene.world
    anchor = world.image.published.anchor
    assert anchor is not None
    old = world.signers("image", "root")[0]
    new = world.ring.add("image", "root")
    world.ring.remove("image", "root", old.public_key.keyid)
    world.image.rotate("root", [old.public_key.keyid], [new.public_key], [old], world.now)
    reopened = ImageRepository.open(world.store, world.ring, anchor=anchor)
    assert reopened.published.root is not None and reopened.published.root.signed.version == 2
    assert Metadata.from_bytes(anchor.load() or b"").signed.version == 2
