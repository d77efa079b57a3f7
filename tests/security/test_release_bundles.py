"""Release bundles: counters, partial bundles and mixed bundles, one named row each.

A release (signed in the image repository by the release manager) says which artifact goes to
which core, with their bytes and a release counter. A device must install a release whole or not
at all, never go back to a lower counter (the release's or an artifact's), and never install a
set of targets that no signed release puts together, whoever assembled it: a compromised director,
a stolen models key, or the agent's own bookkeeping. Legitimate releases of the same shapes are
installed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from tuf.api.metadata import Targets

from signing import (
    IncompleteReleaseError,
    MixedBundleError,
    ReleaseRollbackError,
    UpdateRejected,
)
from signing.stream import VerifiedDigest
from tests.security._attacks import (
    IMAGE,
    Action,
    Scene,
    assert_refused,
    custom_of,
    director_entry,
    forge_director,
    installed_scene,
    later,
    mirror,
    online,
    poison,
    publish_model_release,
    stream_and_commit,
)

Attack = Callable[[Scene], Action]


# -- rollback of releases ------------------------------------------------------------------------


def release_counter_lower(s: Scene) -> Action:
    publish_model_release(s, "r2", "2.0.0", counter=2)
    s.world.install(s.device)
    s.world.director.assign("dev-1", "mt3620", "r1", s.world.now)  # back to counter 1
    return s.check


def artifact_counter_lower(s: Scene) -> Action:
    """r3 has the highest release counter but brings back the counter-1 model."""
    publish_model_release(s, "r2", "2.0.0", counter=2)
    s.world.install(s.device)
    s.world.release("r3", [("m4-0", s.model), ("m4-1", s.model)], counter=3)
    s.world.director.assign("dev-1", "mt3620", "r3", s.world.now)
    return s.check


# -- partial and mixed bundles -------------------------------------------------------------------


def _firmware_and_model_r2(s: Scene, min_firmware: str | None = None) -> tuple[str, str]:
    """Release r2, firmware 2.0.0 and model kws 2.0.0 on both cores, assigned to dev-1."""
    firmware = s.world.add_firmware("2.0.0", counter=2)
    model = s.world.add_model("kws", "2.0.0", counter=2, min_firmware=min_firmware)
    members = [(core, path) for core in ("m4-0", "m4-1") for path in (firmware, model)]
    s.world.release("r2", members, counter=2)
    s.world.director.assign("dev-1", "mt3620", "r2", s.world.now)
    return firmware, model


def _commit_r2_with(s: Scene, change: Callable[[dict[str, VerifiedDigest], str], None]) -> Action:
    """r2 (firmware and model) verified and streamed; the model's verdict is then `change`d."""
    _, model = _firmware_and_model_r2(s)
    release = s.check()
    assert release is not None
    verdicts = s.world.stream(release)
    change(verdicts, model)
    return lambda: s.device.commit_install(release, verdicts)


def commit_with_a_verdict_missing(s: Scene) -> Action:
    def withhold(verdicts: dict[str, VerifiedDigest], model: str) -> None:
        del verdicts[model]

    return _commit_r2_with(s, withhold)


def commit_with_a_verdict_for_other_bytes(s: Scene) -> Action:
    def forge(verdicts: dict[str, VerifiedDigest], model: str) -> None:
        length = verdicts[model].length
        verdicts[model] = VerifiedDigest(model, length, hashlib.sha256(b"other").hexdigest())

    return _commit_r2_with(s, forge)


def firmware_withheld_from_one_core(s: Scene) -> Action:
    firmware, _ = _firmware_and_model_r2(s)
    forge_director(s.world, lambda t: custom_of(t, firmware)["ecuIdentifiers"].pop("m4-0"))
    return s.check


def released_model_resigned_with_other_bytes(s: Scene) -> Action:
    """A stolen models key (and the image online keys) re-signs r2's model path with other bytes;
    a director that copies from the image repository follows."""
    world = s.world
    path = publish_model_release(s, "r2", "2.0.0", counter=2, assign=False)
    other = b"the model signer's other bytes"
    m = mirror(world, IMAGE, models=world.signers("image", "models"), **online(world, "image"))
    poison(m.delegated["models"].signed, path, other)
    world.store.put(world.image.published.target_path(path, sha256(other)), [other])
    m.publish_targets("models", m.delegated["models"], later(world))
    m.publish_snapshot(later(world))
    m.publish_timestamp(later(world))
    world.director.assign("dev-1", "mt3620", "r2", world.now)
    forge_director(world, lambda targets: poison(targets, path, other))
    return s.check


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def members_of_two_releases(s: Scene) -> Action:
    path = publish_model_release(s, "r2", "2.0.0", counter=2)

    def mix(targets: Targets) -> None:
        custom_of(targets, path)["ecuIdentifiers"].pop("m4-1")
        targets.targets[s.model] = director_entry(s.world, s.model, ["m4-1"], "r2")

    forge_director(s.world, mix)
    return s.check


