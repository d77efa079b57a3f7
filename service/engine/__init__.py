"""The rollout engine: drives `service.domain` over storage, the hub gateway and the director.

```python
engine = Engine(storage, hub, config, gates=gate)  # config: EngineConfig, from the entry point
spec = spec_from_document(body, time_zone=group.time_zone, production=group.production)
engine.create_rollout(spec, now)                 # plan + PENDING jobs, one unit of work
engine.command(spec.rollout_id, Start("alice"), now)
loop = EngineLoop(engine, Dispatcher(storage, hub, director, notifier, config),
                  interval=timedelta(seconds=2), clock=lambda: datetime.now(UTC))
loop.start()                                     # tick (reports -> decide -> outbox) + dispatch
loop.stop()
```
Design: `docs/decisions/0007-rollout-engine.md`. Errors (`_errors.py`):

```
EngineError
├── NotLeaderError
├── UnsupportedError
└── DispatchError
```
"""

from __future__ import annotations

from service.engine._config import EngineConfig
from service.engine._dispatcher import Dispatcher
from service.engine._document import DEFAULT_GATE, NO_GATE, spec_from_document, spec_to_document
from service.engine._engine import AuditNote, Engine, Hook, TickReport
from service.engine._errors import DispatchError, EngineError, NotLeaderError, UnsupportedError
from service.engine._loop import EngineLoop
from service.engine._ports import (
    DirectorPort,
    HealthGate,
    MemoryDirector,
    MemoryHealthGate,
    MemoryNotifier,
    Notice,
    Notifier,
    SigningDirector,
)

__all__ = [
    "DEFAULT_GATE",
    "NO_GATE",
    "AuditNote",
    "DirectorPort",
    "DispatchError",
    "Dispatcher",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineLoop",
    "HealthGate",
    "Hook",
    "MemoryDirector",
    "MemoryHealthGate",
    "MemoryNotifier",
    "NotLeaderError",
    "Notice",
    "Notifier",
    "SigningDirector",
    "TickReport",
    "UnsupportedError",
    "spec_from_document",
    "spec_to_document",
]
