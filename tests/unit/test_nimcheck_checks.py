"""Single checks against canned answers: shapes a real NIM (vLLM) sends that the simulator does
not, and broken answers each check must catch. Each test runs one check over httpx's
MockTransport, so nothing is dialled."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from nimcheck import chat
from nimcheck.checks import CHECKS, Check, CheckResult, Context, Runner, Settings
from nimcheck.progress import Progress
from nimcheck.transport import NimHttp, Reply

MODEL = "meta/llama-3.1-8b-instruct"
Handler = Callable[[httpx.Request], httpx.Response]


def by_name(name: str) -> Check:
    return next(c for c in CHECKS if c.name == name)


def run_checks(handler: Handler, *names: str, **facts: Any) -> list[CheckResult]:
    async def go() -> list[CheckResult]:
        http = NimHttp("http://nim.test", timeout=5, transport=httpx.MockTransport(handler))
        ctx = Context(
            http, MODEL, Settings(requests=2, concurrency=2), Progress(io.StringIO(), False)
        )
        ctx.ready = facts.get("ready", True)
        ctx.serves_model = facts.get("serves_model", True)
        ctx.max_model_len = facts.get("max_model_len")
        try:
            return [await Runner(ctx).one(by_name(n)) for n in names]
        finally:
            await http.aclose()

    return asyncio.run(go())


def completion_body(content: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    body.update(extra)
    return body


def answer(body: Any, status: int = 200) -> Handler:
    return lambda request: httpx.Response(status, json=body)


def sse(*events: str) -> Handler:
    text = "".join(f"data: {e}\n\n" for e in events)
    return lambda request: httpx.Response(
        200, content=text.encode(), headers={"content-type": "text/event-stream"}
    )


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def test_output_containing_a_stop_string_fails() -> None:
    [result] = run_checks(answer(completion_body("1, 2, 3, 4, 5, 6")), "chat.stop")
    assert not result.passed
    assert "output contains stop string ' 5'" in result.detail


@pytest.mark.parametrize(
    ("usage", "message"),
    [
        (None, "no usage object"),
        ({"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 9}, "total_tokens 9 != "),
        ({"prompt_tokens": 5, "completion_tokens": 3}, "lacks integer total_tokens"),
        ({"prompt_tokens": 5, "completion_tokens": 600, "total_tokens": 605}, "outside 1..max"),
        ({"prompt_tokens": 0, "completion_tokens": 3, "total_tokens": 3}, "prompt_tokens is 0"),
    ],
)
def test_usage_must_add_up(usage: dict[str, int] | None, message: str) -> None:
    body = completion_body("Kubernetes is ...")
    body["usage"] = usage
    [result] = run_checks(answer(body), "chat.usage")
    assert not result.passed
    assert message in result.detail


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"object": "text_completion"}, "object is 'text_completion', not 'chat.completion'"),
        ({"model": "other/model"}, "answered as model 'other/model'"),
        ({"choices": []}, "no choices"),
    ],
)
def test_a_chat_answer_of_the_wrong_shape_fails(body: dict[str, Any], message: str) -> None:
    [result] = run_checks(answer(completion_body("Paris.", **body)), "chat.basic")
    assert not result.passed
    assert message in result.detail


def test_an_empty_message_fails() -> None:
    [result] = run_checks(answer(completion_body("  ")), "chat.basic")
    assert result.detail == "choices[0].message.content is empty"


def test_chat_failure_shows_the_status_and_the_servers_message() -> None:
    error = {"error": {"message": "Model is loading", "type": "service_unavailable", "code": 503}}
    [result] = run_checks(answer(error, 503), "chat.basic")
    assert result.detail == "HTTP 503 service_unavailable/503: Model is loading"


def test_older_vllm_flat_errors_count_as_the_model_not_found_shape() -> None:
    flat = {
        "object": "error",
        "message": "The model `invalid-model` does not exist.",
        "type": "NotFoundError",
        "param": None,
        "code": 404,
    }
    [result] = run_checks(answer(flat, 404), "errors.unknown_model")
    assert result.passed
    assert result.detail == "404 NotFoundError/404: The model `invalid-model` does not exist."


def test_a_404_without_an_error_object_is_not_the_model_not_found_shape() -> None:
    html: Handler = lambda request: httpx.Response(404, text="<html>404 Not Found</html>")  # noqa: E731
    [result] = run_checks(html, "errors.unknown_model")
    assert not result.passed
    assert "404 without an OpenAI-style error object" in result.detail


def test_an_unknown_model_accepted_is_a_failure() -> None:
    [result] = run_checks(answer(completion_body("hi")), "errors.unknown_model")
    assert not result.passed
    assert "expected 404 for model 'invalid-model', got HTTP 200" in result.detail


def test_max_tokens_goes_one_past_the_advertised_context() -> None:
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content)["max_tokens"])
        error = {"error": {"message": "'max_tokens' is too large", "type": "BadRequestError"}}
        return httpx.Response(400, json=error)

    [result] = run_checks(handler, "errors.max_tokens", max_model_len=131072)
    assert result.passed
    assert seen == [131073]
    assert "400 for max_tokens 131073 (context 131072)" in result.detail


def test_a_server_that_clamps_max_tokens_fails_the_context_check() -> None:
    [result] = run_checks(answer(completion_body("Hello!")), "errors.max_tokens")
    assert not result.passed
    assert "expected 400 for max_tokens 10000000 (context length unknown), got HTTP 200" in (
        result.detail
    )


def test_models_list_reads_max_model_len_from_vllm_model_cards() -> None:
    card = {
        "id": MODEL,
        "object": "model",
        "created": 1,
        "owned_by": "vllm",
        "root": MODEL,
        "parent": None,
        "max_model_len": 131072,
        "permission": [],
    }
    lora = {**card, "id": "llama-lora", "parent": MODEL}
    [result] = run_checks(answer({"object": "list", "data": [card, lora]}), "models.list")
    assert result.passed
    assert result.detail == f"lists {MODEL}, max_model_len 131072 (and llama-lora)"


def test_vllm_streams_pass_every_stream_check() -> None:
    # vLLM's first chunk carries role and an empty content; a usage chunk with no choices may
    # follow the finish (stream_options.include_usage).
    usage = json.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 3}})
    stream = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Once"}),
        chunk({"content": " upon"}),
        chunk({}, finish="length"),
        usage,
        "[DONE]",
    )
    names = ("stream.sse", "stream.role_first", "stream.content", "stream.done", "stream.ttft")
    results = run_checks(stream, *names)
    assert [r.label for r in results] == ["PASS"] * 5, [r.detail for r in results]
    assert results[2].detail == "2 content deltas: 'Once upon'"


@pytest.mark.parametrize(
    ("events", "check", "message"),
    [
        ([chunk({"content": "a"}), "[DONE]"], "stream.role_first", "no role"),
        (
            [chunk({"role": "assistant"}), chunk({}, "stop"), "[DONE]"],
            "stream.content",
            "no content",
        ),
        (
            [chunk({"role": "assistant"}), chunk({"content": "a"}, "stop")],
            "stream.done",
            "no data: [DONE]",
        ),
        (["[DONE]", chunk({"role": "assistant"})], "stream.done", "not the single last event"),
        (
            [chunk({"role": "assistant"}), chunk({"content": "a"}), "[DONE]"],
            "stream.done",
            "no chunk carried",
        ),
        (["not json", "[DONE]"], "stream.sse", "event 0 is not a chat completion chunk"),
    ],
)
def test_broken_streams_fail_the_check_that_names_the_fault(
    events: list[str], check: str, message: str
) -> None:
    results = run_checks(sse(*events), "stream.sse", check)
    assert message in results[-1].detail
    assert not results[-1].passed


def test_a_stream_cut_mid_event_is_a_framing_failure() -> None:
    body = f"data: {chunk({'role': 'assistant'})}\n\ndata: [DONE]"
    torn: Handler = lambda request: httpx.Response(  # noqa: E731
        200, content=body.encode(), headers={"content-type": "text/event-stream"}
    )
    [result] = run_checks(torn, "stream.sse")
    assert not result.passed
    assert "ended in the middle of an event" in result.detail


def test_json_instead_of_an_event_stream_fails_and_skips_the_rest() -> None:
    results = run_checks(answer(completion_body("x")), "stream.sse", "stream.role_first")
    assert "Content-Type is 'application/json', not text/event-stream" in results[0].detail
    assert results[1].skipped
    assert "the streaming request failed" in results[1].detail


def test_health_slower_than_the_probe_timeout_fails() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        return httpx.Response(200, json={"object": "health.response", "message": "ready"})

    async def go() -> CheckResult:
        http = NimHttp("http://nim.test", timeout=5, transport=httpx.MockTransport(slow))
        ctx = Context(http, MODEL, Settings(readiness_timeout=0.1), Progress(io.StringIO(), False))
        try:
            return await Runner(ctx).one(by_name("health.ready"))
        finally:
            await http.aclose()

    result = asyncio.run(go())
    assert not result.passed
    assert "over the readiness probe's timeoutSeconds (0.1 s)" in result.detail


def test_metrics_fall_back_to_the_older_path() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/metrics":
            return httpx.Response(
                200, text="# TYPE num_requests_running gauge\nnum_requests_running 0\n"
            )
        return httpx.Response(404, json={"detail": "Not Found"})

    [result] = run_checks(handler, "metrics")
    assert result.passed
    assert result.detail.startswith("/metrics: 1 families, 1/12 NIM series")


def test_metrics_that_are_not_prometheus_text_warn() -> None:
    [result] = run_checks(lambda r: httpx.Response(200, text="<html>hi</html>"), "metrics")
    assert result.label == "WARN"
    assert "is not Prometheus text" in result.detail


def test_the_model_get_check_is_informational() -> None:
    [result] = run_checks(answer({"detail": "Not Found"}, 404), "models.get")
    assert result.label == "WARN"
    assert "NIM 2.x serves only GET /v1/models" in result.detail


def test_error_bodies_of_both_shapes_are_read() -> None:
    nested = Reply(
        404,
        json.dumps({"error": {"message": "m", "type": "t", "code": "c"}}).encode(),
        "application/json",
        0,
    )
    assert chat.error_body(nested.json()) == chat.ApiErrorBody("m", "t", "c")
    assert chat.error_body({"object": "error", "message": "m", "code": 404}) == chat.ApiErrorBody(
        "m", "", "404"
    )
    assert chat.error_body({"detail": "Not Found"}) is None


def test_readiness_503_quotes_the_health_message() -> None:
    body = {"object": "health.response", "message": "Service is not ready", "status": "x"}
    [result] = run_checks(answer(body, 503), "health.ready", ready=False)
    assert result.detail == (
        "HTTP 503: Service is not ready (the model is still loading, or failed to load)"
    )
