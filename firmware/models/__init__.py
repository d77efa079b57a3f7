"""The model builder: small models trained in numpy on synthetic sensor data and written as real
int8 `.tflite` files with tflite-micro's model editor. `prebuilt/` holds the committed output of
`build_all`, byte-for-byte reproducible (`tinyfleet models build --out DIR`)."""

from __future__ import annotations

from pathlib import Path

from firmware.models._builder import SPECS, BuiltModel, ModelSpec, build, build_all, specs_named

PREBUILT_DIR = Path(__file__).with_name("prebuilt")

__all__ = ["PREBUILT_DIR", "SPECS", "BuiltModel", "ModelSpec", "build", "build_all", "specs_named"]
