"""The benchmark report: the machine and versions, the headline figures against the project's targets,
and one table per scenario. Rendered as Markdown for benchmarks/results/report.md."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("mlflow", "scikit-learn", "lightgbm", "fastapi", "uvicorn", "redis", "numpy", "pandas")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "measured_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": code_revision(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gb, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: metadata.version(name) for name in PACKAGES},
    }


def code_revision() -> str:
    """The commit the measured code is (marked when the checkout has uncommitted changes), or the
    installed package's version outside a checkout."""
    here = Path(__file__).resolve()
    checkout = here.parents[3]
    if here.parents[2].name != "src" or not (checkout / "pyproject.toml").is_file():
        return f"streamml {metadata.version('streamml')}"  # installed, not run from a checkout
    try:
        commit = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"streamml {metadata.version('streamml')}"
    return f"commit {commit}" + (" with uncommitted changes to src/" if changed else "")


def headline(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, met, note) rows for the benchmark's targets the report has figures for."""
    return _drain_targets(report.get("drain", {}).get("results", [])) + _e2e_targets(report.get("endtoend"))


def _drain_targets(drain: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    by = {(r["route"], r["records_per_entry"]): r for r in drain}
    if (hundred := by.get(("lightgbm", 100))) is not None:
        share, rate = hundred["share_of_model_speed"], hundred["records_per_s"]
        # Reports before compiled trees measured the share against the model's own predict.
        ceiling = hundred.get("ceiling_records_per_s", hundred["model_batch_records_per_s"])
        compiled = hundred.get("compiled_classifier_records_per_s")
        rows.append(
            (
                "drain, LightGBM, 100 records per entry: ≥ 75 % of the ceiling used, and ≥ 150,000 records/s",
                f"{share:.0%} ({rate:,} of {ceiling:,} records/s)",
                _met(share >= 0.75 and rate >= 150_000),
                f"the model's own predict {hundred['model_batch_records_per_s']:,} records/s; its classifier "
                f"alone {hundred['classifier_records_per_s']:,}"
                + (f", compiled {compiled:,}" if compiled else ", not compiled"),
            )
        )
    if (single := by.get(("lightgbm", 1))) is not None:
        rate = single["records_per_s"]
        rows.append(
            (
                "drain, LightGBM, 1 record per entry: ≥ 15,000 entries/s",
                f"{rate:,} entries/s",
                _met(rate >= 15_000),
                "",
            )
        )
    if any(r["route"] == "lightgbm" for r in drain):
        worst = min(r["speedup_vs_naive"] for r in drain if r["route"] == "lightgbm")
        rows.append(
            ("drain, LightGBM: ≥ 100× the naive worker", f"{worst:,}× (worst case)", _met(worst >= 100), "")
        )
    for route in ("svm", "knn"):
        if (result := by.get((route, 100))) is not None:
            share = result["share_of_model_speed"]
            rows.append(
                (
                    f"drain, {route}: ≥ 80 % of the model's own batch predict",
                    f"{share:.0%}",
                    _met(share >= 0.8),
                    "100 records per entry",
                )
            )
    return rows


def _e2e_targets(e2e: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    if not e2e:
        return []
    rows: list[tuple[str, str, str, str]] = []
    ours = {o["key"]: o for o in e2e["outcomes"] if o["system"] == "streamml"}
    rows += _mlflow_targets(e2e, ours)
    rows += _mlserver_targets(e2e, ours)
    open_loop = ours["open_loop"]
    latency, client = open_loop["latency_ms"], open_loop.get("client_latency_ms") or {}
    rows.append(
        (
            f"open loop, {e2e['parameters']['open_loop_rate']:.0f} requests/s: accepted → written "
            "p50 ≤ 2 ms, p99 ≤ 10 ms",
            f"p50 {latency['p50']} ms, p99 {latency['p99']} ms",
            _met(latency["p50"] <= 2 and latency["p99"] <= 10),
            "gateway acceptance → prediction written",
        )
    )
    if client.get("p99") is not None:
        rows.append(
            (
                "open loop: client-observed POST /predict round trip p99 ≤ 15 ms",
                f"p50 {client['p50']} ms, p99 {client['p99']} ms",
                _met(client["p99"] <= 15),
                "the load generator's clock",
            )
        )
    gateway_ms = _cpu(ours["single"], "cpu_ms_per_request", "gateway")
    if gateway_ms is not None:
        rows.append(
            (
                "gateway CPU ≤ 0.25 ms per single-record request",
                f"{gateway_ms} ms",
                _met(gateway_ms <= 0.25),
                "closed loop, 1 record/request",
            )
        )
    worker_us = _cpu(ours["hundred"], "cpu_us_per_record", "worker-1")
    if worker_us is not None:
        rows.append(
            (
                "worker CPU ≤ 12 µs per record at 100 records per entry",
                f"{worker_us} µs",
                _met(worker_us <= 12),
                "closed loop, 100 records/request",
            )
        )
    memory = e2e.get("memory")
    if memory:
        growth = {name: end - start for name, (start, end) in memory["rss_warm_end_mb"].items()}
        worst_name = max(growth, key=lambda n: growth[n])
        rows.append(
            (
                f"steady memory over {memory['seconds']:.0f} s at {memory['rate']:.0f} records/s",
                f"largest growth {growth[worst_name]:+.2f} MB ({worst_name})",
                _met(all(g <= 5.0 for g in growth.values())),
                "RSS after warm-up vs at the end; metrics on"
                + (
                    f", the dashboard open ({memory['dashboard_events']} events read)"
                    if "dashboard_events" in memory
                    else ""
                ),
            )
        )
    return rows


MLFLOW = "mlflow models serve"


def _mlflow_targets(e2e: dict[str, Any], ours: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The targets against `mlflow models serve` (reports before peers were named compared only with it)."""
    ratios = {r["key"]: r for r in e2e["ratios"] if r.get("peer", MLFLOW) == MLFLOW}
    if "single" not in ratios or "hundred" not in ratios:
        return []
    one, hundred = ratios["single"], ratios["hundred"]
    generator = ours["single"].get("load_generator", "aiohttp")
    return [
        (
            "end to end, 1 record/request: ≥ 40× mlflow models serve",
            f"{one['requests_per_s']}× ({ours['single']['requests_per_s']:,} requests/s)",
            _met((one["requests_per_s"] or 0) >= 40),
            f"closed loop, {e2e['parameters']['concurrency']} connections, {generator}",
        ),
        (
            "end to end, 100 records/request: ≥ 120,000 records/s and ≥ 15×",
            f"{ours['hundred']['records_per_s']:,.0f} records/s, {hundred['records_per_s']}×",
            _met(ours["hundred"]["records_per_s"] >= 120_000 and (hundred["records_per_s"] or 0) >= 15),
            "",
        ),
    ]


MLSERVER_TARGETS = (
    ("single", "requests_per_s", "end to end (/predict_stream), 1 record/request", 6),
    ("v2_single", "requests_per_s", "the identical V2 infer request, 1 record", 3),
    ("hundred", "records_per_s", "end to end (/predict_stream), 100 records/request", 4),
    ("v2_hundred", "records_per_s", "the identical V2 infer request, 100 records", 2),
)
"""(scenario, measure, what, at least this many times MLServer's figure)."""


def _mlserver_targets(e2e: dict[str, Any], ours: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    ratios = {r["key"]: r for r in e2e["ratios"] if r.get("peer") == "MLServer"}
    rows = []
    for key, measure, what, times in MLSERVER_TARGETS:
        if (ratio := ratios.get(key)) is None:
            continue
        unit = "requests/s" if measure == "requests_per_s" else "records/s"
        rows.append(
            (
                f"{what}: ≥ {times}× MLServer (adaptive batching)",
                f"{ratio[measure]}× ({ours[key][measure]:,} {unit})",
                _met((ratio[measure] or 0) >= times),
                "MLServer answers V2 infer in every scenario",
            )
        )
    return rows


def _cpu(outcome: dict[str, Any], measure: str, process: str) -> float | None:
    value = outcome.get(measure, {}).get(process)
    return None if value is None else float(value)


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def to_markdown(report: dict[str, Any], command: str) -> str:
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    out = [
        "# Benchmark report",
        "",
        f"Command: `{command}`, {m.get('measured_at', 'date not recorded')}, "
        f"{m.get('code', 'code not recorded')}. Machine: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB, Python {m['python']}, {m['platform']}.",
        f"Versions: {versions}; {_server(report.get('redis_server'))}. Prometheus metrics in the "
        f"measured processes: {'on' if report.get('plan', {}).get('metrics', True) else 'off'}.",
        "What bounds each figure and how it was profiled: [../README.md](../README.md).",
    ]
    targets = headline(report)
    if targets:
        out += [
            "",
            "## Headline: the targets, measured side by side",
            "",
            "| target | measured | met | note |",
            "| --- | --- | --- | --- |",
        ]
        out += [f"| {t} | {v} | {ok} | {note} |" for t, v, ok, note in targets]
    out += _drain_table(report.get("drain"))
    out += _rollout_table(report.get("rollout"))
    out += _e2e_tables(report.get("endtoend"))
    return "\n".join(out) + "\n"


def _rollout_table(rollout: dict[str, Any] | None) -> list[str]:
    if not rollout:
        return []
    out = [
        "",
        "## 2. What feedback answers, drift windows, the prediction log and shadow scoring cost a worker",
        "",
        "One worker process drains a pre-filled stream (as in the worker drain) of "
        f"{rollout['results'][0]['records']:,} records for {rollout['model']}, in "
        f"{len({r['config'] for r in rollout['results']})} configurations "
        "that alternate within each of "
        f"{rollout['repeats']} repeats (medians shown). CPU is the worker process's, per record drained; "
        "'extra' is over the first configuration (CSV and Redis results only).",
        "",
        "| configuration | records per entry | records/s | CPU µs per record | extra µs per record |",
        "| --- | --- | --- | --- | --- |",
    ]
    out += [
        f"| {r['config']} | {r['records_per_entry']} | {r['records_per_s']:,} | {r['cpu_us_per_record']:.2f} "
        f"| {r['extra_cpu_us_per_record']:+.2f} |"
        for r in rollout["results"]
    ]
    return out


def _drain_table(drain: dict[str, Any] | None) -> list[str]:
    if not drain:
        return []
    out = [
        "",
        "## 1. Worker drain",
        "",
        f"One worker process drains a pre-filled stream of {drain['results'][0]['records']:,} generated "
        "records (one record per entry, then 100). Each drain runs right after a measurement of the model's "
        f"speed; of {drain.get('repeats', 1)} such pairs the one with the median share is shown (every "
        "run's share is in the last column, so the spread between runs shows).",
        "*Model* is the model's own batch predict (the scikit-learn pipeline on a frame, 4,096 rows",
        "a call, after an untimed first call) on the same rows. *Inference* is streamml's path through the",
        "same model in the same batches (the numpy fast path, checked against scikit-learn at load, with",
        "LightGBM's trees compiled where they give the booster's labels). The *ceiling* is the faster of the",
        "two, and the share is of it. *Classifier* is the pipeline's last step alone on the matrix its",
        "preprocessing prepared: what a plain `predict` of the bare model gives, faster than any path from",
        "records can be; *compiled* is the same with its trees compiled. The naive worker is the original",
        "design: one entry at a time, the model loaded from the registry for each.",
        "",
        "| route | model | records/entry | records/s | model's batch records/s | streamml inference "
        "records/s | share of the ceiling | classifier records/s | compiled | naive records/s | × naive | "
        "CPU s | peak RSS MB | shares, all runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in drain["results"]:
        compiled = r.get("compiled_classifier_records_per_s")
        out.append(
            f"| {r['route']} | {r['model']} | {r['records_per_entry']} | {r['records_per_s']:,} | "
            f"{r['model_batch_records_per_s']:,} | {r['inference_records_per_s']:,} | "
            f"{r['share_of_model_speed']:.0%} | {r.get('classifier_records_per_s', 0):,} | "
            f"{f'{compiled:,}' if compiled else '–'} | "
            f"{r['naive_records_per_s']} | {r['speedup_vs_naive']:,} | "
            f"{r['cpu_s']} | {r['peak_rss_mb']} | "
            + ", ".join(f"{x:.0%}" for x in r.get("shares_of_all_runs", [r["share_of_model_speed"]]))
            + " |"
        )
    return out


def _peer_lines(peers: dict[str, dict[str, str]]) -> list[str]:
    if not peers:
        return []
    described = "; ".join(
        f"{system}: " + ", ".join(f"{k} {v}" for k, v in settings.items())
        for system, settings in peers.items()
    )
    return [
        "",
        f"Peers and their settings: {described}. MLServer gets the Open Inference Protocol's infer request "
        "(one tensor per column, decoded to a DataFrame) in the end-to-end scenarios, and the identical "
        "V2 request in scenarios 6 and 7; it runs in an environment of its own with the same model "
        "libraries.",
    ]


def _e2e_tables(e2e: dict[str, Any] | None) -> list[str]:
    if not e2e:
        return []
    p = e2e["parameters"]
    out = [
        "",
        "## 3–7. End to end",
        "",
        f"Model {e2e['model']} (route `{e2e['route']}`). streamml: 1 gateway process, {p['workers']} worker "
        f"process(es). `mlflow models serve --env-manager local -w {p['mlflow_serve_workers']}` on a copy "
        "of the same model version. Same complete records and the same load generator for every "
        "system, named in each row with the share of a core it took: wrk (C) for the closed loops "
        "where it is installed, the asyncio/aiohttp generator for the open loop; closed loops with "
        f"{p['concurrency']} connections, {p['duration_s']:.0f} s each after a warm-up; open loop at "
        f"{p['open_loop_rate']:.0f} requests/s. "
        "streamml's latency runs from gateway acceptance to the prediction written (stamped in the "
        "message; throughput to the last prediction written); a peer's is request to response, "
        "since its prediction is the response. *Client p50/p99* is what the load generator saw. In the "
        "identical-request scenarios every system that speaks the protocol gets the same request: `POST "
        "/invocations` with the same MLflow body (streamml's MLflow protocol on its default route), or the "
        "same V2 infer request on the route's name, each measured from the client: "
        "answers with the predictions per second, request to response.",
        *_peer_lines(e2e.get("peers", {})),
        "",
        "| scenario | system | requests/s | records/s | p50 ms | p95 ms | p99 ms | max ms | "
        "client p50 / p99 ms | failed | CPU, cores used | load generator, cores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in e2e["outcomes"]:
        lat, client = o["latency_ms"], o.get("client_latency_ms") or {}
        cpu = ", ".join(f"{name} {v['cores']}" for name, v in o["processes"].items())
        out.append(
            f"| {o['scenario']} | {o['system']} | {o['requests_per_s']:,} | {o['records_per_s']:,} | "
            f"{lat['p50']} | {lat['p95']} | {lat['p99']} | {lat['max']} | "
            f"{client.get('p50')} / {client.get('p99')} | {o['failed']} | {cpu} | "
            f"{o.get('load_generator', 'aiohttp')} {o['load_generator_cores']} |"
        )
    out += [
        "",
        "CPU time per request and per record, by process (what a capacity plan multiplies):",
        "",
        "| scenario | system | CPU ms per request | CPU µs per record |",
        "| --- | --- | --- | --- |",
    ]
    for o in e2e["outcomes"]:
        if "cpu_ms_per_request" in o:
            per_request = ", ".join(f"{k} {v}" for k, v in o["cpu_ms_per_request"].items())
            per_record = ", ".join(f"{k} {v}" for k, v in o["cpu_us_per_record"].items())
            out.append(f"| {o['scenario']} | {o['system']} | {per_request} | {per_record} |")
    out += [
        "",
        "| scenario | streamml ÷ | requests/s | records/s |",
        "| --- | --- | --- | --- |",
    ]
    out += [
        f"| {r['scenario']} | {r.get('peer', MLFLOW)} | {r['requests_per_s']}× | {r['records_per_s']}× |"
        for r in e2e["ratios"]
    ]
    peaks: dict[str, float] = {}
    for o in e2e["outcomes"]:
        for name, v in o["processes"].items():
            peaks[name] = max(peaks.get(name, 0.0), v["peak_rss_mb"])
    out += ["", "Peak RSS per process, MB: " + ", ".join(f"{k} {v}" for k, v in peaks.items()) + "."]
    memory = e2e.get("memory")
    if memory:
        out += [
            "",
            f"## Steady memory: {memory['seconds']:.0f} s at {memory['rate']:.0f} records/s (open loop)",
            "",
            f"{memory['accepted']:,} of {memory['sent']:,} requests accepted, the live dashboard's event "
            f"stream read throughout ({memory.get('dashboard_events', '?')} events). RSS in MB (to the KB), "
            f"sampled every "
            f"{memory['every_s']:.0f} s; *warm* is the first sample after {memory['warm_s']:.0f} s.",
            "",
            "| process | start | warm | end | end − warm |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, (warm, end) in memory["rss_warm_end_mb"].items():
            start = memory["samples"][0][name]
            out.append(f"| {name} | {start:.2f} | {warm:.2f} | {end:.2f} | {end - warm:+.2f} |")
        first, last = memory["samples"][0], memory["samples"][-1]
        out += [
            "",
            f"Redis `used_memory` went from {first['redis_used_memory']:.1f} MB to "
            f"{last['redis_used_memory']:.1f} MB: it holds every result document for "
            f"`STREAMML_STREAM_RESULT_TTL_S` ({p.get('result_ttl_s', '?')} s in this run) and the results "
            "stream up to its cap (raised for the benchmark so that every result can be read back), so it "
            "grows by design until those limits take over.",
        ]
    return out


def _server(recorded: str | None) -> str:
    """The Redis server as recorded: reports before servers were named hold Redis's version alone."""
    if recorded and not recorded[0].isdigit():
        return recorded
    return f"redis-server {recorded}"
