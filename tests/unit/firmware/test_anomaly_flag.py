"""An anomaly detector's core decides per window whether it is anomalous, against the threshold
the builder fixed from healthy training windows and stored in the model's own metadata; the flag
travels in INFERENCE (protocol version 2) to the host. Classifiers report no flag (None, not
False), and neither does a session that agreed on protocol version 1."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_agent.intercore import InferenceResult
from firmware._errors import ModelRejectedError
from firmware._image import FirmwareImage
from firmware._runtime import ModelRuntime
from firmware._slots import SlotRecord
from firmware.icc import ReasonCode
from firmware.models._datasets import VIBRATION_BANDS, vibration_samples
from firmware.models._export import METADATA_KEY, export_int8
from firmware.models._mlp import train
from firmware.models._tflm import model_metadata
from tests.unit.firmware.conftest import IMAGES, chunks, prebuilt, target_for

IMAGE = FirmwareImage.load(IMAGES / "m4-1.0.0.json")


def _record(meta: dict[str, Any]) -> SlotRecord:
    return SlotRecord(
        model_id=str(meta["modelId"]),
        version=str(meta["version"]),
        arena_bytes=int(meta["arenaBytes"]),
        input_dtype=str(meta["inputDtype"]),
        input_shape=tuple(meta["inputShape"]),
        output_dtype=str(meta["outputDtype"]),
        output_shape=tuple(meta["outputShape"]),
    )


def _runtime(stem: str) -> tuple[ModelRuntime, bytes]:
    blob, meta = prebuilt(stem)
    return ModelRuntime(blob, _record(meta), IMAGE), blob


@pytest.mark.parametrize("stem", ["vibration-v1.0.0", "vibration-v2.0.0", "vibration-v3.0.0"])
def test_the_vibration_models_carry_their_threshold_and_flag_windows_above_it(stem: str) -> None:
    runtime, blob = _runtime(stem)
    stored = json.loads(model_metadata(blob, METADATA_KEY) or b"{}")
    assert stored["task"] == "anomaly" and stored["threshold"] > 0
    windows, truth = vibration_samples(np.random.default_rng(5), 200, anomaly_fraction=0.5)
    results = [runtime.infer(w) for w in windows]
    assert all(r.anomaly is (r.score > stored["threshold"]) for r in results)
    flagged = np.array([r.anomaly for r in results])
    assert 0 < flagged.sum() < len(flagged)
    # The flag means something: far more anomalous windows are flagged than healthy ones.
    assert flagged[truth == 1].mean() > flagged[truth == 0].mean() + 0.3


def test_a_classifier_reports_no_anomaly_flag() -> None:
    runtime, _ = _runtime("kws-v2.0.0")
    result = runtime.infer(np.zeros((49, 10)))
    assert result.anomaly is None


def test_an_anomaly_model_without_a_threshold_is_refused_at_load() -> None:
    rng = np.random.default_rng(1)
    x, _ = vibration_samples(rng, 64, anomaly_fraction=0.0)
    mlp = train([VIBRATION_BANDS, 4, VIBRATION_BANDS], x, x, loss="mse", epochs=1, seed=1)
    meta: dict[str, object] = {"modelId": "vibration", "version": "9.0.0", "task": "anomaly"}
    blob, _, _ = export_int8(mlp, x, input_shape=(VIBRATION_BANDS,), softmax=False, metadata=meta)
    record = replace(_record(prebuilt("vibration-v1.0.0")[1]), arena_bytes=64 * 1024)
    with pytest.raises(ModelRejectedError, match="threshold") as caught:
        ModelRuntime(blob, record, IMAGE)
    assert caught.value.reason is ReasonCode.MODEL_INVALID


def _results(client: Any, stem: str, count: int = 20) -> list[InferenceResult]:
    blob, meta = prebuilt(stem)
    slot = client.stage(target_for(blob, meta), chunks(blob, 700))
    client.activate(slot, confirm_timeout_s=30)
    client.confirm(slot)
    results: list[InferenceResult] = []
    for _ in range(200):
        results += [e for e in client.poll(0.1) if isinstance(e, InferenceResult)]
        if len(results) >= count:
            break
    assert len(results) >= count
    return results


def test_the_core_sends_the_flag_to_the_host(thread_core: Any) -> None:
    client, _ = thread_core(inference_period_s=0.01)
    assert client.connect().protocol_version == 2
    results = _results(client, "vibration-v2.0.0")
    assert all(isinstance(r.anomaly, bool) for r in results)
    kws_client, _ = thread_core(inference_period_s=0.01, core_id="m4-1")
    kws_client.connect()
    assert all(r.anomaly is None for r in _results(kws_client, "kws-v1.0.0"))


def test_a_version_1_session_carries_no_flag(thread_core: Any, tmp_path: Path) -> None:
    old = json.loads((IMAGES / "m4-1.0.0.json").read_text())
    old["protocol"] = {"minVersion": 1, "maxVersion": 1}
    image = tmp_path / "m4-old.json"
    image.write_text(json.dumps(old))
    client, _ = thread_core(inference_period_s=0.01, image=str(image))
    assert client.connect().protocol_version == 1
    assert all(r.anomaly is None for r in _results(client, "vibration-v2.0.0"))
