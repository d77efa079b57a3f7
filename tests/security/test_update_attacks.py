"""TUF attacks on a device's update check, one named row each (TUF spec §1.5.2).

Every row starts from a device that has installed release r1, lets the legitimate repositories move
on where the attack needs a history, then has the attacker change the mirror (holding only the keys
the row names). The device must refuse with the specific error, and its trusted state (metadata
generations and installed release) must be byte-for-byte what it was before the attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, Targets

from signing import (
    MetadataMismatchError,
    MetadataRejected,
    SignatureError,
    TargetHashError,
    TargetTooLongError,
    TargetTruncatedError,
    UpdateRejected,
    VersionError,
)
from signing._repo import serialize
from tests.security._attacks import (
    DIRECTOR,
    IMAGE,
    Action,
    Scene,
    assert_refused,
    forge_root,
    installed_scene,
    later,
    listed_name,
    meta_path,
    mirror,
    online,
    poison,
    publish_model_release,
    rotate_key,
    set_root_keys,
    stored,
    stranger,
    stream_and_commit,
    target_blob,
)

Attack = Callable[[Scene], Action]

# -- helpers -------------------------------------------------------------------------------------


def _advance_image(scene: Scene) -> None:
    """The image repository re-signs every role (as its refresh job does) and the device follows."""
    scene.world.image.refresh(scene.world.now, timedelta(days=1000))
    assert scene.check() is None


def _advance_director(scene: Scene) -> None:
    """The director re-publishes dev-1's assignment (new versions) and the device follows."""
    scene.world.director.assign("dev-1", "mt3620", "r1", scene.world.now)
    assert scene.check() is None


def _forge_role(scene: Scene, prefix: str, role: str, **held: Sequence[Signer]) -> None:
    """Publish `role` (poisoned if it lists targets), then snapshot and timestamp, with `held`."""
    world = scene.world
    m = mirror(world, prefix, **held)
    md = m.targets if role == "targets" else m.delegated[role]
    assert md is not None
    if scene.model in md.signed.targets:
        poison(md.signed, scene.model)
    m.publish_targets(role, md, later(world))
    m.publish_snapshot(later(world))
    m.publish_timestamp(later(world))


def _release_with_tampered_target(scene: Scene, data: Callable[[bytes], bytes]) -> Action:
    """r2 is legitimately signed and verified; the mirror then serves other bytes for its model."""
    path = publish_model_release(scene)
    release = scene.check()
    assert release is not None
    blob = target_blob(scene.world, path)
    scene.world.store.replace_bytes(blob, data(stored(scene.world, blob)))
    return lambda: stream_and_commit(scene, release)


# -- arbitrary installation ----------------------------------------------------------------------


def image_timestamp_unsigned(s: Scene) -> Action:
    mirror(s.world, IMAGE).publish_timestamp(later(s.world))  # holds no key: no signature
    return s.check


def image_timestamp_unknown_key(s: Scene) -> Action:
    mirror(s.world, IMAGE, timestamp=[stranger()]).publish_timestamp(later(s.world))
    return s.check


def image_snapshot_unknown_key(s: Scene) -> Action:
    timestamp = s.world.signers("image", "timestamp")
    m = mirror(s.world, IMAGE, snapshot=[stranger()], timestamp=timestamp)
    m.publish_snapshot(later(s.world))
    m.publish_timestamp(later(s.world))
    return s.check


def image_targets_unknown_key(s: Scene) -> Action:
    _forge_role(s, IMAGE, "targets", targets=[stranger()], **online(s.world, "image"))
    return s.check


def models_role_unknown_key(s: Scene) -> Action:
    _forge_role(s, IMAGE, "models", models=[stranger()], **online(s.world, "image"))
    return s.check


def director_timestamp_unsigned(s: Scene) -> Action:
    mirror(s.world, DIRECTOR).publish_timestamp(later(s.world))
    return s.check


def director_snapshot_unknown_key(s: Scene) -> Action:
    timestamp = s.world.signers("director", "timestamp")
    m = mirror(s.world, DIRECTOR, snapshot=[stranger()], timestamp=timestamp)
    m.publish_snapshot(later(s.world))
    m.publish_timestamp(later(s.world))
    return s.check


def director_targets_unknown_key(s: Scene) -> Action:
    held = online(s.world, "director")
    _forge_role(s, DIRECTOR, "targets", targets=[stranger()], **held)
    return s.check


def _attacker_root(prefix: str) -> Attack:
    def attack(s: Scene) -> Action:
        attacker = stranger()
        forge_root(
            s.world,
            prefix,
            lambda root: set_root_keys(root, "root", [attacker.public_key], 1),
            [attacker],
        )
        return s.check

    return attack


