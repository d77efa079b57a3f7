"""One device id rule for the hub gateway and the director, a superset of the mock hub's, and
the reversible segment that ids become in paths and URLs."""

from __future__ import annotations

import string

import pytest

from infra.hub._errors import RequestRefused
from infra.hub._store import check_device_id as mock_hub_check
from service.hubgateway import HubGatewayError
from service.hubgateway._model import check_device_id as gateway_check
from signing import PublishError
from signing.device_ids import (
    MAX_SEGMENT,
    InvalidDeviceId,
    device_from_segment,
    device_segment,
    is_device_id,
)
from signing.director import check_device_id as director_check

HUB_IDS = [
    ".",
    "..",
    "sensor:01",
    "dev@site",
    "_gw",
    "pump(3)",
    "a%2Fb",
    "x?y*",
    "dev-001",
    "a.b",
    "O'Brien",
    "$edge",
    "=",
    ":" * 128,
    "A" * 128,
    "~" + "a",
]
HUB_NAMES = [
    "dot",
    "dotdot",
    "colon",
    "at",
    "underscore",
    "parens",
    "percent",
    "query-star",
    "plain",
    "inner-dot",
    "quote",
    "dollar",
    "equals",
    "long-special",
    "long-plain",
    "tilde",
]


def _accepts(check: object, device_id: str) -> bool:
    try:
        check(device_id)  # type: ignore[operator]
    except (InvalidDeviceId, PublishError, HubGatewayError, RequestRefused):
        return False
    return True


def test_the_director_and_the_gateway_accept_the_same_ids_and_every_mock_hub_id() -> None:
    for code in range(0x110):
        for device_id in (chr(code), f"a{chr(code)}b"):
            gateway = _accepts(gateway_check, device_id)
            assert _accepts(director_check, device_id) == gateway == is_device_id(device_id)
            if _accepts(mock_hub_check, device_id):
                assert gateway, device_id
    assert _accepts(director_check, "a" * 128) and not _accepts(director_check, "a" * 129)
    assert not _accepts(director_check, "")


@pytest.mark.parametrize("device_id", [i for i in HUB_IDS if i != "~a"], ids=HUB_NAMES[:-1])
def test_a_segment_is_safe_and_reversible(device_id: str) -> None:
    segment = device_segment(device_id)
    assert set(segment) <= set(string.ascii_letters + string.digits + "._~-")
    assert not segment.startswith(".") and segment not in (".", "..")
    assert 0 < len(segment) <= MAX_SEGMENT
    assert device_from_segment(segment) == device_id


def test_ids_of_the_old_rule_keep_their_folder() -> None:
    for device_id in ("dev-001", "sim.1", "A_b-c.d"):
        assert device_segment(device_id) == device_id


@pytest.mark.parametrize(
    "segment",
    ["..", ".x", "a~2", "a~zz", "~~!!", "~~", "a~2fb", "a%b", "a/b", ""],
    ids=[
        "dotdot",
        "leading-dot",
        "short-escape",
        "bad-hex",
        "bad-base32",
        "empty-base32",
        "lowercase-hex",
        "raw-percent",
        "slash",
        "empty",
    ],
)
def test_a_segment_the_encoder_never_made_is_refused(segment: str) -> None:
    with pytest.raises(InvalidDeviceId):
        device_from_segment(segment)


def test_a_non_id_has_no_segment() -> None:
    for bad in ("", "a/b", "a b", "é", "x" * 129, "a~b"):
        with pytest.raises(InvalidDeviceId):
            device_segment(bad)
