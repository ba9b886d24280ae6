"""Every Prometheus metric Tickwire exports, declared in one place.

Names carry base units (``_seconds``, ``_total``); labels are bounded (topic, table,
reason, partition number), never ids or offsets. Throughput is ``rate(..._total)``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

log = logging.getLogger("tickwire.broker")

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """The metric families of one process, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.consumed = Counter(
            "tickwire_messages_consumed_total", "Messages read from a topic", ["topic"], registry=registry
        )
        self.produced = Counter(
            "tickwire_messages_produced_total", "Messages written to a topic", ["topic"], registry=registry
        )
        self.dlq = Counter(
            "tickwire_dlq_messages_total", "Messages sent to the DLQ", ["topic", "reason"], registry=registry
        )
        self.duplicates = Counter(
            "tickwire_duplicates_dropped_total", "Messages dropped as exact duplicates (same id or bar)", ["topic"], registry=registry
        )
        self.late_bars = Counter(
            "tickwire_late_bars_total",
            "Bars that arrived after their timestamp was closed by the correlation watermark (dropped)",
            ["topic"],
            registry=registry,
        )
        self.rows_written = Counter(
            "tickwire_rows_written_total", "Rows committed to a table (after de-duplication)", ["table"], registry=registry
        )
        self.batch_rows = Histogram(
            "tickwire_batch_rows",
            "Rows per database batch",
            ["table"],
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000),
            registry=registry,
        )
        self.flush_seconds = Histogram(
            "tickwire_flush_duration_seconds", "Time to write and commit one batch", ["table"], registry=registry
        )
        self.db_retries = Counter(
            "tickwire_db_retries_total", "Batches retried after a retriable database error", ["table"], registry=registry
        )
        self.event_latency = Histogram(
            "tickwire_event_latency_seconds",
            "Wall-clock time from a record's event time to the moment it was committed at a stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.db_backoff_seconds = Counter(
            "tickwire_db_backoff_seconds_total", "Time spent waiting before retrying the database", ["table"], registry=registry
        )
        self.publish_latency = Histogram(
            "tickwire_publish_latency_seconds",
            "Wall-clock time from a record's Kafka timestamp (publish) to its commit at a stage; "
            "one observation per partition and batch, for its oldest record",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.rebalances = Counter(
            "tickwire_rebalances_total", "Consumer group rebalances this process went through", registry=registry
        )
        self.state_bytes = Gauge(
            "tickwire_state_bytes", "Serialized size of the stream state this process holds", ["table"], registry=registry
        )
        self.maintenance_runs = Counter(
            "tickwire_maintenance_runs_total", "Rounds of `tickwire maintain --every`, by result", ["result"], registry=registry
        )
        self.batch_retries = Counter(
            "tickwire_worker_batch_retries_total",
            "Attempts to deliver a batch's outputs or write its state that failed and were retried (offsets stay uncommitted)",
            ["stage", "step"], registry=registry,
        )
        self.state_resets = Counter(
            "tickwire_state_resets_total", "Stored states that could not be decoded and started afresh", ["table"],
            registry=registry,
        )
        # Per timeframe and regime, not per symbol: 10,000 symbols would be 200,000 series.
        # Each symbol's regime is in md.regimes.v1 and the regime_changes table.
        self.symbols_by_regime = Gauge(
            "tickwire_symbols_by_regime",
            "Symbols of this worker whose latest reading is in the regime, per timeframe",
            ["timeframe", "regime"],
            registry=registry,
        )
        # Per rule, not per portfolio: each breach, with its portfolio, is in exec.risk_events.v1.
        self.unjoined_decisions = Counter(
            "tickwire_decisions_unjoined_total",
            "Sizing and exit decisions dropped after a week of event time without their trade ever closing here, per kind",
            ["kind"], registry=registry,
        )
        self.risk_breaches = Counter(
            "tickwire_risk_breaches_total", "Portfolio risk limits crossed (BREACH events), per rule", ["rule"], registry=registry,
        )
        self.ready = Gauge("tickwire_ready", "1 while the process is ready (/readyz answers 200)", registry=registry)
        self._ready_parts: dict[str, bool] = {}
        self.lag = Gauge(
            "tickwire_consumer_lag_messages",
            "End offset minus the consumer's position: its committed offset (sinks) or the offset due next (worker)",
            ["topic", "partition"],
            registry=registry,
        )

    def set_ready(self, ready: bool, part: str = "process") -> None:
        """Mark one dependency (``process``, ``broker``, ``database``) ready or not;
        the process is ready when every part marked so far is. /readyz and
        ``tickwire_ready`` follow."""
        self._ready_parts[part] = ready
        self.ready.set(1 if self.is_ready else 0)

    @property
    def is_ready(self) -> bool:
        return bool(self._ready_parts) and all(self._ready_parts.values())


async def watch_broker(metrics: Metrics, bootstrap: str, *, interval_s: float = 2.0, timeout_s: float = 2.0) -> None:
    """Keep readiness part ``broker`` true while a bootstrap broker accepts TCP connections.

    Kafka clients retry through an outage; this makes the outage visible on /readyz and in
    ``tickwire_ready`` without reaching into a client's internals, and logs one line when
    the broker goes and one when it is back (the clients' own repeated errors are
    collapsed, see ``jsonlog.RepeatFilter``).
    """
    servers = [server.rsplit(":", 1) for server in bootstrap.split(",")]
    lost_at: float | None = None
    while True:
        reachable = False
        for host, port in servers:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
            except (OSError, asyncio.TimeoutError):
                continue
            writer.close()
            reachable = True
            break
        metrics.set_ready(reachable, "broker")
        if not reachable and lost_at is None:
            lost_at = time.monotonic()
            log.error("no broker of %s accepts connections", bootstrap)
        elif reachable and lost_at is not None:
            log.warning("a broker of %s accepts connections again after %.0f s", bootstrap, time.monotonic() - lost_at)
            lost_at = None
        await asyncio.sleep(interval_s)


class _QuietHandler(WSGIRequestHandler):
    # A connection that sends nothing (or too slowly) is closed: each one holds a thread.
    timeout = 10.0

    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    max_connections = 32  # scrapers and probes, not a public site: past this, refused at once

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def serve(metrics: Metrics, *, host: str, port: int) -> WSGIServer:
    """Serve ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (``metrics.ready`` is 1) on a thread."""
    prometheus = make_wsgi_app(metrics.registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            ready = metrics.is_ready
            start_response("200 OK" if ready else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ready\n" if ready else b"not ready\n"]
        return prometheus(environ, start_response)

    server = make_server(host, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
