"""The demo's main act: a 20-device fleet, a good model rolled out in stages, a bad one rolled back.

Runs the whole local stack (`infra.stack`: mock hub, blob store, service runtime, fleet) and
drives it only through the service's HTTP API, as an operator's tools would: groups from twin
tags, three releases (v1 running everywhere first, v2 better, v3 regressed) uploaded and
published through the release pipeline, then two staged rollouts to the `main` group with a
health gate on the devices' own inference telemetry. v2 passes every gate and completes; v3's
confidence drops (the simulated cores run the real v3 model, trained on half-mislabelled data),
its first gate FAILs and the rollout rolls back to v2.

The gate policy is chosen from what the cores report (see docs/operations.md): kws v2 has a mean
confidence of about 0.93, v3 about 0.65, so a limit of 0.05 on the drop fails v3 with any
sample, while v2 against v1 (0.83) only rises. Latency is not gated: the tiny models run in a
few microseconds, where the noise is larger than any difference between versions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.live import Live
from rich.table import Table

from infra.fleet import FleetOptions
from infra.stack import Stack, StackOptions
from service.cli._output import console, emit_table

PREBUILT = Path(__file__).resolve().parents[2] / "firmware" / "models" / "prebuilt"
TERMINAL = {"completed", "aborted", "rolled_back"}
CORES = (("m4-0", "kws"), ("m4-1", "vibration"))
# release -> model version per core. v3 regresses the keyword model and keeps vibration v2: the
# gate judges each core's new model against the same core's old one (ADR 0009), so the demo
# shows one model's regression caught on its own while the other core's model is unchanged.
RELEASES: dict[str, dict[str, str]] = {
    "models-v1": {"m4-0": "1.0.0", "m4-1": "1.0.0"},
    "models-v2": {"m4-0": "2.0.0", "m4-1": "2.0.0"},
    "models-v3": {"m4-0": "3.0.0", "m4-1": "2.0.0"},
}
GROUPS = {"canary": 2, "main": 18}


class DemoFailed(RuntimeError):
    """A step of the fleet demo did not reach the state it waits for."""


@dataclass(frozen=True)
class Timing:
    """Short soaks for a demo on one machine; tests shorten them further."""

    soak_s: int = 15
    inference_period_s: float = 0.25
    engine_interval_s: float = 0.5
    step_timeout_s: float = 240.0


def gate_policy(stage: str = "all") -> dict[str, Any]:
    return {
        "stage": stage,
        "alpha": 0.01,
        "min_inferences": 200,
        "min_devices": 2,
        "max_latency_p95_increase": None,
        "max_confidence_drop": 0.05,
        "max_anomaly_rate_increase": None,
        "max_label_psi": None,
        "max_error_rate_increase": 0.5,
        "max_revert_rate_increase": 0.5,
        "max_crash_rate_increase": 0.5,
        "on_fail": "rollback",
    }


class Api:
    """A tiny client of the contract's routes; errors become DemoFailed with the problem text."""

    def __init__(self, base: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=base.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise DemoFailed(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def close(self) -> None:
        self.http.close()


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise DemoFailed(f"timed out waiting for {what}")


def run_fleet_demo(data: Path, timing: Timing, keep: bool) -> dict[str, Any]:
    """The scenario; returns the two rollouts' final documents (for tests)."""
    options = StackOptions(
        data_dir=data,
        groups=GROUPS,
        api_port=0,
        engine_interval_s=timing.engine_interval_s,
        fleet=FleetOptions(inference_period_s=timing.inference_period_s, health_interval_s=5.0),
    )
    stack = Stack(options)
    if not stack.service_available:
        raise DemoFailed("the service runtime (service.runtime) is not available")
    console.rule("[bold]tinyfleet demo: a fleet of 20 devices, two staged rollouts")
    described = stack.start()
    try:
        service = described["service"] or {}
        token = service.get("admin_token")
        if not token:
            raise DemoFailed("the service runtime gave no admin token to drive the API with")
        api = Api(str(service["api_url"]), str(token))
        try:
            return _scenario(api, timing, stack)
        finally:
            if keep:
                console.print(
                    f"[bold]kept running[/]: dashboard {service['api_url']}/?token={token}"
                    " — Ctrl-C stops it"
                )
                try:
                    while True:
                        time.sleep(1)
                except KeyboardInterrupt:
                    pass
            api.close()
    finally:
        stack.stop()


def prepare(api: Api, groups: Mapping[str, int], timeout: float, releases: int) -> None:
    """Registry synced, tag groups created, one release per version published, the first
    version rolled out to every group."""
    devices = sum(groups.values())
    sync_into_groups(api, groups, timeout)
    console.print(f"1. {devices} devices registered, in groups " + _groups(api))
    names = list(RELEASES)[:releases]
    for release_id in names:
        # One release counter for all three: the counter is the anti-rollback floor, raised only
        # by a security fix; with v3 at a higher counter than v2 the devices would refuse the
        # rollback to v2 (Uptane's release-counter check), as they should.
        publish_release(api, release_id, 1, RELEASES[release_id])
    names_text = ", ".join(f"{n} ({_describe(RELEASES[n])})" for n in names)
    console.print(f"2. built, signed and published releases {names_text}")
    for group in groups:
        start_rollout(api, f"bootstrap-{group}", "models-v1", group, None, [stage("all", 100, 1)])
    for group in groups:
        done = watch(api, f"bootstrap-{group}", timeout, quiet=True)
        if done["state"] != "completed":
            raise DemoFailed(f"installing v1 on {group} ended {done['state']}")
    console.print("3. v1 is running on every device")


def sync_into_groups(api: Api, groups: Mapping[str, int], timeout: float) -> None:
    """Sync the registry until it knows every device with its hardware id, then create one tag
    group per fleet group."""
    devices = sum(groups.values())

    def synced() -> bool:
        api.call("POST", "/devices/sync")
        return registered(api) >= devices

    wait_until(f"{devices} devices in the registry", synced, timeout)
    for group in groups:
        api.call(
            "PUT",
            f"/groups/{group}",
            json={"name": group, "kind": "tag", "selector": f"group={group}"},
        )


def registered(api: Api) -> int:
    """Devices the registry knows with their hardware id, counted page by page."""
    known, after = 0, None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if after:
            params["after"] = after
        page = api.call("GET", "/devices", params=params)
        known += sum(1 for d in page["items"] if d.get("hardware_id") not in (None, "", "unknown"))
        after = page.get("next_after")
        if not after:
            return known


def _scenario(api: Api, timing: Timing, stack: Stack) -> dict[str, Any]:
    prepare(api, GROUPS, timing.step_timeout_s, len(RELEASES))
    stages = [
        stage("first", None, timing.soak_s, count=3),
        stage("half", 50, timing.soak_s),
        stage("all", 100, timing.soak_s),
    ]
    start_rollout(api, "v2-main", "models-v2", "main", "models-v1", stages, gate=gate_policy())
    good = watch(api, "v2-main", timing.step_timeout_s)
    _report(api, good)
    if good["state"] != "completed":
        raise DemoFailed(f"the v2 rollout ended {good['state']}: {good.get('reason')}")
    start_rollout(api, "v3-main", "models-v3", "main", "models-v2", stages, gate=gate_policy())
    bad = watch(api, "v3-main", timing.step_timeout_s)
    _report(api, bad)
    if bad["state"] != "rolled_back":
        raise DemoFailed(f"the v3 rollout ended {bad['state']}, not rolled_back")
    wait_until(
        "every main device back on v2",
        lambda: running_versions(stack, "main") == {"2.0.0"},
        timing.step_timeout_s,
    )
    main = len(stack.fleet.members("main")) if stack.fleet else 0
    console.print(
        f"4. v2 rollout: [green]{good['state']}[/]; v3 rollout: [red]{bad['state']}[/] "
        f"({bad.get('reason') or ''}); all {main} main devices run v2"
    )
    return {"v2": good, "v3": bad}


def _groups(api: Api) -> str:
    groups = api.call("GET", "/groups")["items"]
    return ", ".join(f"{g['id']} ({g['members']})" for g in groups)


def _describe(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{line} {versions[core]}" for core, line in CORES)


def publish_release(api: Api, release_id: str, counter: int, versions: Mapping[str, str]) -> None:
    api.call(
        "POST", "/releases", json={"id": release_id, "hardware_ids": ["mt3620"], "counter": counter}
    )
    for core, line in CORES:
        model = PREBUILT / f"{line}-v{versions[core]}.tflite"
        sidecar = json.loads(model.with_suffix(".json").read_text())
        with model.open("rb") as handle:
            api.call(
                "PUT",
                f"/releases/{release_id}/artifacts/{core}",
                files={"file": (model.name, handle, "application/octet-stream")},
                data={"metadata": json.dumps(sidecar)},
            )
    api.call("POST", f"/releases/{release_id}/publish")


def stage(name: str, percent: int | None, soak: int, *, count: int | None = None) -> dict[str, Any]:
    stage: dict[str, Any] = {"name": name, "soak_seconds": soak}
    if count is not None:
        stage["count"] = count
    else:
        stage["percent"] = percent
    return stage


def start_rollout(
    api: Api,
    rollout_id: str,
    release_id: str,
    group: str,
    previous: str | None,
    stages: list[dict[str, Any]],
    gate: Mapping[str, Any] | None = None,
    failure: Mapping[str, Any] | None = None,
    success: Mapping[str, Any] | None = None,
    retry: Mapping[str, Any] | None = None,
) -> None:
    body: dict[str, Any] = {
        "id": rollout_id,
        "release_id": release_id,
        "group_id": group,
        "stages": stages,
        "rate": {"base_per_minute": 600, "factor": 2, "every": 1, "increase_on": "succeeded",
                 "max_per_minute": 6000},
        "retry": {"in_progress_timeout_seconds": 120, "confirm_grace_seconds": 60,
                  "max_retries": 3, "backoff_base_seconds": 1, "backoff_cap_seconds": 10},
    }  # fmt: skip
    if previous is not None:
        body["previous_release_id"] = previous
    if gate is not None:
        body["gate"] = dict(gate)
        body["success"] = {"threshold_percent": 100, "advance": "auto", "require_gate": True}
        body["failure"] = {"threshold_percent": 34, "min_devices": 1, "action": "rollback"}
    if failure is not None:
        body["failure"] = dict(failure)
    if success is not None:
        body["success"] = dict(success)
    if retry is not None:
        body["retry"] = {**body["retry"], **retry}
    api.call("POST", "/rollouts", json=body)
    api.call("POST", f"/rollouts/{rollout_id}/commands", json={"command": "start"})


def _table(rollout: Mapping[str, Any]) -> Table:
    gate = rollout.get("gate") or {}
    title = (
        f"rollout {rollout['id']} ({rollout['release_id']} → {rollout['group_id']}): "
        f"{rollout['state']}"
        + (f" — gate {gate.get('verdict')}: {gate.get('reason', '')}" if gate else "")
    )
    table = Table(title=title)
    for column in ("stage", "state", "planned", "confirmed", "in flight", "reverted/failed"):
        table.add_column(column)
    for stage in rollout.get("stages", []):
        counts: Mapping[str, int] = stage.get("counts") or {}
        done = counts.get("confirmed", 0)
        bad = sum(counts.get(s, 0) for s in ("reverted", "failed", "rejected", "timed_out"))
        waiting = counts.get("cancelled", 0) + counts.get("pending", 0)
        flight = sum(counts.values()) - done - bad - waiting
        table.add_row(
            str(stage["name"]), str(stage["state"]), str(stage.get("planned", "")),
            str(done), str(flight), str(bad),
        )  # fmt: skip
    back: Mapping[str, int] = rollout.get("rollback") or {}
    if back:
        done = back.get("confirmed", 0)
        bad = sum(back.get(s, 0) for s in ("reverted", "failed", "rejected", "timed_out"))
        flight = sum(back.values()) - done - bad - back.get("cancelled", 0)
        target = f"→ {rollout.get('previous_release_id')}"
        table.add_row("rollback", target, str(sum(back.values())), str(done), str(flight), str(bad))
    return table


def watch(api: Api, rollout_id: str, timeout: float, *, quiet: bool = False) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    rollout: dict[str, Any] = api.call("GET", f"/rollouts/{rollout_id}")
    with Live(_table(rollout), console=console, refresh_per_second=4, transient=quiet) as live:
        while rollout["state"] not in TERMINAL:
            if rollout["state"] == "paused" or time.monotonic() > deadline:
                raise DemoFailed(f"rollout {rollout_id} stuck in {rollout['state']}{_why(rollout)}")
            time.sleep(0.5)
            rollout = api.call("GET", f"/rollouts/{rollout_id}")
            live.update(_table(rollout))
    if not quiet:
        console.line()  # what follows starts below the last frame, piped or not
    return rollout


def _why(rollout: Mapping[str, Any]) -> str:
    """What a stuck rollout waits for: its reason, its gate's verdict and its stages' counts."""
    gate = rollout.get("gate") or {}
    parts = [str(rollout.get("reason") or "")]
    if gate:
        parts.append(f"gate {gate.get('verdict')}: {gate.get('reason', '')}")
    parts += [f"{s['name']} {dict(s.get('counts') or {})}" for s in rollout.get("stages", [])]
    text = "; ".join(p for p in parts if p)
    return f" ({text})" if text else ""


def running_versions(stack: Stack, group: str) -> set[str]:
    """The model versions the group's devices report running (their twins, read on the hub)."""
    hub, fleet = stack.hub, stack.fleet
    assert hub is not None and fleet is not None
    members = fleet.members(group)

    def read() -> set[str]:
        versions: set[str] = set()
        for device_id in members:
            reported = hub.core.store.twins[device_id].reported
            cores = reported.get("tinyfleet", {}).get("agent", {}).get("cores", {})
            for core in cores.values():
                versions.add(str((core.get("activeModel") or {}).get("version")))
        return versions

    return set(hub.call(read))


def _report(api: Api, rollout: Mapping[str, Any]) -> None:
    verdicts = api.call("GET", f"/rollouts/{rollout['id']}/verdicts")["items"]
    last: dict[str, Mapping[str, Any]] = {}
    for verdict in verdicts:
        last[str(verdict["stage"])] = verdict
    rows = []
    for stage in rollout.get("stages", []):
        counts: Mapping[str, int] = stage.get("counts") or {}
        verdict = last.get(str(stage["name"])) or last.get(str(stage["index"])) or {}
        figures = _figures(verdict)
        rows.append(
            (
                stage["name"],
                stage.get("planned", ""),
                counts.get("confirmed", 0),
                counts.get("reverted", 0),
                verdict.get("verdict", "-"),
                figures,
            )
        )
    emit_table(
        f"report: rollout {rollout['id']} ended {rollout['state']}",
        [
            "stage",
            "jobs",
            "confirmed",
            "reverted",
            "gate",
            "gate figures (new model vs old, same group)",
        ],
        rows,
    )


def _figures(verdict: Mapping[str, Any]) -> str:
    """The decisive numbers of a verdict: confidence on both sides, the drop, its p-value."""
    numbers: Mapping[str, Any] = verdict.get("numbers") or {}
    if not numbers:
        return "-"
    metrics = (verdict.get("metrics") or {}).get("metrics") or []
    confidence = next((m for m in metrics if m.get("metric") == "confidence-mean"), {})
    parts = []
    if confidence:
        parts.append(
            f"confidence {confidence['canary']:.3f} vs {confidence['control']:.3f} "
            f"(drop {confidence['effect']:.3f}, limit {confidence['limit']:g}, "
            f"p {confidence['p_adjusted']:.2g})"
        )
    parts.append(
        f"{int(numbers.get('canary_devices', 0))} vs {int(numbers.get('control_devices', 0))}"
        f" devices, {int(numbers.get('canary_inferences', 0))} vs "
        f"{int(numbers.get('control_inferences', 0))} results"
    )
    return "; ".join(parts)
