"""The device's trusted metadata, kept as numbered generations switched by one atomic pointer.

An update cycle works on a copy of the current generation; only when every check has passed does
`CURRENT` move to the copy (temp file, fsync, rename). A rejected or interrupted cycle leaves the
trusted state byte-for-byte as it was, and stray generations are removed at the next start.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from signing.files import atomic_write

POINTER = "CURRENT"


class Generations:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def current(self) -> Path | None:
        pointer = self.root / POINTER
        if not pointer.exists():
            return None
        path = self.root / pointer.read_text().strip()
        return path if path.is_dir() else None

    def _number(self, path: Path | None) -> int:
        return int(path.name.removeprefix("gen-")) if path else 0

    def begin(self) -> Path:
        """A fresh working copy of the current generation, with the next number."""
        current = self.current()
        self.collect()
        work = self.root / f"gen-{self._number(current) + 1:08d}"
        if current is not None:
            shutil.copytree(current, work, symlinks=True)
        else:
            work.mkdir()
        return work

    def commit(self, work: Path) -> None:
        atomic_write(self.root / POINTER, work.name.encode())
        self.collect()

    def abandon(self, work: Path) -> None:
        shutil.rmtree(work, ignore_errors=True)

    def collect(self) -> None:
        """Remove every generation but the current one (leftovers of interrupted cycles)."""
        keep = self.current()
        for path in self.root.glob("gen-*"):
            if path != keep:
                shutil.rmtree(path, ignore_errors=True)
