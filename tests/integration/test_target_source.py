"""Target bytes over HTTP: Range requests resume a dropped download at the byte it reached, and
the source never lets more than the signed length through."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from device_agent.target_source import HttpTargetSource, SourceError, resumable
from signing import TargetTooLongError
from signing.stream import TargetStreamVerifier

BLOB = hashlib.sha256(b"model").digest() * 8192  # 256 KiB
SHA = hashlib.sha256(BLOB).hexdigest()


class _Flaky(BaseHTTPRequestHandler):
    """Serves BLOB with Range support; cuts the first `drops` responses off halfway."""

    drops = 0
    ranges: ClassVar[list[str | None]] = []
    body = BLOB

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        cls = type(self)
        header = self.headers.get("Range")
        cls.ranges.append(header)
        if self.path.split("?")[0] != "/models/kws/blob.tflite":
            self.send_error(404)
            return
        start = int(header.removeprefix("bytes=").rstrip("-")) if header else 0
        data = cls.body[start:]
        self.send_response(206 if header else 200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if cls.drops > 0:
            cls.drops -= 1
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the link drops mid-body
            return
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Flaky]]]:
    handler = type("Handler", (_Flaky,), {"drops": 0, "ranges": [], "body": BLOB})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def _verify(chunks: Iterator[bytes], length: int = len(BLOB)) -> str:
    verifier = TargetStreamVerifier("blob", length, SHA)
    for chunk in chunks:
        verifier.update(chunk)
    return verifier.finish().sha256


def test_dropped_download_resumes_with_a_range_request(server: tuple[str, type[_Flaky]]) -> None:
    base, handler = server
    handler.drops = 2
    resumed: list[int] = []
    source = HttpTargetSource(base, "sig=abc")
    chunks = resumable(
        source, "models/kws/blob.tflite", len(BLOB), sleep=lambda s: None, on_resume=resumed.append
    )
    assert _verify(chunks) == SHA
    assert handler.ranges[0] is None and len(handler.ranges) == 3
    assert all(r is not None and r.startswith("bytes=") for r in handler.ranges[1:])
    assert resumed and all(0 < offset < len(BLOB) for offset in resumed)


def test_retries_are_bounded(server: tuple[str, type[_Flaky]]) -> None:
    base, handler = server
    handler.drops = 100
    chunks = resumable(
        HttpTargetSource(base), "models/kws/blob.tflite", len(BLOB), retries=3, sleep=lambda s: None
    )
    with pytest.raises(SourceError):
        _verify(chunks)


def test_missing_target_is_not_retried(server: tuple[str, type[_Flaky]]) -> None:
    base, handler = server
    chunks = resumable(
        HttpTargetSource(base), "models/kws/nothing.tflite", 10, sleep=lambda s: None
    )
    with pytest.raises(SourceError, match="not found"):
        list(chunks)
    assert len(handler.ranges) == 1


def test_a_server_sending_more_than_signed_is_stopped_at_the_first_extra_byte(
    server: tuple[str, type[_Flaky]],
) -> None:
    base, handler = server
    handler.body = BLOB + b"x" * 100_000  # an endless-data mirror
    chunks = resumable(
        HttpTargetSource(base), "models/kws/blob.tflite", len(BLOB), sleep=lambda s: None
    )
    with pytest.raises(TargetTooLongError):
        _verify(chunks)
