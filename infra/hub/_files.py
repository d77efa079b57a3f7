"""The hub's files hold secrets (the iothubowner key in `hub.json` and `hub.sqlite`, device keys,
the CA key): its data directory is 0700 and every file it creates 0600, whatever the umask.
Files left by older versions with wider modes are narrowed when opened."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_dir", "private_file", "write_private"]

_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def private_file(path: Path | str) -> None:
    """Create `path` (and narrow its SQLite sidecars) as 0600 before anything opens it; SQLite
    gives the WAL and shared-memory files it creates the database file's mode."""
    if str(path) == ":memory:":
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    for suffix in _SQLITE_SIDECARS:
        sidecar = Path(f"{path}{suffix}")
        if sidecar.exists():
            os.chmod(sidecar, 0o600)


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, mode 0600 from the start."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
