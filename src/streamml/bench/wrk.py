"""``wrk`` as the closed-loop load generator: C, one thread, so it takes a few hundredths of a core where
the Python generator took as much as the system under test (measured from outside: the same scenario
gave twice the end-to-end throughput under wrk). The bodies are POSTed in turn; its CPU comes from the
kernel's account of reaped children.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SCRIPT = """local bodies = {{}}
for line in io.lines("{bodies}") do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json"}}, bodies[i])
end
"""


@dataclass
class WrkRun:
    requests: int
    """Requests answered (any status)."""
    non_2xx: int
    seconds: float
    started_ms: float
    """Epoch milliseconds when wrk was started."""
    cpu_s: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    """Client-observed answer time: p50, p90, p99."""

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx


def available() -> bool:
    return shutil.which("wrk") is not None


def run(url: str, bodies: list[bytes], *, connections: int, duration_s: float, scratch: Path) -> WrkRun:
    """One closed-loop run: ``connections`` connections on one thread for ``duration_s`` seconds."""
    scratch.mkdir(parents=True, exist_ok=True)
    body_file = scratch / "wrk-bodies.jsonl"
    body_file.write_bytes(b"\n".join(bodies) + b"\n")
    script = scratch / "wrk.lua"
    script.write_text(SCRIPT.format(bodies=body_file))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_ms = time.time() * 1000.0
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s", "--latency", "-s", str(script), url]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk: the only child reaped meanwhile
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return WrkRun(
        requests=requests(output),
        non_2xx=non_2xx(output),
        seconds=duration_s,
        started_ms=started_ms,
        cpu_s=cpu_s,
        latency_ms=latency(output),
    )


def requests(output: str) -> int:
    found = re.search(r"^\s*(\d+) requests in", output, flags=re.MULTILINE)
    return int(found.group(1)) if found else 0


def rate(output: str) -> float:
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    return float(found.group(1)) if found else 0.0


def non_2xx(output: str) -> int:
    found = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return int(found.group(1)) if found else 0


def latency(output: str) -> dict[str, float]:
    """wrk's answer-time percentiles (``--latency``), in milliseconds."""
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    found = re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)$", output, flags=re.MULTILINE)
    return {f"p{q}": round(float(value) * scale[unit], 3) for q, value, unit in found}
