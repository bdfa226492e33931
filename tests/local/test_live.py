"""The live terminal view: a rich panel in a terminal, one line per interval elsewhere, both showing the
same snapshot (read from a real Redis)."""

from __future__ import annotations

import io

from redis.asyncio import Redis
from rich.console import Console

from streamml.local.live import watch
from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from tests.helpers import drain, publisher_for

RECORDS = [{"Designation": 2.0}, {"Sleep Hours": 6.0}]


async def _predicted(settings: Settings, redis: Redis, registry: ModelRegistry) -> None:
    publisher = publisher_for(settings, redis)
    for index in range(3):
        await publisher.publish(f"r{index}", "knn", RECORDS)
    await drain(settings, redis, registry)


async def test_a_terminal_gets_the_live_panel(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    await _predicted(settings, redis, shared_registry)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    code = await watch(
        settings, console, plain=False, every_s=0.05, stop=lambda elapsed: 0 if elapsed > 0.1 else None
    )
    text = out.getvalue()
    assert code == 0
    assert "╭" in text  # a panel, redrawn in place
    assert "streamml ·" in text
    assert "Knn_Classifier" in text
    assert "predicted" in text
    assert "dead letters 0" in text
    assert "registry not checked" in text  # no registry here: not claimed to be fine


async def test_a_log_gets_one_line_per_interval(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    await _predicted(settings, redis, shared_registry)
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=400)
    ticks = iter(range(100))
    await watch(settings, console, plain=False, every_s=0.01, stop=lambda _: 0 if next(ticks) == 2 else None)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "╭" not in out.getvalue()
    assert all("predicted 6" in line for line in lines)  # 3 requests of 2 records, from Redis's counters
    assert "knn Knn_Classifier v1" in lines[-1]
