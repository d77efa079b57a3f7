"""Fleet benchmark (issue 13): `tinyfleet fleet rehearse` across fleet sizes (see
`service.cli._rehearsal` for the scenario and what each figure means).

Sizes: `TINYFLEET_BENCH_FLEET` (comma-separated), or 100,300,1000 with TINYFLEET_BENCH_FULL=1 (what
this 2-core machine completes; 10,000 needs several times its CPU, see docs/operations.md);
without either the bench is skipped (`tests/system/test_light_fleet.py` runs the same rehearsal
at 100 devices inside `make test`). Settings: `TINYFLEET_BENCH_FLEET_HOSTS` (0: one per 125),
`_PERIOD` (seconds between inferences per core, 10), `_CORES` (inprocess), `_SUMMARY_S` (30; 0 is
raw rows), `_FLUSH_S` (10), `_LIVENESS_S` (30), `_HEARTBEAT_S` (30);
`TINYFLEET_BENCH_FLEET_FAULTS=1` adds the fault run.
Figures are printed (run with `-s`) as ratios against the smallest size of the same run. There
are no timed assertions: the rehearsal itself checks that the work was done.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.cli._rehearsal import Rehearsal, report, run
from tests.bench.conftest import FULL

SIZES = [int(n) for n in os.environ.get("TINYFLEET_BENCH_FLEET", "100,300,1000").split(",")]


def _plan(faults: bool) -> Rehearsal:
    env = os.environ.get
    return Rehearsal(
        hosts=int(env("TINYFLEET_BENCH_FLEET_HOSTS", "0")),
        period_s=float(env("TINYFLEET_BENCH_FLEET_PERIOD", "10")),
        cores=env("TINYFLEET_BENCH_FLEET_CORES", "inprocess"),
        summary_s=float(env("TINYFLEET_BENCH_FLEET_SUMMARY_S", "30")),
        flush_s=float(env("TINYFLEET_BENCH_FLEET_FLUSH_S", "10")),
        liveness_s=float(env("TINYFLEET_BENCH_FLEET_LIVENESS_S", "30")),
        heartbeat_s=float(env("TINYFLEET_BENCH_FLEET_HEARTBEAT_S", "30")),
        faults=faults,
    )


@pytest.mark.skipif(
    not (FULL or os.environ.get("TINYFLEET_BENCH_FLEET")),
    reason="make test runs the same rehearsal at 100 devices (tests/system/test_light_fleet.py)",
)
@pytest.mark.timeout(6 * 3600)
@pytest.mark.parametrize(
    "faults", [False, True] if os.environ.get("TINYFLEET_BENCH_FLEET_FAULTS") == "1" else [False]
)
def test_a_gated_rollout_across_fleet_sizes(tmp_path: Path, faults: bool) -> None:
    plan = _plan(faults)
    results = [run(size, tmp_path / f"n{size}", plan) for size in sorted(SIZES)]
    print("\n" + "\n".join(report(results, plan)))
    for r in results:
        assert r["devices_per_minute"] > 0 and all(s > 0 for s in r["stages_s"])
