"""Twin documents and the query language."""

from __future__ import annotations

from typing import Any

import pytest

from infra.hub import HubLimits, RequestRefused
from infra.hub._query import compile_query
from infra.hub._twin import Twin, etag_of, merge_patch

LIMITS = HubLimits()


def test_merge_patch_merges_objects_and_null_deletes() -> None:
    assert merge_patch(
        {"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": None, "e": 3}, "d": None, "f": [1]}
    ) == {
        "a": {"c": 2, "e": 3},
        "f": [1],
    }


def test_versions_and_etags_move_only_on_change() -> None:
    twin = Twin.new("d")
    assert twin.etag == etag_of(1) == "AAAAAAAAAAE="
    same = twin.patch_service({}, {}, LIMITS)
    assert same is twin
    tagged = twin.patch_service({"site": "x"}, None, LIMITS)
    assert (tagged.version, tagged.desired_version) == (2, 1)
    desired = tagged.patch_service(None, {"i": 1}, LIMITS)
    assert (desired.version, desired.desired_version) == (3, 2)
    assert desired.desired_notification(tagged, {"i": 1}, full=False) == {"i": 1, "$version": 2}
    replaced = desired.patch_service({"t": 1}, {"j": 2}, LIMITS, replace_all=True)
    assert replaced.tags == {"t": 1} and replaced.desired == {"j": 2}
    assert replaced.desired_notification(desired, {"j": 2}, full=True) == {"j": 2, "$version": 3}


def test_size_limits_apply_per_section() -> None:
    twin = Twin.new("d")
    with pytest.raises(RequestRefused):
        twin.patch_service({"t": "x" * 4000, "u": "y" * 4000, "v": "z" * 300}, None, LIMITS)
    grown = twin
    for i in range(8):
        grown = grown.patch_reported({f"k{i}": "x" * 4000}, LIMITS)
    with pytest.raises(RequestRefused):
        grown.patch_reported({"k9": "x" * 4000}, LIMITS)


DOCS: list[dict[str, Any]] = [
    {
        "deviceId": "a",
        "status": "enabled",
        "tags": {"site": "north", "tier": 1},
        "properties": {"reported": {"fw": "1.0"}},
    },
    {
        "deviceId": "b",
        "status": "enabled",
        "tags": {"site": "south", "tier": 2},
        "properties": {"reported": {"fw": "2.0"}},
    },
    {"deviceId": "c", "status": "disabled", "tags": {}, "properties": {"reported": {}}},
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("SELECT * FROM devices", "abc"),
        ("select * from devices where tags.site = 'north'", "a"),
        ("SELECT * FROM devices WHERE tags.site != 'north'", "b"),
        ("SELECT * FROM devices WHERE tags.site IN ('north', 'south')", "ab"),
        ("SELECT * FROM devices WHERE tags.tier >= 1 AND properties.reported.fw = '2.0'", "b"),
        ("SELECT * FROM devices WHERE tags.site = 'north' OR status = 'disabled'", "ac"),
        ("SELECT * FROM devices WHERE NOT (tags.tier = 1)", "bc"),
        ("SELECT * FROM devices WHERE tags.site NOT IN ('north')", "b"),
        ('SELECT * FROM devices WHERE deviceId = "c"', "c"),
        ("SELECT * FROM devices WHERE tags.tier = '1'", ""),
    ],
    ids=[
        "all",
        "eq",
        "ne-undefined-excluded",
        "in",
        "and-compare",
        "or",
        "not",
        "not-in",
        "double-quotes",
        "typed",
    ],
)
def test_queries(query: str, expected: str) -> None:
    predicate = compile_query(query)
    assert "".join(d["deviceId"] for d in DOCS if predicate(d)) == expected


@pytest.mark.parametrize(
    "query",
    [
        "SELECT deviceId FROM devices",
        "SELECT * FROM devices.modules",
        "SELECT * FROM devices WHERE",
        "SELECT * FROM devices WHERE tags.a = ",
        "SELECT * FROM devices WHERE tags.a = 1 AND",
        "SELECT * FROM devices WHERE (tags.a = 1",
        "SELECT * FROM devices WHERE tags.a ~ 1",
        "DROP TABLE devices",
        "SELECT * FROM devices WHERE __import__('os') = 1",
    ],
)
def test_queries_outside_the_grammar_are_400(query: str) -> None:
    with pytest.raises(RequestRefused) as refused:
        compile_query(query)
    assert refused.value.status == 400
