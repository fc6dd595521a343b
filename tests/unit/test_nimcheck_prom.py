"""Metrics scrapes: valid Prometheus text, NIM's series found (with or without vLLM's prefix)."""

from __future__ import annotations

import pytest

from nimcheck.prom import NIM_SERIES, parse

NIM_TEXT = """\
# HELP num_requests_running Number of requests currently running on GPU.
# TYPE num_requests_running gauge
num_requests_running{model_name="meta/llama-3.1-8b-instruct"} 0.0
# HELP prompt_tokens_total Number of prefill tokens processed.
# TYPE prompt_tokens_total counter
prompt_tokens_total{model_name="meta/llama-3.1-8b-instruct"} 12.0
# HELP e2e_request_latency_seconds Histogram of end to end request latency in seconds.
# TYPE e2e_request_latency_seconds histogram
e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 1.0
e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 1.0
e2e_request_latency_seconds_sum{model_name="m"} 0.2
e2e_request_latency_seconds_count{model_name="m"} 1.0
"""


def test_nim_series_are_recognised_by_sample_name() -> None:
    scrape = parse(NIM_TEXT)
    assert scrape.families == 3
    assert scrape.samples == 6
    assert scrape.present == (
        "num_requests_running",
        "prompt_tokens_total",
        "e2e_request_latency_seconds",
    )
    assert len(scrape.missing) == len(NIM_SERIES) - 3


def test_vllm_prefixed_names_count_as_nim_series() -> None:
    text = '# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name="m"} 0\n'
    assert parse(text).present == ("num_requests_waiting",)


@pytest.mark.parametrize("text", ["<html>not found</html>", "", "metric{unterminated 1\n"])
def test_anything_else_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r".+"):
        parse(text)
