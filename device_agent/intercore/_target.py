"""A model target as the core needs it: the signed release's custom fields plus the target's
length and sha256 (from the verified TUF target info), checked and decoded once."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from device_agent.intercore._errors import TargetMetadataError
from firmware.icc import TensorSpec

__all__ = ["ModelTarget", "SelfTestVector"]


@dataclass(frozen=True)
class SelfTestVector:
    input: bytes
    expected: bytes
    tolerance: int


@dataclass(frozen=True)
class ModelTarget:
    model_id: str
    version: str
    length: int
    sha256: bytes
    arena_bytes: int
    input: TensorSpec
    output: TensorSpec
    operators: tuple[str, ...]
    min_firmware_version: str
    self_test: tuple[SelfTestVector, ...]

    @classmethod
    def from_custom(cls, custom: Mapping[str, Any], *, length: int, sha256: bytes) -> ModelTarget:
        """Build from a model target's custom fields (`kind: model`, see docs/models.md).

        Raises:
            TargetMetadataError: a field is missing or malformed.
        """
        try:
            if custom.get("kind") != "model":
                raise TargetMetadataError(f"target kind is {custom.get('kind')!r}, not 'model'")
            if custom.get("runtime") != "tflm":
                raise TargetMetadataError(f"runtime {custom.get('runtime')!r} is not tflm")
            vectors = tuple(
                SelfTestVector(
                    base64.b64decode(v["input"], validate=True),
                    base64.b64decode(v["expected"], validate=True),
                    int(v["tolerance"]),
                )
                for v in custom["selfTest"]
            )
            target = cls(
                model_id=str(custom["modelId"]),
                version=str(custom["version"]),
                length=int(length),
                sha256=bytes(sha256),
                arena_bytes=int(custom["arenaBytes"]),
                input=TensorSpec(
                    str(custom["inputDtype"]), tuple(int(d) for d in custom["inputShape"])
                ),
                output=TensorSpec(
                    str(custom["outputDtype"]), tuple(int(d) for d in custom["outputShape"])
                ),
                operators=tuple(str(o) for o in custom["operators"]),
                min_firmware_version=str(custom.get("minFirmwareVersion", "0.0.0")),
                self_test=vectors,
            )
        except TargetMetadataError:
            raise
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise TargetMetadataError(f"bad model target metadata: {exc!r}") from exc
        if len(target.sha256) != 32 or target.length <= 0 or target.arena_bytes <= 0:
            raise TargetMetadataError("sha256 must be 32 bytes; length and arenaBytes positive")
        for i, v in enumerate(vectors):
            if len(v.input) != target.input.nbytes or len(v.expected) != target.output.nbytes:
                raise TargetMetadataError(
                    f"selfTest[{i}] does not match the declared tensor shapes"
                )
            if not 0 <= v.tolerance <= 255:
                raise TargetMetadataError(f"selfTest[{i}] tolerance must be 0..255")
        return target
