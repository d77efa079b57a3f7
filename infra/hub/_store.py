"""SQLite persistence for the registry, twins, MQTT sessions, pending C2D and access policies.

Every write commits before it returns, so whatever the hub has acknowledged survives a kill -9
(WAL journal, `synchronous=NORMAL`: durable against process crashes). Registry, twins and sessions
are also kept in memory: reads never touch the disk.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from infra.hub._errors import HubStorageError, RequestRefused
from infra.hub._files import private_file
from infra.hub._twin import Twin

__all__ = ["C2DMessage", "DeviceRecord", "HubStore", "check_device_id"]

_DEVICE_ID = re.compile(r"^[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS twins (device_id TEXT PRIMARY KEY, twin TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (device_id TEXT PRIMARY KEY, subscriptions TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS c2d (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, payload BLOB NOT NULL,
    properties TEXT NOT NULL, enqueued REAL NOT NULL);
CREATE INDEX IF NOT EXISTS c2d_by_device ON c2d (device_id, seq);
CREATE TABLE IF NOT EXISTS policies (name TEXT PRIMARY KEY, primary_key TEXT, secondary_key TEXT);
"""


def check_device_id(device_id: str) -> str:
    if not _DEVICE_ID.match(device_id):
        raise RequestRefused(
            400,
            "ArgumentInvalid",
            f"device id {device_id!r}: 1-128 of letters, digits and - . % _ * ? ! ( ) , : = @ $ '",
        )
    return device_id


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    device_id: str
    generation_id: str
    etag_counter: int = 1
    status: str = "enabled"
    status_reason: str | None = None
    auth_type: str = "sas"  # sas | selfSigned | certificateAuthority | none
    primary_key: str | None = None
    secondary_key: str | None = None
    primary_thumbprint: str | None = None
    secondary_thumbprint: str | None = None
    iot_edge: bool = False
    status_updated: str = "0001-01-01T00:00:00Z"

    def sas_keys(self) -> list[str]:
        return [k for k in (self.primary_key, self.secondary_key) if k]

    def thumbprints(self) -> set[str]:
        found = (self.primary_thumbprint, self.secondary_thumbprint)
        return {t.upper().replace(":", "") for t in found if t}


@dataclass(frozen=True, slots=True)
class C2DMessage:
    seq: int
    device_id: str
    payload: bytes
    properties: dict[str, str | None]
    enqueued: float


