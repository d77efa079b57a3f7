"""Firmware image descriptions: valid ones load, bad ones are refused with the reason."""

from __future__ import annotations

import pytest

from firmware._errors import ImageError
from firmware._image import FirmwareImage
from tests.unit.firmware.conftest import IMAGES


def test_the_shipped_images_load_and_1_1_adds_operators() -> None:
    old, new = (
        FirmwareImage.load(IMAGES / "m4-1.0.0.json"),
        FirmwareImage.load(IMAGES / "m4-1.1.0.json"),
    )
    assert old.operators < new.operators and new.at_least("1.0.0") and not old.at_least("1.1.0")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{", "invalid firmware image"),
        ('{"kind": "model"}', "kind must be"),
        (
            '{"kind": "firmware", "version": "1.0", "runtimeVersion": "x", "operators": []}',
            "MAJOR.MINOR.PATCH",
        ),
        (
            '{"kind": "firmware", "version": "1.0.0", "runtimeVersion": "x", "operators": "FC"}',
            "list",
        ),
        ('{"kind": "firmware", "version": "1.0.0", "operators": []}', "runtimeVersion"),
    ],
    ids=["not-json", "wrong-kind", "bad-version", "operators-not-list", "missing-field"],
)
def test_bad_images_are_refused(text: str, match: str) -> None:
    with pytest.raises(ImageError, match=match):
        FirmwareImage.from_json(text)
