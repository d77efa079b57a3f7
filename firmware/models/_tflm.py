"""The one place that calls the tflite-micro Python interpreter, shared by the builder and the
simulated cores."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from tflite_micro.python.tflite_micro import runtime
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

__all__ = [
    "OPERATOR_NAMES",
    "find_min_arena",
    "load_interpreter",
    "model_has_variables",
    "model_metadata",
    "model_operators",
]

OPERATOR_NAMES: dict[int, str] = {
    code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")
}


@contextlib.contextmanager
def _quiet(fd: int) -> Iterator[None]:
    """The C++ runtime prints to fd 1 on every load (and to fd 2 on failures); silence `fd`."""
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def load_interpreter(model: bytes, arena_bytes: int) -> Any:
    """A TFLM interpreter for `model` with exactly `arena_bytes` of tensor arena.

    Raises:
        RuntimeError: the runtime cannot allocate the model's tensors in the arena (or the
            model is malformed).
    """
    with _quiet(1):
        return runtime.Interpreter.from_bytes(bytes(model), arena_size=arena_bytes)


def find_min_arena(model: bytes, *, upper: int = 256 * 1024) -> int:
    """The smallest arena (to 16 bytes) in which the runtime can allocate `model`."""
    lo, hi = 16, upper
    load_interpreter(model, hi)
    with _quiet(2):  # the expected failures of the search would flood stderr
        while hi - lo > 16:
            mid = (lo + hi) // 2 // 16 * 16
            try:
                load_interpreter(model, mid)
            except RuntimeError:
                lo = mid
            else:
                hi = mid
    return hi


def _root(model: bytes) -> Any:
    try:
        return schema.Model.GetRootAsModel(model, 0)
    except Exception as exc:  # the flatbuffers reader raises assorted errors on garbage
        raise ValueError(f"not a TFLite flatbuffer: {exc}") from exc


def model_operators(model: bytes) -> list[str]:
    """The builtin operator names a model uses, in the order of its operator-code table.

    Raises:
        ValueError: the bytes are not a readable TFLite flatbuffer (flatbuffers reads lazily, so
            garbage fails on field access with struct, index or type errors: all become this).
    """
    root = _root(model)
    names = []
    try:
        for i in range(root.OperatorCodesLength()):
            opcode = root.OperatorCodes(i)
            code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
            names.append(OPERATOR_NAMES.get(code, f"OPCODE_{code}"))
    except Exception as exc:  # any reader failure means "not a model"
        raise ValueError(f"not a TFLite flatbuffer: {exc}") from exc
    return names


def model_metadata(model: bytes, key: str) -> bytes | None:
    """The bytes stored under metadata entry `key`, if any."""
    root = _root(model)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        name = entry.Name()
        if (name.decode() if isinstance(name, bytes) else name) == key:
            buffer = root.Buffers(entry.Buffer())
            return bytes(buffer.DataAsNumpy().tobytes()) if buffer.DataLength() else b""
    return None


def model_has_variables(model: bytes) -> bool:
    """Whether any tensor of the model is a variable (state kept from one invoke to the next, as
    in a recurrent model): such a model's interpreter must not be shared.

    Raises:
        ValueError: the bytes are not a readable TFLite flatbuffer.
    """
    root = _root(model)
    try:
        for g in range(root.SubgraphsLength()):
            graph = root.Subgraphs(g)
            if any(graph.Tensors(t).IsVariable() for t in range(graph.TensorsLength())):
                return True
    except Exception as exc:  # any reader failure means "not a model"
        raise ValueError(f"not a TFLite flatbuffer: {exc}") from exc
    return False
