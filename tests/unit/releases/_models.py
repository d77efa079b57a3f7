"""Prebuilt models, their sidecars, and the broken variants admission must refuse."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import flatbuffers
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

PREBUILT = Path(__file__).resolve().parents[3] / "firmware" / "models" / "prebuilt"
IMAGES = Path(__file__).resolve().parents[3] / "firmware" / "images"


def prebuilt(name: str) -> tuple[bytes, dict[str, Any]]:
    """`kws-v1.0.0` -> (model bytes, sidecar dict)."""
    model = PREBUILT / f"{name}.tflite"
    return model.read_bytes(), json.loads(model.with_suffix(".json").read_text())


def repack(model: bytes, change: Any) -> bytes:
    """Unpack the flatbuffer into objects, let `change` edit them, pack it again."""
    tree = schema.ModelT.InitFromPackedBuf(model, 0)
    change(tree)
    builder = flatbuffers.Builder(0)
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def with_operator(model: bytes, index: int, code: int) -> bytes:
    def change(tree: Any) -> None:
        tree.operatorCodes[index].builtinCode = code
        tree.operatorCodes[index].deprecatedBuiltinCode = min(code, 127)

    return repack(model, change)


def flip_expected(sidecar: dict[str, Any], by: int = 40) -> dict[str, Any]:
    """The first vector's expected output moved by `by` on its first element."""
    side = copy.deepcopy(sidecar)
    raw = bytearray(base64.b64decode(side["selfTest"][0]["expected"]))
    raw[0] = (raw[0] + by) % 256
    side["selfTest"][0]["expected"] = base64.b64encode(bytes(raw)).decode()
    return side


def firmware_image(version: str = "1.1.0") -> tuple[bytes, dict[str, Any]]:
    data = (IMAGES / f"m4-{version}.json").read_bytes()
    return data, {"kind": "firmware", "version": version, "runtimeVersion": "tflm-2026.10"}
