"""Is a metrics answer Prometheus text, and which of NIM's documented series does it carry?

NIM for LLMs serves Prometheus metrics at /v1/metrics (older releases at /metrics), labelled
with ``model_name`` (https://docs.nvidia.com/nim/large-language-models/latest/observability.html).
Parsing uses prometheus_client's own text parser, the format's reference implementation in
Python, so "scrapes" means what it means to a Prometheus server.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

PATHS = ("/v1/metrics", "/metrics")
NIM_SERIES = (
    "num_requests_running",
    "num_requests_waiting",
    "num_request_max",
    "gpu_cache_usage_perc",
    "prompt_tokens_total",
    "generation_tokens_total",
    "time_to_first_token_seconds",
    "time_per_output_token_seconds",
    "e2e_request_latency_seconds",
    "request_prompt_tokens",
    "request_generation_tokens",
    "request_success_total",
)


@dataclass(frozen=True)
class Scrape:
    families: int
    samples: int
    present: tuple[str, ...]
    """NIM series found (sample names, so counters match with their _total suffix)."""
    missing: tuple[str, ...]


def parse(text: str) -> Scrape:
    """Raises ValueError when the text is not in the Prometheus exposition format."""
    families = 0
    samples = 0
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        families += 1
        names.add(family.name)
        for sample in family.samples:
            samples += 1
            names.add(sample.name)
    if families == 0:
        raise ValueError("no metric families in the answer")
    present = tuple(n for n in NIM_SERIES if _has(names, n))
    missing = tuple(n for n in NIM_SERIES if n not in present)
    return Scrape(families, samples, present, missing)


def _has(names: set[str], series: str) -> bool:
    """Histograms expose name_bucket/_sum/_count; vLLM prefixes every series with vllm:."""
    candidates = {series, f"vllm:{series}"}
    return any(
        n in candidates or n.removesuffix(suffix) in candidates
        for n in names
        for suffix in ("_bucket", "_sum", "_count", "_total")
    )
