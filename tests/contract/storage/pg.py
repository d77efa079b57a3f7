"""A PostgreSQL server for tests: the local one if it answers, else a throwaway `initdb` cluster.

`postgres_server()` yields an admin URL; `scratch_database(admin_url)` creates a database with
a unique name and drops it afterwards, so concurrent test runs never share tables.
"""

from __future__ import annotations

import getpass
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 5432
START_TIMEOUT_S = 60


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _local_server() -> str | None:
    users = [os.environ.get("PGUSER"), getpass.getuser(), "postgres"]
    for user in dict.fromkeys(u for u in users if u):
        url = f"postgresql://{user}@{LOCAL_HOST}:{LOCAL_PORT}/postgres"
        if _answers(url):
            return url
    return None


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL_HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def throwaway_cluster() -> Iterator[str | None]:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        yield None
        return
    # initdb refuses to run as root: run the cluster as the `postgres` (or `nobody`) user.
    user = None
    if os.geteuid() == 0:
        for name in ("postgres", "nobody"):
            try:
                pwd.getpwnam(name)
            except KeyError:
                continue
            user = name
            break
    root = Path(tempfile.mkdtemp(prefix="tinyfleet-pg-"))
    data = root / "data"
    if user is not None:
        record = pwd.getpwnam(user)
        os.chown(root, record.pw_uid, record.pw_gid)
    port = _free_port()
    run = {"user": user, "check": True, "capture_output": True, "timeout": START_TIMEOUT_S}
    subprocess.run([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], **run)
    options = f"-h {LOCAL_HOST} -p {port} -k {root} -c fsync=off"
    subprocess.run(
        [pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"], **run
    )
    try:
        yield f"postgresql://postgres@{LOCAL_HOST}:{port}/postgres"
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], **run)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str | None]:
    """An admin URL of a reachable server, or None when neither option is available."""
    local = _local_server()
    if local is not None:
        yield local
        return
    with throwaway_cluster() as url:
        yield url


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A fresh, uniquely named database; yields its URL and drops it afterwards."""
    name = f"tinyfleet_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
