"""Open-loop pacing and the one percentile definition the producer and the benchmarks share."""

from __future__ import annotations

import time

from streamml.pacing import paced, percentiles


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([7.0, 3.0]) == {"p50": 3.0, "p95": 7.0, "p99": 7.0, "max": 7.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}


async def test_sends_are_due_on_the_schedule_whatever_the_caller_does() -> None:
    """A slow caller does not push the schedule back: sends that fell due meanwhile come at once."""
    started = time.monotonic()
    seen: list[tuple[int, float]] = []
    async for k in paced(0.02, count=10):
        seen.append((k, time.monotonic() - started))
        if k == 2:
            time.sleep(0.1)  # noqa: ASYNC251 - a caller that blocks for five intervals
    assert [k for k, _ in seen] == list(range(10))
    # k=3..7 were due during the stall: they follow without waiting; k=8 and 9 are on schedule again
    assert seen[7][1] - seen[3][1] < 0.02
    assert seen[9][1] >= 0.18


async def test_a_duration_bounds_an_endless_schedule() -> None:
    sends = [k async for k in paced(0.01, duration_s=0.05)]
    assert sends == [0, 1, 2, 3, 4]
