"""Uptane attacks: what the director and image repository must agree on, one named row each.

Most rows compromise the director alone (every director online key, `forge_director`), the case
Uptane is built for: it can choose among signed images but not sign one. Rows that steal an
image-repository key (the models signer) also let the director point at what that key signed, the
strongest case: the image repository's delegations and signed releases must still hold. Every row
starts from a device with release r1 installed; the device must refuse with the specific binding
error and keep its trusted state byte-for-byte. Release bundles (counters, partial and mixed
bundles, and the legitimate releases next to them) are in test_release_bundles.py.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import DelegatedRole, Delegations, TargetFile, Targets

from signing import (
    ImageMismatchError,
    MalformedDirectorError,
    UnknownTargetError,
    UpdateRejected,
    WrongCoreError,
    WrongDeviceError,
    WrongHardwareError,
)
from signing.director import DIRECTOR_FIELD
from tests.security._attacks import (
    DIRECTOR,
    IMAGE,
    LIMITS,
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
    stored,
    stranger,
)
from tests.signing_world import firmware_custom

Attack = Callable[[Scene], Action]


def _director(change: Callable[[Scene, Targets], None]) -> Attack:
    """The compromised director re-signs dev-1's targets after `change`."""

    def attack(s: Scene) -> Action:
        forge_director(s.world, lambda targets: change(s, targets))
        return s.check

    return attack


# -- the two repositories disagree ---------------------------------------------------------------


def _renamed(like: str, path: str) -> Callable[[Scene, Targets], None]:
    """The director entry for `like`, under a path the image repository never signed."""

    def change(s: Scene, targets: Targets) -> None:
        entry = copy.deepcopy(targets.targets.pop(s.model if like == "model" else like))
        entry.path = path
        targets.targets[path] = entry

    return change


def _model_signer_signs(path: str, custom: dict[str, Any]) -> Attack:
    """The attacker holds the models key (and the image online keys, and the director)."""

    def attack(s: Scene) -> Action:
        world = s.world
        m = mirror(world, IMAGE, models=world.signers("image", "models"), **online(world, "image"))
        data = b"firmware the model signer built"
        entry = TargetFile(
            len(data), {"sha256": hashlib.sha256(data).hexdigest()}, path, {"custom": custom}
        )
        m.delegated["models"].signed.targets[path] = entry
        m.publish_targets("models", m.delegated["models"], later(world))
        m.publish_snapshot(later(world))
        m.publish_timestamp(later(world))

        def point_director(targets: Targets) -> None:
            ecus = {core: {"hardwareId": "mt3620"} for core in ("m4-0", "m4-1")}
            director_custom = {"ecuIdentifiers": ecus, "hardwareId": "mt3620", "releaseCounter": 1}
            replaced = "releases/r1.json" if path.startswith("releases/") else s.firmware
            del targets.targets[replaced]
            targets.targets[path] = TargetFile(
                entry.length, dict(entry.hashes), path, {"custom": director_custom}
            )

        forge_director(world, point_director)
        return s.check

    return attack


# -- wrong hardware, wrong core ------------------------------------------------------------------


def other_hardware_device(s: Scene) -> Action:
    """dev-2 is an mt3620b; the compromised director hands it r1, built for mt3620 only."""
    world = s.world
    path = world.add_model("vad", "1.0.0", hardware=["mt3620b"])
    world.release("rb", [("m4-0", path), ("m4-1", path)], hardware=["mt3620b"])
    world.director.assign("dev-2", "mt3620b", "rb", world.now)
    s.device = world.device("dev-2", "mt3620b", limits=LIMITS)
    world.install(s.device)
    world.director.assign("dev-2", "mt3620", "r1", world.now)  # the inventory lies
    return s.check


def artifact_for_other_hardware(s: Scene, targets: Targets) -> None:
    path = s.world.add_model("vad", "1.0.0", hardware=["mt3620b"])
    s.world.image.commit(s.world.now)
    targets.targets[path] = director_entry(s.world, path, ["m4-0"], "r1")


def core_built_for_another(s: Scene, targets: Targets) -> None:
    path = s.world.add_model("vad", "1.0.0", core="m4-0")
    s.world.image.commit(s.world.now)
    targets.targets[path] = director_entry(s.world, path, ["m4-1"], "r1")


# -- replay and malformed director metadata ------------------------------------------------------


def _replayed_from_dev2(revoke: bool) -> Attack:
    def attack(s: Scene) -> Action:
        world = s.world
        for _ in range(3):  # dev-2's versions pass dev-1's, so only the device id can tell
            world.director.assign("dev-2", "mt3620", "r1", world.now)
        if revoke:
            world.director.revoke("dev-2", world.now)
        other = "director/devices/dev-2/metadata/"
        for name in world.store.list(other):
            own = f"{DIRECTOR}/metadata/{name[len(other) :]}"
            world.store.replace_bytes(own, stored(world, name))
        return s.check

    return attack


