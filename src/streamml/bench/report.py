"""The benchmark report: the machine and versions, the headline figures against the project's targets,
and one table per scenario. Rendered as Markdown for benchmarks/results/report.md."""

from __future__ import annotations

import os
import platform
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
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gb, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: metadata.version(name) for name in PACKAGES},
    }


def headline(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, met, note) rows for the targets the report has figures for."""
    rows: list[tuple[str, str, str, str]] = []
    drain = report.get("drain", {}).get("results", [])
    best = {r["route"]: r for r in drain if r["records_per_entry"] == 100}
    lgbm = best.get("lightgbm")
    if lgbm:
        rate = lgbm["records_per_s"]
        rows.append(
            (
                "drain, LightGBM: ≥ 80,000 records/s per worker",
                f"{rate:,} records/s",
                _met(rate >= 80_000),
                "",
            )
        )
        worst = min(r["speedup_vs_naive"] for r in drain if r["route"] == "lightgbm")
        rows.append(
            ("drain, LightGBM: ≥ 100× the naive worker", f"{worst:,}× (worst case)", _met(worst >= 100), "")
        )
    for route in ("svm", "knn"):
        if route in best:
            share = best[route]["share_of_model_speed"]
            rows.append(
                (
                    f"drain, {route}: ≥ 80 % of the model's own batch predict",
                    f"{share:.0%}",
                    _met(share >= 0.8),
                    "100 records per entry",
                )
            )
    e2e = report.get("endtoend")
    if e2e:
        ratios = {r["key"]: r for r in e2e["ratios"]}
        ours = {o["key"]: o for o in e2e["outcomes"] if o["system"] == "streamml"}
        one, hundred, open_loop = ratios["single"], ratios["hundred"], ours["open_loop"]
        rows.append(
            (
                "end to end, 1 record/request: ≥ 20× mlflow models serve",
                f"{one['requests_per_s']}× ({ours['single']['requests_per_s']:,} requests/s)",
                _met((one["requests_per_s"] or 0) >= 20),
                f"closed loop, {e2e['parameters']['concurrency']} connections",
            )
        )
        rows.append(
            (
                "end to end, 100 records/request: ≥ 60,000 records/s and ≥ 7×",
                f"{ours['hundred']['records_per_s']:,.0f} records/s, {hundred['records_per_s']}×",
                _met(ours["hundred"]["records_per_s"] >= 60_000 and (hundred["records_per_s"] or 0) >= 7),
                "",
            )
        )
        latency = open_loop["latency_ms"]
        rows.append(
            (
                "500 records/s open loop: p50 ≤ 5 ms, p99 ≤ 25 ms",
                f"p50 {latency['p50']} ms, p99 {latency['p99']} ms",
                _met(latency["p50"] <= 5 and latency["p99"] <= 25),
                "gateway acceptance → prediction written",
            )
        )
    memory = (e2e or {}).get("memory")
    if memory:
        growth = {name: end - start for name, (start, end) in memory["rss_warm_end_mb"].items()}
        worst_name = max(growth, key=lambda n: growth[n])
        rows.append(
            (
                f"steady memory over {memory['seconds']:.0f} s at {memory['rate']:.0f} records/s",
                f"largest growth {growth[worst_name]:+.2f} MB ({worst_name})",
                _met(all(g <= 5.0 for g in growth.values())),
                "RSS after warm-up vs at the end",
            )
        )
    return rows


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def to_markdown(report: dict[str, Any], command: str) -> str:
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    out = [
        "# Benchmark report",
        "",
        f"Command: `{command}`. Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']}, {m['platform']}.",
        f"Versions: {versions}; redis-server {report.get('redis_server')}. Prometheus metrics in the "
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
        "## 2. What shadow scoring and drift windows cost a worker",
        "",
        "One worker process drains a pre-filled stream (as in the worker drain) of "
        f"{rollout['results'][0]['records']:,} records for {rollout['model']}, in four configurations "
        "that alternate within each of "
        f"{rollout['repeats']} repeats (medians shown). CPU is the worker process's, per record drained; "
        "'extra' is over the champion alone with drift windows off.",
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
        "a call) on the same rows; *inference* is streamml's path through the same model (the numpy",
        "fast path, checked against scikit-learn at load). The naive worker is the original design: one",
        "entry at a time, the model loaded from the registry for each.",
        "",
        "| route | model | records/entry | records/s | model's batch records/s | share | streamml inference "
        "records/s | naive records/s | × naive | CPU s | peak RSS MB | shares, all runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in drain["results"]:
        out.append(
            f"| {r['route']} | {r['model']} | {r['records_per_entry']} | {r['records_per_s']:,} | "
            f"{r['model_batch_records_per_s']:,} | {r['share_of_model_speed']:.0%} | "
            f"{r['inference_records_per_s']:,} | {r['naive_records_per_s']} | {r['speedup_vs_naive']:,} | "
            f"{r['cpu_s']} | {r['peak_rss_mb']} | "
            + ", ".join(f"{x:.0%}" for x in r.get("shares_of_all_runs", [r["share_of_model_speed"]]))
            + " |"
        )
    return out


def _e2e_tables(e2e: dict[str, Any] | None) -> list[str]:
    if not e2e:
        return []
    p = e2e["parameters"]
    out = [
        "",
        "## 3–5. End to end",
        "",
        f"Model {e2e['model']} (route `{e2e['route']}`). streamml: 1 gateway process, {p['workers']} worker "
        f"process(es). `mlflow models serve --env-manager local -w {p['mlflow_serve_workers']}` on a copy "
        "of the same model version. Same complete records and the same asyncio/aiohttp load generator "
        f"(keep-alive connections) for both; closed loops with {p['concurrency']} connections, "
        f"{p['duration_s']:.0f} s each after a warm-up; open loop at {p['open_loop_rate']:.0f} requests/s. "
        "streamml's latency runs from gateway acceptance to the prediction written (stamped in the "
        "message; throughput to the last prediction written); mlflow's is request to response, "
        "since its prediction is the response.",
        "",
        "| scenario | system | requests/s | records/s | p50 ms | p95 ms | p99 ms | max ms | failed | "
        "CPU, cores used | load generator, cores |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in e2e["outcomes"]:
        lat = o["latency_ms"]
        cpu = ", ".join(f"{name} {v['cores']}" for name, v in o["processes"].items())
        out.append(
            f"| {o['scenario']} | {o['system']} | {o['requests_per_s']:,} | {o['records_per_s']:,} | "
            f"{lat['p50']} | {lat['p95']} | {lat['p99']} | {lat['max']} | {o['failed']} | {cpu} | "
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
        "| scenario | streamml ÷ mlflow models serve, requests/s | records/s |",
        "| --- | --- | --- |",
    ]
    out += [f"| {r['scenario']} | {r['requests_per_s']}× | {r['records_per_s']}× |" for r in e2e["ratios"]]
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
            f"{memory['accepted']:,} of {memory['sent']:,} requests accepted. RSS in MB (to the KB), "
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
            f"`STREAMML_RESULT_TTL_S` ({p.get('result_ttl_s', '?')} s in this run) and the results stream "
            "up to its cap (raised for the "
            "benchmark so that every result can be read back), so it grows by design until those limits "
            "take over.",
        ]
    return out
