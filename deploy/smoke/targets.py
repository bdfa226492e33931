"""Whether Prometheus scrapes the gateway and every worker replica, for the compose smoke run.

    targets.py --url http://127.0.0.1:9090 --workers 3

Waits until the gateway's target and as many worker targets as replicas answer ("up"), then prints them;
exits non-zero with each target's last error when they do not within the timeout.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import httpx


def scraped(url: str, workers: int, timeout_s: float = 90) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        answer = httpx.get(f"{url}/api/v1/targets", timeout=5).json()
        targets = answer["data"]["activeTargets"]
        health: dict[str, list[str]] = defaultdict(list)
        for target in targets:
            health[target["labels"]["job"]].append(target["health"])
        if health["streamml-gateway"] == ["up"] and health["streamml-worker"].count("up") == workers:
            series = httpx.get(f"{url}/api/v1/query", params={"query": "up == 1"}, timeout=5).json()
            print(
                f"prometheus: gateway up, {workers} of {workers} worker replicas up "
                f"({len(series['data']['result'])} targets answering)"
            )
            return 0
        if time.monotonic() > deadline:
            errors = {target["scrapeUrl"]: target.get("lastError") for target in targets}
            print(f"prometheus targets: {dict(health)}; errors: {errors}")
            return 1
        time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--workers", type=int, required=True)
    args = parser.parse_args()
    return scraped(args.url, args.workers)


if __name__ == "__main__":
    sys.exit(main())
