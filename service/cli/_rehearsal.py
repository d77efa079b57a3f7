"""`tinyfleet fleet rehearse`: a three-stage gated rollout of a two-core release on a simulated
fleet, end to end, with the figures that say how it scales.

The whole local stack (mock hub over TLS, blob store, service on SQLite, engine, ingest) and a
fleet of real simulated devices (their own TLS sessions, agents, Uptane checks, downloads, and
two cores each running TFLM, in process by default) in `hosts` fleet host processes:

1. provision (one hub transaction) and start the fleet; sync the registry; publish models v1 and
   v2 through the release pipeline; install v1 on every device (the bootstrap rollouts);
2. roll v2 out to `main` in three gated stages (`first` about 1 %, `half` 50 %, `all` 100 %),
   each soaking `soak_s` and judged on its own devices' inference telemetry against v1.

Figures per size: wall time per stage, offer-to-confirmed p50/p99 (the jobs' offer and
confirmation times; a confirmation comes after the soak), devices updated per minute, telemetry
rows ingested per second, RSS per device of the hub + service process and of the fleet hosts,
CPU seconds per device update (all processes), and across sizes the growth exponent of rollout
wall time and of CPU per update (0 = constant per device), against the smallest size run.

With `faults`, 10 % of the devices' links are cut once during a target download (seeded), and
the service and the hub are each restarted abruptly (in this process: their connections drop,
their state is reloaded from disk) after the first stage; every device must still end on v2.
"""

from __future__ import annotations

import math
import os
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from infra.fleet import FleetOptions
from infra.stack import Stack, StackOptions
from service.cli._demo_fleet import (
    Api,
    gate_policy,
    publish_release,
    stage,
    start_rollout,
    sync_into_groups,
    wait_until,
)
from service.cli._output import console

__all__ = ["Rehearsal", "exponent", "report", "run"]

TERMINAL = {"completed", "aborted", "rolled_back"}
# Past about 150 devices a fleet host's threads mostly wait on each other for the interpreter lock.
DEVICES_PER_HOST = 125
V1 = {"m4-0": "1.0.0", "m4-1": "1.0.0"}
V2 = {"m4-0": "2.0.0", "m4-1": "2.0.0"}


@dataclass(frozen=True)
class Rehearsal:
    """How the simulated fleet runs (see `tinyfleet fleet rehearse --help`)."""

    hosts: int = 0  # fleet host processes; 0: one per DEVICES_PER_HOST devices
    period_s: float = 1.0  # seconds between inferences on each core
    cores: str = "inprocess"
    summary_s: float = 0.0  # > 0: telemetry summaries of this interval instead of raw rows
    flush_s: float = 0.0  # agents' telemetry flush interval
    liveness_s: float = 5.0  # agents refresh core liveness in the twin at most this often
    heartbeat_s: float = 5.0  # each core's heartbeat period
    soak_s: int = 20
    faults: bool = False


