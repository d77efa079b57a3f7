"""The agent's telemetry summaries, end to end: real cores (TFLM in core machines behind memory
transports) feed a real agent whose buffer summarises each core's inferences per interval; the
summaries count every inference its raw rows show, sampled raw rows go marked `sampled`, and the
service (SQLite and PostgreSQL) counts each inference once in the rollups the gates read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from device_agent.agent import Agent
from device_agent.protocol.summary import SummaryRecord
from service.domain.rollups import merge_all
from service.telemetry import IngestWorker, MemorySource
from tests.agent_rig import Rig, hub_of, install, make_rig, rows, step_until
from tests.integration.telemetry.conftest import Db


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with make_rig(tmp_path) as make:
        yield make


def _summaries(agent: Agent) -> list[SummaryRecord]:
    return [s for batch in hub_of(agent).summaries for s in batch.summaries]


def test_summaries_count_every_inference_and_sampled_raw_rows_are_marked(rig: Rig) -> None:
    agent, _, clock = rig(summary_interval_s=1.0, raw_sample_rate=1.0)
    install(agent.cores["m4-0"], "kws-v1.0.0")
    install(agent.cores["m4-1"], "vibration-v2.0.0")
    # The agent's clock stands still: every inference so far falls in one interval.
    step_until(agent, lambda: len(rows(agent)) >= 20, "raw rows of the first interval")
    end_ms = (int(clock.now * 1000) // 1000 + 1) * 1000
    clock.now += 1.0
    # Raw rows go oldest first, after the summaries: once a row of the next interval is out,
    # every row of the closed one is too.
    step_until(
        agent, lambda: any(r.ts_ms >= end_ms for r in rows(agent)), "a row of the next interval"
    )
    closed = _summaries(agent)
    assert {s.core for s in closed} == {"m4-0", "m4-1"}
    for summary in closed:
        assert summary.start_ms + summary.interval_ms == end_ms
        raw = [
            r
            for r in rows(agent)
            if (r.core, r.model_id, r.model_version)
            == (summary.core, summary.model_id, summary.model_version)
            and summary.start_ms <= r.ts_ms < end_ms
        ]
        assert summary.count == len(raw) > 0
        assert summary.latency_sum_us == sum(r.latency_us for r in raw)
        flagged = [r.anomaly for r in raw if r.anomaly is not None]
        assert (summary.anomaly_reported, summary.anomalies) == (len(flagged), sum(flagged))
    hub = hub_of(agent)
    assert all(batch.sampled for batch in hub.batches if batch.inference)
    assert len(set(hub.message_ids)) == len(hub.message_ids)  # one sequence space, no reuse


def test_with_no_raw_sample_only_summaries_carry_inferences(rig: Rig) -> None:
    agent, _, clock = rig(summary_interval_s=1.0, raw_sample_rate=0.0)
    install(agent.cores["m4-0"], "kws-v1.0.0")
    step_until(agent, lambda: len(agent.telemetry) == 0 and agent.telemetry._open, "inferences")
    clock.now += 1.0
    step_until(agent, lambda: _summaries(agent), "a summary")
    hub = hub_of(agent)
    assert rows(agent) == []
    assert sum(s.count for s in _summaries(agent)) > 0
    assert any(batch.health for batch in hub.batches)  # health still goes as rows


def test_the_service_counts_each_inference_once_from_summaries_and_sampled_rows(
    rig: Rig, db: Db
) -> None:
    agent, _, clock = rig(summary_interval_s=1.0, raw_sample_rate=1.0)
    install(agent.cores["m4-0"], "kws-v1.0.0")
    step_until(agent, lambda: len(rows(agent)) >= 10, "raw rows")
    end_ms = (int(clock.now * 1000) // 1000 + 1) * 1000
    clock.now += 1.0
    step_until(agent, lambda: any(r.ts_ms >= end_ms for r in rows(agent)), "the next interval")
    source = MemorySource(2)
    for body, mid in hub_of(agent).bodies:
        source.append("dev-1", body, enqueued_ms=int(clock.now * 1000), message_id=mid)
    IngestWorker(source, db.store).drain()
    summarised = sum(s.count for s in _summaries(agent) if s.core == "m4-0")
    stored = db.store.device_rollups(release_id="")["dev-1"]
    rollup = merge_all(r for key, r in stored if key["core"] == "m4-0" and key["model_id"])
    assert rollup.inferences == summarised > 0  # the sampled raw rows added nothing
    assert db.count("telemetry_inference") == len(rows(agent))  # but they are all stored
