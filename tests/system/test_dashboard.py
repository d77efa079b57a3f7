"""The web dashboard in headless Chromium, over the real API app and a seeded SQLite database.

The world: 12 MT3620 devices in group `grp-1` plus 2 STM32MP1 devices outside it (3 of the 14
last seen an hour ago), releases `rel-0`, `rel-1` (the rollout's) and `rel-2` (with a model
member), and rollout `ro-1` driven through the engine (tests/integration/engine/_world.py) until
it holds confirmed, in-progress and failed jobs. Telemetry batches for two model versions go
through the real ingestion worker, and a gate verdict into the telemetry store. Expected stage
figures are read back from storage, so the page is checked against what the service holds.

Screenshots go to tests/system/artifacts/ (gitignored).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.storage import LIVE_JOB_STATES
from tests.system._browser import ARTIFACTS, launch, missing_browser, serve

_MISSING = missing_browser()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

if _MISSING is None:
    from playwright.sync_api import Page, expect
else:  # pragma: no cover - the module is skipped
    Page = Any

ROLLOUT = "ro-1"
IN_GROUP = 12
OUTSIDE = ("stm-000", "stm-001")
STALE = {"dev-010", "dev-011", "stm-001"}  # last seen an hour ago: offline
VERSIONS = (("rel-0", "1"), ("rel-1", "2"))  # telemetry: release -> kws model version
BUCKETS = {
    "confirmed": {"confirmed"},
    "in progress": set(LIVE_JOB_STATES),  # every state that holds its device
    "failed": {"failed", "rejected", "reverted", "timed_out"},
    "pending": {"pending"},
}
# Read the page as people do, but wait for the first poll: auto-retrying expectations.
WAIT_MS = 15_000


@dataclass
class Seeded:
    base: str
    operator: str
    viewer: str
    storage: Any
    telemetry: bool
    online: int
    stage_counts: list[dict[str, int]] = field(default_factory=list)

    def link(self, token: str, fragment: str = "") -> str:
        return f"{self.base}/?token={token}&refresh=1{fragment and '#' + fragment}"


def _cores(version: str) -> dict[str, Any]:
    return {
        "m4-0": {
            "state": "running",
            "slot": "a",
            "activeModel": {"modelId": "kws", "version": version},
        },
        "m4-1": {
            "state": "running",
            "slot": "b",
            "activeModel": {"modelId": "vib", "version": "7"},
        },
    }


def _seed_fleet(storage: Any, now: datetime) -> None:
    """Profiles, reported cores and last-seen times on the world's devices, two more devices,
    and a release with members."""
    from service.storage import Device, DeviceFilter, Release

    with storage.begin() as uow:
        devices = uow.devices.list(DeviceFilter(), limit=1000).items
        updated = [
            replace(
                device,
                profile="kws" if n % 2 == 0 else "vib",
                agent_version="0.1.0",
                reported={"installedReleaseId": "rel-0", "cores": _cores("1")},
                last_seen=now - timedelta(hours=1) if device.id in STALE else now,
            )
            for n, device in enumerate(devices)
        ]
        extra = [
            Device(
                d,
                "stm32mp1",
                now,
                profile="vib",
                agent_version="0.1.0",
                reported={"cores": _cores("1")},
                last_seen=now - timedelta(hours=1) if d in STALE else now,
            )
            for d in OUTSIDE
        ]
        uow.devices.upsert([*updated, *extra])
        member = {
            "core": "m4-0",
            "path": "models/kws-3.tflite",
            "kind": "model",
            "model_id": "kws",
            "version": "3",
            "length": 1024,
            "sha256": "0" * 64,
        }
        uow.releases.create(Release("rel-2", 2, ("mt3620",), {"members": [member]}, now, "alice"))


def _seed_telemetry(storage: Any, now: datetime) -> tuple[Any, list[Any]]:
    """Inference batches for kws v1 and v2 over the last 6 minutes, through the real ingestion
    worker, and one gate verdict. Returns (store, routers)."""
    from service import telemetry

    source = telemetry.MemorySource(2)
    part = telemetry.build_telemetry(storage=storage, source=source, clock=lambda: now)
    store, workers, routers = part.store, list(part.workers), [part.router]
    from device_agent.protocol.telemetry import (
        InferenceRecord,
        TelemetryBatch,
        encode_batch,
        message_id,
    )

    seq = 0
    for minute in range(6, 0, -1):
        at = now - timedelta(minutes=minute)
        for n, (release, version) in enumerate(VERSIONS):
            device = f"dev-{n:03d}"
            records = tuple(
                InferenceRecord(
                    core="m4-0",
                    model_id="kws",
                    model_version=version,
                    ts_ms=int(at.timestamp() * 1000) + k * 1000,
                    latency_us=900 - 200 * n + 10 * k + 15 * minute,
                    score=0.8 + 0.1 * n - 0.01 * minute,
                    label="yes",
                    anomaly=k == 0 and n == 0,
                )
                for k in range(10)
            )
            seq += 1
            body = encode_batch(TelemetryBatch(device, seq, release, inference=records))
            source.append(
                device,
                body,
                enqueued_ms=int(at.timestamp() * 1000),
                message_id=message_id(device, seq),
            )
    for worker in workers:
        worker.drain()
    figures = {"confidence-mean": 0.9}
    store.record_verdict(ROLLOUT, 0, "pass", "canary healthy", figures, {}, now)
    return store, routers


def _stage_counts(storage: Any, stages: int) -> list[dict[str, int]]:
    with storage.begin(readonly=True) as uow:
        rollout = uow.rollouts.get(ROLLOUT)
        planned = {s.index: s.planned for s in uow.rollouts.stages(ROLLOUT)}
        result = []
        for index in range(stages):
            counts = uow.jobs.count_by_state(ROLLOUT, stage=index)
            row = {name: sum(counts.get(s, 0) for s in states) for name, states in BUCKETS.items()}
            total = sum(counts.values())
            row["pending"] += max(0, (planned.get(index) or 0) - total)
            result.append(row)
    assert rollout.state not in {"completed", "aborted", "rolled_back"}
    return result


def _seed_stage_gate(storage: Any, now: datetime) -> None:
    """The verdict that decided the canary stage, as the engine stores it with the stage."""

    with storage.begin() as uow:
        canary = {s.index: s for s in uow.rollouts.stages(ROLLOUT)}[0]
        gate = {
            "verdict": "pass",
            "reason": "every model within its limits (1 judged)",
            "numbers": {"canary_inferences": 800.0},
            "cohorts": {
                "stage_soaked": 2.0,
                "stage_devices": 2.0,
                "canary_devices": 2.0,
                "canary_inferences": 800.0,
                "control_devices": 8.0,
                "control_inferences": 3200.0,
            },
            "decided": "advanced",
            "required": True,
            "at": now.isoformat(),
        }
        uow.rollouts.put_stage(replace(canary, data={**canary.data, "gate": gate}))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    from service.api import ApiContext, create_app
    from service.storage import Role, SqlStorage, upgrade
    from tests.integration.engine._world import World

    folder = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{folder / 'tinyfleet.db'}"
    upgrade(url)
    storage = SqlStorage(url)
    # One clock: the world starts at the wall clock's now (the browser and the tokens run on it),
    # with one bad device in the rest stage (two would leave it unable to reach its threshold,
    # and the rollout would stall at once).
    world = World(
        storage, devices=IN_GROUP, bad_in_rest=1, now=datetime.now(UTC).replace(microsecond=0)
    )
    # Step until the rollout holds confirmed (canary), failed and still-running (rest) jobs.
    for _ in range(60):
        world.step()
        with storage.begin(readonly=True) as uow:
            states = Counter(job.state for job in uow.jobs.list(ROLLOUT, limit=1000).items)
        held = {name for name, members in BUCKETS.items() if members & set(states)}
        if {"confirmed", "failed", "in progress"} <= held:
            break
    now = world.now
    _seed_fleet(storage, now)
    _seed_stage_gate(storage, now)
    store, routers = _seed_telemetry(storage, now)
    with storage.begin() as uow:
        operator = uow.tokens.create("olga", Role.OPERATOR, now).secret
        viewer = uow.tokens.create("victor", Role.VIEWER, now).secret
    # Commands run on the world's clock (up to an hour ahead of the wall clock after the steps
    # above), so the engine sees no jump and the API judges "online" on the seeded times.
    context = ApiContext(
        storage, engine=world.engine, hub=world.hub, telemetry=store, clock=lambda: world.now
    )
    with storage.begin(readonly=True) as uow:
        stages = len(uow.rollouts.get(ROLLOUT).spec["stages"])
    seeded = Seeded(
        base="",
        operator=operator,
        viewer=viewer,
        storage=storage,
        telemetry=store is not None,
        online=IN_GROUP + len(OUTSIDE) - len(STALE),
        stage_counts=_stage_counts(storage, stages),
    )
    with serve(create_app(context, routers=routers)) as base:
        seeded.base = base
        yield seeded
    storage.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch() as browser:
        yield browser


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    _shot(page, f"last-{request.node.name}")  # what the page showed when the test ended
    context.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def _stat(page: Page, label: str) -> Any:
    return page.get_by_role("group", name=label, exact=True).locator(".stat-value")


def _row(page: Page, table: str, first_cell: str) -> Any:
    return (
        page.get_by_role("table", name=table, exact=True)
        .get_by_role("row")
        .filter(has=page.get_by_role("cell", name=first_cell, exact=True))
    )


def _cells(row: Any) -> list[str]:
    return [text.strip() for text in row.get_by_role("cell").all_inner_texts()]


def test_token_link_signs_in_and_overview_counts_the_fleet(seeded: Seeded, page: Page) -> None:
    page.goto(seeded.link(seeded.viewer))
    expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible(timeout=WAIT_MS)
    assert "token=" not in page.url, "the token must not stay in the address bar"

    expect(_stat(page, "Devices")).to_have_text(str(IN_GROUP + len(OUTSIDE)))
    expect(_stat(page, "Online")).to_have_text(str(seeded.online))
    expect(_stat(page, "Groups")).to_have_text("1")
    expect(_stat(page, "Releases")).to_have_text("3")
    expect(_stat(page, "Live rollouts")).to_have_text("1")
    mt3620 = sum(1 for n in range(IN_GROUP) if f"dev-{n:03d}" not in STALE)
    assert _cells(_row(page, "Devices by hardware", "mt3620")) == ["mt3620", "12", str(mt3620)]
    assert _cells(_row(page, "Devices by hardware", "stm32mp1")) == ["stm32mp1", "2", "1"]
    assert _cells(_row(page, "Groups", "grp-1"))[-1] == str(IN_GROUP)
    assert "kws v3" in _cells(_row(page, "Releases", "rel-2"))[4]
    live = page.get_by_role("list", name="Live rollouts")
    expect(live.get_by_role("link", name=ROLLOUT)).to_be_visible()
    _shot(page, "overview")


def test_the_overview_shows_a_parked_message_with_its_reason(seeded: Seeded, page: Page) -> None:
    with seeded.storage.begin() as uow:
        parked = uow.outbox.append("no-such-kind", {"device_id": "dev-000"}, datetime.now(UTC))
        uow.outbox.fail(parked, error="unknown message kind", now=datetime.now(UTC), retry_at=None)
    try:
        page.goto(seeded.link(seeded.viewer))
        row = page.get_by_role("table", name=re.compile("Messages retrying or parked")).get_by_role(
            "row", name=re.compile("no-such-kind")
        )
        expect(row).to_contain_text("unknown message kind", timeout=WAIT_MS)
        expect(row).to_contain_text("parked")
    finally:
        with seeded.storage.begin() as uow:
            uow.outbox.drop(parked, datetime.now(UTC))


def test_login_form_refuses_a_bad_token_then_accepts_a_good_one(seeded: Seeded, page: Page) -> None:
    page.goto(f"{seeded.base}/")
    token = page.get_by_label("API token")
    token.fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unauthorized", timeout=WAIT_MS)
    token.fill(seeded.viewer)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Fleet overview")).to_be_visible(timeout=WAIT_MS)


def test_rollout_detail_shows_per_stage_progress(seeded: Seeded, page: Page) -> None:
    page.goto(seeded.link(seeded.viewer, f"/rollouts/{ROLLOUT}"))
    expect(page.get_by_role("heading", name=f"Rollout {ROLLOUT}")).to_be_visible(timeout=WAIT_MS)
    stages = (
        page.get_by_role("list", name="Stages")
        .get_by_role("listitem")
        .filter(has=page.locator(".progress"))
    )
    expect(stages).to_have_count(len(seeded.stage_counts))
    shown = []
    for index in range(len(seeded.stage_counts)):
        legend = stages.nth(index).locator("ul.legend")
        figures = {}
        for name in BUCKETS:
            key = name.replace(" ", "_")
            text = legend.locator(f'li[data-bucket="{key}"] strong').inner_text()
            figures[name] = int(text)
        shown.append(figures)
    assert shown == seeded.stage_counts
    held = {name for row in seeded.stage_counts for name, n in row.items() if n}
    assert {"confirmed", "failed", "in progress"} <= held, seeded.stage_counts
    verdict = _row(page, "Gate verdicts", "1").filter(has_text="canary healthy")
    expect(verdict.get_by_role("term")).to_have_text("confidence-mean:")
    expect(verdict.get_by_role("definition")).to_have_text("0.9000")
    jobs = page.get_by_role("table", name="Device jobs").get_by_role("row")
    expect(jobs).to_have_count(IN_GROUP + 1)  # the header row too
    decided = page.get_by_role("group", name="Stage 1 canary deciding gate verdict")
    expect(decided).to_contain_text("advanced the stage")
    expect(decided.get_by_test_id("stage-gate-cohorts")).to_have_text(
        "2 of 2 stage devices soaked · canary 2 devices, 800 inferences · "
        "control 8 devices, 3200 inferences"
    )
    _shot(page, "rollout")


def test_device_detail_shows_each_core(seeded: Seeded, page: Page) -> None:
    page.goto(seeded.link(seeded.viewer, "/devices/dev-001"))
    expect(page.get_by_role("heading", name="Device dev-001")).to_be_visible(timeout=WAIT_MS)
    expect(_row(page, "Cores", "m4-0")).to_have_count(1)
    assert _cells(_row(page, "Cores", "m4-0")) == ["m4-0", "a", "kws", "1", "running"]
    assert _cells(_row(page, "Cores", "m4-1")) == ["m4-1", "b", "vib", "7", "running"]
    jobs = page.get_by_role("table", name="Jobs")
    expect(jobs.get_by_role("link", name=ROLLOUT)).to_be_visible()


def test_telemetry_charts_have_points_for_each_model_version(seeded: Seeded, page: Page) -> None:
    page.goto(seeded.link(seeded.viewer, "/telemetry"))
    expect(page.get_by_role("heading", name="Telemetry")).to_be_visible(timeout=WAIT_MS)
    versions = [f"kws v{version}" for _, version in VERSIONS]
    for version in versions:
        expect(_row(page, "Model versions", version)).to_have_count(1, timeout=WAIT_MS)
    for chart, suffixes in (
        ("Latency p50 / p95 (ms)", (" p50", " p95")),
        ("Mean confidence", ("",)),
        ("Anomaly rate", ("",)),
    ):
        figure = page.get_by_role("figure", name=chart)
        expect(figure.locator("canvas")).to_have_count(1)
        points = figure.get_by_role("img").get_attribute("data-points") or "{}"
        counts = json.loads(points)
        for version in versions:
            for suffix in suffixes:
                assert counts.get(version + suffix, 0) >= 2, (chart, counts)
    _shot(page, "telemetry")

    page.get_by_label("Release").select_option("rel-1")  # one release: only its model version
    expect(page.get_by_role("heading", name="Telemetry for release rel-1")).to_be_visible()
    expect(_row(page, "Model versions", "kws v2")).to_have_count(1, timeout=WAIT_MS)
    expect(_row(page, "Model versions", "kws v1")).to_have_count(0, timeout=WAIT_MS)


def test_viewer_cannot_pause(seeded: Seeded, page: Page) -> None:
    page.goto(seeded.link(seeded.viewer, f"/rollouts/{ROLLOUT}"))
    pause = page.get_by_role("button", name="Pause")
    expect(pause).to_be_enabled(timeout=WAIT_MS)
    pause.click()
    expect(page.get_by_role("alert")).to_contain_text("forbidden", timeout=WAIT_MS)
    with seeded.storage.begin(readonly=True) as uow:
        assert uow.rollouts.get(ROLLOUT).state != "paused"


def test_operator_pause_and_resume_change_the_state_shown(seeded: Seeded, page: Page) -> None:
    page.goto(seeded.link(seeded.operator, f"/rollouts/{ROLLOUT}"))
    state = page.get_by_test_id("rollout-state")
    expect(state).not_to_have_text("paused", timeout=WAIT_MS)
    page.get_by_label("Reason").fill("checking the canary by hand")
    page.get_by_role("button", name="Pause").click()
    expect(state).to_have_text("paused", timeout=WAIT_MS)
    expect(page.get_by_role("status").filter(has_text="pause accepted")).to_be_visible()
    with seeded.storage.begin(readonly=True) as uow:
        assert uow.rollouts.get(ROLLOUT).state == "paused"
        actions = [entry.action for entry in uow.audit.entries(limit=1000)]
    assert any("pause" in action for action in actions), actions
    _shot(page, "paused")
    page.get_by_role("button", name="Resume").click()
    expect(state).not_to_have_text("paused", timeout=WAIT_MS)