def _finish(api: Api, rollout_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        rollout: dict[str, Any] = api.call("GET", f"/rollouts/{rollout_id}")
        if rollout["state"] in TERMINAL:
            return rollout
        if rollout["state"] == "paused" or time.monotonic() > deadline:
            raise AssertionError(f"{rollout_id} stuck in {rollout['state']}: {rollout['reason']}")
        time.sleep(1.0)


class _Sampler:
    """Peak RSS and the latest CPU of the hub + service process and of the fleet hosts."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.peak_parent = 0
        self.peak_hosts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.peak_parent = max(self.peak_parent, _rss_now())
            hosts = self.stack.fleet_hosts.status() if self.stack.fleet_hosts else {}
            self.peak_hosts = max(self.peak_hosts, sum(s["rss_bytes"] for s in hosts.values()))

    def cpu_s(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        hosts = self.stack.fleet_hosts.status() if self.stack.fleet_hosts else {}
        return usage.ru_utime + usage.ru_stime + sum(s["cpu_s"] for s in hosts.values())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _rss_now() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _job_latencies(db_url: str, rollout_id: str) -> list[float]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT offered_at, updated_at FROM device_jobs "
                    "WHERE rollout_id = :r AND state = 'confirmed' AND offered_at IS NOT NULL"
                ),
                {"r": rollout_id},
            ).all()
    finally:
        engine.dispose()
    return sorted(_seconds(updated) - _seconds(offered) for offered, updated in rows)


def _seconds(value: Any) -> float:
    if isinstance(value, str):  # SQLite and the API hand out ISO text
        return datetime.fromisoformat(value).timestamp()
    return float(value.timestamp())


def _telemetry_rows(db_url: str) -> int:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(sa.text("SELECT COUNT(*) FROM telemetry_inference")).scalar_one()
            )
    finally:
        engine.dispose()


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(q * len(values)))]


def _say(size: int, started: float, what: str) -> None:
    console.print(f"  [{size} devices, {time.monotonic() - started:6.0f} s] {what}")


def run(size: int, data: Path, plan: Rehearsal) -> dict[str, Any]:
    """One rehearsal at `size` devices in `data`; its figures (see the module docstring)."""
    faults = plan.faults
    # The service calls a core silent once its reported heartbeat is older than this.
    silence = max(15, int(4 * plan.liveness_s), int(4 * plan.heartbeat_s))
    retry = {"core_silence_seconds": silence}
    canary = max(1, size // 20)
    groups = {"canary": canary, "main": size - canary}
    options = StackOptions(
        data_dir=data,
        groups=groups,
        api_port=0,
        engine_interval_s=0.5,
        fleet=FleetOptions(
            inference_period_s=plan.period_s,
            health_interval_s=60.0,
            download_cut_share=0.1 if faults else 0.0,
            download_cut_s=3.0,
            core_mode=plan.cores,
            relay_all=False,
            agent_poll_s=0.5 if plan.cores == "inprocess" else None,
            summary_interval_s=plan.summary_s,
            raw_sample_rate=0.0 if plan.summary_s else 1.0,
            telemetry_flush_s=plan.flush_s,
            liveness_report_s=plan.liveness_s,
            heartbeat_period_s=plan.heartbeat_s,
        ),
        fleet_processes=plan.hosts or max(1, math.ceil(size / DEVICES_PER_HOST)),
    )
    figures: dict[str, Any] = {"size": size, "faults": faults, "hosts": options.fleet_processes}
    started = time.monotonic()
    stack = Stack(options)
    described = stack.start()
    assert stack.fleet is not None
    main = set(stack.fleet.members("main"))
    figures["start_s"] = time.monotonic() - started
    _say(size, started, "stack and fleet started")
    service = described["service"]
    api = Api(str(service["api_url"]), str(service["admin_token"]))
    sampler = _Sampler(stack)
    timeout_s = 600 + size * 0.5
    try:
        began = time.monotonic()

        sync_into_groups(api, groups, timeout_s)
        publish_release(api, "models-v1", 1, V1)
        publish_release(api, "models-v2", 1, V2)
        figures["prepare_s"] = time.monotonic() - began
        _say(size, started, "registry synced, releases published")
        began = time.monotonic()
        for group in groups:
            start_rollout(
                api, f"boot-{group}", "models-v1", group, None, [stage("all", 100, 1)], retry=retry
            )
        for group in groups:
            done = _finish(api, f"boot-{group}", timeout_s)
            assert done["state"] == "completed", done["reason"]
        figures["bootstrap_s"] = time.monotonic() - began
        _say(size, started, "v1 installed everywhere")

        db_url = stack.settings.database_url if stack.settings else ""
        rows_before, cpu_before = _telemetry_rows(db_url), sampler.cpu_s()
        began = time.monotonic()
        first = max(3, (size - canary) // 100)
        stages = [
            stage("first", None, plan.soak_s, count=first),
            stage("half", 50, plan.soak_s),
            stage("all", 100, plan.soak_s),
        ]
        policy = gate_policy()
        policy["min_devices"] = min(3, first)
        start_rollout(
            api, "v2-main", "models-v2", "main", "models-v1", stages, gate=policy, retry=retry
        )
        if faults:
            wait_until(
                "the first stage to complete",
                lambda: api.call("GET", "/rollouts/v2-main")["stage"] >= 1,
                timeout_s,
            )
            stack.restart_service()
            api.close()
            service = stack.addresses
            api = Api(str(service["api_url"]), str(service["admin_token"]))
            stack.restart_hub()
        rollout = _finish(api, "v2-main", timeout_s)
        _say(size, started, f"v2 rollout {rollout['state']}")
        wall = time.monotonic() - began
        assert rollout["state"] == "completed", rollout["reason"]
        cpu = sampler.cpu_s() - cpu_before
        rows = _telemetry_rows(db_url) - rows_before
        latencies = _job_latencies(db_url, "v2-main")
        updated = rollout["totals"].get("confirmed", 0)
        assert updated == size - canary
        figures.update(
            rollout_s=wall,
            stages_s=[
                _seconds(s["ended_at"]) - _seconds(s["started_at"])
                for s in rollout["stages"]
                if s["started_at"] and s["ended_at"]
            ],
            offer_to_confirmed_p50_s=_quantile(latencies, 0.5),
            offer_to_confirmed_p99_s=_quantile(latencies, 0.99),
            devices_per_minute=updated / wall * 60,
            telemetry_rows_per_s=rows / wall,
            cpu_s_per_update=cpu / max(1, updated),
            parent_rss_per_device=sampler.peak_parent / size,
            hosts_rss_per_device=sampler.peak_hosts / size,
            memory_gib=(sampler.peak_parent + sampler.peak_hosts) / 2**30,
        )
        ended = _where_devices_ended(stack)
        figures["ended_on"] = {r: n for r, n in sorted(Counter(ended.values()).items())}
        wrong = {d: r for d, r in ended.items() if r != ("models-v2" if d in main else "models-v1")}
        if wrong:
            some = sorted(wrong.items())[:5]
            raise AssertionError(f"{len(wrong)} devices ended elsewhere: {some}")
    finally:
        sampler.stop()
        api.close()
        stack.stop()
    return figures


def _where_devices_ended(stack: Stack) -> dict[str, str]:
    """Each device's release as its twin reports it, or what is wrong with it: a device must be
    on exactly one release, every core running (a model runs only after its self-test passed)
    that release's model."""
    hub = stack.hub
    assert hub is not None

    def read() -> dict[str, str]:
        out = {}
        for device_id, twin in hub.core.store.twins.items():
            agent = twin.reported.get("tinyfleet", {}).get("agent", {})
            release, cores = agent.get("installedReleaseId"), agent.get("cores") or {}
            want = V2 if release == "models-v2" else V1
            running = {
                core: (c.get("activeModel") or {}).get("version")
                for core, c in cores.items()
                if c.get("state") == "running"
            }
            out[device_id] = str(release) if running == want else f"{release} cores {running}"
        return out

    return dict(hub.call(read))


def exponent(small: dict[str, Any], large: dict[str, Any], key: str) -> float:
    return math.log(large[key] / small[key]) / math.log(large["size"] / small["size"])


def report(results: list[dict[str, Any]], plan: Rehearsal) -> list[str]:
    """The figures as lines, each ratio against the first (smallest) size."""
    base = results[0]
    telemetry = f"summaries per {plan.summary_s:g} s" if plan.summary_s else "raw rows"
    lines = [
        f"fleet rollout, {plan.hosts or 'one per 125 devices in'} host processes, cores "
        f"{plan.cores}, one inference per "
        f"{plan.period_s:g} s per core, {telemetry}"
    ]
    for r in results:
        stages = ", ".join(f"{s:.0f}" for s in r["stages_s"])
        lines += [
            f"  {r['size']:>6} devices{' (faults)' if r['faults'] else ''}: start "
            f"{r['start_s']:.0f} s, bootstrap {r['bootstrap_s']:.0f} s, rollout "
            f"{r['rollout_s']:.0f} s (stages {stages} s; x{r['rollout_s'] / base['rollout_s']:.2f}"
            f" of {base['size']})",
            f"         offer->confirmed p50 {r['offer_to_confirmed_p50_s']:.1f} s "
            f"p99 {r['offer_to_confirmed_p99_s']:.1f} s; {r['devices_per_minute']:.0f} "
            f"devices/min; {r['telemetry_rows_per_s']:.0f} telemetry rows/s",
            f"         CPU {r['cpu_s_per_update']:.2f} s per update "
            f"(x{r['cpu_s_per_update'] / base['cpu_s_per_update']:.2f}); RSS per device: "
            f"hub+service {r['parent_rss_per_device'] / 2**10:.0f} KiB, hosts "
            f"{r['hosts_rss_per_device'] / 2**20:.2f} MiB; {r['memory_gib']:.2f} GiB in all",
        ]
    if len(results) > 1:
        last = results[-1]
        lines.append(
            f"  growth exponent {base['size']}->{last['size']}: rollout wall "
            f"{exponent(base, last, 'rollout_s'):.2f}, CPU per update "
            f"{exponent(base, last, 'cpu_s_per_update'):.2f} (0 = constant per device)"
        )
    return lines