def with_delegation(s: Scene, targets: Targets) -> None:
    key = stranger().public_key
    role = DelegatedRole("extra", [key.keyid], 1, True, ["models/*/*"])
    targets.delegations = Delegations({key.keyid: key}, roles={"extra": role})


def two_models_for_one_core(s: Scene, targets: Targets) -> None:
    path = publish_model_release(s, "r2", "2.0.0", counter=2, assign=False)
    targets.targets[path] = director_entry(s.world, path, ["m4-0"], "r1")


def two_releases(s: Scene, targets: Targets) -> None:
    publish_model_release(s, "r2", "2.0.0", counter=2, assign=False)
    path = "releases/r2.json"
    targets.targets[path] = director_entry(s.world, path, [], "r2")


def _address_model(**ecu: dict[str, str]) -> Callable[[Scene, Targets], None]:
    return lambda s, t: custom_of(t, s.model)["ecuIdentifiers"].update(ecu)


def _model_entry(**fields: Any) -> Callable[[Scene, Targets], None]:
    return lambda s, t: custom_of(t, s.model).update(fields)


def _model_length(s: Scene, targets: Targets) -> None:
    targets.targets[s.model].length -= 1


def _no_release(s: Scene, targets: Targets) -> None:
    del targets.targets["releases/r1.json"]


def _no_device(s: Scene, targets: Targets) -> None:
    del targets.unrecognized_fields[DIRECTOR_FIELD]


# fmt: off
ROWS: dict[str, tuple[Attack, type[UpdateRejected], str]] = {
    # director and image repository disagree
    "mismatch: director names the model with other bytes":
        (_director(lambda s, t: poison(t, s.model)), ImageMismatchError, "disagree on the bytes"),
    "mismatch: director names the model with another length":
        (_director(_model_length), ImageMismatchError, "disagree on the bytes"),
    "mismatch: director claims another release counter":
        (_director(_model_entry(releaseCounter=9)), ImageMismatchError, "release counter"),
    "unknown: director names a model the image repository lacks":
        (_director(_renamed("model", "models/kws/kws-v9.9.9.tflite")), UnknownTargetError,
         "kws-v9.9.9"),
    "unknown: director names a release the image repository lacks":
        (_director(_renamed("releases/r1.json", "releases/r9.json")), UnknownTargetError, "r9"),
    "unknown: model signer signs firmware in models.json":
        (_model_signer_signs("firmware/m4/m4-fw-v9.0.0.bin", firmware_custom("9.0.0")),
         UnknownTargetError, "m4-fw-v9.0.0"),
    "unknown: model signer signs a release in models.json":
        (_model_signer_signs("releases/r9.json", {"kind": "release"}), UnknownTargetError, "r9"),
    "mismatch: model signer labels a model as firmware":
        (_model_signer_signs("models/kws/kws-v9.0.0.tflite", firmware_custom("9.0.0")),
         ImageMismatchError, "does not match its path"),
    # wrong software for this device
    "hardware: release for other hardware sent to an mt3620b":
        (other_hardware_device, WrongHardwareError, "not for mt3620b"),
    "hardware: director addresses a core as other hardware":
        (_director(_address_model(**{"m4-0": {"hardwareId": "mt3620b"}})), WrongHardwareError,
         "addressed to other hardware on m4-0"),
    "hardware: director names an artifact signed for other hardware":
        (_director(artifact_for_other_hardware), WrongHardwareError, "built for ['mt3620b']"),
    "core: model built for m4-0 addressed to m4-1":
        (_director(core_built_for_another), WrongCoreError, "built for m4-0, addressed to m4-1"),
    "core: director addresses a core the device does not have":
        (_director(_address_model(a7={"hardwareId": "mt3620"})), WrongCoreError,
         "addressed to a7"),
    # replay and malformed director metadata
    "replay: another device's director metadata":
        (_replayed_from_dev2(revoke=False), WrongDeviceError, "for 'dev-2'"),
    "replay: another device's empty director metadata":
        (_replayed_from_dev2(revoke=True), WrongDeviceError, "for 'dev-2'"),
    "replay: director targets that name no device":
        (_director(_no_device), WrongDeviceError, "for None"),
    "malformed: director targets delegate":
        (_director(with_delegation), MalformedDirectorError, "must not delegate"),
    "malformed: two models for one core":
        (_director(two_models_for_one_core), MalformedDirectorError, "two model targets for m4-0"),
    "malformed: director names two releases":
        (_director(two_releases), MalformedDirectorError, "names 2 releases"),
    "malformed: director names no release":
        (_director(_no_release), MalformedDirectorError, "names 0 releases"),
    "malformed: director target addressed to no core":
        (_director(_model_entry(ecuIdentifiers={})), MalformedDirectorError, "names no ECU"),
}
# fmt: on


@pytest.mark.parametrize(("attack", "expected", "message"), ROWS.values(), ids=list(ROWS))
def test_uptane_attack_is_refused_and_trusted_state_is_unchanged(
    tmp_path: Path, attack: Attack, expected: type[UpdateRejected], message: str
) -> None:
    scene = installed_scene(tmp_path)
    assert_refused(scene, attack(scene), expected, message)
