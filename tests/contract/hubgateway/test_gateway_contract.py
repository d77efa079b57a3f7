"""One suite, both hub gateway adapters: memory, and the azure-iot-hub SDK against the mock hub."""

from __future__ import annotations

import json
from typing import Any

import pytest

from device_agent.protocol import (
    COMPONENT,
    AgentState,
    DesiredService,
    ReportedAgent,
    WorkflowAction,
    ack_patch,
    agent_patch,
    parse_desired,
)
from service.hubgateway import (
    DeviceExists,
    DeviceNotFound,
    DeviceOffline,
    DeviceTimedOut,
    DeviceTwin,
    HubRequestError,
    ServiceSpec,
)
from tests.contract.hubgateway.conftest import Rig

DEPLOY = ServiceSpec(
    WorkflowAction.DEPLOY,
    "wf-1",
    image_url="https://blobs.example/repo/image/metadata/",
    director_url="https://blobs.example/repo/director/devices/dev-1/metadata/",
    targets_url="https://blobs.example/repo/image/targets/",
    query="sv=2024&sig=abc",
    telemetry_interval_s=30,
    retry_timestamp="2026-11-25T10:00:00Z",
)


def device_view(twin: DeviceTwin) -> DesiredService | None:
    """What the agent parses from the desired document the gateway wrote."""
    document: dict[str, Any] = {"$version": twin.desired_version}
    if twin.desired_service is not None:
        document[COMPONENT] = {"__t": "c", "service": twin.desired_service}
    return parse_desired(document)


def test_register_read_and_delete(rig: Rig) -> None:
    registered = rig.gateway.register_device("dev-1")
    assert (registered.device_id, registered.status) == ("dev-1", "enabled")
    assert registered.primary_key  # the hub generated the SAS keys
    with pytest.raises(DeviceExists):
        rig.gateway.register_device("dev-1")
    assert rig.gateway.register_device("dev-2", enabled=False).status == "disabled"
    twin = rig.gateway.get_twin("dev-1")
    assert (twin.device_id, twin.status, twin.connected) == ("dev-1", "enabled", False)
    assert twin.agent is None and twin.desired_service is None and twin.tags == {}
    rig.gateway.delete_device("dev-1")
    with pytest.raises(DeviceNotFound):
        rig.gateway.get_twin("dev-1")
    with pytest.raises(DeviceNotFound):
        rig.gateway.delete_device("dev-1")
    assert [t.device_id for t in rig.gateway.iter_twins()] == ["dev-2"]


@pytest.mark.parametrize(
    "device_id",
    ["", "a b", "x" * 129, "dev/1", "dév"],
    ids=["empty", "space", "long", "slash", "non-ascii"],
)
def test_bad_device_ids_are_refused_before_the_hub(rig: Rig, device_id: str) -> None:
    with pytest.raises(HubRequestError):
        rig.gateway.register_device(device_id)
    with pytest.raises(HubRequestError):
        rig.gateway.get_twins([device_id])


def test_tags_merge_and_select_groups_page_by_page(rig: Rig) -> None:
    for n in range(7):
        rig.gateway.register_device(f"dev-{n}")
        group = "canary" if n % 3 == 0 else "fleet"
        rig.gateway.set_tags(f"dev-{n}", {"ADUGroup": group, "site": f"s{n % 2}"})
    twin = rig.gateway.set_tags("dev-0", {"site": None, "tier": "prod"})
    assert twin.tags == {"ADUGroup": "canary", "tier": "prod"}  # merged; None removed `site`
    canary = [t.device_id for t in rig.gateway.iter_twins({"ADUGroup": "canary"}, page_size=2)]
    assert canary == ["dev-0", "dev-3", "dev-6"]
    both = rig.gateway.iter_twins({"ADUGroup": "fleet", "site": "s1"}, page_size=1)
    assert [t.device_id for t in both] == ["dev-1", "dev-5"]
    everyone = [t.device_id for t in rig.gateway.iter_twins(page_size=3)]
    assert everyone == [f"dev-{n}" for n in range(7)]
    assert [t.device_id for t in rig.gateway.iter_twins({"ADUGroup": "it's"})] == []
    with pytest.raises(HubRequestError):
        rig.gateway.set_tags("dev-0", {"bad name": "x"})
    with pytest.raises(DeviceNotFound):
        rig.gateway.set_tags("nobody", {"ADUGroup": "x"})


def test_get_twins_reads_many_devices_in_batches(rig: Rig) -> None:
    ids = [f"d{n:03d}" for n in range(104)] + ["o'brien"]  # two batches
    for device_id in ids:
        rig.gateway.register_device(device_id)
    found = rig.gateway.get_twins([*ids, "missing-1", "missing-2"])
    assert sorted(found) == sorted(ids)
    assert found["o'brien"].device_id == "o'brien"
    assert rig.gateway.get_twins([]) == {}


