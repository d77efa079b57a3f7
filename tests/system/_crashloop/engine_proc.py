"""The engine process of the crash loop: `python -m tests.system._crashloop.engine_proc CONFIG`.

It runs what `tinyfleet serve` runs of the rollout engine: `EngineLoop` rounds (`Engine.tick`,
then `Dispatcher.run_once`) on the wall clock, over `SqlStorage` (SQLite file or PostgreSQL)
and the `azure-iot-hub` SDK adapter pointed at the mock hub. The director and the notifier are
append-only files (one line per call, flushed before the call returns), so the test can check
that a device's director entry was written before its offer, even across SIGKILLs.

Each process takes the leader lease under its own holder name (`engine-<pid>`), as a restarted
replica would: it leads once the killed one's lease has expired. It prints `ready` when it is
about to tick; a failing round is logged to stderr (the test counts them) and retried.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from service.engine import Dispatcher, Engine, EngineConfig, EngineLoop, Notice
from service.hubgateway import SdkHubGateway
from service.storage import SqlStorage

ROUND_PAUSE = timedelta(milliseconds=50)


@dataclass(frozen=True)
class ProcConfig:
    db_url: str
    hub_connection_string: str
    director_log: str
    notice_log: str
    lease_ttl_s: float = 1.0

    @classmethod
    def load(cls, path: Path) -> ProcConfig:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))


def engine_config(holder: str, lease_ttl_s: float) -> EngineConfig:
    return EngineConfig(
        image_url="https://repo.test/image/metadata/",
        director_url="https://repo.test/director/devices/{device_id}/metadata/",
        targets_url="https://repo.test/image/targets/",
        holder=holder,
        lease_ttl=timedelta(seconds=lease_ttl_s),
    )


class _AppendLog:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def line(self, text: str) -> None:
        self._file.write(text + "\n")
        self._file.flush()  # in the OS once the call returns: a SIGKILL cannot lose it


class FileDirector(_AppendLog):
    """The director port as an append-only log; repeating a line is harmless (idempotent)."""

    def assign(self, device_id: str, hardware_id: str, release_id: str, now: datetime) -> None:
        self.line(f"assign {device_id} {release_id}")

    def revoke(self, device_id: str, now: datetime) -> None:
        self.line(f"revoke {device_id}")


class FileNotifier(_AppendLog):
    def notify(self, notice: Notice) -> None:
        self.line(
            json.dumps({"rollout": notice.rollout_id, "kind": notice.kind, "key": notice.key})
        )


def main(config_path: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(asctime)s %(message)s")
    config = ProcConfig.load(Path(config_path))
    engine_cfg = engine_config(f"engine-{os.getpid()}", config.lease_ttl_s)
    storage = SqlStorage(config.db_url)
    hub = SdkHubGateway.from_connection_string(config.hub_connection_string, retries=0)
    engine = Engine(storage, hub, engine_cfg)
    dispatcher = Dispatcher(
        storage, hub, FileDirector(config.director_log), FileNotifier(config.notice_log), engine_cfg
    )
    loop = EngineLoop(engine, dispatcher, interval=ROUND_PAUSE, clock=lambda: datetime.now(UTC))
    print("ready", flush=True)
    # The rounds run in this thread, as `EngineLoop`'s own thread would run them; SIGKILL ends
    # the process at any instant of any round.
    while True:
        loop.run_round()
        time.sleep(ROUND_PAUSE.total_seconds())


if __name__ == "__main__":
    main(sys.argv[1])
