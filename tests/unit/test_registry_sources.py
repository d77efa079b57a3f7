"""Registry sync: which facts come from the operator (twin tags) and which from the device's
own report, and that a report never replaces an operator's tag."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from service.hubgateway import DeviceTwin
from service.registry import device_from_twin

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
REPORT = {"hardwareId": "mt3620", "profile": "kws", "agentVersion": "1.2.0"}


def _twin(tags: dict[str, Any], agent: dict[str, Any] | None) -> DeviceTwin:
    return DeviceTwin("dev-1", "e", "enabled", True, None, tags=tags, agent=agent)


SOURCES = [
    # (name, tags, report, expected (hardware_id, profile, agent_version))
    (
        "tags-win-over-the-report",
        {"hardwareId": "mt3620-b", "profile": "lab"},
        REPORT,
        ("mt3620-b", "lab", "1.2.0"),
    ),
    ("snake-case-hardware-tag", {"hardware_id": "mt3620-b"}, REPORT, ("mt3620-b", "kws", "1.2.0")),
    ("report-fills-what-the-operator-left-out", {}, REPORT, ("mt3620", "kws", "1.2.0")),
    ("no-report", {"hardwareId": "mt3620"}, None, ("mt3620", "", "")),
    ("nothing", {}, None, ("unknown", "", "")),
    (
        "malformed-report-reads-as-absent",
        {},
        {"hardwareId": 7, "profile": ["x"]},
        ("unknown", "", ""),
    ),
    ("non-string-tag-is-ignored", {"hardwareId": 3620}, REPORT, ("mt3620", "kws", "1.2.0")),
]


@pytest.mark.parametrize(
    ("tags", "agent", "expected"), [s[1:] for s in SOURCES], ids=[s[0] for s in SOURCES]
)
def test_device_facts_and_their_source(
    tags: dict[str, Any], agent: dict[str, Any] | None, expected: tuple[str, str, str]
) -> None:
    device = device_from_twin(_twin(tags, agent), NOW)
    assert (device.hardware_id, device.profile, device.agent_version) == expected


def test_reported_values_never_become_tags() -> None:
    agent = {**REPORT, "tags": {"ring": "prod"}, "ring": "prod"}
    device = device_from_twin(_twin({"site": "oslo"}, agent), NOW)
    assert device.tags == {"site": "oslo"}
    assert device.reported == agent  # kept for narrowing and display, never for membership
