"""Indefinite freeze and endless data, one named row each (TUF spec §1.5.2).

Freeze: every role, validly signed with the right key, but expired; a device must not accept
stale metadata however well it is signed. Endless data: metadata over the device's caps
(`DeviceLimits`, tightened in `LIMITS`) or over the length its parent lists, and a target stream
that does not end where its signed length says. Each is refused with the specific error and
leaves the device's trusted state byte-for-byte unchanged.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from signing import ExpiredError, OversizeError, TargetTooLongError, UpdateRejected
from tests.security._attacks import (
    DIRECTOR,
    IMAGE,
    LIMITS,
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
    past,
    publish_model_release,
    stored,
    target_blob,
)

Attack = Callable[[Scene], Action]


# -- indefinite freeze: validly signed, expired --------------------------------------------------


def _expired(prefix: str, repo: str, role: str) -> Attack:
    def attack(s: Scene) -> Action:
        world = s.world
        m = mirror(
            world,
            prefix,
            **{r: world.signers(repo, r) for r in ("targets", "models", *online(world, repo))},
        )
        if role in ("targets", "models"):
            md = m.targets if role == "targets" else m.delegated[role]
            assert md is not None
            m.publish_targets(role, md, past(world))
        m.publish_snapshot(past(world) if role == "snapshot" else later(world))
        m.publish_timestamp(past(world) if role == "timestamp" else later(world))
        return s.check

    return attack


def trusted_timestamp_left_to_expire(s: Scene) -> Action:
    """The plain freeze: the device trusts a fresh timestamp, then the mirror stops changing."""
    world = s.world
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    mirror(world, IMAGE, timestamp=world.signers("image", "timestamp")).publish_timestamp(expires)
    assert s.check() is None
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)
    return s.check


def _expired_root(prefix: str, repo: str) -> Attack:
    def attack(s: Scene) -> Action:
        world = s.world
        forge_root(
            world,
            prefix,
            lambda root: setattr(root, "expires", past(world)),
            world.signers(repo, "root"),
        )
        return s.check

    return attack


# -- endless data --------------------------------------------------------------------------------


def _huge_timestamp(prefix: str) -> Attack:
    def attack(s: Scene) -> Action:
        path = meta_path(prefix, "timestamp.json")
        s.world.store.replace_bytes(path, stored(s.world, path) + b" " * LIMITS.timestamp_max)
        return s.check

    return attack


def image_root_huge(s: Scene) -> Action:
    s.world.store.put(meta_path(IMAGE, "2.root.json"), [b"{" * (LIMITS.root_max + 1)])
    return s.check


def _padded_listed(role: str) -> Attack:
    """The next legitimate `role` file arrives with more bytes than its parent lists."""

    def attack(s: Scene) -> Action:
        s.world.image.refresh(s.world.now, timedelta(days=1000))
        path = meta_path(IMAGE, listed_name(s.world, IMAGE, role))
        s.world.store.replace_bytes(path, stored(s.world, path) + b" " * 4096)
        return s.check

    return attack


# fmt: off
ROWS: dict[str, tuple[Attack, type[UpdateRejected], str]] = {
    # indefinite freeze
    "freeze: image timestamp expired":
        (_expired(IMAGE, "image", "timestamp"), ExpiredError, "timestamp.json is expired"),
    "freeze: image snapshot expired":
        (_expired(IMAGE, "image", "snapshot"), ExpiredError, "snapshot.json is expired"),
    "freeze: image targets expired":
        (_expired(IMAGE, "image", "targets"), ExpiredError, "targets is expired"),
    "freeze: delegated models role expired":
        (_expired(IMAGE, "image", "models"), ExpiredError, "models is expired"),
    "freeze: the trusted timestamp served on after it expired":
        (trusted_timestamp_left_to_expire, ExpiredError, "timestamp.json is expired"),
    "freeze: image root expired":
        (_expired_root(IMAGE, "image"), ExpiredError, "root.json is expired"),
    "freeze: director timestamp expired":
        (_expired(DIRECTOR, "director", "timestamp"), ExpiredError, "timestamp.json is expired"),
    "freeze: director snapshot expired":
        (_expired(DIRECTOR, "director", "snapshot"), ExpiredError, "snapshot.json is expired"),
    "freeze: director targets expired":
        (_expired(DIRECTOR, "director", "targets"), ExpiredError, "targets is expired"),
    "freeze: director root expired":
        (_expired_root(DIRECTOR, "director"), ExpiredError, "root.json is expired"),
    # endless data
    "endless: image timestamp over its cap":
        (_huge_timestamp(IMAGE), OversizeError, "maximum allowed length of 2048"),
    "endless: director timestamp over its cap":
        (_huge_timestamp(DIRECTOR), OversizeError, "maximum allowed length of 2048"),
    "endless: next image root over its cap":
        (image_root_huge, OversizeError, "maximum allowed length of 16384"),
    "endless: snapshot longer than the timestamp lists":
        (_padded_listed("snapshot"), OversizeError, "exceeding the maximum"),
    "endless: models role longer than the snapshot lists":
        (_padded_listed("models"), OversizeError, "exceeding the maximum"),
}
# fmt: on


@pytest.mark.parametrize(("attack", "expected", "message"), ROWS.values(), ids=list(ROWS))
def test_stale_or_endless_data_is_refused_and_trusted_state_is_unchanged(
    tmp_path: Path, attack: Attack, expected: type[UpdateRejected], message: str
) -> None:
    scene = installed_scene(tmp_path)
    assert_refused(scene, attack(scene), expected, message)


def test_endless_target_stream_stops_at_the_first_extra_byte(tmp_path: Path) -> None:
    scene = installed_scene(tmp_path)
    path = publish_model_release(scene)
    release = scene.check()
    assert release is not None
    target = release.targets[0]
    signed = stored(scene.world, target_blob(scene.world, path))
    verifier = target.verifier()
    endless = itertools.chain([signed], itertools.repeat(b"\x00"))  # then one byte at a time
    taken = 0

    with pytest.raises(TargetTooLongError):
        for chunk in endless:
            taken += 1
            verifier.update(chunk)

    assert taken == 2  # the signed bytes, then the first extra byte, and no more
    assert verifier.received == target.length
    with pytest.raises(TargetTooLongError):  # the verdict stays a failure
        verifier.finish()
