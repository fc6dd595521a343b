"""Requests real OpenAI clients send, over real loopback sockets: each answered in a valid shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nimsim import SimConfig, Simulator

MODEL = "meta/llama-3.1-8b-instruct"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city"],
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with (
        Simulator(SimConfig(port=0, load_delay=0.0)) as sim,
        httpx.AsyncClient(base_url=sim.url, timeout=5.0, trust_env=False) as http,
    ):
        yield http


def chat(content: Any = "Hi", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def events(text: str) -> list[Any]:
    blocks = [b.removeprefix("data: ") for b in text.split("\n\n") if b]
    return [b if b == "[DONE]" else json.loads(b) for b in blocks]


async def post_stream(client: httpx.AsyncClient, path: str, request: dict[str, Any]) -> list[Any]:
    response = await client.post(path, json={**request, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return events(response.text)


async def ok(client: httpx.AsyncClient, path: str, request: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=request)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# -- context ---------------------------------------------------------------------------------


async def test_llama_3_1_serves_its_real_context_length(client: httpx.AsyncClient) -> None:
    [card] = (await client.get("/v1/models")).json()["data"]
    assert card["max_model_len"] == 131072
    # 100000 tokens fit Llama 3.1's context, so the reference's "token limit" example succeeds.
    assert (await client.post(CHAT, json=chat(max_tokens=100000))).status_code == 200
    too_long = await client.post(CHAT, json=chat(max_tokens=131072))
    assert too_long.status_code == 400
    assert "maximum context length is 131072 tokens" in too_long.json()["error"]["message"]


async def test_nim_max_model_len_overrides_the_context() -> None:
    env = {"NIM_MAX_MODEL_LEN": "4096", "NIM_SERVER_PORT": "0", "NIMSIM_LOAD_DELAY": "0"}
    config = SimConfig.from_env(env)
    async with (
        Simulator(config) as sim,
        httpx.AsyncClient(base_url=sim.url, trust_env=False) as http,
    ):
        assert (await http.get("/v1/models")).json()["data"][0]["max_model_len"] == 4096
        assert (await http.post(CHAT, json=chat(max_tokens=4090))).status_code == 400


# -- message forms ---------------------------------------------------------------------------


async def test_content_part_arrays_are_text(client: httpx.AsyncClient) -> None:
    parts = [
        {"type": "text", "text": "What is the capital"},
        {"type": "text", "text": "of France?"},
    ]
    plain = await ok(client, CHAT, chat("What is the capital\nof France?"))
    result = await ok(client, CHAT, chat(parts))
    assert result["choices"][0]["message"] == plain["choices"][0]["message"]
    assert result["usage"] == plain["usage"]


async def test_image_parts_are_refused_by_a_text_model(client: httpx.AsyncClient) -> None:
    parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]
    response = await client.post(CHAT, json=chat(parts))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_value", "messages[0].content[0].type")
    assert "text only" in error["message"]


async def test_tool_round_trip_with_null_assistant_content(client: httpx.AsyncClient) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages = [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    result = await ok(client, CHAT, {"model": MODEL, "messages": messages, "tools": [WEATHER]})
    message = result["choices"][0]["message"]
    assert message["content"] == "According to the tool result, sunny, 21 C"
    assert message["tool_calls"] == []
    assert result["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user", "content": None}, "messages[0].content"),
        ({"role": "user", "tool_calls": []}, "messages[0].content"),
        (
            {"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f"}}]},
            "messages[0].tool_calls",
        ),
        ({"role": "user", "content": [{"type": "text"}]}, "messages[0].content[0].text"),
        ({"role": "user", "content": [{"type": "video"}]}, "messages[0].content[0].type"),
        ({"role": "tool", "content": "x", "tool_call_id": 5}, "messages[0].tool_call_id"),
    ],
)
async def test_malformed_messages_name_the_field(
    client: httpx.AsyncClient, message: dict[str, Any], param: str
) -> None:
    response = await client.post(CHAT, json={"model": MODEL, "messages": [message]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


# -- tools -----------------------------------------------------------------------------------


def _arguments(result: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    [call] = result["choices"][0]["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("chatcmpl-tool-")
    return call["function"]["name"], json.loads(call["function"]["arguments"])


async def test_named_tool_choice_answers_with_that_call(client: httpx.AsyncClient) -> None:
    request = chat(
        "Hello",
        tools=[TIME, WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    result = await ok(client, CHAT, request)
    name, arguments = _arguments(result)
    assert name == "get_weather"
    assert isinstance(arguments["city"], str)
    assert arguments["unit"] == "celsius"
    assert 1 <= arguments["days"] <= 7
    assert result["choices"][0]["message"]["content"] == ""
    assert result["choices"][0]["finish_reason"] == "stop"  # vLLM, for a named function


async def test_required_tool_choice_calls_a_tool(client: httpx.AsyncClient) -> None:
    result = await ok(client, CHAT, chat("Hello", tools=[TIME, WEATHER], tool_choice="required"))
    assert _arguments(result)[0] == "get_time"
    assert result["choices"][0]["finish_reason"] == "tool_calls"


async def test_auto_calls_the_tool_the_user_names(client: httpx.AsyncClient) -> None:
    named = await ok(client, CHAT, chat("Please get weather for Oslo", tools=[TIME, WEATHER]))
    assert _arguments(named)[0] == "get_weather"
    assert named["choices"][0]["finish_reason"] == "tool_calls"
    unrelated = await ok(client, CHAT, chat("Hi", tools=[TIME, WEATHER]))
    assert unrelated["choices"][0]["message"]["tool_calls"] == []
    assert unrelated["choices"][0]["message"]["content"]
    none = await ok(client, CHAT, chat("get_weather", tools=[WEATHER], tool_choice="none"))
    assert none["choices"][0]["message"]["tool_calls"] == []


async def test_required_with_an_empty_tool_list_behaves_like_none(
    client: httpx.AsyncClient,
) -> None:
    result = await ok(client, CHAT, chat(tools=[], tool_choice="required"))
    assert result["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice.function"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
        ),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": 1}}]},
            "tools[0].function.parameters",
        ),
    ],
)
async def test_invalid_tool_requests_are_400(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str
) -> None:
    response = await client.post(CHAT, json=chat(**extra))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_streamed_tool_call_assembles_to_valid_arguments(
    client: httpx.AsyncClient,
) -> None:
    request = chat(
        "x", tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    plain = await ok(client, CHAT, request)
    chunks = await post_stream(client, CHAT, request)
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["id"].startswith("chatcmpl-tool-")
    assert calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == _arguments(plain)[1]


# -- n, streaming options --------------------------------------------------------------------


async def test_n_choices_differ_and_usage_sums_them(client: httpx.AsyncClient) -> None:
    single = await ok(client, CHAT, chat("Explain Kubernetes", max_tokens=30))
    result = await ok(client, CHAT, chat("Explain Kubernetes", max_tokens=30, n=3))
    assert [c["index"] for c in result["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in result["choices"]]
    assert texts[0] == single["choices"][0]["message"]["content"]
    assert len(set(texts)) == 3
    assert result["usage"]["completion_tokens"] == 90
    assert result["usage"]["prompt_tokens"] == single["usage"]["prompt_tokens"]


async def test_streaming_n_gives_each_choice_its_role_and_finish(
    client: httpx.AsyncClient,
) -> None:
    request = chat("Explain Kubernetes", max_tokens=12, n=2)
    plain = await ok(client, CHAT, request)
    chunks = await post_stream(client, CHAT, request)
    assert chunks[-1] == "[DONE]"
    by_index: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for chunk in chunks[:-1]:
        [choice] = chunk["choices"]
        by_index[choice["index"]].append(choice)
    for index, choices in by_index.items():
        assert choices[0]["delta"]["role"] == "assistant"
        text = "".join(c["delta"].get("content", "") for c in choices)
        assert text == plain["choices"][index]["message"]["content"]
        assert choices[-1]["finish_reason"] == "length"


async def test_stream_options_include_usage_defaults_to_true(client: httpx.AsyncClient) -> None:
    chunks = await post_stream(client, CHAT, chat(stream_options={}))
    assert chunks[-2]["choices"] == []
    assert chunks[-2]["usage"]["total_tokens"] > 0
    without = await post_stream(client, CHAT, chat())
    assert all("usage" not in c for c in without[:-1])
    off = await post_stream(client, CHAT, chat(stream_options={"include_usage": False}))
    assert all("usage" not in c for c in off[:-1])


async def test_continuous_usage_stats_grow_per_chunk(client: httpx.AsyncClient) -> None:
    options = {"include_usage": True, "continuous_usage_stats": True}
    chunks = await post_stream(client, CHAT, chat("Count from 1 to 10", stream_options=options))
    counts = [c["usage"]["completion_tokens"] for c in chunks[:-1]]
    assert counts == sorted(counts)
    assert counts[-1] == chunks[-2]["usage"]["completion_tokens"] > 0


# -- structured output, stops, lengths, sampling knobs ----------------------------------------


async def test_json_object_response_format_is_json(client: httpx.AsyncClient) -> None:
    result = await ok(client, CHAT, chat("Describe Paris", response_format={"type": "json_object"}))
    assert isinstance(json.loads(result["choices"][0]["message"]["content"]), dict)


async def test_json_schema_response_format_follows_the_schema(client: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "address": {"$ref": "#/$defs/address"},
            "nickname": {"anyOf": [{"type": "null"}, {"type": "string"}]},
        },
        "$defs": {"address": {"type": "object", "properties": {"zip": {"type": "string"}}}},
    }
    request = chat(
        "Create a person",
        response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    )
    value = json.loads((await ok(client, CHAT, request))["choices"][0]["message"]["content"])
    assert isinstance(value["name"], str)
    assert 18 <= value["age"] <= 99
    assert len(value["tags"]) == 2
    assert isinstance(value["address"]["zip"], str)
    assert value["nickname"] is None


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        (
            {"type": "json_schema", "json_schema": {"schema": {}}},
            "response_format.json_schema.name",
        ),
        ("json", "response_format"),
    ],
)
async def test_invalid_response_format_is_400(
    client: httpx.AsyncClient, response_format: Any, param: str
) -> None:
    response = await client.post(CHAT, json=chat(response_format=response_format))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("stop", [" 5", [" 5", "five"], ["9", "3", ", 7", "1, 2", " 10"]])
async def test_output_never_contains_a_stop_string(
    client: httpx.AsyncClient, stop: str | list[str]
) -> None:
    for stream in (False, True):
        request = chat("Count from 1 to 10", stop=stop)
        if stream:
            chunks = await post_stream(client, CHAT, request)
            content = "".join(
                c["choices"][0]["delta"].get("content", "") for c in chunks[:-1] if c["choices"]
            )
            reason = chunks[-2]["choices"][0]["stop_reason"]
        else:
            result = await ok(client, CHAT, request)
            content = result["choices"][0]["message"]["content"]
            reason = result["choices"][0]["stop_reason"]
        for each in [stop] if isinstance(stop, str) else stop:
            assert each not in content
        assert reason in ([stop] if isinstance(stop, str) else stop)


async def test_max_completion_tokens_wins_over_max_tokens(client: httpx.AsyncClient) -> None:
    result = await ok(client, CHAT, chat("Explain GPUs", max_tokens=50, max_completion_tokens=4))
    assert result["usage"]["completion_tokens"] == 4
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["choices"][0]["stop_reason"] is None


async def test_sampling_knobs_are_accepted(client: httpx.AsyncClient) -> None:
    request = chat(
        "Hi", seed=7, logit_bias={"15339": 2.0}, user="alice", temperature=0.0, top_p=0.5
    )
    result = await ok(client, CHAT, request)
    assert result["choices"][0]["message"]["content"] == "Hello! How can I help you today?"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"seed": 2**63}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"1": 101}}, "logit_bias"),
        ({"logit_bias": [1]}, "logit_bias"),
        ({"user": 5}, "user"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
)
async def test_invalid_sampling_knobs_are_400(
    client: httpx.AsyncClient, extra: dict[str, Any], param: str
) -> None:
    response = await client.post(CHAT, json=chat(**extra))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_chat_logprobs(client: httpx.AsyncClient) -> None:
    result = await ok(client, CHAT, chat("Hi", logprobs=True, top_logprobs=3, max_tokens=4))
    entries = result["choices"][0]["logprobs"]["content"]
    assert "".join(e["token"] for e in entries) == result["choices"][0]["message"]["content"]
    for entry in entries:
        assert entry["bytes"] == list(entry["token"].encode())
        assert len(entry["top_logprobs"]) == 3
        assert entry["top_logprobs"][0]["token"] == entry["token"]
        assert entry["logprob"] == max(t["logprob"] for t in entry["top_logprobs"]) <= 0
    chunks = await post_stream(client, CHAT, chat("Hi", logprobs=True, max_tokens=4))
    streamed = [c["choices"][0]["logprobs"] for c in chunks[1:-2]]
    assert [s["content"][0]["token"] for s in streamed] == [e["token"] for e in entries]


# -- /v1/completions ---------------------------------------------------------------------------


async def test_completion_shape(client: httpx.AsyncClient) -> None:
    result = await ok(client, COMPLETIONS, {"model": MODEL, "prompt": "Once upon a time"})
    assert result["id"].startswith("cmpl-")
    assert result["object"] == "text_completion"
    [choice] = result["choices"]
    assert set(choice) == {
        "index",
        "text",
        "logprobs",
        "finish_reason",
        "stop_reason",
        "prompt_logprobs",
    }
    assert choice["text"].startswith(" ")
    # vLLM's CompletionRequest.max_tokens defaults to 16.
    assert (choice["finish_reason"], result["usage"]["completion_tokens"]) == ("length", 16)
    assert result["usage"]["prompt_tokens"] == 5  # 4 words and the BOS token


async def test_completion_prompt_lists_and_n(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL, "prompt": ["Hello", "Explain GPUs"], "n": 2, "max_tokens": 5}
    result = await ok(client, COMPLETIONS, request)
    assert [c["index"] for c in result["choices"]] == [0, 1, 2, 3]
    # Every answer is longer than 5 tokens, so each choice stops by length.
    assert all(c["finish_reason"] == "length" for c in result["choices"])
    assert result["usage"]["completion_tokens"] == 4 * 5
    tokens = await ok(client, COMPLETIONS, {"model": MODEL, "prompt": [[1, 2, 3], [4, 5]]})
    assert tokens["usage"]["prompt_tokens"] == 5
    assert len(tokens["choices"]) == 2


async def test_completion_echo_and_logprobs(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL, "prompt": "Say hi", "echo": True, "logprobs": 2, "max_tokens": 3}
    [choice] = (await ok(client, COMPLETIONS, request))["choices"]
    assert choice["text"].startswith("Say hi ")
    logprobs = choice["logprobs"]
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert logprobs["token_logprobs"][0] is None  # the first prompt token has no logprob
    assert logprobs["top_logprobs"][0] is None
    assert all(len(t) == 2 for t in logprobs["top_logprobs"][1:])
    assert logprobs["text_offset"][0] == 0
    assert logprobs["text_offset"] == sorted(logprobs["text_offset"])


async def test_completion_streaming(client: httpx.AsyncClient) -> None:
    request = {"model": MODEL, "prompt": "Count from 1 to 10", "max_tokens": 50}
    plain = await ok(client, COMPLETIONS, request)
    chunks = await post_stream(client, COMPLETIONS, {**request, "stream_options": {}})
    assert chunks[-1] == "[DONE]"
    text = "".join(c["choices"][0]["text"] for c in chunks[:-2])
    assert text == plain["choices"][0]["text"]
    assert chunks[-3]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert chunks[-2]["usage"] == plain["usage"]
    assert all(c["object"] == "text_completion" for c in chunks[:-1])


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({"model": MODEL}, "prompt"),
        ({"model": MODEL, "prompt": 5}, "prompt"),
        ({"model": MODEL, "prompt": []}, "prompt"),
        ({"model": MODEL, "prompt": "x", "suffix": "y"}, "suffix"),
        ({"model": MODEL, "prompt": "x", "logprobs": 6}, "logprobs"),
        ({"model": MODEL, "prompt": "x", "n": 3, "best_of": 2}, "best_of"),
        ({"model": MODEL, "prompt": "x", "stream_options": {}}, "stream_options"),
    ],
)
async def test_invalid_completion_requests_are_400(
    client: httpx.AsyncClient, request_body: dict[str, Any], param: str
) -> None:
    response = await client.post(COMPLETIONS, json=request_body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


async def test_completion_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(COMPLETIONS, json={"model": "nope", "prompt": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


# -- LoRA --------------------------------------------------------------------------------------


async def test_lora_adapters_are_listed_and_served(tmp_path: Path) -> None:
    host = tmp_path / "loras"
    for name in ("llama3.1-8b-math", "llama3.1-8b-sql"):
        (host / name).mkdir(parents=True)
        (host / name / "adapter_config.json").write_text("{}")
    (host / "README.txt").write_text("not an adapter")
    (host / "empty-dir").mkdir()  # not a valid adapter: no adapter files
    env = {
        "NIM_SERVER_PORT": "0",
        "NIMSIM_LOAD_DELAY": "0",
        "NIM_PEFT_SOURCE": "/opt/loras",
        "NIMSIM_PATH_MAP": json.dumps({"/opt/loras": str(host)}),
        # No cache volume: the container's own filesystem is empty, so it downloads first.
        "NGC_API_KEY": "nvapi-test",
        "NIMSIM_DOWNLOAD_DELAY": "0",
    }
    async with Simulator(SimConfig.from_env(env)) as sim:
        await asyncio.wait_for(sim.listening.wait(), 10)
        http = httpx.AsyncClient(base_url=sim.url, trust_env=False)
        cards = (await http.get("/v1/models")).json()["data"]
        assert [c["id"] for c in cards] == [MODEL, "llama3.1-8b-math", "llama3.1-8b-sql"]
        math_card = cards[1]
        assert (math_card["parent"], math_card["root"]) == (MODEL, "/opt/loras/llama3.1-8b-math")
        assert math_card["max_model_len"] is None
        assert (await http.get("/v1/models/llama3.1-8b-sql")).json()["parent"] == MODEL

        base = await http.post(CHAT, json=chat("Explain GPUs", max_tokens=10))
        adapted = await http.post(
            CHAT, json={**chat("Explain GPUs", max_tokens=10), "model": "llama3.1-8b-math"}
        )
        assert adapted.status_code == 200
        assert adapted.json()["model"] == "llama3.1-8b-math"
        assert (
            adapted.json()["choices"][0]["message"]["content"]
            != (base.json()["choices"][0]["message"]["content"])
        )
        completion = await http.post(
            COMPLETIONS, json={"model": "llama3.1-8b-sql", "prompt": "SELECT"}
        )
        assert completion.status_code == 200

        (host / "llama3.1-8b-new").mkdir()
        (host / "llama3.1-8b-new" / "model.nemo").write_text("")
        ids = [c["id"] for c in (await http.get("/v1/models")).json()["data"]]
        assert "llama3.1-8b-new" in ids
        await http.aclose()
