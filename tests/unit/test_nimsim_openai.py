"""The official ``openai`` Python SDK against a live simulator on 127.0.0.1, as users run it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import cast

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionFunctionToolParam,
    ChatCompletionUserMessageParam,
)

from nimsim import Faults, SimConfig, Simulator

MODEL = "meta/llama-3.1-8b-instruct"
WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def sdk(url: str) -> AsyncOpenAI:
    """The SDK as a user configures it for a NIM; max_retries=0 so errors surface at once.

    trust_env=False keeps loopback traffic away from any proxy in the environment.
    """
    http = openai.DefaultAsyncHttpx2Client(trust_env=False)
    return AsyncOpenAI(base_url=f"{url}/v1", api_key="not-used", max_retries=0, http_client=http)


@pytest.fixture
async def client() -> AsyncIterator[AsyncOpenAI]:
    async with Simulator(SimConfig(port=0, load_delay=0.0)) as sim:
        api = sdk(sim.url)
        yield api
        await api.close()


async def test_plain_chat(client: AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=50,
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "The capital of France is Paris."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (15, 8)


async def test_streaming_with_usage(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a short story about AI"}],
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    roles = []
    usage = None
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.delta.role:
                roles.append(choice.delta.role)
        usage = chunk.usage or usage
    assert roles == ["assistant"]
    assert usage is not None
    assert usage.completion_tokens == 40
    plain = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a short story about AI"}],
        max_tokens=40,
    )
    assert text == plain.choices[0].message.content


async def test_tools_round_trip(client: AsyncOpenAI) -> None:
    question: ChatCompletionUserMessageParam = {
        "role": "user",
        "content": "Use get_weather for Paris",
    }
    first = await client.chat.completions.create(
        model=MODEL,
        messages=[question],
        tools=[WEATHER],
    )
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls
    call = message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    second = await client.chat.completions.create(
        model=MODEL,
        messages=[
            question,
            cast(ChatCompletionAssistantMessageParam, message.model_dump(exclude_none=True)),
            {"role": "tool", "tool_call_id": call.id, "content": "18 C and cloudy"},
        ],
        tools=[WEATHER],
    )
    assert second.choices[0].message.content == "According to the tool result, 18 C and cloudy"


async def test_forced_tool_call_streams(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Paris"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    arguments = ""
    names = []
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.function is not None
                names.append(call.function.name)
                arguments += call.function.arguments or ""
    assert names[0] == "get_weather"
    assert isinstance(json.loads(arguments)["city"], str)


async def test_n_2(client: AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Explain Kubernetes"}],
        max_tokens=20,
        n=2,
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content != reply.choices[1].message.content


async def test_structured_output(client: AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Create a person named John, age 30"}],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "person",
                "schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                },
            },
        },
    )
    content = reply.choices[0].message.content
    assert content is not None
    person = json.loads(content)
    assert isinstance(person["name"], str)
    assert isinstance(person["age"], int)


async def test_completions(client: AsyncOpenAI) -> None:
    reply = await client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8)
    assert reply.object == "text_completion"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 8
    streamed = ""
    async for chunk in await client.completions.create(
        model=MODEL, prompt="Once upon a time", max_tokens=8, stream=True
    ):
        streamed += chunk.choices[0].text if chunk.choices else ""
    assert streamed == reply.choices[0].text


async def test_models(client: AsyncOpenAI) -> None:
    models = [m async for m in client.models.list()]
    assert [m.id for m in models] == [MODEL]
    assert models[0].owned_by == "meta"
    assert (await client.models.retrieve(MODEL)).id == MODEL


async def test_unknown_model_is_not_found_error(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        await client.chat.completions.create(
            model="invalid-model", messages=[{"role": "user", "content": "Hi"}]
        )
    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"
    assert "Model 'invalid-model' not found" in raised.value.message


async def test_too_long_is_bad_request_error(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=200000
        )
    assert raised.value.code == "context_length_exceeded"
    assert raised.value.param == "max_tokens"


async def test_invalid_parameter_is_bad_request_error(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], temperature=5
        )
    assert raised.value.param == "temperature"


async def test_loading_model_is_internal_server_error_503() -> None:
    async with Simulator(SimConfig(port=0, faults=Faults(never_ready=True))) as sim:
        api = sdk(sim.url)
        with pytest.raises(openai.InternalServerError) as raised:
            await api.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}]
            )
        assert raised.value.status_code == 503
        await api.close()


async def test_no_server_is_connection_error() -> None:
    sim = Simulator(SimConfig(port=0))
    await sim.start()
    url = sim.url
    await sim.stop()
    api = sdk(url)
    with pytest.raises(openai.APIConnectionError):
        await api.models.list()
    await api.close()
