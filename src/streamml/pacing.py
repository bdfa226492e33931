"""Open-loop pacing and latency percentiles: shared by the producer and the benchmarks, so both offer
load the same way and report percentiles by the same definition.

Open loop: send ``k`` is due at ``start + k * interval`` whatever happened to the earlier ones, so a
slow server shows up as latency (and as sends a caller could not make), never as a quietly lower
offered rate.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Iterable


async def paced(
    interval_s: float, *, count: int | None = None, duration_s: float | None = None
) -> AsyncIterator[int]:
    """Yield 0, 1, 2, ... each at its due time; stop after ``count`` sends, or once the next one would
    be due ``duration_s`` after the start (with neither, never)."""
    start = time.monotonic()
    k = 0
    while count is None or k < count:
        offset = k * interval_s
        if count is None and duration_s is not None and offset >= duration_s:
            return
        delay = start + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield k
        k += 1


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """p50/p95/p99/max by nearest rank (the smallest value with at least q of the values at or below
    it), rounded to 2 decimals; None for each when there are no values."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p95": None, "p99": None, "max": None}

    def rank(q: float) -> float:
        position = math.ceil(round(q * len(ordered), 9))  # round: 0.95 * 100 is 95.00000000000001
        return round(ordered[max(position, 1) - 1], 2)

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": round(ordered[-1], 2)}
