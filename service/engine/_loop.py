"""The engine loop: a thread that ticks the engine and runs the dispatcher every `interval`.

```python
loop = EngineLoop(engine, dispatcher, interval=timedelta(seconds=2), clock=utc_now)
loop.start()      # returns at once; rounds run in a daemon thread
...
loop.stop()       # wakes the thread, waits for the round in progress, gives the lease up
```
Invariants:
- A round is `engine.tick(now)` then `dispatcher.run_once(now)` (repeated while it dispatches
  full batches, at most `max_dispatch_rounds` times), with one `now = clock()` per round.
- A failing port (hub, storage, director) is logged and the loop goes on next round: nothing
  is lost, because the engine's state and its outbox only change in committed units.
- `stop()` is idempotent and returns once the thread has ended (or `timeout` passed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from service.engine._dispatcher import Dispatcher
from service.engine._engine import Engine

__all__ = ["EngineLoop"]

log = logging.getLogger(__name__)


class EngineLoop:
    def __init__(
        self,
        engine: Engine,
        dispatcher: Dispatcher,
        *,
        interval: timedelta,
        clock: Callable[[], datetime],
        max_dispatch_rounds: int = 20,
        on_round: Callable[[int], None] | None = None,
    ) -> None:
        if not timedelta(milliseconds=10) <= interval <= timedelta(minutes=10):
            raise ValueError("interval must be 10 ms..10 minutes")
        self._engine = engine
        self._dispatcher = dispatcher
        self._interval = interval.total_seconds()
        self._clock = clock
        self._batch = engine.config.dispatch_batch
        self._max_rounds = max_dispatch_rounds
        self._on_round = on_round
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.failures = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the engine loop was already started")
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def run_round(self) -> None:
        """One round now, in the caller's thread (a failing port is logged, not raised)."""
        now = self._clock()
        try:
            self._engine.tick(now)
        except Exception:
            self.failures += 1
            log.exception("engine tick failed; retrying next round")
        try:
            for _ in range(self._max_rounds):
                if self._dispatcher.run_once(now) < self._batch:
                    break
        except Exception:
            self.failures += 1
            log.exception("dispatcher round failed; retrying next round")
        self.rounds += 1
        if self._on_round is not None:
            self._on_round(self.rounds)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_round()
            self._stop.wait(self._interval)
        try:
            self._engine.resign()
        except Exception:
            log.exception("could not give the engine lease up; it expires by itself")
