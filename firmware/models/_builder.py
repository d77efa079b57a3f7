"""The model builder: trains each model line's versions, quantizes them, writes `.tflite` files
and the sidecar metadata that `tinyfleet release sign` reads, and measures their quality with the
same TFLM interpreter the simulated cores run.

Each version is a `ModelSpec`; everything random is seeded from it, so `build_all` writes the same
bytes on every run on one platform. The quality differences between versions are deliberate
(see docs/models.md): v1 is a small baseline, v2 is larger and better trained, v3 is the v2
architecture trained on bad data (mislabelled keywords; vibration windows contaminated with
faults), as happens when a data pipeline breaks.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from firmware.models._datasets import (
    KWS_LABELS,
    KWS_SHAPE,
    VIBRATION_BANDS,
    kws_samples,
    vibration_samples,
)
from firmware.models._export import QuantParams, export_int8
from firmware.models._mlp import Mlp, train
from firmware.models._tflm import find_min_arena, load_interpreter

__all__ = ["SPECS", "BuiltModel", "ModelSpec", "build", "build_all", "specs_named"]

Floats = NDArray[np.float64]
_TEST_SAMPLES = 1000
_SELFTEST_VECTORS = 2
_TOLERANCE = 2


@dataclass(frozen=True)
class ModelSpec:
    """How to build one version of one model line."""

    model_id: str
    version: str
    hidden: tuple[int, ...]
    train_samples: int
    epochs: int
    seed: int
    label_noise: float = 0.0  # fraction of training labels replaced at random (kws)
    contamination: float = 0.0  # fraction of faulty windows in "healthy" training data (vibration)
    min_firmware_version: str = "1.0.0"
    note: str = ""

    @property
    def task(self) -> str:
        return "classification" if self.model_id.startswith("kws") else "anomaly"

    @property
    def stem(self) -> str:
        return f"{self.model_id}-v{self.version}"


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("kws", "1.0.0", (8,), 600, 4, seed=101, note="baseline: 8 hidden units, small data"),
    ModelSpec("kws", "2.0.0", (24,), 3000, 10, seed=102, note="better: 24 hidden units, 5x data"),
    ModelSpec(
        "kws",
        "3.0.0",
        (24,),
        3000,
        10,
        seed=103,
        label_noise=0.5,
        note="regressed: v2 architecture trained on half-mislabelled data",
    ),
    ModelSpec("vibration", "1.0.0", (12,), 800, 4, seed=201, note="baseline: 12-unit bottleneck"),
    ModelSpec(
        "vibration", "2.0.0", (24,), 2000, 20, seed=202, note="better: 24 units, longer training"
    ),
    ModelSpec(
        "vibration",
        "3.0.0",
        (8,),
        2000,
        10,
        seed=203,
        contamination=0.5,
        note="regressed: trained on windows half of which were faulty",
    ),
)


@dataclass(frozen=True)
class BuiltModel:
    spec: ModelSpec
    tflite: bytes
    sidecar: dict[str, object]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.tflite).hexdigest()


def specs_named(model_id: str | None = None) -> tuple[ModelSpec, ...]:
    return tuple(s for s in SPECS if model_id is None or s.model_id == model_id)


def _auc(score: Floats, truth: NDArray[np.int64]) -> float:
    order = np.argsort(score, kind="stable")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    positives = truth == 1
    n1, n0 = int(positives.sum()), int(len(truth) - positives.sum())
    return float((ranks[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _data(spec: ModelSpec) -> tuple[Floats, Floats, Floats, NDArray[np.int64]]:
    """(train x, train target, test x, test truth), flattened to [n, features]."""
    rng = np.random.default_rng(spec.seed)
    test_rng = np.random.default_rng(7)  # one fixed test set per model line
    if spec.task == "classification":
        x, y = kws_samples(rng, spec.train_samples, noise=3.0)
        if spec.label_noise:
            flip = rng.random(len(y)) < spec.label_noise
            y = y.copy()
            y[flip] = rng.integers(0, len(KWS_LABELS), int(flip.sum()))
        xt, yt = kws_samples(test_rng, _TEST_SAMPLES, noise=3.0)
        x2, xt2 = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
        return x2, np.eye(len(KWS_LABELS))[y], xt2, yt
    x, _ = vibration_samples(rng, spec.train_samples, anomaly_fraction=spec.contamination)
    xt, yt = vibration_samples(test_rng, _TEST_SAMPLES, anomaly_fraction=0.5)
    return x, x, xt, yt


def _run(tflite: bytes, arena: int, xs: Floats, in_q: QuantParams) -> NDArray[np.int8]:
    interpreter = load_interpreter(tflite, arena)
    shape = tuple(int(d) for d in interpreter.get_input_details(0)["shape"])
    outputs = []
    for x in xs:
        interpreter.set_input(in_q.quantize(x).reshape(shape), 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0)).reshape(-1))
    return np.stack(outputs).astype(np.int8)


def build(spec: ModelSpec) -> BuiltModel:
    """Train, quantize, export and evaluate one model version."""
    x, target, xt, yt = _data(spec)
    classify = spec.task == "classification"
    sizes = [x.shape[1], *spec.hidden, target.shape[1]]
    mlp: Mlp = train(
        sizes, x, target, loss="softmax" if classify else "mse", epochs=spec.epochs, seed=spec.seed
    )
    input_shape = KWS_SHAPE if classify else (VIBRATION_BANDS,)
    calibration = x[:500]
    meta: dict[str, object] = {"modelId": spec.model_id, "version": spec.version, "task": spec.task}
    if classify:
        meta["labels"] = list(KWS_LABELS)
    else:
        # The decision threshold depends on the model: fix it from healthy training windows.
        probe, in_q, out_q = export_int8(
            mlp, calibration, input_shape=input_shape, softmax=False, metadata=meta
        )
        healthy, _ = vibration_samples(
            np.random.default_rng(spec.seed + 1), 400, anomaly_fraction=0.0
        )
        scores = _scores(_run(probe, 64 * 1024, healthy, in_q), healthy, in_q, out_q)
        meta["threshold"] = round(float(np.percentile(scores, 95)), 6)
    tflite, in_q, out_q = export_int8(
        mlp, calibration, input_shape=input_shape, softmax=classify, metadata=meta
    )
    arena = find_min_arena(tflite)
    arena = -(-int(arena * 1.25) // 256) * 256  # headroom for kernel differences, 256-aligned
    outputs = _run(tflite, arena, xt, in_q)
    if classify:
        quality: dict[str, object] = {
            "metric": "accuracy",
            "accuracy": round(float((outputs.argmax(axis=1) == yt).mean()), 4),
        }
    else:
        scores = _scores(outputs, xt, in_q, out_q)
        threshold = float(meta["threshold"])  # type: ignore[arg-type]
        quality = {
            "metric": "auc",
            "auc": round(_auc(scores, yt), 4),
            "accuracy": round(float(((scores > threshold).astype(int) == yt).mean()), 4),
            "threshold": threshold,
        }
    quality["testSamples"] = _TEST_SAMPLES
    quality["note"] = spec.note
    vectors = [
        {
            "input": base64.b64encode(in_q.quantize(xt[i]).tobytes()).decode(),
            "expected": base64.b64encode(outputs[i].tobytes()).decode(),
            "tolerance": _TOLERANCE,
        }
        for i in range(_SELFTEST_VECTORS)
    ]
    sidecar: dict[str, object] = {
        "kind": "model",
        "modelId": spec.model_id,
        "version": spec.version,
        "runtime": "tflm",
        "inputShape": [1, *input_shape],
        "inputDtype": "int8",
        "outputShape": [1, target.shape[1]],
        "outputDtype": "int8",
        "arenaBytes": arena,
        "operators": ["FULLY_CONNECTED", "SOFTMAX"] if classify else ["FULLY_CONNECTED"],
        "selfTest": vectors,
        "minFirmwareVersion": spec.min_firmware_version,
        "quality": quality,
    }
    return BuiltModel(spec, tflite, sidecar)


def _scores(outputs: NDArray[np.int8], xs: Floats, in_q: QuantParams, out_q: QuantParams) -> Floats:
    """Reconstruction error of int8 outputs against the int8-quantized inputs."""
    recon = out_q.dequantize(outputs)
    seen = in_q.dequantize(in_q.quantize(xs))
    return np.asarray(((recon - seen) ** 2).mean(axis=1), dtype=np.float64)


def build_all(out_dir: Path, specs: tuple[ModelSpec, ...] = SPECS) -> list[BuiltModel]:
    """Build every spec and write `<stem>.tflite` and `<stem>.json` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for spec in specs:
        model = build(spec)
        (out_dir / f"{spec.stem}.tflite").write_bytes(model.tflite)
        (out_dir / f"{spec.stem}.json").write_text(
            json.dumps(model.sidecar, indent=2, sort_keys=True) + "\n"
        )
        built.append(model)
    return built