def image_metadata_as_director_metadata(s: Scene) -> Action:
    """Validly signed, newer, and by the wrong repository's key."""
    data = stored(s.world, meta_path(IMAGE, "timestamp.json"))
    s.world.store.replace_bytes(meta_path(DIRECTOR, "timestamp.json"), data)
    return s.check


def image_timestamp_garbage(s: Scene) -> Action:
    s.world.store.replace_bytes(meta_path(IMAGE, "timestamp.json"), b'{"signed": 1}')
    return s.check


def target_same_length_other_bytes(s: Scene) -> Action:
    return _release_with_tampered_target(s, lambda data: bytes(b ^ 0x5A for b in data))


def target_longer(s: Scene) -> Action:
    return _release_with_tampered_target(s, lambda data: data + b"\x00")


def target_truncated(s: Scene) -> Action:
    return _release_with_tampered_target(s, lambda data: data[:-1])


# -- rollback ------------------------------------------------------------------------------------


def _replayed_timestamp(prefix: str, advance: Callable[[Scene], None]) -> Attack:
    def attack(s: Scene) -> Action:
        path = meta_path(prefix, "timestamp.json")
        old = stored(s.world, path)
        advance(s)
        s.world.store.replace_bytes(path, old)
        return s.check

    return attack


def _snapshot_rollback(prefix: str, repo: str, advance: Callable[[Scene], None]) -> Attack:
    def attack(s: Scene) -> Action:
        old = stored(s.world, meta_path(prefix, listed_name(s.world, prefix, "snapshot")))
        advance(s)
        m = mirror(s.world, prefix, timestamp=s.world.signers(repo, "timestamp"))
        m.snapshot = Metadata.from_bytes(old)
        m.publish_timestamp(later(s.world))
        return s.check

    return attack


def _targets_rollback(
    prefix: str, repo: str, role: str, advance: Callable[[Scene], None]
) -> Attack:
    def attack(s: Scene) -> Action:
        old_name = listed_name(s.world, prefix, role)
        advance(s)
        m = mirror(s.world, prefix, **online(s.world, repo))
        old = Metadata[Targets].from_bytes(stored(s.world, meta_path(prefix, old_name)))
        if role == "targets":
            m.targets = old
        else:
            m.delegated[role] = old
        m.publish_snapshot(later(s.world))
        m.publish_timestamp(later(s.world))
        return s.check

    return attack


def image_root_replayed(s: Scene) -> Action:
    """After a legitimate rotation to root v2, v1 is replayed as v3."""
    world = s.world
    rotate_key(world, "image", "timestamp")
    assert s.check() is None
    world.store.put(
        meta_path(IMAGE, "3.root.json"), [stored(world, meta_path(IMAGE, "1.root.json"))]
    )
    return s.check


# -- mix-and-match -------------------------------------------------------------------------------


def _older_bytes_under_listed_name(prefix: str, role: str) -> Attack:
    """The repository moves on; the file its new metadata lists is served with the old bytes."""

    def attack(s: Scene) -> Action:
        old = stored(s.world, meta_path(prefix, listed_name(s.world, prefix, role)))
        if prefix == IMAGE:
            s.world.image.refresh(s.world.now, timedelta(days=1000))
        else:
            s.world.director.assign("dev-1", "mt3620", "r1", s.world.now)
        s.world.store.replace_bytes(meta_path(prefix, listed_name(s.world, prefix, role)), old)
        return s.check

    return attack


def director_targets_altered_in_transit(s: Scene) -> Action:
    path = publish_model_release(s)
    name = listed_name(s.world, DIRECTOR, "targets")
    md = s.world.meta(DIRECTOR, name)
    poison(md.signed, path)
    s.world.put_meta(DIRECTOR, name, md)  # the signatures are kept, and no longer match
    return s.check


def models_version_other_than_listed(s: Scene) -> Action:
    """Online keys compromised: the snapshot lists models v+1 with the hash of the v file."""
    world = s.world
    m = mirror(world, IMAGE, **online(world, "image"))
    current = listed_name(world, IMAGE, "models")
    data = stored(world, meta_path(IMAGE, current))
    version = int(current.split(".", 1)[0]) + 1
    world.store.put(meta_path(IMAGE, f"{version}.models.json"), [data])
    assert m.snapshot is not None
    meta = m.snapshot.signed.meta["models.json"]
    meta.version = version
    m.snapshot.signed.version += 1
    md = m.snapshot
    for signer in world.signers("image", "snapshot"):
        md.sign(signer)
    world.store.put(meta_path(IMAGE, f"{md.signed.version}.snapshot.json"), [serialize(md)])
    m.publish_timestamp(later(world))
    return s.check


