"""Admission checks, one row per broken artifact: each refusal names its check and numbers."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.releases import BUDGETS, AdmissionCheck, admit
from service.releases._tflite import ModelFormatError, inspect_model
from tests.unit.releases._models import (
    firmware_image,
    flip_expected,
    prebuilt,
    with_operator,
)

LSH_PROJECTION = 15  # a builtin TFLite operator that TFLM does not implement
ADD = 0  # implemented by TFLM, but not registered by the tinyfleet core firmware


def _admit(
    tmp: Path,
    data: bytes,
    sidecar: dict[str, Any],
    *,
    core: str = "m4-0",
    hardware: tuple[str, ...] = ("mt3620",),
) -> dict[str, AdmissionCheck]:
    kind = sidecar.get("kind", "model")
    custom = {**sidecar, "hardwareIds": list(hardware), "core": core, "releaseCounter": 1}
    custom.pop("quality", None)
    source = tmp / "artifact.bin"
    source.write_bytes(data)
    path = "models/kws/r1.m4-0.kws-v1.0.0.tflite" if kind == "model" else "firmware/m4/r1.bin"
    checks = admit(kind, source, len(data), path, custom, core, hardware)
    names = [c.name for c in checks]
    assert len(names) == len(set(names)), names
    return {c.name: c for c in checks}


@pytest.mark.parametrize("name", ["kws-v1.0.0", "kws-v3.0.0", "vibration-v2.0.0"])
def test_prebuilt_models_pass_every_check(tmp_path: Path, name: str) -> None:
    data, sidecar = prebuilt(name)
    checks = _admit(tmp_path, data, sidecar)
    assert set(checks) == {
        "hardware",
        "metadata",
        "format",
        "tensors",
        "operators",
        "budget",
        "arena",
        "self-test",
    }
    assert all(c.ok for c in checks.values()), [c for c in checks.values() if not c.ok]
    assert "vectors reproduced" in checks["self-test"].detail


def _drop_vectors(side: dict[str, Any]) -> dict[str, Any]:
    side = copy.deepcopy(side)
    del side["selfTest"]
    return side


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def change(side: dict[str, Any]) -> dict[str, Any]:
        return {**copy.deepcopy(side), key: value}

    return change


@dataclass(frozen=True)
class Broken:
    model: Callable[[bytes], bytes]
    sidecar: Callable[[dict[str, Any]], dict[str, Any]]
    check: str
    detail: str  # a fragment the refusal must contain


def same(x: Any) -> Any:
    return x


BROKEN = {
    "truncated": Broken(lambda m: m[: len(m) // 2], same, "format", "does not parse"),
    "wrong-magic": Broken(lambda m: m[:4] + b"XXXX" + m[8:], same, "format", "TFL3"),
    "empty": Broken(lambda m: b"", same, "format", "too short"),
    "garbage": Broken(lambda m: bytes(range(256)) * 4, same, "format", "identifier"),
    "op-unknown-to-tflm": Broken(
        lambda m: with_operator(m, 1, LSH_PROJECTION), same, "operators", "LSH_PROJECTION"
    ),
    "op-not-in-firmware": Broken(lambda m: with_operator(m, 1, ADD), same, "operators", "ADD"),
    "undeclared-operator": Broken(
        same, _set("operators", ["FULLY_CONNECTED"]), "operators", "declares"
    ),
    "too-big-arena": Broken(same, _set("arenaBytes", 250_000), "budget", "arena 250000 B"),
    "arena-too-small": Broken(same, _set("arenaBytes", 512), "arena", "arenaBytes 512"),
    "no-vectors": Broken(same, _drop_vectors, "self-test", "no selfTest"),
    "empty-vectors": Broken(same, _set("selfTest", []), "self-test", "no selfTest"),
    "vector-wrong-size": Broken(
        same,
        _set("selfTest", [{"input": "AAAA", "expected": "AAAAAA==", "tolerance": 1}]),
        "self-test",
        "needs 490",
    ),
    "vector-not-base64": Broken(
        same,
        _set("selfTest", [{"input": "!!", "expected": "AAAAAA==", "tolerance": 1}]),
        "self-test",
        "not base64",
    ),
    "vector-not-reproduced": Broken(same, flip_expected, "self-test", "tolerance 2"),
    "shape-mismatch": Broken(same, _set("inputShape", [1, 490]), "tensors", "int8[1, 49, 10]"),
    "bad-model-id": Broken(same, _set("modelId", "KWS!"), "metadata", "modelId"),
}


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_broken_models_are_refused_by_the_named_check(tmp_path: Path, case: Broken) -> None:
    data, sidecar = prebuilt("kws-v1.0.0")
    checks = _admit(tmp_path, case.model(data), case.sidecar(sidecar))
    refused = checks[case.check]
    assert not refused.ok
    assert case.detail in refused.detail, refused.detail


def test_a_model_over_the_core_budget_names_the_numbers(tmp_path: Path) -> None:
    data, sidecar = prebuilt("kws-v1.0.0")
    padded = data + bytes(220_000)  # trailing bytes still parse; the size does not fit
    checks = _admit(tmp_path, padded, sidecar)
    budget = BUDGETS["mt3620"]
    assert not checks["budget"].ok
    assert f"model {len(padded)} B" in checks["budget"].detail
    assert str(budget.model_ram_bytes) in checks["budget"].detail
    assert checks["arena"].detail.startswith("not run")


@pytest.mark.parametrize(
    ("hardware", "core", "fragment"),
    [(("nrf52",), "m4-0", "unknown hardware"), (("linux-a7-m4",), "m4-1", "no core 'm4-1'")],
    ids=["unknown-hardware", "core-missing-on-hardware"],
)
def test_hardware_and_core_must_exist(
    tmp_path: Path, hardware: tuple[str, ...], core: str, fragment: str
) -> None:
    data, sidecar = prebuilt("vibration-v1.0.0")
    checks = _admit(tmp_path, data, sidecar, core=core, hardware=hardware)
    assert not checks["hardware"].ok and fragment in checks["hardware"].detail


def test_firmware_is_admitted_where_the_device_installs_firmware(tmp_path: Path) -> None:
    data, sidecar = firmware_image()
    checks = _admit(tmp_path, data, sidecar, hardware=("linux-a7-m4",))
    assert set(checks) == {"hardware", "metadata", "format", "budget"}
    assert all(c.ok for c in checks.values()), checks


FIRMWARE = {
    "on-mt3620": (same, same, ("mt3620",), "hardware", "does not install core firmware"),
    "not-an-image": (lambda d: b"\x7fELF....", same, ("linux-a7-m4",), "format", "not a core"),
    "version-mismatch": (
        same,
        _set("version", "9.9.9"),
        ("linux-a7-m4",),
        "format",
        "image version '1.1.0', sidecar '9.9.9'",
    ),
    "too-big": (lambda d: d + b" " * (1024 * 1024), same, ("linux-a7-m4",), "budget", "over"),
}


@pytest.mark.parametrize("row", FIRMWARE.values(), ids=FIRMWARE.keys())
def test_broken_firmware_is_refused(tmp_path: Path, row: tuple[Any, ...]) -> None:
    change_data, change_side, hardware, check, fragment = row
    data, sidecar = firmware_image()
    checks = _admit(tmp_path, change_data(data), change_side(sidecar), hardware=hardware)
    assert not checks[check].ok and fragment in checks[check].detail, checks[check]


def test_inspect_reads_the_operators_and_tensors() -> None:
    facts = inspect_model(prebuilt("kws-v1.0.0")[0])
    assert facts.operators == ("FULLY_CONNECTED", "SOFTMAX")
    assert facts.input.describe() == "int8[1, 49, 10]"
    with pytest.raises(ModelFormatError):
        inspect_model(b"\x00" * 4 + b"TFL3" + b"\xff" * 8)
