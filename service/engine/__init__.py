"""The rollout engine: drives `service.domain` over storage, the hub gateway and the director.

```python
engine = Engine(storage, hub, config)            # config: EngineConfig, built at the entry point
engine.create_rollout(spec, now)                 # plan + PENDING jobs, one unit of work
engine.command(spec.rollout_id, Start("alice"), now)
while True:
    engine.tick(now)                             # reports -> job events -> decide -> outbox
    Dispatcher(storage, hub, director, notifier, config).run_once(now)
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
from service.engine._engine import Engine, Hook, TickReport
from service.engine._errors import DispatchError, EngineError, NotLeaderError, UnsupportedError
from service.engine._ports import (
    DirectorPort,
    MemoryDirector,
    MemoryNotifier,
    Notice,
    Notifier,
    SigningDirector,
)

__all__ = [
    "DirectorPort",
    "DispatchError",
    "Dispatcher",
    "Engine",
    "EngineConfig",
    "EngineError",
    "Hook",
    "MemoryDirector",
    "MemoryNotifier",
    "NotLeaderError",
    "Notice",
    "Notifier",
    "SigningDirector",
    "TickReport",
    "UnsupportedError",
]