# fmt: off
ROWS: dict[str, tuple[Attack, type[UpdateRejected], str]] = {
    # arbitrary installation
    "arbitrary: image timestamp with no signature":
        (image_timestamp_unsigned, SignatureError, "timestamp was signed by 0/1"),
    "arbitrary: image timestamp signed by an unknown key":
        (image_timestamp_unknown_key, SignatureError, "timestamp was signed by 0/1"),
    "arbitrary: image snapshot signed by an unknown key (timestamp key stolen)":
        (image_snapshot_unknown_key, SignatureError, "snapshot was signed by 0/1"),
    "arbitrary: image targets signed by an unknown key (online keys stolen)":
        (image_targets_unknown_key, SignatureError, "targets was signed by 0/1"),
    "arbitrary: delegated models role signed by an unknown key (online keys stolen)":
        (models_role_unknown_key, SignatureError, "models was signed by 0/1"),
    "arbitrary: director timestamp with no signature":
        (director_timestamp_unsigned, SignatureError, "timestamp was signed by 0/1"),
    "arbitrary: director snapshot signed by an unknown key (timestamp key stolen)":
        (director_snapshot_unknown_key, SignatureError, "snapshot was signed by 0/1"),
    "arbitrary: director targets signed by an unknown key (online keys stolen)":
        (director_targets_unknown_key, SignatureError, "targets was signed by 0/1"),
    "arbitrary: image root v2 signed only by the attacker":
        (_attacker_root(IMAGE), SignatureError, "root was signed by 0/1"),
    "arbitrary: director root v2 signed only by the attacker":
        (_attacker_root(DIRECTOR), SignatureError, "root was signed by 0/1"),
    "arbitrary: image timestamp served as the director's":
        (image_metadata_as_director_metadata, SignatureError, "timestamp was signed by 0/1"),
    "arbitrary: image timestamp that is not metadata":
        (image_timestamp_garbage, MetadataRejected, "deserialize"),
    "arbitrary: target replaced by other bytes of the same length":
        (target_same_length_other_bytes, TargetHashError, "is not the signed one"),
    "arbitrary: target replaced by longer bytes":
        (target_longer, TargetTooLongError, "more than the 3000 signed bytes"),
    "arbitrary: target replaced by shorter bytes":
        (target_truncated, TargetTruncatedError, "2999 of 3000 signed bytes"),
    # rollback
    "rollback: older image timestamp replayed":
        (_replayed_timestamp(IMAGE, _advance_image), VersionError, "timestamp version"),
    "rollback: older director timestamp replayed":
        (_replayed_timestamp(DIRECTOR, _advance_director), VersionError, "timestamp version"),
    "rollback: older image snapshot (timestamp key stolen)":
        (_snapshot_rollback(IMAGE, "image", _advance_image), VersionError, "snapshot version"),
    "rollback: older director snapshot (timestamp key stolen)":
        (_snapshot_rollback(DIRECTOR, "director", _advance_director), VersionError,
         "snapshot version"),
    "rollback: older image targets (online keys stolen)":
        (_targets_rollback(IMAGE, "image", "targets", _advance_image), VersionError, "targets"),
    "rollback: older delegated models role (online keys stolen)":
        (_targets_rollback(IMAGE, "image", "models", _advance_image), VersionError, "models"),
    "rollback: older director targets (online keys stolen)":
        (_targets_rollback(DIRECTOR, "director", "targets", _advance_director), VersionError,
         "targets"),
    "rollback: image root v1 replayed as v3":
        (image_root_replayed, VersionError, "root version 3 instead got version 1"),
    # mix-and-match
    "mix-and-match: image snapshot of an older state under the listed name":
        (_older_bytes_under_listed_name(IMAGE, "snapshot"), MetadataMismatchError, "hash"),
    "mix-and-match: models role of an older state under the listed name":
        (_older_bytes_under_listed_name(IMAGE, "models"), MetadataMismatchError, "hash"),
    "mix-and-match: director targets of an older state under the listed name":
        (_older_bytes_under_listed_name(DIRECTOR, "targets"), MetadataMismatchError, "hash"),
    "mix-and-match: director targets altered in transit":
        (director_targets_altered_in_transit, MetadataMismatchError, "does not match expected"),
    "mix-and-match: models version other than the snapshot lists (online keys stolen)":
        (models_version_other_than_listed, VersionError, "Expected models v3, got v2"),
}
# fmt: on


@pytest.mark.parametrize(("attack", "expected", "message"), ROWS.values(), ids=list(ROWS))
def test_attack_is_refused_and_trusted_state_is_unchanged(
    tmp_path: Path, attack: Attack, expected: type[UpdateRejected], message: str
) -> None:
    scene = installed_scene(tmp_path)
    assert_refused(scene, attack(scene), expected, message)
