"""NIM's Prometheus metrics on a live simulator, moving with the load it serves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nimsim import SimConfig, Simulator
from nimsim.metrics import build_1_2_5_buckets

MODEL = "meta/llama-3.1-8b-instruct"
LABEL = (("model_name", MODEL),)
CHAT = "/v1/chat/completions"
NIM_METRICS = {
    "gpu_cache_usage_perc": "gauge",
    "num_requests_running": "gauge",
    "num_requests_waiting": "gauge",
    "num_request_max": "gauge",
    "prompt_tokens": "counter",
    "generation_tokens": "counter",
    "time_to_first_token_seconds": "histogram",
    "time_per_output_token_seconds": "histogram",
    "e2e_request_latency_seconds": "histogram",
    "request_prompt_tokens": "histogram",
    "request_generation_tokens": "histogram",
    "request_success": "counter",
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings.setdefault("port", 0)
    settings.setdefault("load_delay", 0.0)
    async with (
        Simulator(SimConfig(**settings)) as sim,
        httpx.AsyncClient(base_url=sim.url, timeout=10.0, trust_env=False) as client,
    ):
        yield client


async def scrape(client: httpx.AsyncClient, path: str = "/v1/metrics") -> Samples:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


@pytest.mark.parametrize("path", ["/v1/metrics", "/metrics"])
async def test_every_nim_metric_has_its_type_and_model_label(path: str) -> None:
    async with serving() as client:
        text = (await client.get(path)).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in NIM_METRICS.items():
        assert families[name].type == kind, name
        for sample in families[name].samples:
            if not sample.name.endswith("_created"):
                assert sample.labels["model_name"] == MODEL, sample
    finished = {s.labels["finished_reason"] for s in families["request_success"].samples}
    assert finished == {"stop", "length", "abort"}


async def test_counters_and_histograms_move_with_requests() -> None:
    async with serving() as client:
        before = await scrape(client)
        assert before[("num_request_max", LABEL)] == 256
        assert before[("e2e_request_latency_seconds_count", LABEL)] == 0
        # 15 prompt + 8 completion tokens (the reference's numbers), finished by "stop".
        await client.post(CHAT, json=chat("What is the capital of France?"))
        # 10 prompt tokens, cut at 5 by length.
        await client.post(CHAT, json=chat("Explain GPUs", max_tokens=5))
        # Not generated: no metrics.
        await client.post(CHAT, json=chat("x", max_tokens=0))
        after = await scrape(client)
    assert after[("prompt_tokens_total", LABEL)] == 15 + 10
    assert after[("generation_tokens_total", LABEL)] == 8 + 5
    assert after[("request_success_total", (("finished_reason", "stop"), *LABEL))] == 1
    assert after[("request_success_total", (("finished_reason", "length"), *LABEL))] == 1
    for histogram in (
        "time_to_first_token_seconds",
        "time_per_output_token_seconds",
        "e2e_request_latency_seconds",
        "request_prompt_tokens",
        "request_generation_tokens",
    ):
        assert after[(f"{histogram}_count", LABEL)] == 2, histogram
    assert after[("request_prompt_tokens_sum", LABEL)] == 25
    assert after[("request_generation_tokens_sum", LABEL)] == 13
    assert after[("request_prompt_tokens_bucket", (("le", "10.0"), *LABEL))] == 1
    assert after[("num_requests_running", LABEL)] == 0
    assert after[("gpu_cache_usage_perc", LABEL)] == 0


async def test_streaming_and_completions_count_too() -> None:
    async with serving() as client:
        await client.post(CHAT, json=chat("Count from 1 to 10", stream=True))
        await client.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 3})
        samples = await scrape(client)
    assert samples[("e2e_request_latency_seconds_count", LABEL)] == 2
    assert samples[("generation_tokens_total", LABEL)] == 20 + 3
    assert samples[("request_success_total", (("finished_reason", "length"), *LABEL))] == 1


async def test_running_waiting_and_kv_cache_under_load() -> None:
    async with serving(token_delay=0.05, max_concurrency=1, max_model_len=1000) as client:
        request = chat("Tell me", max_tokens=20)
        pending = [asyncio.create_task(client.post(CHAT, json=request)) for _ in range(3)]
        async with asyncio.timeout(10):
            while True:
                samples = await scrape(client)
                if samples[("num_requests_waiting", LABEL)] == 2:
                    break
                await asyncio.sleep(0.01)
        assert samples[("num_requests_running", LABEL)] == 1
        # One request holds 10 prompt + 20 completion tokens of a 2 x 1000-token cache.
        assert samples[("gpu_cache_usage_perc", LABEL)] == pytest.approx(30 / 2000)
        assert samples[("num_request_max", LABEL)] == 1
        for response in await asyncio.gather(*pending):
            assert response.status_code == 200
        idle = await scrape(client)
    assert idle[("num_requests_running", LABEL)] == idle[("num_requests_waiting", LABEL)] == 0
    assert idle[("gpu_cache_usage_perc", LABEL)] == 0
    # The queued requests waited: their time to first token includes the wait.
    assert idle[("time_to_first_token_seconds_count", LABEL)] == 3


async def test_a_client_that_goes_away_mid_stream_is_an_abort() -> None:
    async with serving(token_delay=0.05) as client:
        async with client.stream("POST", CHAT, json=chat("Tell me a story", stream=True)) as reply:
            async for _ in reply.aiter_bytes():
                break
        async with asyncio.timeout(10):
            while True:
                samples = await scrape(client)
                key = ("request_success_total", (("finished_reason", "abort"), *LABEL))
                if samples[key] == 1:
                    break
                await asyncio.sleep(0.02)
        assert samples[("num_requests_running", LABEL)] == 0


def test_token_buckets_are_vllms_1_2_5_series() -> None:
    assert build_1_2_5_buckets(100) == (1, 2, 5, 10, 20, 50, 100)
    assert build_1_2_5_buckets(131072)[-1] == 100000
