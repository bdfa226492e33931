"""Where the gateway and the worker spend their CPU under load: one streamml stack driven by wrk while
py-spy samples both processes. Usage::

    python -m streamml.bench.profile_e2e [records_per_request] [seconds] [output_dir] [native|v2]

(defaults 100, 15, benchmarks/results/profiles, native: ``POST /predict_stream``; v2: the Open Inference
Protocol's infer request, one tensor per column, answered through the stream). With REDIS_URL and
MLFLOW_TRACKING_URI unset, an embedded Redis and demo models in a temporary registry are used. Writes, per
process, py-spy's collapsed stacks (``<name>-<records>.txt``, readable by speedscope or flamegraph.pl) and
prints the functions with the most samples (self and total) and the CPU per request and per record. Needs
wrk and py-spy (the 'bench' extra); py-spy needs permission to read another process's memory (root, or
ptrace allowed).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from streamml.bench import wrk
from streamml.bench.e2e_run import complete_records
from streamml.bench.endtoend import StreammlStack, bodies, streamml_body
from streamml.bench.harness import services
from streamml.bench.mlserver import v2_body
from streamml.bench.usage import usage

TOP = 25
TOTAL_SCAN = 400


def top_functions(
    collapsed: str, count: int = TOP
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """(self, total, all samples) from py-spy's collapsed stacks: ``frame;frame;... samples`` lines."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, weight = line.rpartition(" ")
        if not stack or not weight.isdigit():
            continue
        n = int(weight)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    return own.most_common(count), total.most_common(count), samples


def main() -> None:
    records_per_request = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 15.0
    output = Path(sys.argv[3] if len(sys.argv) > 3 else "benchmarks/results/profiles")
    protocol = sys.argv[4] if len(sys.argv) > 4 else "native"
    if protocol not in ("native", "v2"):
        raise SystemExit(f"the protocol is native or v2, not {protocol!r}")
    spy = _py_spy()
    if not wrk.available() or spy is None:
        raise SystemExit("needs wrk (Debian package) and py-spy (the 'bench' extra)")
    output.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="streamml-profile-") as scratch,
        services(Path(scratch), rows=3000) as (redis_url, tracking_uri),
    ):
        root = Path(scratch)
        stack = StreammlStack(root / "stack", redis_url, tracking_uri, workers=1).start()
        try:
            _profile(stack, spy, records_per_request, seconds, output, root, protocol)
        finally:
            stack.stop()


def _py_spy() -> str | None:
    """py-spy on PATH, or beside this interpreter (an unactivated virtual environment)."""
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.exists() else None)


def _profile(
    stack: StreammlStack,
    spy: str,
    per_request: int,
    seconds: float,
    output: Path,
    root: Path,
    protocol: str,
) -> None:
    records = complete_records(20_000)
    if protocol == "v2":
        payloads, url = bodies(records, per_request, v2_body), stack.identical_url("lightgbm", "v2")
    else:
        payloads, url = bodies(records, per_request, streamml_body), stack.predict_url("lightgbm")
    wrk.run(
        url, payloads, connections=16, duration_s=3, scratch=root / "warm"
    )  # models loaded, JIT-free warm-up
    after = asyncio.run(stack.last_result_id())
    samplers = {
        name: subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                f"{seconds:g}",
                "--rate",
                "250",
                "--function",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(output / f"{name}-{per_request}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in stack.pids.items()
    }
    before = {name: usage(pid).cpu_s for name, pid in stack.pids.items()}
    accepted_before = asyncio.run(stack.accepted_requests(per_request))
    run = wrk.run(url, payloads, connections=16, duration_s=seconds, scratch=root / "run")
    accepted = asyncio.run(stack.accepted_requests(per_request)) - accepted_before
    asyncio.run(stack.written_count(accepted, after))
    used = {name: usage(pid).cpu_s - before[name] for name, pid in stack.pids.items()}
    for sampler in samplers.values():
        sampler.wait()
    print(
        f"{accepted} requests of {per_request} records in {seconds:g} s "
        f"({accepted / seconds:,.0f} requests/s, {accepted * per_request / seconds:,.0f} records/s); "
        f"wrk {run.cpu_s / seconds:.3f} cores"
    )
    for name, cpu in used.items():
        print(
            f"{name}: {cpu * 1000 / max(accepted, 1):.3f} ms CPU/request, "
            f"{cpu * 1e6 / max(accepted * per_request, 1):.2f} µs CPU/record"
        )
    for name in samplers:
        collapsed = (output / f"{name}-{per_request}.txt").read_text()
        own, total, samples = top_functions(collapsed)
        total = top_functions(collapsed, TOTAL_SCAN)[1][: TOP * 4]
        print(f"\n== {name}: {samples} samples; self")
        for frame, n in own:
            print(f"{100 * n / samples:5.1f}%  {frame}")
        print(f"== {name}: total, streamml's own functions")
        for frame, n in total:
            if "streamml/" not in frame:
                continue
            print(f"{100 * n / samples:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
