"""Prometheus metrics for one simulator instance, under NIM's names.

Each instance owns its registry because many simulators share one process in
tests and in the pod runner; the global registry would merge their series and
refuse duplicate names.

Names, types and help texts follow NIM for LLMs' observability table
(https://docs.nvidia.com/nim/large-language-models/latest/observability.html:
``gpu_cache_usage_perc``, ``num_requests_running``, ``num_requests_waiting``,
``num_request_max``, ``prompt_tokens_total``, ``generation_tokens_total``,
``time_to_first_token_seconds``, ``time_per_output_token_seconds``,
``e2e_request_latency_seconds``, ``request_prompt_tokens``,
``request_generation_tokens``, ``request_success_total``), which are vLLM's
metrics without the ``vllm:`` prefix; buckets and the ``finished_reason`` label
of ``request_success_total`` are vLLM's (``vllm/engine/metrics.py``,
``vllm/v1/metrics/loggers.py``). Every series carries ``model_name``. The
simulator's own HTTP series are prefixed ``nimsim_``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "FINISHED_REASONS", "SimMetrics", "build_1_2_5_buckets"]

FINISHED_REASONS = ("stop", "length", "abort")
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
               120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip


def build_1_2_5_buckets(maximum: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to ``maximum``, as vLLM buckets token counts."""
    buckets: list[float] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > maximum:
                return tuple(buckets)
            buckets.append(float(value))
        exponent += 1


class SimMetrics:
    """The registry and the handles the request handlers update."""

    def __init__(
        self,
        model: str,
        is_ready: Callable[[], bool],
        *,
        max_model_len: int,
        max_running: int,
        kv_cache_usage: Callable[[], float],
    ) -> None:
        self.registry = registry = CollectorRegistry()
        labels = ["model_name"]
        self.http_requests = Counter(
            "nimsim_http_requests",
            "HTTP requests served, by route, method and status.",
            ["path", "method", "status"],
            registry=registry,
        )
        self.http_latency = Histogram(
            "nimsim_http_request_duration_seconds",
            "Time to produce an HTTP response, including injected delays.",
            ["path"],
            registry=registry,
        )
        ready = Gauge(
            "nimsim_ready", "1 while /v1/health/ready answers 200, else 0.", registry=registry
        )
        ready.set_function(lambda: 1.0 if is_ready() else 0.0)

        cache = Gauge(
            "gpu_cache_usage_perc",
            "GPU KV-cache usage. 1 means 100 percent usage.",
            labels,
            registry=registry,
        ).labels(model)
        cache.set_function(kv_cache_usage)
        self.requests_running = Gauge(
            "num_requests_running",
            "Number of requests currently running on GPU.",
            labels,
            registry=registry,
        ).labels(model)
        self.requests_waiting = Gauge(
            "num_requests_waiting",
            "Number of requests waiting to be processed.",
            labels,
            registry=registry,
        ).labels(model)
        Gauge(
            "num_request_max",
            "Max number of concurrently running requests.",
            labels,
            registry=registry,
        ).labels(model).set(max_running)
        self.prompt_tokens = Counter(
            "prompt_tokens", "Number of prefill tokens processed.", labels, registry=registry
        ).labels(model)
        self.generation_tokens = Counter(
            "generation_tokens",
            "Number of generation tokens processed.",
            labels,
            registry=registry,
        ).labels(model)
        self.time_to_first_token = Histogram(
            "time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=registry,
        ).labels(model)
        self.time_per_output_token = Histogram(
            "time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            labels,
            buckets=TPOT_BUCKETS,
            registry=registry,
        ).labels(model)
        self.e2e_latency = Histogram(
            "e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds.",
            labels,
            buckets=E2E_BUCKETS,
            registry=registry,
        ).labels(model)
        token_buckets = build_1_2_5_buckets(max_model_len)
        self.request_prompt_tokens = Histogram(
            "request_prompt_tokens",
            "Histogram of number of prefill tokens processed.",
            labels,
            buckets=token_buckets,
            registry=registry,
        ).labels(model)
        self.request_generation_tokens = Histogram(
            "request_generation_tokens",
            "Histogram of number of generation tokens processed.",
            labels,
            buckets=token_buckets,
            registry=registry,
        ).labels(model)
        success = Counter(
            "request_success",
            "Count of successfully processed requests.",
            [*labels, "finished_reason"],
            registry=registry,
        )
        self.request_success = {
            reason: success.labels(model, reason) for reason in FINISHED_REASONS
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)
