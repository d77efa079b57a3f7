"""Entry point of one simulated M4 core process: `python -m firmware.core --fd N ...`.

The composition root (the agent's CLI, a test) creates `socket.socketpair(AF_UNIX,
SOCK_SEQPACKET)`, keeps one end, and starts this process with the other end's file descriptor
(inherited through `pass_fds`). `command_line()` builds the argument list. The process runs
until the agent closes its end of the socket (EOF), or it is killed.

Exit codes: 0 after EOF, 2 for bad arguments or an unusable firmware image or state directory,
3 when the host stopped acknowledging frames,
`faults.CRASH_EXIT_CODE` when a fault hook fired.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from firmware._core import CoreConfig, CoreMachine
from firmware._errors import FirmwareError
from firmware._image import FirmwareImage
from firmware._slots import SlotStore
from firmware.faults import CRASH_POINTS, FaultHooks
from firmware.icc import PROFILES, PeerUnresponsiveError, profile_named

__all__ = ["command_line", "main", "run"]


def command_line(
    *,
    core_id: str,
    state_dir: Path,
    firmware: Path,
    fd: int,
    profile: str,
    inference_period_s: float = 0.5,
    heartbeat_period_s: float = 5.0,
    seed: int = 0,
    crash_point: str | None = None,
    crash_before_message: int | None = None,
    crash_after_message: int | None = None,
    crash_after_inferences: int | None = None,
    crash_models: Collection[str] | None = None,
    selftest_fail_models: Collection[str] = (),
) -> list[str]:
    """The argv that starts one core process (pass `fd` in `pass_fds`)."""
    argv = [
        sys.executable, "-m", "firmware.core",
        "--core-id", core_id, "--state-dir", str(state_dir), "--firmware", str(firmware),
        "--fd", str(fd), "--profile", profile,
        "--inference-period", str(inference_period_s),
        "--heartbeat-period", str(heartbeat_period_s),
        "--seed", str(seed),
    ]  # fmt: skip
    if crash_point:
        argv += ["--crash-point", crash_point]
    if crash_before_message is not None:
        argv += ["--crash-before-message", str(crash_before_message)]
    if crash_after_message is not None:
        argv += ["--crash-after-message", str(crash_after_message)]
    if crash_after_inferences is not None:
        argv += ["--crash-after-inferences", str(crash_after_inferences)]
    for version in sorted(crash_models or ()):
        argv += ["--crash-model", version]
    for version in sorted(selftest_fail_models):
        argv += ["--selftest-fail-model", version]
    return argv


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m firmware.core", description="One simulated M4 core."
    )
    p.add_argument("--core-id", required=True, help="core name, e.g. m4-0")
    p.add_argument("--state-dir", required=True, type=Path, help="where this core keeps its slots")
    p.add_argument("--firmware", required=True, type=Path, help="firmware image JSON to boot")
    p.add_argument("--fd", required=True, type=int, help="inherited SOCK_SEQPACKET socket fd")
    p.add_argument("--profile", required=True, choices=sorted(PROFILES))
    p.add_argument("--inference-period", type=float, default=0.5, help="seconds between inferences")
    p.add_argument("--heartbeat-period", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated sensor")
    p.add_argument("--crash-point", choices=CRASH_POINTS, help="fault injection: die at this point")
    p.add_argument(
        "--crash-before-message", type=int, help="fault injection: die on the Nth message"
    )
    p.add_argument(
        "--crash-after-message", type=int, help="fault injection: die after the Nth message"
    )
    p.add_argument(
        "--crash-after-inferences",
        type=int,
        help="fault injection: die after N inferences of each boot (a crashing model)",
    )
    p.add_argument(
        "--crash-model",
        action="append",
        metavar="VERSION",
        help="fault injection: only models of this version crash (repeat for more; default any)",
    )
    p.add_argument(
        "--selftest-fail-model",
        action="append",
        default=[],
        metavar="VERSION",
        help="fault injection: the self-test of models of this version fails (repeatable)",
    )
    return p


def run(sock: socket.socket, machine: CoreMachine, max_message_bytes: int) -> None:
    """Serve one socket until EOF. Blocking sends give the transport's back-pressure."""
    hooks = machine.hooks
    while True:
        now = time.monotonic()
        for frame in machine.outbound(now):
            sock.send(frame)
        hooks.message_handled()
        timeout = max(0.0, machine.next_deadline() - time.monotonic())
        readable, _, _ = select.select([sock], [], [], timeout)
        if not readable:
            continue
        data = sock.recv(max_message_bytes + 1)
        if not data:
            return
        if len(data) > max_message_bytes:
            continue  # oversized message: the profile forbids it; the sender will time out
        machine.receive(data, time.monotonic())


def _host_gone(sock: socket.socket) -> bool:
    """Whether the host closed its end: EOF, possibly behind datagrams not yet read."""
    try:
        while select.select([sock], [], [], 0)[0]:
            if not sock.recv(65536):
                return True
    except OSError:
        return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        profile = profile_named(args.profile)
        image = FirmwareImage.load(args.firmware)
        hooks = FaultHooks(
            args.crash_point,
            args.crash_before_message,
            args.crash_after_message,
            args.crash_after_inferences,
            crash_models=None if args.crash_model is None else frozenset(args.crash_model),
            selftest_fail_models=frozenset(args.selftest_fail_model),
        )
        store = SlotStore(args.state_dir / args.core_id, hooks)
        config = CoreConfig(
            core_id=args.core_id,
            profile=profile,
            image=image,
            inference_period_s=args.inference_period,
            heartbeat_period_s=args.heartbeat_period,
            sensor_seed=args.seed,
        )
        machine = CoreMachine(config, store, time.monotonic())
    except (FirmwareError, ValueError) as exc:
        print(f"firmware.core: {exc}", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=args.fd)
    try:
        run(sock, machine, profile.max_message_bytes)
    except (BrokenPipeError, ConnectionResetError):
        pass
    except PeerUnresponsiveError as exc:
        if _host_gone(sock):
            return 0  # the host shut down (EOF queued behind the silence): a clean exit
        # The host stopped acknowledging: the core keeps its slots and stops, like a real M4
        # whose mailbox went silent; the agent restarts it when it comes back.
        print(f"firmware.core: {exc}", file=sys.stderr)
        return 3
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
