"""The live dashboard in a real headless Chromium (Debian's, driven by Playwright): its numbers move and
match what was sent, it shows the registered model version, and a Redis outage shows as such.

Skipped, saying why, where Chromium or Playwright is missing (`.ci/run` installs Debian's chromium).
Set STREAMML_DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the README's screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from streamml.local.services import EmbeddedRedis, ManagedProcess, wait_until_healthy
from streamml.settings import DEFAULT_ROUTES, Settings
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile
from tests.helpers import register_challenged, start_worker

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Flags this machine needs: no sandbox as root, and no background calls to hosts it cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
StartGateway = Callable[..., tuple[str, Settings]]
FEATURE = "Mental Fatigue Score"


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian package 'chromium'; .ci/run installs it)"
)
def test_dashboard_shows_live_numbers_model_versions_challengers_drift_and_a_redis_outage(
    start_gateway: StartGateway, tmp_path: Path, tracking_uri: str
) -> None:
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (a dev dependency)"
    )
    # A route whose model has a challenger (v2, another algorithm), for the Challengers panel.
    name = register_challenged(tracking_uri, "Dashboard")
    env = {
        "STREAMML_MLFLOW_ROUTES": json.dumps(DEFAULT_ROUTES | {"shadowed": f"models:/{name}@champion"}),
        "STREAMML_DRIFT_PUBLISH_S": "0.5",
        "STREAMML_DRIFT_MAX_RECORDS_PER_S": "0",  # every record, so the panel can be checked exactly
    }
    redis = EmbeddedRedis(tmp_path / "redis").start()  # this test stops it: its own server
    worker: ManagedProcess | None = None
    try:
        url, settings = start_gateway(redis.url, **env)
        worker = start_worker(settings, tracking_uri, tmp_path / "worker.log", env=env)
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/dashboard")
            expect = playwright_api.expect
            expect(page.get_by_test_id("redis-state")).to_have_text("ok", timeout=30_000)

            wait_until_healthy(f"{url}/ready", worker, timeout_s=60)  # the worker has loaded its models
            records = record_stream(Profile.load(), seed=3)
            sent = {"svm": 0, "lightgbm": 0, "shadowed": 0}
            svm_requests = []
            for index in range(30):  # over about four seconds, so the charts have a shape
                page.wait_for_timeout(150)
                route = ("svm", "lightgbm", "shadowed")[index % 3]
                batch = [next(records) for _ in range(120 if route == "lightgbm" else 3)]
                response = httpx.post(f"{url}/predict_stream", params={"model": route}, json={"data": batch})
                assert response.status_code == 202, response.text
                sent[route] += len(batch)
                if route == "svm":
                    svm_requests.append(response.json()["request_id"])

            total = sum(sent.values())
            expect(page.get_by_test_id("accepted-total")).to_have_text(f"{total:,}", timeout=30_000)
            expect(page.get_by_test_id("predicted-total")).to_have_text(f"{total:,}", timeout=30_000)
            expect(page.get_by_test_id("predicted-svm")).to_have_text(f"{sent['svm']:,}")
            expect(page.get_by_test_id("version-svm")).to_have_text("1")
            expect(page.get_by_test_id("model-lightgbm")).to_have_text("LightGBM_Classifier")

            # The panels show what the API reports: the challenger's agreement and flips, the drift.
            page.wait_for_timeout(1500)  # the workers' drift windows are published
            [pair] = httpx.get(f"{url}/shadow", params={"route": "shadowed"}).json()["pairs"]
            assert pair["records_compared"] == sent["shadowed"]
            expect(page.get_by_test_id("agreement-shadowed")).to_have_text(
                f"{100 * pair['agreement']:.1f} %", timeout=10_000
            )
            for champion, row in pair["flips"].items():
                for challenger, count in row.items():
                    cell = page.get_by_test_id(f"flip-shadowed-{champion}-{challenger}")
                    expect(cell).to_have_text(str(count))
            drift = httpx.get(f"{url}/drift", params={"route": "lightgbm"}).json()["routes"]["lightgbm"]
            assert drift["records"] == sent["lightgbm"]
            expect(page.get_by_test_id("drift-status-lightgbm")).to_have_text(drift["status"], timeout=10_000)
            scores = {name: f["score"] for name, f in drift["features"].items() if f["score"] is not None}
            top = max(scores, key=lambda name: scores[name])
            expect(page.get_by_test_id("drift-top-lightgbm")).to_have_text(f"top: {top} {scores[top]:.3f}")
            feature = page.get_by_test_id(f"drift-lightgbm-{FEATURE}")
            expect(feature).to_be_hidden()  # one line per route; its table opens on a click
            page.get_by_test_id("drift-line-lightgbm").click()
            expect(feature).to_be_visible()
            expect(feature).to_contain_text(f"{drift['features'][FEATURE]['score']:.3f}")

            # Feedback: every svm record labelled, the first of each request wrongly.
            feedback = []
            for request_id in svm_requests:
                predicted = httpx.get(f"{url}/predictions/{request_id}").json()["predictions"]
                for index, label in enumerate(predicted):
                    feedback.append(
                        {"request_id": request_id, "record_index": index, "label": label + "?" * (index == 0)}
                    )
            assert (
                httpx.post(f"{url}/feedback", json={"feedback": feedback}).json()["recorded"] == sent["svm"]
            )
            [version] = httpx.get(f"{url}/accuracy", params={"route": "svm"}).json()["versions"]
            assert version["total"]["accuracy"] == pytest.approx(2 / 3)
            expect(page.get_by_test_id("accuracy-svm-1")).to_have_text(
                f"{100 * version['total']['accuracy']:.1f} %", timeout=10_000
            )
            page.wait_for_timeout(2500)  # a few points on the charts
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            target = os.environ.get("STREAMML_DASHBOARD_SCREENSHOT")
            if target:
                page.screenshot(path=target, full_page=True)

            redis.stop()  # the outage
            expect(page.get_by_test_id("redis-state")).to_have_text("down", timeout=30_000)
            expect(page.get_by_test_id("banner")).to_contain_text("Redis is unreachable")
            # the last known figures stay on the page, marked by the banner, rather than blanking
            expect(page.get_by_test_id("predicted-total")).to_have_text(f"{total:,}")
            page.screenshot(path=str(tmp_path / "dashboard-redis-down.png"), full_page=True)
            browser.close()
    finally:
        if worker is not None:
            worker.stop()
        redis.stop()
