"""The scale-out benchmark's reading of wrk: its rate, non-2xx count and answer-time percentiles, from a
real wrk run against a real HTTP server (the figures docs/scaling.md quotes come through here)."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator

import pytest

from streamml.bench.scaleout import _wrk_latency, _wrk_non_2xx, _wrk_rate
from streamml.local.services import free_port

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)


class Answers(http.server.BaseHTTPRequestHandler):
    """202 to every second request, 503 to the others."""

    count = 0

    def do_GET(self) -> None:
        Answers.count += 1
        self.send_response(202 if Answers.count % 2 else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Answers)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        httpd.shutdown()


def test_wrk_output_gives_rate_refusals_and_answer_time_percentiles(server: str) -> None:
    output = subprocess.run(
        ["wrk", "-t1", "-c2", "-d1s", "--latency", server], capture_output=True, text=True, check=True
    ).stdout
    assert _wrk_rate(output) > 0
    refused = _wrk_non_2xx(output)
    assert refused > 0  # every other answer was a 503
    latency = _wrk_latency(output)
    assert set(latency) == {"p50", "p90", "p99"}
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
