"""The topic grammar and property bags (reference §1.6)."""

from __future__ import annotations

import pytest

from infra.hub._errors import ProtocolViolation
from infra.hub._router import (
    D2CRequest,
    MethodResponse,
    Subscription,
    TwinGet,
    TwinPatchReported,
    classify_publish,
    classify_subscription,
    encode_property_bag,
    parse_property_bag,
)


def test_the_documented_publish_topics() -> None:
    assert classify_publish("d", "$iothub/twin/GET/?$rid=abc") == TwinGet("abc")
    assert classify_publish(
        "d", "$iothub/twin/PATCH/properties/reported/?$rid=5"
    ) == TwinPatchReported("5")
    assert classify_publish("d", "$iothub/methods/res/200/?$rid=7") == MethodResponse("7", 200)
    assert classify_publish("d", "devices/d/messages/events/") == D2CRequest({}, {})
    assert classify_publish("d", "devices/d/messages/events") == D2CRequest({}, {})


def test_system_properties_accept_both_spellings_and_plus_stays_plus() -> None:
    system, app = parse_property_bag("%24.mid=1&$.ct=application%2Fjson&k=a+b&flag&empty=")
    assert system == {"message-id": "1", "content-type": "application/json"}
    assert app == {"k": "a+b", "flag": None, "empty": ""}


def test_bags_round_trip_like_the_hub_encodes_c2d() -> None:
    props: dict[str, str | None] = {"$.mid": "x y", "prop1": None, "prop2": "", "prop3": "a string"}
    assert encode_property_bag(props) == "%24.mid=x%20y&prop1&prop2=&prop3=a%20string"
    system, app = parse_property_bag(encode_property_bag(props))
    assert system == {"message-id": "x y"} and app == {
        "prop1": None,
        "prop2": "",
        "prop3": "a string",
    }


FOREIGN_PUBLISH = [
    "devices/other/messages/events/",
    "devices/d/messages/devicebound/x",
    "devices/d/messages/eventsX",
    "$iothub/twin/PATCH/properties/desired/?$version=2",
    "$iothub/methods/POST/reboot/?$rid=1",
    "$iothub/twin/GET",
    "$iothub/twin/GET/?$version=1",
    "$iothub/methods/res/abc/?$rid=1",
    "some/other/topic",
]


@pytest.mark.parametrize("topic", FOREIGN_PUBLISH, ids=FOREIGN_PUBLISH)
def test_other_topics_are_violations(topic: str) -> None:
    with pytest.raises(ProtocolViolation):
        classify_publish("d", topic)


def test_subscriptions() -> None:
    assert classify_subscription("d", "devices/d/messages/devicebound/#") is Subscription.C2D
    assert classify_subscription("d", "$iothub/methods/POST/#") is Subscription.METHODS
    for bad in (
        "#",
        "$iothub/#",
        "devices/+/messages/devicebound/#",
        "devices/e/messages/devicebound/#",
    ):
        with pytest.raises(ProtocolViolation):
            classify_subscription("d", bad)


def test_invalid_utf8_in_a_bag_is_a_violation() -> None:
    with pytest.raises(ProtocolViolation):
        classify_publish("d", "devices/d/messages/events/k=%C3%28")
