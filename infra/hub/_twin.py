"""Device twins: tags, desired and reported properties, their versions and ETags.

Pure: JSON values in, new twin states out; standard library only.

Invariants:
- A patch is a JSON merge: objects merge recursively, `null` deletes a key.
- A change is validated in full before it is applied: a refused patch changes nothing.
- `desired_version` and `reported_version` grow by one per accepted change of their section;
  `version` (and so the ETag) grows by one per accepted change of anything.
- Sizes, depth, key and string limits are those of IoT Hub (reference §1.7), counted on the
  compact JSON of a section without `$version` and `$metadata`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from typing import Any

from infra.hub._config import HubLimits
from infra.hub._errors import RequestRefused

__all__ = ["Twin", "TwinSection", "check_etag", "etag_of", "merge_patch", "validate_section"]

JsonObject = dict[str, Any]
_MAX_SAFE_INT = 4503599627370495
_FORBIDDEN_KEY_CHARS = set(". $") | {chr(c) for c in range(32)} | {"\x7f"}


class TwinSection:
    TAGS = "tags"
    DESIRED = "desired"
    REPORTED = "reported"


def etag_of(version: int) -> str:
    """The ETag form IoT Hub uses for twins: base64 of the version as eight big-endian bytes."""
    return base64.b64encode(version.to_bytes(8, "big")).decode()


def check_etag(if_match: str | None, current: str) -> None:
    if if_match is None:
        return
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if value not in ("*", current):
        raise RequestRefused(412, "PreconditionFailed", "ETag does not match")


def merge_patch(target: JsonObject, patch: JsonObject) -> JsonObject:
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_patch(merged[key], value)
        elif isinstance(value, dict):
            merged[key] = merge_patch({}, value)
        else:
            merged[key] = value
    return merged


def _bad(message: str) -> RequestRefused:
    return RequestRefused(400, "ArgumentInvalid", message)


def _check_value(value: Any, depth: int, limits: HubLimits, *, allow_null: bool) -> None:
    if depth > limits.twin_max_depth:
        raise _bad(f"twin document is nested deeper than {limits.twin_max_depth} levels")
    if value is None:
        if not allow_null:
            raise _bad("null is only allowed in a patch")
    elif isinstance(value, bool | float):
        pass
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise _bad(f"integer {value} is outside ±{_MAX_SAFE_INT}")
    elif isinstance(value, str):
        if len(value.encode("utf-8")) > limits.twin_string_max_bytes:
            raise _bad(f"string longer than {limits.twin_string_max_bytes} bytes")
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1, limits, allow_null=False)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_key(key, limits)
            _check_value(item, depth + 1, limits, allow_null=allow_null)
    else:
        raise _bad(f"unsupported JSON value {type(value).__name__}")


def _check_key(key: str, limits: HubLimits) -> None:
    if not key or len(key.encode("utf-8")) > limits.twin_key_max_bytes:
        raise _bad("twin keys must be 1 to 1024 bytes")
    if _FORBIDDEN_KEY_CHARS.intersection(key):
        raise _bad(f"twin key {key!r} contains '.', '$', a space or a control character")


def _compact_size(section: JsonObject) -> int:
    return len(json.dumps(section, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def validate_section(section: JsonObject, limit: int, limits: HubLimits, *, patch: bool) -> None:
    if not isinstance(section, dict):
        raise _bad("a twin section must be a JSON object")
    _check_value(section, 1, limits, allow_null=patch)
    if _compact_size(section) > limit:
        raise _bad(f"twin section is larger than {limit} bytes")


def _strip_meta(patch: JsonObject) -> JsonObject:
    return {k: v for k, v in patch.items() if k not in ("$version", "$metadata")}


@dataclass(frozen=True, slots=True)
class Twin:
    device_id: str
    tags: JsonObject
    desired: JsonObject
    reported: JsonObject
    desired_version: int = 1
    reported_version: int = 1
    version: int = 1

    @classmethod
    def new(cls, device_id: str) -> Twin:
        return cls(device_id, {}, {}, {})

    @property
    def etag(self) -> str:
        return etag_of(self.version)

    def patch_reported(self, patch: Any, limits: HubLimits) -> Twin:
        if not isinstance(patch, dict):
            raise _bad("a reported patch must be a JSON object")
        patch = _strip_meta(patch)
        validate_section(patch, limits.twin_reported_max_bytes, limits, patch=True)
        reported = merge_patch(self.reported, patch)
        validate_section(reported, limits.twin_reported_max_bytes, limits, patch=False)
        return replace(
            self,
            reported=reported,
            reported_version=self.reported_version + 1,
            version=self.version + 1,
        )

    def patch_service(
        self, tags: Any, desired: Any, limits: HubLimits, *, replace_all: bool = False
    ) -> Twin:
        """A service PATCH (merge) or PUT (`replace_all`) of tags and desired properties."""
        new_tags, new_desired = self.tags, self.desired
        if tags is not None or replace_all:
            tags = {} if tags is None else tags
            if not isinstance(tags, dict):
                raise _bad("tags must be a JSON object")
            validate_section(tags, limits.twin_tags_max_bytes, limits, patch=not replace_all)
            new_tags = dict(tags) if replace_all else merge_patch(self.tags, tags)
            validate_section(new_tags, limits.twin_tags_max_bytes, limits, patch=False)
        if desired is not None or replace_all:
            desired = _strip_meta({} if desired is None else desired)
            validate_section(desired, limits.twin_desired_max_bytes, limits, patch=not replace_all)
            new_desired = dict(desired) if replace_all else merge_patch(self.desired, desired)
            validate_section(new_desired, limits.twin_desired_max_bytes, limits, patch=False)
        desired_changed = new_desired != self.desired or (replace_all and desired is not None)
        if new_tags == self.tags and not desired_changed:
            return self
        return replace(
            self,
            tags=new_tags,
            desired=new_desired,
            desired_version=self.desired_version + (1 if desired_changed else 0),
            version=self.version + 1,
        )

    def desired_notification(
        self, previous: Twin, desired_patch: Any, *, full: bool
    ) -> JsonObject | None:
        """The payload of `$iothub/twin/PATCH/properties/desired/`, or None if nothing changed.

        The device receives what the service executed: the patch itself, or the whole desired
        section after a replace (reference §1.6, "Desired notification").
        """
        if self.desired_version == previous.desired_version:
            return None
        body = dict(self.desired) if full else _strip_meta(dict(desired_patch or {}))
        body["$version"] = self.desired_version
        return body

    def properties(self) -> JsonObject:
        """The twin body a device gets from `$iothub/twin/GET` (no tags, no wrapper)."""
        return {
            "desired": {**self.desired, "$version": self.desired_version},
            "reported": {**self.reported, "$version": self.reported_version},
        }

    def to_json(self) -> JsonObject:
        return {
            "device_id": self.device_id,
            "tags": self.tags,
            "desired": self.desired,
            "reported": self.reported,
            "desired_version": self.desired_version,
            "reported_version": self.reported_version,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> Twin:
        return cls(**data)
