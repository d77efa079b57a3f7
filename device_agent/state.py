"""The agent's persisted state: one small JSON document, written atomically (temp, fsync, rename).

It holds what must survive a crash or power cut: the update workflow's snapshot, the next
telemetry batch number (so message ids never repeat), and the last desired twin version handled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from signing.files import atomic_write

__all__ = ["AgentStateStore"]


class AgentStateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            # A torn write cannot happen (rename is atomic); a corrupt file means the medium
            # lied. Start from nothing rather than from garbage; the cores keep their own state.
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, state: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(state, sort_keys=True).encode())
