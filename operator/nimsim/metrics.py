"""Prometheus metrics for one simulator instance.

Each instance owns its registry because many simulators share one process in
tests and in the pod runner; the global registry would merge their series and
refuse duplicate names. Series a real NIM exposes on ``/v1/metrics`` keep NIM's
names (``num_requests_running``, ``prompt_tokens_total``, ...) so dashboards
and autoscaling rules can be exercised against the simulator; the
simulator-specific HTTP series are prefixed ``nimsim_``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "SimMetrics"]


class SimMetrics:
    def __init__(self, model: str, is_ready: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        self.http_requests = Counter(
            "nimsim_http_requests",
            "HTTP requests served, by route, method and status.",
            ["path", "method", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "nimsim_http_request_duration_seconds",
            "Time to produce an HTTP response, including injected delays.",
            ["path"],
            registry=self.registry,
        )
        ready = Gauge(
            "nimsim_ready",
            "1 while /v1/health/ready answers 200, else 0.",
            registry=self.registry,
        )
        ready.set_function(lambda: 1.0 if is_ready() else 0.0)
        self.prompt_tokens = Counter(
            "prompt_tokens", "Number of prefill tokens processed.", labels, registry=self.registry
        ).labels(model)
        self.generation_tokens = Counter(
            "generation_tokens",
            "Number of generation tokens processed.",
            labels,
            registry=self.registry,
        ).labels(model)
        self.requests_running = Gauge(
            "num_requests_running",
            "Number of requests currently being generated.",
            labels,
            registry=self.registry,
        ).labels(model)
        # The simulator never queues, but dashboards expect the series to exist.
        Gauge(
            "num_requests_waiting",
            "Number of requests waiting to be processed.",
            labels,
            registry=self.registry,
        ).labels(model).set(0)
        self.e2e_latency = Histogram(
            "e2e_request_latency_seconds",
            "End-to-end latency of chat completion requests.",
            labels,
            registry=self.registry,
        ).labels(model)

    def render(self) -> bytes:
        return generate_latest(self.registry)
