"""Prometheus metrics (off unless `metrics.port` is set): queue depth, tokens generated, time to first token,
errors by kind. Without a port every call is a no-op, and prometheus-client need not be installed."""
from __future__ import annotations

from typing import Callable

from bot.libraries import import_optional


class Metrics:
    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self.enabled = bool(port)
        if not self.enabled:
            return
        prom = import_optional("prometheus_client", "metrics.port")
        self.registry = prom.CollectorRegistry()
        self.queue_depth = prom.Gauge("rwkvbot_queue_depth", "turns generating or waiting for the model",
                                      registry=self.registry)
        self.tokens = prom.Counter("rwkvbot_tokens_generated", "tokens sampled by the model", registry=self.registry)
        self.ttft = prom.Histogram("rwkvbot_time_to_first_token_seconds", "from a turn's arrival at the engine to "
                                   "its first token", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
                                   registry=self.registry)
        self.errors = prom.Counter("rwkvbot_errors", "handled errors by kind", ["kind"], registry=self.registry)
        self.server, self.thread = prom.start_http_server(port, addr=host, registry=self.registry)

    def track_queue(self, depth: Callable[[], int]) -> None:
        if self.enabled:
            self.queue_depth.set_function(depth)

    def token(self, count: int = 1) -> None:
        if self.enabled:
            self.tokens.inc(count)

    def first_token(self, seconds: float) -> None:
        if self.enabled:
            self.ttft.observe(seconds)

    def error(self, kind: str) -> None:
        if self.enabled:
            self.errors.labels(kind=kind).inc()

    def close(self) -> None:
        if self.enabled:
            self.server.shutdown()


NO_METRICS = Metrics(0)
