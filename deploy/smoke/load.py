"""Load for the compose smoke run, and its reconciliation.

    load.py --url URL --api-key-file KEY --seconds 20 --rate 100 --out sent.json   # one record a request
    load.py --url URL --api-key-file KEY --reconcile sent.json   # every accepted request predicted?

A request refused while Redis restarts (503, or no answer) is counted as refused, not lost: the gateway
said so. A request accepted (202) must end with its prediction: accepted but never predicted is lost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx

RECORD = {"Designation": 1.5, "Resource_Allocation": 1.7, "Sleep_Hours": 7}


def client(url: str, key_file: Path | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"} if key_file else {}
    return httpx.Client(base_url=url, timeout=5, headers=headers)


def send(url: str, key_file: Path | None, seconds: float, rate: float, out: Path) -> None:
    accepted: list[str] = []
    refused = 0
    sent = 0
    started = time.monotonic()
    with client(url, key_file) as http:
        while time.monotonic() - started < seconds:
            due = started + sent / rate
            time.sleep(max(due - time.monotonic(), 0))
            sent += 1
            try:
                response = http.post("/predict_stream", params={"model": "lightgbm"}, json={"data": [RECORD]})
            except httpx.HTTPError:
                refused += 1
                continue
            if response.status_code == 202:
                accepted.append(response.json()["request_id"])
            else:
                refused += 1
    out.write_text(json.dumps({"sent": sent, "refused": refused, "accepted": accepted}))
    print(f"sent {sent}, accepted {len(accepted)}, refused {refused} (while Redis restarted)")


def reconcile(url: str, key_file: Path | None, sent_file: Path, timeout_s: float = 120) -> int:
    record = json.loads(sent_file.read_text())
    waiting = set(record["accepted"])
    deadline = time.monotonic() + timeout_s
    with client(url, key_file) as http:
        while waiting and time.monotonic() < deadline:
            for request_id in list(waiting):
                try:
                    response = http.get(f"/predictions/{request_id}")
                except httpx.HTTPError:
                    continue
                if response.status_code == 200 and response.json().get("status") == "done":
                    waiting.discard(request_id)
            if waiting:
                time.sleep(1)
    accepted = len(record["accepted"])
    print(
        f"reconciliation: sent={record['sent']}, accepted={accepted}, predicted={accepted - len(waiting)}, "
        f"refused={record['refused']}, lost={len(waiting)}"
    )
    return 1 if waiting else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--api-key-file", type=Path, help="a file with the API key to send")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--reconcile", type=Path)
    args = parser.parse_args()
    if args.reconcile:
        return reconcile(args.url, args.api_key_file, args.reconcile)
    send(args.url, args.api_key_file, args.seconds, args.rate, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
