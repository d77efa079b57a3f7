"""The agent's persisted state: one small JSON document, written atomically (temp, fsync, rename).

It holds what must survive a crash or power cut: the update workflow's snapshot, the next
telemetry batch number (so message ids never repeat), and the last desired twin version handled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".agent-state.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(json.dumps(state, sort_keys=True).encode())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
