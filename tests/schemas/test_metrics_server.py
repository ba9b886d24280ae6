"""The /metrics server: silent connections are closed, and a flood of them cannot take a
thread each without bound, while scrapes go on."""

from __future__ import annotations

import socket
import time
import urllib.request

from prometheus_client import CollectorRegistry

from tickwire.schemas import metrics as metrics_module
from tickwire.schemas.metrics import Metrics, serve
from tests.conftest import free_port


def test_silent_connections_are_closed_and_bounded_while_scrapes_go_on(monkeypatch):
    monkeypatch.setattr(metrics_module._QuietHandler, "timeout", 0.5)
    monkeypatch.setattr(metrics_module._ThreadingWSGIServer, "max_connections", 4)
    port = free_port()
    server = serve(Metrics(CollectorRegistry()), host="127.0.0.1", port=port)
    try:
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        time.sleep(0.2)
        extra = silent[-1]
        extra.settimeout(2)
        assert extra.recv(1) == b""  # past the bound: closed at once
        time.sleep(1.0)  # the held ones time out and free their threads
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read() == b"ok\n"
        silent[0].settimeout(2)
        assert silent[0].recv(1) == b""  # closed by the handler's timeout
        for sock in silent:
            sock.close()
    finally:
        server.shutdown()
        server.server_close()
