"""CPU time and memory of the processes under test, read with psutil (a process and its children, so
`mlflow models serve`'s uvicorn workers count toward it)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    rss_mb: float
    peak_rss_mb: float


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _peak_rss_mb(process: psutil.Process) -> float:
    """The kernel's high-water mark (VmHWM) where there is one, else the current RSS."""
    try:
        with open(f"/proc/{process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float(process.memory_info().rss) / 2**20


def usage(pid: int) -> Usage:
    """CPU seconds so far, RSS now and peak RSS of ``pid`` with its children (summed)."""
    cpu = rss = peak = 0.0
    for process in _tree(pid):
        try:
            times = process.cpu_times()
            cpu += times.user + times.system
            rss += process.memory_info().rss / 2**20
            peak += _peak_rss_mb(process)
        except psutil.NoSuchProcess:
            continue
    return Usage(cpu, rss, peak)


class Meter:
    """CPU used by each named process between ``start()`` and ``stop()``, as seconds and as a share of
    one core over the wall time, with peak RSS at the end."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, Usage] = {}
        self._started = 0.0

    def start(self) -> None:
        self._before = {name: usage(pid) for name, pid in self.pids.items()}
        self._started = time.perf_counter()

    def stop(self) -> dict[str, dict[str, float]]:
        wall = time.perf_counter() - self._started
        report = {}
        for name, pid in self.pids.items():
            now = usage(pid)
            cpu = now.cpu_s - self._before[name].cpu_s
            report[name] = {
                "cpu_s": round(cpu, 2),
                "cores": round(cpu / wall, 2) if wall else 0.0,
                "peak_rss_mb": round(now.peak_rss_mb, 1),
            }
        return report
