"""The simulated core firmware image: a small JSON document the core process boots with.

```json
{"kind": "firmware", "version": "1.1.0", "runtimeVersion": "tflm-2026.10",
 "operators": ["FULLY_CONNECTED", "SOFTMAX", ...], "reservedBytes": 40960,
 "protocol": {"minVersion": 1, "maxVersion": 1}}
```

`reservedBytes` is the RAM the firmware itself takes (code not in XIP flash, data, stack); the
rest of the core's RAM (from the device profile) is what models and arenas may use. A firmware
target's signed custom fields carry the same `kind`, `version`, `runtimeVersion`, `operators`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from firmware._errors import ImageError

__all__ = ["FirmwareImage", "version_tuple"]


def version_tuple(text: str) -> tuple[int, int, int]:
    """`"1.2.3"` as a comparable tuple.

    Raises:
        ValueError: not three dot-separated non-negative integers.
    """
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"version {text!r} is not MAJOR.MINOR.PATCH")
    return int(parts[0]), int(parts[1]), int(parts[2])


@dataclass(frozen=True)
class FirmwareImage:
    version: str
    runtime_version: str
    operators: frozenset[str]
    reserved_bytes: int
    min_protocol: int = 1
    max_protocol: int = 1

    @classmethod
    def from_json(cls, text: str) -> FirmwareImage:
        """Parse and validate an image description.

        Raises:
            ImageError: the document is not a valid firmware image.
        """
        try:
            doc = json.loads(text)
            if doc.get("kind") != "firmware":
                raise ImageError('kind must be "firmware"')
            version = str(doc["version"])
            version_tuple(version)
            operators = doc["operators"]
            if not isinstance(operators, list) or not all(isinstance(o, str) for o in operators):
                raise ImageError("operators must be a list of operator names")
            reserved = int(doc.get("reservedBytes", 32768))
            protocol = doc.get("protocol", {})
            image = cls(
                version=version,
                runtime_version=str(doc["runtimeVersion"]),
                operators=frozenset(operators),
                reserved_bytes=reserved,
                min_protocol=int(protocol.get("minVersion", 1)),
                max_protocol=int(protocol.get("maxVersion", 1)),
            )
        except ImageError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ImageError(f"invalid firmware image: {exc}") from exc
        if reserved < 0 or image.min_protocol > image.max_protocol:
            raise ImageError("invalid firmware image: reservedBytes or protocol range")
        return image

    @classmethod
    def load(cls, path: Path) -> FirmwareImage:
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ImageError(f"cannot read firmware image {path}: {exc.strerror}") from exc

    def at_least(self, version: str) -> bool:
        return version_tuple(self.version) >= version_tuple(version)
