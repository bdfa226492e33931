"""The benchmark report says what the run measured: scenarios found by key, settings from the run."""

from __future__ import annotations

from typing import Any

from streamml.bench import report


def run(label_prefix: str, ttl_s: int) -> dict[str, Any]:
    def outcome(key: str, system: str, **figures: Any) -> dict[str, Any]:
        latency = {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0}
        return {
            "key": key,
            "scenario": f"{label_prefix} {key}",
            "system": system,
            "requests_per_s": 100,
            "records_per_s": 100,
            "latency_ms": latency,
            "failed": 0,
            "processes": {},
            "load_generator_cores": 0.1,
        } | figures

    outcomes = [outcome(k, s) for k in ("single", "hundred", "open_loop") for s in ("streamml", "mlflow")]
    outcomes[2]["records_per_s"] = 70_000
    return {
        "command": "streamml bench",
        "machine": {
            "cpu": "x",
            "cores": 2,
            "memory_gib": 1,
            "python": "3.11",
            "platform": "linux",
            "packages": {},
        },
        "endtoend": {
            "model": "M v1",
            "route": "lightgbm",
            "parameters": {
                "workers": 1,
                "mlflow_serve_workers": 2,
                "concurrency": 8,
                "duration_s": 3,
                "open_loop_rate": 500,
                "result_ttl_s": ttl_s,
            },
            "outcomes": outcomes,
            "ratios": [
                {"key": k, "scenario": f"{label_prefix} {k}", "requests_per_s": 30.0, "records_per_s": 9.0}
                for k in ("single", "hundred", "open_loop")
            ],
            "memory": {
                "seconds": 10,
                "rate": 500,
                "sent": 5,
                "accepted": 5,
                "every_s": 1,
                "warm_s": 2,
                "samples": [{"t_s": 0, "gateway": 1.0, "redis_used_memory": 1.0}],
                "rss_warm_end_mb": {"gateway": [1.0, 1.0]},
            },
        },
    }


def test_headline_finds_scenarios_by_key_whatever_their_labels() -> None:
    for prefix in ("2.", "renamed"):
        rows = report.headline(run(prefix, 3600))
        measured = {target: value for target, value, _, _ in rows}
        assert any(value.startswith("30.0×") for value in measured.values()), measured
        assert any("70,000 records/s" in value for value in measured.values()), measured


def test_the_report_states_the_result_ttl_the_run_used() -> None:
    text = report.to_markdown(run("x", 120), "streamml bench")
    assert "(120 s in this run)" in text
    assert "issue" not in text.lower()
    assert "an hour" not in text


def test_cpu_and_client_latency_targets_are_judged_from_the_runs_figures() -> None:
    result = run("x", 3600)
    ours = {o["key"]: o for o in result["endtoend"]["outcomes"] if o["system"] == "streamml"}
    ours["single"]["cpu_ms_per_request"] = {"gateway": 0.3, "worker-1": 0.2}
    ours["hundred"]["cpu_us_per_record"] = {"gateway": 9.0, "worker-1": 11.5}
    ours["open_loop"]["client_latency_ms"] = {"p50": 3.0, "p99": 16.0}
    verdicts = {target: (value, met) for target, value, met, _ in report.headline(result)}
    assert verdicts["gateway CPU ≤ 0.25 ms per single-record request"] == ("0.3 ms", "**no**")
    assert verdicts["worker CPU ≤ 12 µs per record at 100 records per entry"] == ("11.5 µs", "yes")
    assert verdicts["open loop: client-observed POST /predict round trip p99 ≤ 15 ms"] == (
        "p50 3.0 ms, p99 16.0 ms",
        "**no**",
    )


def test_a_run_against_mlserver_alone_is_judged_against_mlservers_targets_only() -> None:
    result = run("x", 3600)
    result["endtoend"]["ratios"] = [
        {
            "key": "single",
            "scenario": "x single",
            "peer": "MLServer",
            "requests_per_s": 2.2,
            "records_per_s": 2.2,
        },
        {
            "key": "v2_hundred",
            "scenario": "x v2",
            "peer": "MLServer",
            "requests_per_s": 0.6,
            "records_per_s": 0.6,
        },
    ]
    result["endtoend"]["outcomes"].append(
        {"key": "v2_hundred", "system": "streamml", "requests_per_s": 290, "records_per_s": 29_025}
    )
    verdicts = {target: (value, met) for target, value, met, _ in report.headline(result)}
    assert not any("mlflow models serve" in target for target in verdicts)
    assert verdicts["end to end (/predict_stream), 1 record/request: ≥ 6× MLServer (adaptive batching)"] == (
        "2.2× (100 requests/s)",
        "**no**",
    )
    assert verdicts["the identical V2 infer request, 100 records: ≥ 2× MLServer (adaptive batching)"] == (
        "0.6× (29,025 records/s)",
        "**no**",
    )
