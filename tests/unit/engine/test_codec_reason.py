"""A job's reason is stored in a bounded column: long gate or device texts are cut, not refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.domain.jobs import Job, JobState
from service.engine._codec import MAX_REASON, job_to_record

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _job(step: str, reason: str) -> Job:
    return Job(
        rollout_id="ro-1",
        device_id="dev-1",
        release_id="rel-2",
        stage=0,
        soak=timedelta(minutes=5),
        state=JobState.FAILED,
        step=step,
        reason=reason,
    )


@pytest.mark.parametrize(
    ("step", "reason", "stored"),
    [
        ("", "", None),
        ("download", "fetch", "download:fetch"),
        ("gate", "x" * 500, None),
    ],
    ids=["empty", "short", "long-gate-text"],
)
def test_reason_fits_the_column(step: str, reason: str, stored: str | None) -> None:
    record = job_to_record(_job(step, reason), NOW)
    if stored is not None or not (step or reason):
        assert record.reason == stored
    else:
        assert record.reason is not None
        assert len(record.reason) == MAX_REASON
        assert record.reason.startswith("gate:xxx")
        assert record.reason.endswith("…")
