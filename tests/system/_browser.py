"""Headless Chromium for the dashboard tests: Debian's `chromium` driven by python `playwright`,
and an ASGI app served by uvicorn on a free loopback port in a background thread.

`missing_browser()` says why the browser tests cannot run here (None when they can). The
Makefile installs Debian's chromium; playwright's own browser download is not used (it cannot
reach its host from this network), so `launch` always passes `executable_path`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

__all__ = ["ARTIFACTS", "chromium_path", "launch", "missing_browser", "serve"]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
_START_TIMEOUT_S = 20.0
# Without the background-networking flags Chromium keeps dialing out, and this machine's closed
# network refuses every attempt; --no-sandbox because tests run as root in CI.
_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str | None:
    """`$TINYFLEET_CHROMIUM`, else Debian's `/usr/bin/chromium`, else `chromium` on PATH."""
    configured = os.environ.get("TINYFLEET_CHROMIUM")
    if configured:
        return configured if Path(configured).is_file() else None
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def missing_browser() -> str | None:
    if chromium_path() is None:
        return "Chromium is not installed (Debian: apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "python playwright is not installed (pip install -e '.[dev]')"
    return None


@contextmanager
def launch() -> Iterator[Any]:
    """A headless playwright Browser on the system Chromium (playwright gives it a throwaway
    profile)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    assert executable is not None, missing_browser()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=list(_FLAGS))
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) until the block ends; yields its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, name="dashboard-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