class HubStore:
    def __init__(self, path: Path | str) -> None:
        try:
            private_file(path)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self.devices: dict[str, DeviceRecord] = {
                row[0]: DeviceRecord(**json.loads(row[1]))
                for row in self._db.execute("SELECT device_id, record FROM devices")
            }
            self.twins: dict[str, Twin] = {
                row[0]: Twin.from_json(json.loads(row[1]))
                for row in self._db.execute("SELECT device_id, twin FROM twins")
            }
            self.sessions: dict[str, list[str]] = {
                row[0]: json.loads(row[1])
                for row in self._db.execute("SELECT device_id, subscriptions FROM sessions")
            }
        except (sqlite3.Error, OSError, ValueError, TypeError) as exc:
            raise HubStorageError(f"cannot open the hub database {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            raise HubStorageError(f"hub database write failed: {exc}") from exc

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise HubStorageError(f"hub database read failed: {exc}") from exc

    # --- registry and twins -----------------------------------------------------------------------

    def lookup_device(self, device_id: str) -> DeviceRecord | None:
        """The device, reloading it from the file if another process (the CLI) added it."""
        record = self.devices.get(device_id)
        if record is not None:
            return record
        rows = self._read(
            "SELECT d.record, t.twin FROM devices d JOIN twins t USING (device_id) "
            "WHERE device_id = ?",
            (device_id,),
        )
        if not rows:
            return None
        row = rows[0]
        record = DeviceRecord(**json.loads(row[0]))
        self.devices[device_id] = record
        self.twins[device_id] = Twin.from_json(json.loads(row[1]))
        return record

    def refresh_devices(self) -> None:
        """Load devices another process (the CLI, a fleet) added since this store was opened."""
        ids = [row[0] for row in self._read("SELECT device_id FROM devices")]
        missing = [device_id for device_id in ids if device_id not in self.devices]
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            rows = self._read(
                "SELECT device_id, d.record, t.twin FROM devices d JOIN twins t USING (device_id)"
                f" WHERE device_id IN ({', '.join('?' * len(chunk))})",
                tuple(chunk),
            )
            for device_id, record, twin in rows:
                self.devices[device_id] = DeviceRecord(**json.loads(record))
                self.twins[device_id] = Twin.from_json(json.loads(twin))

    def put_device(self, record: DeviceRecord, twin: Twin | None = None) -> None:
        """Insert or replace a device (and, when given, its twin) in one transaction."""
        self.put_devices([(record, twin)])

    def put_devices(self, devices: Sequence[tuple[DeviceRecord, Twin | None]]) -> None:
        """Insert or replace many devices (and the twins given) in one transaction."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO devices VALUES (?, ?)",
                    [(r.device_id, json.dumps(asdict(r))) for r, _ in devices],
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO twins VALUES (?, ?)",
                    [(t.device_id, json.dumps(t.to_json())) for _, t in devices if t is not None],
                )
        except sqlite3.Error as exc:
            raise HubStorageError(f"hub database write failed: {exc}") from exc
        for record, twin in devices:
            self.devices[record.device_id] = record
            if twin is not None:
                self.twins[twin.device_id] = twin

    def delete_device(self, device_id: str) -> None:
        try:
            with self._db:
                self._db.execute("BEGIN")
                for table in ("devices", "twins", "sessions", "c2d"):
                    self._db.execute(f"DELETE FROM {table} WHERE device_id = ?", (device_id,))
        except sqlite3.Error as exc:
            raise HubStorageError(f"hub database write failed: {exc}") from exc
        self.devices.pop(device_id, None)
        self.twins.pop(device_id, None)
        self.sessions.pop(device_id, None)

    def put_twin(self, twin: Twin) -> None:
        self._write(
            "INSERT OR REPLACE INTO twins VALUES (?, ?)",
            (twin.device_id, json.dumps(twin.to_json())),
        )
        self.twins[twin.device_id] = twin

    def bump_device_etag(self, device_id: str) -> None:
        record = self.devices[device_id]
        self.put_device(replace(record, etag_counter=record.etag_counter + 1))

    # --- MQTT sessions (clean session 0) ----------------------------------------------------------

    def put_session(self, device_id: str, subscriptions: list[str]) -> None:
        if self.sessions.get(device_id) == subscriptions:
            return
        self._write(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?)", (device_id, json.dumps(subscriptions))
        )
        self.sessions[device_id] = subscriptions

    def drop_session(self, device_id: str) -> None:
        if self.sessions.pop(device_id, None) is not None:
            self._write("DELETE FROM sessions WHERE device_id = ?", (device_id,))

    # --- cloud-to-device queue --------------------------------------------------------------------

    def enqueue_c2d(
        self, device_id: str, payload: bytes, properties: dict[str, str | None], now: float
    ) -> int:
        cursor = self._write(
            "INSERT INTO c2d (device_id, payload, properties, enqueued) VALUES (?, ?, ?, ?)",
            (device_id, payload, json.dumps(properties), now),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def pending_c2d(self, device_id: str) -> list[C2DMessage]:
        rows = self._read(
            "SELECT seq, payload, properties, enqueued FROM c2d WHERE device_id = ? ORDER BY seq",
            (device_id,),
        )
        return [C2DMessage(r[0], device_id, r[1], json.loads(r[2]), r[3]) for r in rows]

    def count_c2d(self, device_id: str) -> int:
        rows = self._read("SELECT COUNT(*) FROM c2d WHERE device_id = ?", (device_id,))
        return int(rows[0][0])

    def complete_c2d(self, seq: int) -> None:
        self._write("DELETE FROM c2d WHERE seq = ?", (seq,))

    def purge_c2d(self, device_id: str) -> int:
        return self._write("DELETE FROM c2d WHERE device_id = ?", (device_id,)).rowcount

    # --- shared access policies ---------------------------------------------------------------

    def policies(self) -> dict[str, tuple[str, str]]:
        rows = self._read("SELECT name, primary_key, secondary_key FROM policies")
        return {r[0]: (r[1], r[2]) for r in rows}

    def put_policy(self, name: str, primary_key: str, secondary_key: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO policies VALUES (?, ?, ?)", (name, primary_key, secondary_key)
        )
