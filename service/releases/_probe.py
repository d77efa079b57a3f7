"""Run a model in the real TFLM runtime (the `tflite_micro` interpreter), in a child process.

The interpreter is C++ that reads untrusted bytes; a model that crashes it must fail admission,
not the service, so `probe()` runs this file as a script in a child process, with a deadline (it
imports only the standard library at the top, so the child never loads the service). The child
loads the model into exactly the declared arena, checks its tensors, and runs every self-test
vector; the C++ runtime's own messages (e.g. "Didn't find op for builtin opcode ...") are
captured and returned as the failure detail.

Request (stdin, JSON): `{"model": path, "arena": int, "vectors": [{"input": b64, "expected": b64,
"tolerance": int}], "result": path}`. Result (written to `result`): `{"loaded": bool, "error": str,
"vectors": [{"maxDiff": int, "tolerance": int}]}`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ProbeResult", "VectorResult", "probe"]

DEADLINE_S = 60.0
_LOG_TAIL = 400


@dataclass(frozen=True)
class VectorResult:
    max_diff: int
    tolerance: int

    @property
    def ok(self) -> bool:
        return self.max_diff <= self.tolerance


@dataclass(frozen=True)
class ProbeResult:
    loaded: bool
    error: str = ""
    vectors: tuple[VectorResult, ...] = field(default_factory=tuple)


def probe(model: Path, arena: int, vectors: list[dict[str, Any]]) -> ProbeResult:
    """Load `model` with `arena` bytes of tensor arena and run `vectors`, in a child process."""
    with tempfile.TemporaryDirectory(prefix="tinyfleet-probe-") as tmp:
        result_path = Path(tmp) / "result.json"
        request = {"model": str(model), "arena": arena, "vectors": vectors}
        request["result"] = str(result_path)
        try:
            done = subprocess.run(
                [sys.executable, "-I", str(Path(__file__).resolve())],
                input=json.dumps(request).encode(),
                capture_output=True,
                timeout=DEADLINE_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return ProbeResult(False, f"the runtime did not finish within {DEADLINE_S:.0f} s")
        if done.returncode < 0:
            return ProbeResult(False, f"the runtime crashed (signal {-done.returncode})")
        if not result_path.exists():
            tail = done.stderr.decode(errors="replace")[-_LOG_TAIL:]
            return ProbeResult(False, f"the runtime exited with {done.returncode}: {tail}")
        raw = json.loads(result_path.read_text())
    return ProbeResult(
        bool(raw["loaded"]),
        str(raw.get("error", "")),
        tuple(VectorResult(int(v["maxDiff"]), int(v["tolerance"])) for v in raw.get("vectors", [])),
    )


def _run(request: dict[str, Any], log_path: Path) -> dict[str, Any]:
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime  # type: ignore[import-untyped]

    def log() -> str:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        return " ".join(text.split())[-_LOG_TAIL:]

    model = Path(request["model"]).read_bytes()
    try:
        interpreter: Any = runtime.Interpreter.from_bytes(model, arena_size=int(request["arena"]))
    except Exception as exc:  # RuntimeError from the C++ side, or the Python pre-parse
        return {"loaded": False, "error": " ".join(filter(None, [str(exc), log()]))}
    inp, out = interpreter.get_input_details(0), interpreter.get_output_details(0)
    results = []
    for vector in request["vectors"]:
        raw = base64.b64decode(vector["input"])
        tensor = np.frombuffer(raw, dtype=inp["dtype"]).reshape(inp["shape"])
        interpreter.set_input(tensor, 0)
        interpreter.invoke()
        got = np.array(interpreter.get_output(0)).reshape(-1).astype(np.int64)
        expected = np.frombuffer(base64.b64decode(vector["expected"]), dtype=out["dtype"])
        diff = int(np.abs(got - expected.astype(np.int64)).max(initial=0))
        results.append({"maxDiff": diff, "tolerance": int(vector["tolerance"])})
    return {"loaded": True, "vectors": results}


def main() -> None:
    request = json.loads(sys.stdin.buffer.read())
    log_path = Path(request["result"]).with_suffix(".log")
    with open(log_path, "wb") as log_file:  # the C++ runtime prints to fd 1 and 2
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
    try:
        result = _run(request, log_path)
    except Exception as exc:
        result = {"loaded": False, "error": f"{type(exc).__name__}: {exc}"}
    Path(request["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
