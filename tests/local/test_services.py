"""The embedded Redis the local stack and the tests start: it comes up even when the port it chose is
taken by another process before the server binds it (nothing reserves a port in between)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from streamml.local.services import LOOPBACK, EmbeddedRedis, free_port, port_is_free

pytestmark = pytest.mark.integration


def test_a_first_start_whose_port_was_taken_meanwhile_answers_on_another_port(tmp_path: Path) -> None:
    chosen = free_port()
    server = EmbeddedRedis(tmp_path / "redis", port=chosen)
    assert server.port == chosen
    with socket.socket() as squatter:  # another process binding the port after it was found free
        squatter.bind((LOOPBACK, chosen))
        squatter.listen()
        assert not port_is_free(chosen)
        server.start()
        try:
            assert server.port != chosen
            assert redis.Redis.from_url(server.url, password=server.password).ping()
        finally:
            server.stop()
