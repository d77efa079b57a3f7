"""The custom fields tinyfleet puts in TUF target entries, validated in one place.

Image-repository targets carry `ArtifactFields` (firmware or model); a release is itself a target,
`releases/<id>.json`, whose custom fields are a `ReleaseManifest` naming exactly which artifact
goes to which core. Both the publisher (refusing bad input) and the device (refusing bad signed
metadata) parse through here, so the two can never disagree on what a field means.

Invariants:
- A target's path prefix decides its kind (`firmware/`, `models/`, `releases/`); the fields must
  agree, so a model signer's delegation can never yield something that claims to be firmware.
- A release names at most one model and at most one firmware per core, each by path, length and
  sha256.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any

from signing._errors import ArtifactError

__all__ = [
    "CORES",
    "DTYPE_SIZES",
    "ArtifactFields",
    "ReleaseManifest",
    "ReleaseMember",
    "kind_for_path",
    "parse_version",
]

CORES = ("m4-0", "m4-1")
TARGET_CORES = (*CORES, "any")
KINDS = {"firmware": "firmware/", "model": "models/", "release": "releases/"}
DTYPE_SIZES = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "float32": 4}
MAX_ARENA_BYTES = 16 * 1024 * 1024
MAX_SELFTEST_VECTORS = 8
MAX_SELFTEST_TENSOR_BYTES = 4096
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_VERSION = re.compile(r"^(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})$")


def parse_version(text: object) -> tuple[int, int, int]:
    if not isinstance(text, str) or not (m := _VERSION.match(text)):
        raise ArtifactError(f"version {text!r} is not MAJOR.MINOR.PATCH")
    return int(m[1]), int(m[2]), int(m[3])


def kind_for_path(path: str) -> str:
    for kind, prefix in KINDS.items():
        if path.startswith(prefix):
            return kind
    raise ArtifactError(f"target path {path!r} is under none of {sorted(KINDS.values())}")


def _need(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ArtifactError(f"field {key!r} is missing or not {getattr(kind, '__name__', kind)}")
    return value


def _counter(data: dict[str, Any]) -> int:
    value = _need(data, "releaseCounter", int)
    if not 0 <= value < 2**31:
        raise ArtifactError(f"releaseCounter {value} out of range")
    return int(value)


def _shape(data: dict[str, Any], key: str) -> tuple[int, ...]:
    shape = _need(data, key, list)
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 < d < 1 << 16 for d in shape
    ):
        raise ArtifactError(f"{key} must be a list of positive dimensions")
    return tuple(shape)


def _tensor(vector: dict[str, Any], key: str, size: int) -> None:
    try:
        raw = base64.b64decode(_need(vector, key, str), validate=True)
    except binascii.Error as exc:
        raise ArtifactError(f"selfTest {key} is not base64") from exc
    if len(raw) != size:
        raise ArtifactError(f"selfTest {key} has {len(raw)} bytes, the shape needs {size}")


def _check_model(custom: dict[str, Any]) -> None:
    if not _ID.match(_need(custom, "modelId", str)):
        raise ArtifactError(f"modelId {custom['modelId']!r} is not a valid id")
    if _need(custom, "runtime", str) != "tflm":
        raise ArtifactError(f"runtime {custom['runtime']!r} is not supported (only tflm)")
    sizes = {}
    for side in ("input", "output"):
        dtype = _need(custom, f"{side}Dtype", str)
        if dtype not in DTYPE_SIZES:
            raise ArtifactError(f"{side}Dtype {dtype!r} is not one of {sorted(DTYPE_SIZES)}")
        sizes[side] = math.prod(_shape(custom, f"{side}Shape")) * DTYPE_SIZES[dtype]
    arena = _need(custom, "arenaBytes", int)
    if not 0 < arena <= MAX_ARENA_BYTES:
        raise ArtifactError(f"arenaBytes {arena} out of range")
    operators = _need(custom, "operators", list)
    if not operators or not all(isinstance(op, str) and op.isupper() for op in operators):
        raise ArtifactError("operators must be a non-empty list of TFLite builtin operator names")
    vectors = _need(custom, "selfTest", list)
    if not 0 < len(vectors) <= MAX_SELFTEST_VECTORS:
        raise ArtifactError(f"a model needs 1 to {MAX_SELFTEST_VECTORS} selfTest vectors")
    if max(sizes.values()) > MAX_SELFTEST_TENSOR_BYTES:
        raise ArtifactError("self-test tensors over 4 KiB do not fit the metadata budget")
    for vector in vectors:
        if not isinstance(vector, dict):
            raise ArtifactError("each selfTest vector is an object")
        _tensor(vector, "input", sizes["input"])
        _tensor(vector, "expected", sizes["output"])
        tolerance = _need(vector, "tolerance", int)
        if not 0 <= tolerance <= 255:
            raise ArtifactError(f"selfTest tolerance {tolerance} out of range")
    if "minFirmwareVersion" in custom:
        parse_version(custom["minFirmwareVersion"])


@dataclass(frozen=True)
class ArtifactFields:
    """Validated custom fields of a firmware or model target."""

    kind: str
    hardware_ids: tuple[str, ...]
    core: str
    release_counter: int
    version: tuple[int, int, int]
    min_firmware_version: tuple[int, int, int] | None
    raw: dict[str, Any]

    @classmethod
    def parse(cls, path: str, custom: object) -> ArtifactFields:
        if not isinstance(custom, dict):
            raise ArtifactError(f"{path}: custom fields missing")
        kind = _need(custom, "kind", str)
        if kind not in ("firmware", "model") or kind_for_path(path) != kind:
            raise ArtifactError(f"{path}: kind {kind!r} does not match its path")
        hardware = _need(custom, "hardwareIds", list)
        if not hardware or not all(isinstance(h, str) and _ID.match(h) for h in hardware):
            raise ArtifactError(f"{path}: hardwareIds must be a non-empty list of ids")
        core = _need(custom, "core", str)
        if core not in TARGET_CORES:
            raise ArtifactError(f"{path}: core {core!r} is not one of {TARGET_CORES}")
        if kind == "model":
            _check_model(custom)
        minimum = custom.get("minFirmwareVersion")
        return cls(
            kind=kind,
            hardware_ids=tuple(hardware),
            core=core,
            release_counter=_counter(custom),
            version=parse_version(custom.get("version")),
            min_firmware_version=parse_version(minimum) if minimum is not None else None,
            raw=dict(custom),
        )


@dataclass(frozen=True)
class ReleaseMember:
    core: str
    kind: str
    path: str
    length: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "core": self.core,
            "kind": self.kind,
            "path": self.path,
            "length": self.length,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class ReleaseManifest:
    """A set of targets a device installs together or not at all."""

    release_id: str
    release_counter: int
    hardware_ids: tuple[str, ...]
    members: tuple[ReleaseMember, ...]

    def to_custom(self) -> dict[str, Any]:
        return {
            "kind": "release",
            "releaseId": self.release_id,
            "releaseCounter": self.release_counter,
            "hardwareIds": list(self.hardware_ids),
            "members": [m.to_dict() for m in self.members],
        }

    @classmethod
    def parse(cls, custom: object) -> ReleaseManifest:
        if not isinstance(custom, dict) or custom.get("kind") != "release":
            raise ArtifactError("not a release manifest")
        release_id = _need(custom, "releaseId", str)
        if not _ID.match(release_id):
            raise ArtifactError(f"release id {release_id!r} is not a valid id")
        hardware = _need(custom, "hardwareIds", list)
        members = []
        seen: set[tuple[str, str]] = set()
        for item in _need(custom, "members", list):
            if not isinstance(item, dict):
                raise ArtifactError("release members are objects")
            member = ReleaseMember(
                core=_need(item, "core", str),
                kind=_need(item, "kind", str),
                path=_need(item, "path", str),
                length=_need(item, "length", int),
                sha256=_need(item, "sha256", str),
            )
            if member.core not in CORES or kind_for_path(member.path) != member.kind:
                raise ArtifactError(f"release member {member.path} is malformed")
            if (member.core, member.kind) in seen:
                raise ArtifactError(f"two {member.kind} members for core {member.core}")
            seen.add((member.core, member.kind))
            members.append(member)
        if not members:
            raise ArtifactError("a release has at least one member")
        return cls(release_id, _counter(custom), tuple(hardware), tuple(members))
