"""The simulator's HTTP API against the NIM API reference, over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from nimsim import SimConfig, Simulator
from nimsim.app import make_app

MODEL = "meta/llama-3.1-8b-instruct"
CHAT = "/v1/chat/completions"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimConfig(port=0, load_delay=0.0, max_model_len=8192)) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: never route loopback traffic through a proxy from the environment.
    async with httpx.AsyncClient(base_url=sim.url, timeout=5.0, trust_env=False) as http:
        yield http


def body(content: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def parse_sse(text: str) -> list[Any]:
    """Decode an event stream into JSON chunks, keeping the final [DONE] marker as a string."""
    assert text.endswith("\n\n")
    events: list[Any] = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_health(client: httpx.AsyncClient) -> None:
    ready = await client.get("/v1/health/ready")
    assert ready.status_code == 200
    # A real NIM's body (object, message) plus the reference's "status".
    assert ready.json() == {
        "object": "health.response",
        "message": "Service is ready.",
        "status": "ready",
    }
    live = await client.get("/v1/health/live")
    assert live.status_code == 200
    assert live.json() == {
        "object": "health.response",
        "message": "Service is live.",
        "status": "alive",
    }


async def test_list_models(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    [model] = listing["data"]
    # vLLM's ModelCard: the reference's fields plus root, parent, max_model_len, permission.
    assert set(model) == {
        "id",
        "object",
        "created",
        "owned_by",
        "root",
        "parent",
        "max_model_len",
        "permission",
    }
    assert (model["id"], model["object"], model["owned_by"]) == (MODEL, "model", "meta")
    assert isinstance(model["created"], int)
    assert (model["root"], model["parent"], model["max_model_len"]) == (MODEL, None, 8192)
    [permission] = model["permission"]
    assert permission["object"] == "model_permission"
    assert permission["id"].startswith("modelperm-")
    assert (permission["allow_sampling"], permission["allow_logprobs"]) == (True, True)
    assert (permission["organization"], permission["group"]) == ("*", None)


async def test_get_model_by_id_with_slashes(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/v1/models/{MODEL}")
    assert response.status_code == 200
    assert response.json() == (await client.get("/v1/models")).json()["data"][0]


async def test_get_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/meta/llama-3.1-70b-instruct")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "Model 'meta/llama-3.1-70b-instruct' not found",
            "type": "invalid_request_error",
            "code": "model_not_found",
        }
    }


async def test_basic_chat_has_reference_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=body("What is the capital of France?", max_tokens=50))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    result = response.json()
    assert set(result) == {"id", "object", "created", "model", "choices", "usage"}
    assert result["id"].startswith("chatcmpl-")
    int(result["id"].removeprefix("chatcmpl-"), 16)
    assert result["object"] == "chat.completion"
    assert isinstance(result["created"], int)
    assert result["model"] == MODEL
    # The reference's fields, plus vLLM's tool_calls, logprobs and stop_reason (a Llama
    # NIM reports its end-of-turn token id 128009 there).
    assert result["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The capital of France is Paris.",
                "tool_calls": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
            "stop_reason": 128009,
        }
    ]
    # The numbers in the NIM API reference for this exact request.
    assert result["usage"] == {
        "prompt_tokens": 15,
        "completion_tokens": 8,
        "total_tokens": 23,
        "prompt_tokens_details": None,
    }


async def test_completion_ids_are_unique(client: httpx.AsyncClient) -> None:
    first = (await client.post(CHAT, json=body())).json()
    second = (await client.post(CHAT, json=body())).json()
    assert first["id"] != second["id"]
    assert first["choices"] == second["choices"]


SYSTEM_PROMPT = [
    {
        "role": "system",
        "content": "You are a helpful technical expert specializing in cloud computing.",
    },
    {"role": "user", "content": "What is Kubernetes?"},
]
MULTI_TURN = [
    {"role": "system", "content": "You are a technical expert."},
    {"role": "user", "content": "What is NVIDIA NIM?"},
    {
        "role": "assistant",
        "content": "NVIDIA NIM is a set of optimized inference microservices for deploying "
        "AI models.",
    },
    {"role": "user", "content": "What are its benefits?"},
]


def _user(content: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": content}]


REFERENCE_REQUESTS: dict[str, dict[str, Any]] = {
    "system-prompt": {"messages": SYSTEM_PROMPT, "max_tokens": 150, "temperature": 0.7},
    "multi-turn": {"messages": MULTI_TURN, "max_tokens": 200, "temperature": 0.7},
    "low-temperature": {
        "messages": _user("Write a haiku about AI"),
        "temperature": 0.1,
        "max_tokens": 50,
    },
    "high-temperature": {
        "messages": _user("Write a haiku about AI"),
        "temperature": 1.5,
        "max_tokens": 50,
    },
    "top-p": {
        "messages": _user("Explain machine learning"),
        "top_p": 0.9,
        "temperature": 0.8,
        "max_tokens": 100,
    },
    "penalties": {
        "messages": _user("List cloud providers"),
        "presence_penalty": 0.6,
        "frequency_penalty": 0.3,
        "max_tokens": 100,
    },
    "programming": {
        "messages": _user(
            "Write a Python function to calculate fibonacci numbers",
            "You are an expert Python programmer.",
        ),
        "temperature": 0.2,
        "max_tokens": 300,
    },
    "summarization": {
        "messages": _user(
            "Kubernetes is an open-source container orchestration platform that automates "
            "the deployment, scaling, and management of containerized applications.",
            "Summarize the following text in one sentence.",
        ),
        "temperature": 0.3,
        "max_tokens": 100,
    },
    "question-answering": {
        "messages": _user(
            "Context: OKE is Oracle Kubernetes Engine, a managed Kubernetes service.\n\n"
            "Question: What is OKE?",
            "Answer questions based on the given context only.",
        ),
        "temperature": 0.1,
        "max_tokens": 100,
    },
    "structured-output": {
        "messages": _user(
            "Create a person named John, age 30",
            'Output JSON only. Format: {"name": "...", "age": ...}',
        ),
        "stop": ["\n\n", "```"],
        "temperature": 0.1,
        "max_tokens": 100,
    },
    "latency": {"messages": _user("Hi"), "max_tokens": 10},
    "token-usage": {"messages": _user("Explain Kubernetes in detail"), "max_tokens": 500},
    "no-max-tokens": {"messages": _user("Explain Kubernetes in detail")},
}


@pytest.mark.parametrize("name", REFERENCE_REQUESTS)
async def test_reference_requests_succeed(client: httpx.AsyncClient, name: str) -> None:
    request = {"model": MODEL, **REFERENCE_REQUESTS[name]}
    response = await client.post(CHAT, json=request)
    assert response.status_code == 200, response.text
    result = response.json()
    [choice] = result["choices"]
    content = choice["message"]["content"]
    assert content
    usage = result["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    limit = request.get("max_tokens")
    if limit is not None:
        assert usage["completion_tokens"] <= limit
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == limit
    else:
        assert choice["finish_reason"] == "stop"
    for stop in request.get("stop", []):
        assert stop not in content


async def test_max_tokens_truncation_is_observable(client: httpx.AsyncClient) -> None:
    question = "Write a short story about AI"
    full = (await client.post(CHAT, json=body(question))).json()
    short = (await client.post(CHAT, json=body(question, max_tokens=5))).json()
    assert full["choices"][0]["finish_reason"] == "stop"
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 5
    assert full["choices"][0]["message"]["content"].startswith(
        short["choices"][0]["message"]["content"]
    )
    assert full["usage"]["completion_tokens"] > 200


async def test_stop_sequences_from_reference(client: httpx.AsyncClient) -> None:
    request = body("Count from 1 to 10", stop=[" 5", "five"], max_tokens=100)
    result = (await client.post(CHAT, json=request)).json()
    assert result["choices"][0]["message"]["content"] == "1, 2, 3, 4,"
    assert result["choices"][0]["finish_reason"] == "stop"
    single = (await client.post(CHAT, json=body("Count from 1 to 10", stop=", 3"))).json()
    assert single["choices"][0]["message"]["content"] == "1, 2"


async def test_stop_on_paragraph_break(client: httpx.AsyncClient) -> None:
    question = "Tell me about GPUs"
    full = (await client.post(CHAT, json=body(question))).json()["choices"][0]
    cut = (await client.post(CHAT, json=body(question, stop=["\n\n"]))).json()["choices"][0]
    assert "\n\n" in full["message"]["content"]
    assert cut["message"]["content"] == full["message"]["content"].split("\n\n")[0]
    assert cut["finish_reason"] == "stop"


async def _stream(client: httpx.AsyncClient, request: dict[str, Any]) -> tuple[str, list[Any]]:
    headers = {"Accept": "text/event-stream"}
    async with client.stream("POST", CHAT, json=request, headers=headers) as response:
        assert response.status_code == 200
        content_type = response.headers["content-type"]
        text = (await response.aread()).decode()
    return content_type, parse_sse(text)


@pytest.mark.parametrize(
    "options",
    [
        {"max_tokens": 200},
        {"max_tokens": 7},
        {},
        {"stop": [" rolling", "KV"], "max_tokens": 300},
    ],
    ids=["reference", "max-tokens", "unbounded", "stop"],
)
async def test_streaming_matches_non_streaming(
    client: httpx.AsyncClient, options: dict[str, Any]
) -> None:
    request = body("Write a short story about AI", **options)
    plain = (await client.post(CHAT, json=request)).json()
    content_type, events = await _stream(client, {**request, "stream": True})

    assert content_type.startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == MODEL
        assert isinstance(chunk["created"], int)
        assert "usage" not in chunk
    choices = [c["choices"][0] for c in chunks]
    assert all(choice["index"] == 0 for choice in choices)
    assert choices[0] == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }
    middle = choices[1:-1]
    assert middle
    assert all(set(c["delta"]) == {"content"} and c["finish_reason"] is None for c in middle)
    expected = plain["choices"][0]
    assert "".join(c["delta"]["content"] for c in middle) == expected["message"]["content"]
    assert choices[-1] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": expected["finish_reason"],
        "stop_reason": expected["stop_reason"],
    }


async def test_streaming_tokens_look_like_the_reference(client: httpx.AsyncClient) -> None:
    _, events = await _stream(client, body("Count from 1 to 10", stream=True))
    pieces = [e["choices"][0]["delta"].get("content") for e in events[1:-2]]
    assert pieces[:4] == ["1", ",", " 2", ","]


async def test_streaming_with_usage(client: httpx.AsyncClient) -> None:
    request = body(
        "What is the capital of France?",
        stream=True,
        stream_options={"include_usage": True},
        stop=" Paris",
    )
    _, events = await _stream(client, request)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 15,
        "completion_tokens": 6,
        "total_tokens": 21,
        "prompt_tokens_details": None,
    }
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert content == "The capital of France is"


async def test_invalid_model_is_404_with_exact_body(client: httpx.AsyncClient) -> None:
    response = await client.post(
        CHAT, json={"model": "invalid-model", "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "Model 'invalid-model' not found",
            "type": "invalid_request_error",
            "code": "model_not_found",
        }
    }


async def test_huge_max_tokens_exceeds_context(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=body("Hi", max_tokens=100000))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "max_tokens"
    assert "8192" in error["message"]
    assert "100000" in error["message"]


async def test_context_limit_is_exact(client: httpx.AsyncClient) -> None:
    # "Hi" costs 9 prompt tokens, so 8183 is the largest budget that fits 8192.
    assert (await client.post(CHAT, json=body("Hi", max_tokens=8183))).status_code == 200
    response = await client.post(CHAT, json=body("Hi", max_tokens=8184))
    assert response.status_code == 400
    assert "8193 tokens (9 in the messages, 8184 in the completion)" in response.text


async def test_prompt_alone_exceeding_context(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=body(" ".join(["word"] * 9000)))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert "8192" in error["message"]
    assert "9008" in error["message"]


def _messages(*items: object) -> dict[str, Any]:
    return {"model": MODEL, "messages": list(items)}


VALID_MESSAGE = {"role": "user", "content": "Hi"}

INVALID_REQUESTS: list[tuple[str, Any, str, str | None]] = [
    ("not-json", b"{nope", "invalid_json", None),
    ("not-utf8", b"\xff\xfe", "invalid_json", None),
    ("empty-body", b"", "invalid_json", None),
    ("array-body", [], "invalid_type", None),
    ("missing-model", {"messages": [VALID_MESSAGE]}, "missing_required_parameter", "model"),
    (
        "null-model",
        {"model": None, "messages": [VALID_MESSAGE]},
        "missing_required_parameter",
        "model",
    ),
    ("model-type", {"model": 7, "messages": [VALID_MESSAGE]}, "invalid_type", "model"),
    ("missing-messages", {"model": MODEL}, "missing_required_parameter", "messages"),
    ("messages-type", {"model": MODEL, "messages": "Hi"}, "invalid_type", "messages"),
    ("messages-empty", _messages(), "invalid_value", "messages"),
    ("message-type", _messages("Hi"), "invalid_type", "messages[0]"),
    (
        "role-missing",
        _messages({"content": "Hi"}),
        "missing_required_parameter",
        "messages[0].role",
    ),
    (
        "role-invalid",
        _messages(VALID_MESSAGE, {"role": "robot", "content": "Hi"}),
        "invalid_value",
        "messages[1].role",
    ),
    (
        "content-missing",
        _messages({"role": "user"}),
        "missing_required_parameter",
        "messages[0].content",
    ),
    (
        "content-type",
        _messages({"role": "user", "content": 42}),
        "invalid_type",
        "messages[0].content",
    ),
    ("temperature-type", body(temperature="hot"), "invalid_type", "temperature"),
    ("temperature-bool", body(temperature=True), "invalid_type", "temperature"),
    ("temperature-low", body(temperature=-0.1), "invalid_value", "temperature"),
    ("temperature-high", body(temperature=2.5), "invalid_value", "temperature"),
    ("top-p-zero", body(top_p=0), "invalid_value", "top_p"),
    ("top-p-high", body(top_p=1.01), "invalid_value", "top_p"),
    ("top-p-type", body(top_p="0.9"), "invalid_type", "top_p"),
    ("presence-low", body(presence_penalty=-2.1), "invalid_value", "presence_penalty"),
    ("presence-high", body(presence_penalty=2.1), "invalid_value", "presence_penalty"),
    ("frequency-low", body(frequency_penalty=-3), "invalid_value", "frequency_penalty"),
    ("frequency-high", body(frequency_penalty=2.01), "invalid_value", "frequency_penalty"),
    ("max-tokens-zero", body(max_tokens=0), "invalid_value", "max_tokens"),
    ("max-tokens-negative", body(max_tokens=-5), "invalid_value", "max_tokens"),
    ("max-tokens-float", body(max_tokens=10.5), "invalid_type", "max_tokens"),
    ("max-tokens-string", body(max_tokens="10"), "invalid_type", "max_tokens"),
    ("max-tokens-bool", body(max_tokens=True), "invalid_type", "max_tokens"),
    (
        "max-completion-tokens",
        body(max_completion_tokens=0),
        "invalid_value",
        "max_completion_tokens",
    ),
    ("stop-type", body(stop=5), "invalid_type", "stop"),
    ("stop-item-type", body(stop=["a", 1]), "invalid_type", "stop"),
    ("n-zero", body(n=0), "invalid_value", "n"),
    ("n-too-many", body(n=129), "invalid_value", "n"),
    ("n-type", body(n="1"), "invalid_type", "n"),
    ("stream-type", body(stream="yes"), "invalid_type", "stream"),
    (
        "stream-options-without-stream",
        body(stream_options={"include_usage": True}),
        "invalid_value",
        "stream_options",
    ),
    ("stream-options-type", body(stream=True, stream_options=[]), "invalid_type", "stream_options"),
    (
        "include-usage-type",
        body(stream=True, stream_options={"include_usage": 1}),
        "invalid_type",
        "stream_options.include_usage",
    ),
]


@pytest.mark.parametrize(
    ("payload", "code", "param"),
    [case[1:] for case in INVALID_REQUESTS],
    ids=[case[0] for case in INVALID_REQUESTS],
)
async def test_invalid_requests_are_400(
    client: httpx.AsyncClient, payload: Any, code: str, param: str | None
) -> None:
    if isinstance(payload, bytes):
        response = await client.post(
            CHAT, content=payload, headers={"Content-Type": "application/json"}
        )
    else:
        response = await client.post(CHAT, json=payload)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "invalid_request_error"
    assert (error["code"], error["param"]) == (code, param)
    assert error["message"]


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": 0, "top_p": 1, "presence_penalty": -2, "frequency_penalty": 2},
        {"temperature": 2.0, "top_p": 0.01},
        {"stop": None, "n": 1, "stream": False, "max_tokens": None, "temperature": None},
        {"stop": ["a", "b", "c", "d"], "seed": 42, "user": "u", "nvext": {"top_k": 5}},
        {"stop": ["a", "b", "c", "d", "e"], "logit_bias": {"128000": -100, "42": 5.5}},
        {"max_completion_tokens": 3},
        {"max_tokens": 50, "max_completion_tokens": 3, "n": 2, "seed": -(2**63)},
        {"response_format": {"type": "text"}, "parallel_tool_calls": False, "top_k": 40},
    ],
)
async def test_boundary_and_optional_values_are_accepted(
    client: httpx.AsyncClient, extra: dict[str, Any]
) -> None:
    response = await client.post(CHAT, json=body("Explain Kubernetes", **extra))
    assert response.status_code == 200, response.text


async def test_all_roles_accepted(client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
        {"role": "tool", "content": "t"},
    ]
    response = await client.post(CHAT, json={"model": MODEL, "messages": messages})
    assert response.status_code == 200


async def test_body_is_json_regardless_of_content_type(client: httpx.AsyncClient) -> None:
    # curl -d without -H sends form encoding; the body is still read as JSON.
    response = await client.post(
        CHAT,
        content=json.dumps(body("Hi")),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200


async def test_unknown_path_is_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/completions/nope")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert "/v1/completions/nope" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", CHAT, "POST"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", "/v1/health/ready", "GET"),
    ],
)
async def test_wrong_method_is_405_json(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405
    assert allowed in response.headers["allow"]
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_concurrent_requests(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(client.post(CHAT, json=body("Hello", max_tokens=10)) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["choices"][0]["message"]["content"] for r in responses} == {
        "Hello! How can I help you today?"
    }


async def test_make_app_works_with_aiohttp_test_utilities() -> None:
    app = make_app(SimConfig(load_delay=0.0, model="acme/test-model"))
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        response = await test_client.get("/v1/models/acme/test-model")
        assert response.status == 200
        assert (await response.json())["owned_by"] == "acme"
