"""The signing flow from repository creation to a device's recorded install, in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from signing import IncompleteReleaseError
from tests.signing_world import World


def test_device_installs_an_assigned_release_and_then_has_nothing_to_do(tmp_path: Path) -> None:
    world = World(tmp_path)
    path = world.simple_release("r1")
    world.director.assign("dev-1", "mt3620", "r1", world.now)
    device = world.device()

    release = world.install(device)

    assert release.release_id == "r1"
    assert [(t.core, t.path) for t in release.targets] == [("m4-0", path), ("m4-1", path)]
    assert device.installed().release_id == "r1"
    assert device.check() is None


def test_nothing_assigned_means_no_update(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.simple_release("r1")
    world.director.revoke("dev-1", world.now)
    assert world.device().check() is None


def test_new_release_after_installed_one_is_offered(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.simple_release("r1", "1.0.0", counter=1)
    world.director.assign("dev-1", "mt3620", "r1", world.now)
    device = world.device()
    world.install(device)

    world.simple_release("r2", "2.0.0", counter=2)
    world.director.assign("dev-1", "mt3620", "r2", world.now)
    release = world.install(device)

    assert release.release_id == "r2"
    assert device.installed().counter("m4-0", "model") == 2


def test_commit_without_every_verdict_records_nothing(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.simple_release("r1")
    world.director.assign("dev-1", "mt3620", "r1", world.now)
    device = world.device()
    release = device.check()
    assert release is not None
    verdicts = world.stream(release)
    verdicts.pop(release.targets[0].path)
    before = world.trusted_state(device)

    with pytest.raises(IncompleteReleaseError):
        device.commit_install(release, verdicts)
    assert world.trusted_state(device) == before
