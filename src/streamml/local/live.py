"""The live terminal view: the dashboard's numbers in one rich panel (``streamml up`` in a terminal,
``streamml status --watch``), and the one-line form for logs and CI (``--plain``, or stdout not a tty)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streamml.local.processes import make_redis
from streamml.monitoring.observer import Snapshot, StreamObserver
from streamml.settings import Settings
from streamml.stream.status import StreamStatus

CLASS_STYLES = {"Low": "green", "Medium": "yellow", "High": "red"}


def _n(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def panel(snap: Snapshot, *, title: str = "streamml") -> Panel:
    """Rates, latency percentiles, lag/pending/dead letters, model versions and class mix."""
    routes = sorted(snap.routes.items())
    accepted_rate = sum(r.accepted_per_s for _, r in routes)
    predicted_rate = sum(r.predicted_per_s for _, r in routes)
    latency = snap.latency_ms or {}
    head = Text()
    head.append("Redis ", style="dim")
    head.append(
        "ok" if snap.redis == "ok" else f"DOWN: {snap.redis}",
        style="green" if snap.redis == "ok" else "bold red",
    )
    head.append("   registry ", style="dim")
    head.append(snap.registry, style={"ok": "green", "not checked": "dim"}.get(snap.registry, "yellow"))
    head.append(
        f"\naccepted {_n(accepted_rate, 1)}/s · predicted {_n(predicted_rate, 1)}/s · latency p50 "
        f"{_n(latency.get('p50'), 1)} p95 {_n(latency.get('p95'), 1)} p99 {_n(latency.get('p99'), 1)} ms\n"
        f"stream {snap.length:,} · lag {snap.lag:,} · pending {snap.pending:,} · "
        f"dead letters {snap.dead_letters:,}"
    )
    if snap.dead_letters_by_reason:
        head.append(
            " (" + ", ".join(f"{k} {v}" for k, v in sorted(snap.dead_letters_by_reason.items())) + ")"
        )
    head.append(f" · {len(snap.consumers)} consumers")
    table = Table(
        "route", "model", "version", "accepted", "predicted", "/s", "class mix (last minute)", box=None
    )
    for name, state in routes:
        mix_source = state.recent_classes or state.classes
        total = sum(mix_source.values()) or 1
        mix = Text()
        for label, count in sorted(mix_source.items()):
            mix.append(f"{label} {100 * count / total:.0f}% ", style=CLASS_STYLES.get(label, ""))
        version = state.version if state.status == "ok" else f"{state.version} ({state.status})"
        table.add_row(
            name,
            state.model,
            version,
            f"{state.accepted:,}",
            f"{state.predicted:,}",
            _n(state.predicted_per_s, 1),
            mix,
        )
    return Panel(Group(head, table), title=title)


def line(snap: Snapshot, elapsed_s: float) -> str:
    """One compact line per interval, for logs."""
    routes = snap.routes.values()
    latency = snap.latency_ms or {}
    text = (
        f"{elapsed_s:5.0f}s accepted {sum(r.accepted for r in routes):,} · predicted "
        f"{sum(r.predicted for r in routes):,} ({sum(r.predicted_per_s for r in routes):,.0f}/s) · "
        f"p99 {_n(latency.get('p99'), 1)} ms · lag {snap.lag} · pending {snap.pending} · "
        f"dlq {snap.dead_letters}"
    )
    versions = ", ".join(
        f"{name} {s.model} v{s.version}" for name, s in sorted(snap.routes.items()) if s.version
    )
    if versions:
        text += f" · {versions}"
    if snap.redis != "ok":
        text += f" · Redis {snap.redis}"
    return text


async def watch(
    settings: Settings,
    console: Console,
    *,
    plain: bool,
    every_s: float = 1.0,
    stop: Callable[[float], int | None] = lambda _: None,
) -> int:
    """Show a snapshot every ``every_s`` until ``stop(elapsed_s)`` returns an exit code: the live
    panel in a terminal, a line per interval otherwise (``plain``, or stdout not a terminal)."""
    redis = make_redis(settings)
    status = StreamStatus.of(redis, settings.stream, cluster=settings.redis.cluster)
    observer = StreamObserver(redis, status)
    started = time.monotonic()
    live = None if plain or not console.is_terminal else Live(console=console, auto_refresh=False)
    try:
        if live is not None:
            live.start()
        while True:
            snap = await observer.snapshot()
            elapsed = time.monotonic() - started
            if live is not None:
                live.update(panel(snap, title=f"streamml · {elapsed:.0f} s"), refresh=True)
            else:
                console.print(line(snap, elapsed), highlight=False)
            code = stop(elapsed)
            if code is not None:
                return code
            await asyncio.sleep(every_s)
    finally:
        if live is not None:
            live.stop()
        await redis.aclose()
