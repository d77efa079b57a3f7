"""Custom target fields are validated in one place; the streaming verifier decides once, exactly."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signing import ArtifactError, TargetHashError, TargetTooLongError, TargetTruncatedError
from signing.fields import ArtifactFields, ReleaseManifest, parse_version
from signing.stream import TargetStreamVerifier
from tests.signing_world import firmware_custom, model_custom

MODEL = "models/kws/kws-v1.0.0.tflite"


def _with(**changes: Any) -> dict[str, Any]:
    custom = model_custom()
    for key, value in changes.items():
        if value is None:
            custom.pop(key, None)
        else:
            custom[key] = value
    return custom


def test_valid_model_and_firmware_fields_parse() -> None:
    fields = ArtifactFields.parse(MODEL, model_custom(min_firmware="1.2.0"))
    assert (fields.kind, fields.core, fields.version, fields.min_firmware_version) == (
        "model",
        "any",
        (1, 0, 0),
        (1, 2, 0),
    )
    assert ArtifactFields.parse("firmware/m4/fw.bin", firmware_custom("2.1.0")).version == (2, 1, 0)


@pytest.mark.parametrize(
    ("path", "custom", "message"),
    [
        (MODEL, "not a dict", "custom fields missing"),
        (MODEL, firmware_custom(), "does not match its path"),
        ("firmware/m4/fw.bin", model_custom(), "does not match its path"),
        ("elsewhere/x.bin", model_custom(), "under none of"),
        (MODEL, _with(hardwareIds=[]), "hardwareIds"),
        (MODEL, _with(core="m4-7"), "core"),
        (MODEL, _with(releaseCounter=-1), "out of range"),
        (MODEL, _with(releaseCounter=True), "releaseCounter"),
        (MODEL, _with(version="1.0"), "MAJOR.MINOR.PATCH"),
        (MODEL, _with(runtime="onnx"), "only tflm"),
        (MODEL, _with(inputDtype="float64"), "inputDtype"),
        (MODEL, _with(inputShape=[1, 0]), "positive dimensions"),
        (MODEL, _with(arenaBytes=0), "arenaBytes"),
        (MODEL, _with(operators=[]), "operators"),
        (MODEL, _with(selfTest=[]), "selfTest"),
        (MODEL, _with(selfTest=[{"input": "!!", "expected": "AAA=", "tolerance": 1}]), "base64"),
        (MODEL, _with(selfTest=[{"input": "AAAA", "expected": "AAA=", "tolerance": 1}]), "bytes"),
        (MODEL, _with(minFirmwareVersion="latest"), "MAJOR.MINOR.PATCH"),
    ],
    ids=[
        "not-object",
        "firmware-fields-on-model-path",
        "model-fields-on-firmware-path",
        "unknown-prefix",
        "no-hardware",
        "bad-core",
        "negative-counter",
        "bool-counter",
        "short-version",
        "other-runtime",
        "bad-dtype",
        "zero-dimension",
        "zero-arena",
        "no-operators",
        "no-selftest",
        "selftest-not-base64",
        "selftest-wrong-size",
        "bad-min-firmware",
    ],
)
def test_invalid_fields_are_refused_with_the_reason(path: str, custom: Any, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        ArtifactFields.parse(path, custom)


def test_release_manifest_refuses_two_models_for_one_core() -> None:
    member = {"core": "m4-0", "kind": "model", "path": MODEL, "length": 1, "sha256": "0" * 64}
    custom = {
        "kind": "release",
        "releaseId": "r1",
        "releaseCounter": 1,
        "hardwareIds": ["mt3620"],
        "members": [member, member],
    }
    with pytest.raises(ArtifactError, match="two model members"):
        ReleaseManifest.parse(custom)


def test_versions_order_numerically() -> None:
    assert parse_version("1.10.0") > parse_version("1.9.9")


DATA = bytes(range(256)) * 40
SHA = hashlib.sha256(DATA).hexdigest()


@given(st.lists(st.integers(min_value=0, max_value=len(DATA)), max_size=20))
def test_any_chunking_of_the_right_bytes_passes(cuts: list[int]) -> None:
    verifier = TargetStreamVerifier("t", len(DATA), SHA)
    edges = [0, *sorted(cuts), len(DATA)]
    for start, end in itertools.pairwise(edges):
        verifier.update(DATA[start:end])
    assert verifier.finish().sha256 == SHA


@given(st.integers(min_value=0, max_value=len(DATA) - 1), st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_fails(position: int, flip: int) -> None:
    corrupt = bytearray(DATA)
    corrupt[position] ^= flip
    verifier = TargetStreamVerifier("t", len(DATA), SHA)
    verifier.update(bytes(corrupt))
    with pytest.raises(TargetHashError):
        verifier.finish()


def test_extra_byte_is_refused_before_it_is_hashed_and_the_verdict_sticks() -> None:
    verifier = TargetStreamVerifier("t", len(DATA), SHA)
    verifier.update(DATA)
    with pytest.raises(TargetTooLongError):
        verifier.update(b"x")
    assert verifier.received == len(DATA)
    with pytest.raises(TargetTooLongError):
        verifier.finish()


def test_short_stream_is_truncated() -> None:
    verifier = TargetStreamVerifier("t", len(DATA), SHA)
    verifier.update(DATA[:-1])
    with pytest.raises(TargetTruncatedError):
        verifier.finish()
