"""The TFLM runtime of one simulated core: load a slot's model into its declared arena, check
it against the firmware and the release metadata, run self-test vectors, run inference.

Post-processing is described by the model itself (a `tinyfleet` metadata entry written by the
builder): classifiers report the arg-max label and its probability, and no anomaly flag;
anomaly detectors (autoencoders) report the reconstruction error as the score, and flag (and
label 1) a window whose error is above the model's `threshold`. The threshold is fixed by the
builder from healthy training windows, so it travels with each model version; an anomaly
model without a usable threshold is refused at load (MODEL_INVALID), never run with a guess.

Cores served by one thread (`firmware.host`) may share one `InterpreterCache`: runtimes of the
same model bytes and arena size then run through one interpreter. That is sound because every
use (`_invoke`: set input, invoke, read output) runs to completion on that thread, and a model
with variable tensors (state between invokes) always gets an interpreter of its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firmware._errors import ModelRejectedError
from firmware._image import FirmwareImage
from firmware._slots import SlotRecord
from firmware.icc import NO_LABEL, ReasonCode
from firmware.models._export import METADATA_KEY
from firmware.models._tflm import (
    load_interpreter,
    model_has_variables,
    model_metadata,
    model_operators,
)

__all__ = [
    "InferenceResult",
    "InterpreterCache",
    "ModelRuntime",
    "SelfTestOutcome",
    "check_operators",
]

_NUMPY_DTYPES = {
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "int32": np.int32,
    "float32": np.float32,
}


@dataclass(frozen=True)
class InferenceResult:
    label: int
    score: float
    latency_us: int
    anomaly: bool | None = None  # None: the model is not an anomaly detector


@dataclass(frozen=True)
class SelfTestOutcome:
    passed: bool
    total: int
    passed_count: int
    max_abs_diff: int
    latency_us: int


def check_operators(model: bytes, image: FirmwareImage) -> list[str]:
    """The model's operators, after checking the firmware has all of them.

    Raises:
        ModelRejectedError: MODEL_INVALID (not a TFLite model) or OPERATOR_UNSUPPORTED.
    """
    try:
        operators = model_operators(model)
    except ValueError as exc:
        raise ModelRejectedError(ReasonCode.MODEL_INVALID, str(exc)) from exc
    missing = sorted(set(operators) - image.operators)
    if missing:
        raise ModelRejectedError(
            ReasonCode.OPERATOR_UNSUPPORTED, f"firmware {image.version} lacks {', '.join(missing)}"
        )
    return operators


class _Loaded:
    """One interpreter, kept alive by the runtimes that use it (the cache holds it weakly)."""

    def __init__(self, interpreter: Any) -> None:
        self.interpreter = interpreter


class InterpreterCache:
    """TFLM interpreters by (model sha256, arena bytes), shared by the runtimes of one thread;
    an entry lives as long as some runtime uses it."""

    def __init__(self) -> None:
        self._entries: weakref.WeakValueDictionary[tuple[str, int], _Loaded] = (
            weakref.WeakValueDictionary()
        )
        self.loads = 0  # interpreters built
        self.shared = 0  # runtimes given an interpreter that already existed

    def __len__(self) -> int:
        return len(self._entries)

    def interpreter(self, model: bytes, arena_bytes: int) -> _Loaded:
        """Raises RuntimeError like `load_interpreter`."""
        key = (hashlib.sha256(model).hexdigest(), arena_bytes)
        entry = self._entries.get(key)
        if entry is not None:
            self.shared += 1
            return entry
        entry = _Loaded(load_interpreter(model, arena_bytes))
        self.loads += 1
        try:
            stateful = model_has_variables(model)
        except ValueError:
            stateful = True
        if not stateful:
            self._entries[key] = entry
        return entry


class ModelRuntime:
    """A loaded model, ready to run."""

    def __init__(
        self,
        model: bytes,
        record: SlotRecord,
        image: FirmwareImage,
        interpreters: InterpreterCache | None = None,
    ) -> None:
        """Load and check the model (through `interpreters` when given).

        Raises:
            ModelRejectedError: with OPERATOR_UNSUPPORTED, FIRMWARE_INCOMPATIBLE,
                ARENA_TOO_SMALL, MODEL_INVALID or SHAPE_MISMATCH.
        """
        check_operators(model, image)
        if not image.at_least(record.min_firmware_version):
            raise ModelRejectedError(
                ReasonCode.FIRMWARE_INCOMPATIBLE,
                f"needs firmware {record.min_firmware_version}, running {image.version}",
            )
        try:
            if interpreters is None:
                self._loaded = _Loaded(load_interpreter(model, record.arena_bytes))
            else:
                self._loaded = interpreters.interpreter(model, record.arena_bytes)
        except RuntimeError as exc:
            reason = (
                ReasonCode.ARENA_TOO_SMALL if "allocate" in str(exc) else ReasonCode.MODEL_INVALID
            )
            raise ModelRejectedError(reason, f"{exc} (arena {record.arena_bytes} bytes)") from exc
        self._interpreter: Any = self._loaded.interpreter
        self.record = record
        inp, out = self._interpreter.get_input_details(0), self._interpreter.get_output_details(0)
        self._check(inp, record.input_dtype, record.input_shape, "input")
        self._check(out, record.output_dtype, record.output_shape, "output")
        self._in_scale, self._in_zero = self._quant(inp)
        self._out_scale, self._out_zero = self._quant(out)
        raw = model_metadata(model, METADATA_KEY)
        self._post: dict[str, Any] = json.loads(raw) if raw else {"task": "classification"}
        self._threshold = self._anomaly_threshold(self._post)

    @staticmethod
    def _anomaly_threshold(post: dict[str, Any]) -> float | None:
        """The anomaly model's decision threshold; None for other tasks."""
        if post.get("task") != "anomaly":
            return None
        threshold = post.get("threshold")
        if (
            not isinstance(threshold, int | float)
            or isinstance(threshold, bool)
            or not math.isfinite(threshold)
            or threshold < 0
        ):
            raise ModelRejectedError(
                ReasonCode.MODEL_INVALID,
                f"anomaly model metadata has no usable threshold ({threshold!r})",
            )
        return float(threshold)

    @staticmethod
    def _check(details: dict[str, Any], dtype: str, shape: tuple[int, ...], which: str) -> None:
        actual_shape = tuple(int(d) for d in details["shape"])
        if (
            np.dtype(details["dtype"]) != np.dtype(_NUMPY_DTYPES.get(dtype, np.void))
            or actual_shape != shape
        ):
            raise ModelRejectedError(
                ReasonCode.SHAPE_MISMATCH,
                f"{which} is {np.dtype(details['dtype']).name}{list(actual_shape)}, "
                f"release says {dtype}{list(shape)}",
            )

    @staticmethod
    def _quant(details: dict[str, Any]) -> tuple[float, int]:
        params = details.get("quantization_parameters", {})
        scales, zeros = params.get("scales", []), params.get("zero_points", [])
        return (float(scales[0]) if len(scales) else 1.0), (int(zeros[0]) if len(zeros) else 0)

    def _invoke(self, tensor: NDArray[Any]) -> tuple[NDArray[Any], int]:
        started = time.perf_counter_ns()
        self._interpreter.set_input(tensor, 0)
        self._interpreter.invoke()
        output = np.array(self._interpreter.get_output(0))
        return output, (time.perf_counter_ns() - started) // 1000

    def self_test(self) -> SelfTestOutcome:
        """Run every self-test vector; pass when each output element is within tolerance."""
        dtype = _NUMPY_DTYPES[self.record.input_dtype]
        out_dtype = _NUMPY_DTYPES[self.record.output_dtype]
        passed, worst, latency = 0, 0, 0
        for input_hex, expected_hex, tolerance in self.record.vectors:
            tensor = np.frombuffer(bytes.fromhex(input_hex), dtype=dtype).reshape(
                self.record.input_shape
            )
            output, took = self._invoke(tensor)
            expected = np.frombuffer(bytes.fromhex(expected_hex), dtype=out_dtype).astype(np.int64)
            diff = int(np.abs(output.reshape(-1).astype(np.int64) - expected).max(initial=0))
            worst, latency = max(worst, diff), max(latency, took)
            passed += diff <= tolerance
        total = len(self.record.vectors)
        return SelfTestOutcome(passed == total, total, passed, min(worst, 0xFFFF), latency)

    def infer(self, features: NDArray[np.float64]) -> InferenceResult:
        """Quantize real-valued sensor features, run the model, post-process its output."""
        dtype = _NUMPY_DTYPES[self.record.input_dtype]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            q = np.clip(np.round(features / self._in_scale) + self._in_zero, info.min, info.max)
            tensor = q.astype(dtype).reshape(self.record.input_shape)
        else:
            tensor = features.astype(dtype).reshape(self.record.input_shape)
        output, latency = self._invoke(tensor)
        values = (output.reshape(-1).astype(np.float64) - self._out_zero) * self._out_scale
        if self._threshold is not None:
            seen = (tensor.reshape(-1).astype(np.float64) - self._in_zero) * self._in_scale
            score = float(((values - seen) ** 2).mean())
            anomalous = score > self._threshold
            return InferenceResult(int(anomalous), score, latency, anomalous)
        if values.size == 0:
            return InferenceResult(NO_LABEL, 0.0, latency)
        label = int(values.argmax())
        return InferenceResult(label, float(values[label]), latency)