def test_desired_service_is_what_the_agent_parses(rig: Rig) -> None:
    rig.gateway.register_device("dev-1")
    before = rig.gateway.get_twin("dev-1").desired_version
    version = rig.gateway.set_desired_service("dev-1", DEPLOY)
    twin = rig.gateway.get_twin("dev-1")
    assert version == twin.desired_version == before + 1
    seen = device_view(twin)
    assert seen is not None
    assert (seen.action, seen.workflow_id, seen.url_query) == (
        WorkflowAction.DEPLOY,
        "wf-1",
        "sv=2024&sig=abc",
    )
    assert seen.director_url == DEPLOY.director_url and seen.telemetry_interval_s == 30
    assert seen.retry_timestamp == "2026-11-25T10:00:00Z"

    cancel = ServiceSpec(WorkflowAction.CANCEL, "wf-1")
    assert rig.gateway.set_desired_service("dev-1", cancel) == version + 1
    seen = device_view(rig.gateway.get_twin("dev-1"))
    assert seen is not None and seen.action is WorkflowAction.CANCEL
    # The merge patch's nulls removed what the earlier workflow left behind.
    assert (seen.image_url, seen.retry_timestamp, seen.url_query) == (None, None, "")
    with pytest.raises(DeviceNotFound):
        rig.gateway.set_desired_service("nobody", DEPLOY)


@pytest.mark.parametrize(
    "fields",
    [
        {"action": WorkflowAction.DEPLOY, "workflow_id": "wf"},
        {"action": WorkflowAction.CANCEL, "workflow_id": ""},
        {"action": WorkflowAction.CANCEL, "workflow_id": "wf", "image_url": "ftp://x/"},
        {"action": WorkflowAction.CANCEL, "workflow_id": "wf", "query": "?sig=1"},
        {"action": WorkflowAction.CANCEL, "workflow_id": "wf", "telemetry_interval_s": 0},
    ],
    ids=[
        "deploy-without-urls",
        "empty-workflow-id",
        "bad-url-scheme",
        "query-with-?",
        "interval-0",
    ],
)
def test_a_spec_the_agent_would_refuse_is_refused_here(fields: dict[str, Any]) -> None:
    with pytest.raises(HubRequestError):
        ServiceSpec(**fields)


def _without_nulls(document: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _without_nulls(v) if isinstance(v, dict) else v
        for k, v in document.items()
        if v is not None
    }


def test_reported_agent_state_and_acknowledgement(rig: Rig) -> None:
    key = rig.gateway.register_device("dev-1").primary_key
    rig.gateway.set_desired_service("dev-1", DEPLOY)
    agent = ReportedAgent(
        "0.1.0", "mt3620", "mt3620", AgentState.DEPLOYING, WorkflowAction.DEPLOY, "wf-1", "r0"
    )
    rig.devices.report("dev-1", key, json.loads(agent_patch(agent)))
    desired = device_view(rig.gateway.get_twin("dev-1"))
    assert desired is not None
    rig.devices.report("dev-1", key, json.loads(ack_patch(desired)))
    twin = rig.gateway.get_twins(["dev-1"])["dev-1"]
    # The hub applies reported patches as merge patches: null members are not stored, at any depth.
    assert twin.agent == _without_nulls(agent.to_json())
    assert twin.service_ack is not None
    assert (twin.service_ack["ac"], twin.service_ack["av"]) == (200, twin.desired_version)
    assert twin.reported_version >= 2 and twin.last_activity is not None


def test_direct_methods(rig: Rig) -> None:
    key = rig.gateway.register_device("dev-1").primary_key
    rig.gateway.register_device("dev-2")
    calls: list[tuple[str, Any]] = []

    def handler(method: str, payload: Any) -> tuple[int, Any]:
        calls.append((method, payload))
        return 200, {"rebooting": payload["delay"]}

    rig.devices.serve_methods("dev-1", key, handler)
    result = rig.gateway.invoke_method("dev-1", "reboot", {"delay": 3}, timeout_s=10)
    assert (result.status, result.payload) == (200, {"rebooting": 3})
    assert calls == [("reboot", {"delay": 3})]
    assert rig.gateway.get_twin("dev-1").connected
    with pytest.raises(DeviceOffline):
        rig.gateway.invoke_method("dev-2", "reboot", {}, timeout_s=10)
    with pytest.raises(DeviceNotFound):
        rig.gateway.invoke_method("nobody", "reboot", {}, timeout_s=10)
    with pytest.raises(HubRequestError):
        rig.gateway.invoke_method("dev-1", "reboot", {}, timeout_s=1000)


def test_a_device_that_does_not_answer_times_out(rig: Rig) -> None:
    key = rig.gateway.register_device("dev-1").primary_key

    def silent(method: str, payload: Any) -> tuple[int, Any]:
        raise TimeoutError

    rig.devices.serve_methods("dev-1", key, silent)
    with pytest.raises(DeviceTimedOut):
        rig.gateway.invoke_method("dev-1", "reboot", {}, timeout_s=5)
