"""A one-way message channel that misbehaves on purpose: drop, duplicate, reorder, split,
corrupt and delay, driven by a seeded random generator and an explicit clock.

It is the fault model of the in-memory transport and of the protocol tests; the real transports
(SOCK_SEQPACKET, RPMsg) are lossless, so every fault here is harsher than production.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

__all__ = ["FaultPlan", "FaultyChannel"]


@dataclass(frozen=True)
class FaultPlan:
    """Probabilities per message (0..1) and delays in seconds.

    `split` cuts a message into two datagrams (a receiver that expects one frame per datagram
    sees two broken ones); `reorder` holds a message back by up to `reorder_s` so later ones
    overtake it; `delay_s` delays every message by that much.
    """

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    split: float = 0.0
    corrupt: float = 0.0
    delay_s: float = 0.0
    reorder_s: float = 0.05
    seed: int = 0

    @property
    def clean(self) -> bool:
        return not (
            self.drop
            or self.duplicate
            or self.reorder
            or self.split
            or self.corrupt
            or self.delay_s
        )


class FaultyChannel:
    """Messages go in with `put(data, now)` and come out of `take(now)` once due."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self.plan = plan or FaultPlan()
        self._rng = random.Random(self.plan.seed)
        self._heap: list[tuple[float, int, bytes]] = []
        self._order = 0
        self.counts = {
            "sent": 0,
            "dropped": 0,
            "duplicated": 0,
            "reordered": 0,
            "split": 0,
            "corrupted": 0,
        }

    def put(self, data: bytes, now: float) -> None:
        plan, rng = self.plan, self._rng
        self.counts["sent"] += 1
        if rng.random() < plan.drop:
            self.counts["dropped"] += 1
            return
        copies = 1
        if rng.random() < plan.duplicate:
            self.counts["duplicated"] += 1
            copies = 2
        for _ in range(copies):
            due = now + plan.delay_s
            if rng.random() < plan.reorder:
                self.counts["reordered"] += 1
                due += rng.uniform(0.0, plan.reorder_s)
            payload = data
            if payload and rng.random() < plan.corrupt:
                self.counts["corrupted"] += 1
                position = rng.randrange(len(payload))
                flipped = payload[position] ^ (1 << rng.randrange(8))
                payload = payload[:position] + bytes([flipped]) + payload[position + 1 :]
            if len(payload) > 1 and rng.random() < plan.split:
                self.counts["split"] += 1
                cut = rng.randrange(1, len(payload))
                self._push(due, payload[:cut])
                self._push(due, payload[cut:])
            else:
                self._push(due, payload)

    def take(self, now: float) -> list[bytes]:
        """Every message due at `now`, in delivery order."""
        out: list[bytes] = []
        while self._heap and self._heap[0][0] <= now:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)

    def _push(self, due: float, data: bytes) -> None:
        self._order += 1
        heapq.heappush(self._heap, (due, self._order, data))
