"""The service's budgets table agrees with what the simulated cores enforce (it may not import
firmware, so this test holds the two together)."""

from __future__ import annotations

import json

from firmware.icc import PROFILES
from service.releases import BUDGETS
from tests.unit.releases._models import IMAGES


def test_budgets_match_the_device_profiles() -> None:
    for hardware_id, budget in BUDGETS.items():
        profile = PROFILES[hardware_id]
        assert budget.cores == profile.core_ids
        assert (budget.tcm_bytes, budget.sysram_bytes) == (profile.tcm_bytes, profile.sysram_bytes)
        assert budget.firmware_updates == profile.firmware_updates_allowed


def test_firmware_reserve_and_operators_cover_the_shipped_images() -> None:
    images = [json.loads(p.read_text()) for p in sorted(IMAGES.glob("m4-*.json"))]
    newest = images[-1]
    for budget in BUDGETS.values():
        assert budget.firmware_reserved_bytes >= max(i["reservedBytes"] for i in images)
        assert budget.operators == frozenset(newest["operators"])
        assert budget.runtime == newest["runtimeVersion"]
    assert BUDGETS["mt3620"].model_ram_bytes == 256 * 1024 - 48 * 1024
