"""What each core showed of itself since its last activation: heartbeats and inference results.

The service confirms a release from these figures (DESIGN decision 5: "done" is observed on the
cores), never from hub activity: a core that died after activation stops sending heartbeats, so
its `heartbeat_at_ms` ages while the agent's telemetry keeps the hub's last-activity time fresh.

Invariants:
- `activated(core, now)` starts a new count: results from before the activation never count.
- A heartbeat or result is stamped with the agent's clock when it arrives (the core's own
  uptime says nothing about wall time).
- `due(now)` asks for a reported patch at most once per `report_every_s` while anything new
  arrived, and at once for the first heartbeat and the first result after an activation, so
  the twin follows a core's liveness without a patch per heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CoreLiveness", "Liveness"]


@dataclass
class CoreLiveness:
    activated_at_ms: int | None = None
    heartbeat_at_ms: int | None = None
    inferences: int = 0  # results since `activated_at_ms`


class Liveness:
    def __init__(self, report_every_s: float) -> None:
        self._every_ms = int(report_every_s * 1000)
        self.cores: dict[str, CoreLiveness] = {}
        self._news = False
        self._urgent = False
        self._reported_ms = 0

    def core(self, core: str) -> CoreLiveness:
        return self.cores.setdefault(core, CoreLiveness())

    def activated(self, core: str, now_ms: int) -> None:
        self.cores[core] = CoreLiveness(activated_at_ms=now_ms)
        self._urgent = True

    def heartbeat(self, core: str, now_ms: int) -> None:
        entry = self.core(core)
        first = entry.activated_at_ms is not None and (
            entry.heartbeat_at_ms is None or entry.heartbeat_at_ms < entry.activated_at_ms
        )
        entry.heartbeat_at_ms = now_ms
        self._news = True
        self._urgent |= first

    def inference(self, core: str) -> None:
        entry = self.core(core)
        entry.inferences += 1
        self._news = True
        self._urgent |= entry.inferences == 1

    def due(self, now_ms: int) -> bool:
        """Whether the twin should be patched now; resets when it says so."""
        if self._urgent or (self._news and now_ms - self._reported_ms >= self._every_ms):
            self._news = self._urgent = False
            self._reported_ms = now_ms
            return True
        return False
