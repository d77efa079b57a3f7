"""`tinyfleet demo`: the real signing chain end to end, attacks on it refused, a device updated.

Creates dev keys, publishes both repositories, signs two-core releases of TinyML models, assigns
them through the director, and verifies one as the device would (python-tuf refresh of both
repositories, the Uptane checks, every target byte streamed through its verifier). Then it plays
an attacker on a copy of the published files and shows each attack refused with the device's
state unchanged. Last, a simulated device (agent and two M4 core processes) installs the release
over MQTT/TLS through the mock hub and sends inference telemetry.

With the service runtime present, the last act is the fleet (`_demo_fleet`): the whole local stack
with 20 devices in two groups, v1 everywhere, v2 rolled out in stages through its health gate to
completion, v3 stopped by its gate and rolled back. Without it, one device installs a release
over the hub (`_demo_device`).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import typer

from infra.stack import default_service_factory
from service.cli import _context
from service.cli._demo_device import run_device
from service.cli._demo_fleet import DemoFailed, Timing, run_fleet_demo
from service.cli._output import console, emit_table, fail
from service.config import Mode
from service.trust import ArtifactSpec, TrustService, stream_targets
from signing import SigningError, UpdateRejected
from signing.device import DeviceIdentity, DeviceVerifier
from signing.device_ids import device_segment
from signing.keys import KeyScheme
from signing.store import DirectoryStore, StoreFetcher

PREBUILT = Path(__file__).resolve().parents[2] / "firmware" / "models" / "prebuilt"


def _models() -> list[Path]:
    found = sorted(PREBUILT.glob("*.tflite")) if PREBUILT.is_dir() else []
    return [p for p in found if p.with_suffix(".json").is_file()]


def _pick(models: list[Path], version: str) -> list[Path]:
    """One model line per core (two lines when there are two), at the given version."""
    by_line: dict[str, Path] = {}
    for path in models:
        line, _, rest = path.stem.partition("-v")
        if rest == version:
            by_line.setdefault(line, path)
    chosen = list(by_line.values())[:2]
    return chosen * 2 if len(chosen) == 1 else chosen


def _state(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def demo(
    data: Path | None = typer.Option(
        None, "--data", help="Keep the demo's files here (default: a temp dir)."
    ),
    keep: bool = typer.Option(False, "--keep", help="Keep the fleet stack running at the end."),
    soak: int = typer.Option(15, "--soak", min=1, max=600, help="Seconds each stage soaks."),
    fleet: bool = typer.Option(
        True, "--fleet/--no-fleet", help="Run the fleet act (needs the service runtime)."
    ),
) -> None:
    """Sign releases, refuse attacks, then roll a good model out and a bad one back on a fleet."""
    models = _models()
    if not models:
        fail(f"no prebuilt models in {PREBUILT}", hint="run `tinyfleet models build --out` there")
    workdir = data or Path(tempfile.mkdtemp(prefix="tinyfleet-demo-"))
    service = _context.trust(workdir, Mode.DEV)
    now = datetime.now(UTC)
    try:
        with _context.errors():
            _run(service, models, now)
            if fleet and default_service_factory() is not None:
                try:
                    run_fleet_demo(workdir / "fleet", Timing(soak_s=soak), keep)
                except DemoFailed as exc:
                    fail(f"the fleet demo failed: {exc}")
            else:
                run_device(service, "dev-004", "demo-r2")
            console.rule("[bold green]done: every step above ran on real parts")
    finally:
        if data is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(service: TrustService, models: list[Path], now: datetime) -> None:
    console.rule("[bold]tinyfleet demo: signing and device-side verification")
    keys = service.init_keys(KeyScheme.ED25519)
    console.print(f"1. created {len(keys)} dev keys (Ed25519): one per role of both repositories")
    service.init_repos(now)
    first_timestamp = (service.settings.repo_dir / "image/metadata/timestamp.json").read_bytes()
    console.print(
        "2. published the image repository (root, targets delegating to the firmware, "
        "models and releases signers, snapshot, timestamp) and the director's root"
    )

    v1, v2 = _pick(models, "1.0.0"), _pick(models, "2.0.0")
    for release_id, chosen, counter in (("demo-r1", v1, 1), ("demo-r2", v2, 2)):
        specs = [
            ArtifactSpec.from_file(path, core, ["mt3620"], counter)
            for path, core in zip(chosen, ("m4-0", "m4-1"), strict=True)
        ]
        manifest = service.sign_release(release_id, counter, ["mt3620"], specs, now)
        emit_table(
            f"3. signed release {release_id} (release counter {counter})",
            ["core", "model", "bytes", "sha256"],
            [(m.core, m.path, m.length, m.sha256[:16]) for m in manifest.members],
        )

    service.assign("dev-001", "mt3620", "demo-r2", now)
    service.assign("dev-003", "mt3620", "demo-r2", now)
    service.assign("dev-004", "mt3620", "demo-r2", now)
    for release_id in ("demo-r1", "demo-r2", "demo-r1"):  # dev-002's metadata gets newer versions
        service.assign("dev-002", "mt3620", release_id, now)
    console.print("4. director: dev-001, dev-003 and dev-004 must install demo-r2, dev-002 demo-r1")

    devices = service.settings.devices_dir
    verifier = service.device_verifier("dev-001", "mt3620", devices / "dev-001")
    started = time.perf_counter()
    release = verifier.check()
    assert release is not None
    verdicts = service.stream_targets(release)
    verifier.commit_install(release, verdicts)
    elapsed = time.perf_counter() - started
    total = sum(t.length for t in release.targets)
    console.print(
        f"5. dev-001 verified both repositories and streamed {total} bytes through the "
        f"target verifiers in {elapsed * 1000:.0f} ms: installed {release.release_id}"
    )
    emit_table(
        "   what dev-001 installed",
        ["core", "model", "version", "counter", "sha256"],
        [
            (
                t.core,
                t.path,
                ".".join(map(str, t.fields.version)),
                t.fields.release_counter,
                t.sha256[:16],
            )
            for t in release.targets
        ],
    )
    _attacks(service, _attack_table(first_timestamp))


Attack = tuple[str, str, Callable[[Path], None]]  # (what, device id, how it changes the mirror)


def _attack_table(first_timestamp: bytes) -> list[Attack]:
    def tamper_models(mirror: Path) -> None:
        for blob in sorted((mirror / "image/targets/models").rglob("*.tflite")):
            data = bytearray(blob.read_bytes())
            data[len(data) // 2] ^= 0xFF
            blob.write_bytes(bytes(data))

    def replay_other_device(mirror: Path) -> None:
        ours = mirror / "director/devices/dev-001"
        shutil.rmtree(ours)
        shutil.copytree(mirror / "director/devices/dev-002", ours)

    def edit_signed_timestamp(mirror: Path) -> None:
        path = mirror / "image/metadata/timestamp.json"
        path.write_bytes(path.read_bytes().replace(b'"expires":"2', b'"expires":"3', 1))

    def replay_old_timestamp(mirror: Path) -> None:
        (mirror / "image/metadata/timestamp.json").write_bytes(first_timestamp)

    return [
        ("model bytes swapped on the mirror", "dev-003", tamper_models),
        ("dev-002's director metadata replayed to dev-001", "dev-001", replay_other_device),
        ("timestamp edited after signing (expiry pushed out)", "dev-001", edit_signed_timestamp),
        ("an old, validly signed timestamp replayed", "dev-001", replay_old_timestamp),
    ]


def _attacks(service: TrustService, attacks: list[Attack]) -> None:
    console.print("6. an attacker controls a mirror of the published files:")
    # The device pins the roots it was provisioned with (the service's), never the mirror's.
    roots = (service.image().root_bytes(), service.director().root_bytes())
    rows = []
    for name, device_id, attack in attacks:
        with tempfile.TemporaryDirectory(prefix="tinyfleet-attack-") as tmp:
            mirror, state = Path(tmp) / "mirror", Path(tmp) / "device"
            shutil.copytree(service.settings.repo_dir, mirror)
            own_state = service.settings.devices_dir / device_segment(device_id)
            if own_state.exists():
                shutil.copytree(own_state, state)
            before = _state(state)
            attack(mirror)
            verdict = _try_update(DirectoryStore(mirror), device_id, state, roots)
            after = _state(state)
            if not own_state.exists() and not (state / "installed.json").exists():
                outcome = "installed nothing"
            else:
                outcome = "unchanged" if after == before else "CHANGED"
            rows.append((name, device_id, verdict, outcome))
    emit_table("   attacks", ["attack", "device", "device says", "trusted state"], rows)


def _try_update(
    store: DirectoryStore, device_id: str, state: Path, roots: tuple[bytes, bytes]
) -> str:
    device = DeviceVerifier(
        DeviceIdentity(device_id, "mt3620"),
        state,
        image_root=roots[0],
        director_root=roots[1],
        fetcher=StoreFetcher(store),
        image_url="store:///image/metadata/",
        director_url=f"store:///director/devices/{device_segment(device_id)}/metadata/",
    )
    try:
        release = device.check()
        if release is None:
            return "nothing to do"
        device.commit_install(release, stream_targets(store, release))
        return "ACCEPTED (a defect)"
    except UpdateRejected as exc:
        return f"refused: {type(exc).__name__} ({exc.reason})"
    except SigningError as exc:
        return f"refused: {type(exc).__name__}"