def model_sent_with_older_release_firmware(s: Scene) -> Action:
    """r2 pairs firmware 2.0.0 with a model that needs it; the director sends r1's firmware."""
    firmware, _ = _firmware_and_model_r2(s, min_firmware="2.0.0")

    def swap(targets: Targets) -> None:
        del targets.targets[firmware]
        targets.targets[s.firmware] = director_entry(s.world, s.firmware, ["m4-0", "m4-1"], "r2")

    forge_director(s.world, swap)
    return s.check


def model_needs_newer_firmware(s: Scene) -> Action:
    """A legitimate release and director; the installed firmware 1.0.0 is too old for the model."""
    publish_model_release(s, "r2", "2.0.0", counter=2, min_firmware="2.0.0")
    return s.check


# fmt: off
ROWS: dict[str, tuple[Attack, type[UpdateRejected], str]] = {
    # rollback
    "rollback: release counter lower than installed":
        (release_counter_lower, ReleaseRollbackError, "release counter 1 < installed 2"),
    "rollback: newer release brings back a lower artifact counter":
        (artifact_counter_lower, ReleaseRollbackError, "counter 1 < installed 2 on m4-0"),
    # partial and mixed bundles
    "partial bundle: commit with one target's verdict missing":
        (commit_with_a_verdict_missing, IncompleteReleaseError, "no passing verdict"),
    "partial bundle: commit with a verdict for other bytes":
        (commit_with_a_verdict_for_other_bytes, IncompleteReleaseError, "no passing verdict"),
    "partial bundle: firmware withheld from one core of the release":
        (firmware_withheld_from_one_core, MixedBundleError, "not what release r2 signs"),
    "mixed bundle: members of two releases":
        (members_of_two_releases, MixedBundleError, "not what release r2 signs"),
    "mixed bundle: model sent with the previous release's firmware":
        (model_sent_with_older_release_firmware, MixedBundleError, "not what release r2 signs"),
    "mixed bundle: model needs firmware newer than installed":
        (model_needs_newer_firmware, MixedBundleError, "needs firmware (2, 0, 0)"),
    "mixed bundle: a released model re-signed with other bytes (models key stolen)":
        (released_model_resigned_with_other_bytes, MixedBundleError, "r2 signs other bytes"),
}
# fmt: on


@pytest.mark.parametrize(("attack", "expected", "message"), ROWS.values(), ids=list(ROWS))
def test_bundle_attack_is_refused_and_trusted_state_is_unchanged(
    tmp_path: Path, attack: Attack, expected: type[UpdateRejected], message: str
) -> None:
    scene = installed_scene(tmp_path)
    assert_refused(scene, attack(scene), expected, message)


# -- legitimate changes of the same kinds ------------------------------------------------------


def newer_model(s: Scene) -> str:
    publish_model_release(s, "r2", "2.0.0", counter=2)
    return "r2"


def newer_firmware_and_model_needing_it(s: Scene) -> str:
    _firmware_and_model_r2(s, min_firmware="2.0.0")
    return "r2"


def one_core_first(s: Scene) -> str:
    publish_model_release(s, "r2", "2.0.0", counter=2, assign=False)
    s.world.director.assign("dev-1", "mt3620", "r2", s.world.now, cores=["m4-0"])
    return "r2"


def same_counter_rebuild(s: Scene) -> str:
    publish_model_release(s, "r1b", "1.0.1", counter=1)
    return "r1b"


ACCEPTED: dict[str, Callable[[Scene], str]] = {
    "accepted: newer model on both cores": newer_model,
    "accepted: newer firmware with a model that needs it": newer_firmware_and_model_needing_it,
    "accepted: a release rolled out to one core first": one_core_first,
    "accepted: a rebuild under the same release counter": same_counter_rebuild,
}


@pytest.mark.parametrize("change", ACCEPTED.values(), ids=list(ACCEPTED))
def test_legitimate_release_is_installed(tmp_path: Path, change: Callable[[Scene], str]) -> None:
    scene = installed_scene(tmp_path)
    release_id = change(scene)

    release = scene.check()
    assert release is not None and release.release_id == release_id
    stream_and_commit(scene, release)

    assert scene.device.installed().release_id == release_id
    assert scene.check() is None
