"""Whatever bytes reach a core, checking them as a model ends in a refusal, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware._errors import ModelRejectedError
from firmware._image import FirmwareImage
from firmware._runtime import check_operators
from firmware.icc import ReasonCode
from firmware.models import PREBUILT_DIR
from infra.simdevice import default_firmware

IMAGE = FirmwareImage.load(default_firmware())
REAL = (PREBUILT_DIR / "kws-v1.0.0.tflite").read_bytes()


def test_a_real_model_passes() -> None:
    assert "FULLY_CONNECTED" in check_operators(REAL, IMAGE)


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.tuples(st.integers(0, len(REAL) - 1), st.binary(min_size=1, max_size=16)).map(
            lambda cut: REAL[: cut[0]] + cut[1] + REAL[cut[0] + len(cut[1]) :]
        ),
    )
)
def test_garbage_and_mutated_models_are_refused_as_invalid(blob: bytes) -> None:
    try:
        check_operators(blob, IMAGE)
    except ModelRejectedError as exc:
        assert exc.reason in (ReasonCode.MODEL_INVALID, ReasonCode.OPERATOR_UNSUPPORTED)


def test_random_megabyte_is_refused() -> None:
    with pytest.raises(ModelRejectedError) as caught:
        check_operators(bytes(range(256)) * 4096, IMAGE)
    assert caught.value.reason is ReasonCode.MODEL_INVALID
