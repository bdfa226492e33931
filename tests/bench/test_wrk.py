"""The benchmarks' wrk driver, against a real HTTP server: it sends the given bodies in turn and reads
back requests, non-2xx answers, answer-time percentiles and its own CPU (the figures of
``streamml bench --cluster`` and docs/scaling.md come through here)."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from streamml.bench import wrk
from streamml.local.services import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"),
]


class Answers(http.server.BaseHTTPRequestHandler):
    """202 to body "a", 503 to anything else; keeps the bodies it was sent."""

    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Answers.bodies.append(body)
        self.send_response(202 if body == b'"a"' else 503)
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


def test_wrk_sends_the_bodies_in_turn_and_reports_answers_refusals_and_percentiles(
    server: str, tmp_path: Path
) -> None:
    run = wrk.run(server, [b'"a"', b'"b"'], connections=2, duration_s=1, scratch=tmp_path)
    sent = Answers.bodies
    assert set(sent) == {b'"a"', b'"b"'}
    assert abs(sent.count(b'"a"') - sent.count(b'"b"')) <= 2  # in turn, per connection
    assert run.requests > 0
    assert 0 < run.non_2xx < run.requests  # the "b" half was refused
    assert set(run.latency_ms) == {"p50", "p90", "p99"}
    assert 0 < run.latency_ms["p50"] <= run.latency_ms["p90"] <= run.latency_ms["p99"]
    assert run.cpu_s > 0
