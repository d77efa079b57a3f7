"""Record builders shared by the storage contract tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from service.storage import (
    Device,
    DeviceGroup,
    DeviceJob,
    GroupKind,
    Release,
    Rollout,
    UnitOfWork,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def device(n: int, **changes: Any) -> Device:
    values: dict[str, Any] = {
        "id": f"dev-{n:06d}",
        "hardware_id": "mt3620",
        "profile": "kws",
        "agent_version": "1.0.0",
        "tags": {"site": "berlin" if n % 2 else "oslo"},
        "reported": {"m4-0": {"model": "kws-v1", "state": "active"}},
        "last_seen": T0 + timedelta(minutes=n),
        "created_at": T0,
    }
    values.update(changes)
    return Device(**values)


def release(release_id: str = "rel-1", counter: int = 1) -> Release:
    return Release(
        id=release_id,
        counter=counter,
        hardware_ids=("mt3620",),
        manifest={"m4-0": {"target": "kws-v2.tflite", "sha256": "ab" * 32}},
        created_at=T0,
        created_by="alice",
    )


def rollout(rollout_id: str = "ro-1", **changes: Any) -> Rollout:
    values: dict[str, Any] = {
        "id": rollout_id,
        "group_id": "grp-berlin",
        "release_id": "rel-1",
        "state": "draft",
        "spec": {"stages": [{"percent": 10, "soak_s": 600}, {"percent": 100, "soak_s": 0}]},
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(changes)
    return Rollout(**values)


def job(n: int, rollout_id: str = "ro-1", **changes: Any) -> DeviceJob:
    values: dict[str, Any] = {
        "rollout_id": rollout_id,
        "device_id": f"dev-{n:06d}",
        "release_id": "rel-1",
        "stage": 0,
        "state": "pending",
        "updated_at": T0,
    }
    values.update(changes)
    return DeviceJob(**values)


def seed_rollout(uow: UnitOfWork, devices: int = 10) -> Rollout:
    """Devices 1..n, a tag group of Berlin devices, one release and one rollout over them."""
    uow.devices.upsert(device(n) for n in range(1, devices + 1))
    uow.groups.put(DeviceGroup("grp-berlin", "Berlin", GroupKind.TAG, "site=berlin"))
    uow.releases.create(release())
    return uow.rollouts.create(rollout())
