"""The completion endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions``.

Response shapes are vLLM's (``ChatCompletionResponse``, ``CompletionResponse``
and their stream chunks in ``vllm/entrypoints/openai/protocol.py``), keeping
every field the NIM API reference shows: ``choices[].message`` with ``role``,
``content`` and ``tool_calls``, ``logprobs``, ``finish_reason`` and
``stop_reason``; ``usage`` with ``prompt_tokens``, ``completion_tokens`` and
``total_tokens``. Streams are server-sent events: a role delta per choice
first, one token per chunk, a final chunk per choice with its
``finish_reason``, a usage chunk (``choices: []``) when
``stream_options.include_usage``, then ``data: [DONE]``.

Each request holds a generation slot for as long as it generates
(``NIMSIM_TOKEN_DELAY`` seconds per token, the choices of one request in
parallel) and is measured into NIM's latency and token metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from nimsim import lora
from nimsim.errors import ApiError
from nimsim.outputs import (
    Output,
    budget,
    chat_logprobs,
    chat_outputs,
    chat_prompt_tokens,
    completion_logprobs,
    completion_outputs,
    completion_prompt_tokens,
)
from nimsim.schema import (
    ChatRequest,
    CompletionRequest,
    ToolCall,
    parse_chat_request,
    parse_completion_request,
)
from nimsim.state import SimState
from nimsim.tokens import tokenize

log = logging.getLogger(__name__)

_JSON = dict[str, Any]


@dataclass
class _Timing:
    """One request's clock, for the latency histograms."""

    arrived: float = field(default_factory=time.perf_counter)
    first_token: float | None = None

    def token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()


def require_ready(state: SimState) -> None:
    readiness = state.readiness()
    if not readiness.ready:
        raise ApiError(
            503,
            f"Model is not ready: {readiness.reason}",
            code="model_not_ready",
            error_type="service_unavailable_error",
            headers={"Retry-After": "1"},
        )


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"Model '{model}' not found", code="model_not_found")


def served_variant(state: SimState, model: str) -> int:
    """0 for the base model, a per-adapter offset for a LoRA adapter; 404 otherwise."""
    if model == state.config.served_model:
        return 0
    names = [adapter.name for adapter in lora.adapters(state.config)]
    if model in names:
        return 1000 * (names.index(model) + 1)
    raise model_not_found(model)


# -- chat ----------------------------------------------------------------------------------


async def chat_completions(request: web.Request, state: SimState) -> web.StreamResponse:
    require_ready(state)
    chat = parse_chat_request(await request.read())
    variant = served_variant(state, chat.model)
    config = state.config
    prompt_tokens = chat_prompt_tokens(chat)
    limit = budget(prompt_tokens, chat.sampling.max_tokens, config.context_len, "messages")
    outputs = chat_outputs(chat, limit, config.model, variant)
    timing = _Timing()
    generated = sum(o.completion_tokens for o in outputs)
    async with state.running(prompt_tokens + generated):
        if chat.stream:
            response, finished = await _stream_chat(
                request, state, chat, outputs, prompt_tokens, timing
            )
        else:
            await _generate(state, outputs, timing)
            response = web.json_response(_chat_body(chat, outputs, prompt_tokens))
            finished = True
    _record(state, outputs, prompt_tokens, timing, finished)
    return response


def _chat_body(chat: ChatRequest, outputs: Sequence[Output], prompt_tokens: int) -> _JSON:
    choices = []
    for output in outputs:
        message: _JSON = {"role": "assistant", "content": output.text, "tool_calls": []}
        if output.tool_call is not None:
            message["tool_calls"] = [_tool_call_json(output.tool_call)]
        choices.append(
            {
                "index": output.index,
                "message": message,
                "logprobs": (
                    {"content": chat_logprobs(output.pieces, chat.top_logprobs)}
                    if chat.logprobs
                    else None
                ),
                "finish_reason": output.finish_reason,
                "stop_reason": output.stop_reason,
            }
        )
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "choices": choices,
        "usage": _usage(prompt_tokens, sum(o.completion_tokens for o in outputs)),
    }


def _tool_call_json(call: ToolCall) -> _JSON:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


async def _stream_chat(
    request: web.Request,
    state: SimState,
    chat: ChatRequest,
    outputs: Sequence[Output],
    prompt_tokens: int,
    timing: _Timing,
) -> tuple[web.StreamResponse, bool]:
    header = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": chat.model,
    }
    sampling = chat.sampling
    produced = [0] * len(outputs)

    def chunk(output: Output, delta: _JSON, **extra: Any) -> _JSON:
        choice = {"index": output.index, "delta": delta, "logprobs": None, "finish_reason": None}
        choice.update(extra)
        body: _JSON = {**header, "choices": [choice]}
        if sampling.continuous_usage:
            body["usage"] = _usage(prompt_tokens, sum(produced))
        return body

    async def events(send: _Sender) -> None:
        for output in outputs:
            await send(chunk(output, {"role": "assistant", "content": ""}))
        steps = max((len(o.pieces) for o in outputs), default=0)
        for step in range(steps):
            await _token_pause(state, timing)
            for number, output in enumerate(outputs):
                if step >= len(output.pieces):
                    continue
                piece = output.pieces[step]
                produced[number] += 1
                if output.tool_call is not None:
                    call: _JSON = {"index": 0, "function": {"arguments": piece}}
                    if step == 0:
                        call = {
                            "index": 0,
                            "id": output.tool_call.id,
                            "type": "function",
                            "function": {"name": output.tool_call.name, "arguments": piece},
                        }
                    await send(chunk(output, {"tool_calls": [call]}))
                    continue
                extra: _JSON = {}
                if chat.logprobs:
                    extra["logprobs"] = {"content": chat_logprobs([piece], chat.top_logprobs)}
                await send(chunk(output, {"content": piece}, **extra))
        for number, output in enumerate(outputs):
            produced[number] = output.completion_tokens
            await send(
                chunk(
                    output,
                    {},
                    finish_reason=output.finish_reason,
                    stop_reason=output.stop_reason,
                )
            )
        if sampling.include_usage:
            total = sum(o.completion_tokens for o in outputs)
            await send({**header, "choices": [], "usage": _usage(prompt_tokens, total)})

    return await _serve_events(request, events)


# -- text completions ----------------------------------------------------------------------


async def completions(request: web.Request, state: SimState) -> web.StreamResponse:
    require_ready(state)
    body = parse_completion_request(await request.read())
    served_variant(state, body.model)
    config = state.config
    prompt_counts = [completion_prompt_tokens(body, i) for i in range(len(body.prompts))]
    limits = [
        budget(count, body.sampling.max_tokens, config.context_len, "prompt")
        for count in prompt_counts
    ]
    outputs = completion_outputs(body, limits, config.model)
    prompt_tokens = sum(prompt_counts)
    timing = _Timing()
    generated = sum(o.completion_tokens for o in outputs)
    async with state.running(prompt_tokens + generated):
        if body.stream:
            response, finished = await _stream_completion(
                request, state, body, outputs, prompt_tokens, timing
            )
        else:
            await _generate(state, outputs, timing)
            response = web.json_response(_completion_body(body, outputs, prompt_tokens))
            finished = True
    _record(state, outputs, prompt_tokens, timing, finished)
    return response


def _prompt_of(body: CompletionRequest, output: Output) -> str:
    return body.prompts[output.index // body.sampling.n]


def _completion_body(
    body: CompletionRequest, outputs: Sequence[Output], prompt_tokens: int
) -> _JSON:
    choices = []
    for output in outputs:
        prompt = _prompt_of(body, output) if body.echo else ""
        logprobs = None
        if body.logprobs is not None:
            logprobs = completion_logprobs(
                output.pieces, body.logprobs, prompt_pieces=tokenize(prompt)
            )
        choices.append(
            {
                "index": output.index,
                "text": prompt + output.text,
                "logprobs": logprobs,
                "finish_reason": output.finish_reason,
                "stop_reason": output.stop_reason,
                "prompt_logprobs": None,
            }
        )
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.model,
        "choices": choices,
        "usage": _usage(prompt_tokens, sum(o.completion_tokens for o in outputs)),
    }


async def _stream_completion(
    request: web.Request,
    state: SimState,
    body: CompletionRequest,
    outputs: Sequence[Output],
    prompt_tokens: int,
    timing: _Timing,
) -> tuple[web.StreamResponse, bool]:
    header = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.model,
    }
    offsets = [0] * len(outputs)

    def chunk(output: Output, text: str, **extra: Any) -> _JSON:
        choice: _JSON = {
            "index": output.index,
            "text": text,
            "logprobs": None,
            "finish_reason": None,
            "stop_reason": None,
        }
        choice.update(extra)
        return {**header, "choices": [choice]}

    def logprobs_of(number: int, piece: str) -> _JSON:
        if body.logprobs is None:
            return {}
        value = completion_logprobs([piece], body.logprobs, offset=offsets[number])
        offsets[number] += len(piece)
        return {"logprobs": value}

    async def events(send: _Sender) -> None:
        if body.echo:
            for output in outputs:
                await send(chunk(output, _prompt_of(body, output)))
        steps = max((len(o.pieces) for o in outputs), default=0)
        for step in range(steps):
            await _token_pause(state, timing)
            for number, output in enumerate(outputs):
                if step < len(output.pieces):
                    piece = output.pieces[step]
                    await send(chunk(output, piece, **logprobs_of(number, piece)))
        for output in outputs:
            await send(
                chunk(
                    output, "", finish_reason=output.finish_reason, stop_reason=output.stop_reason
                )
            )
        if body.sampling.include_usage:
            total = sum(o.completion_tokens for o in outputs)
            await send({**header, "choices": [], "usage": _usage(prompt_tokens, total)})

    return await _serve_events(request, events)


# -- shared --------------------------------------------------------------------------------


class _Sender:
    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response

    async def __call__(self, data: _JSON | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        await self.response.write(f"data: {text}\n\n".encode())


async def _serve_events(
    request: web.Request, events: Callable[[_Sender], Awaitable[None]]
) -> tuple[web.StreamResponse, bool]:
    """Send a server-sent event stream; returns the response and whether it completed."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    send = _Sender(response)
    try:
        await events(send)
        await send("[DONE]")
        await response.write_eof()
    except ConnectionResetError:
        log.info("client went away during a streamed completion")
        return response, False
    return response, True


async def _token_pause(state: SimState, timing: _Timing) -> None:
    if state.config.token_delay:
        await asyncio.sleep(state.config.token_delay)
    timing.token()


async def _generate(state: SimState, outputs: Sequence[Output], timing: _Timing) -> None:
    """Spend the time generating takes: the longest choice's tokens, one delay each."""
    longest = max((o.completion_tokens for o in outputs), default=0)
    delay = state.config.token_delay
    if longest and delay:
        await asyncio.sleep(delay)
    timing.token()
    if longest > 1 and delay:
        await asyncio.sleep(delay * (longest - 1))


def _usage(prompt_tokens: int, completion_tokens: int) -> _JSON:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }


def _record(
    state: SimState,
    outputs: Sequence[Output],
    prompt_tokens: int,
    timing: _Timing,
    finished: bool,
) -> None:
    """Account one finished (or abandoned) request in NIM's metrics."""
    metrics = state.metrics
    ended = time.perf_counter()
    generated = sum(o.completion_tokens for o in outputs)
    metrics.prompt_tokens.inc(prompt_tokens)
    metrics.generation_tokens.inc(generated)
    metrics.request_prompt_tokens.observe(prompt_tokens)
    metrics.request_generation_tokens.observe(generated)
    first = timing.first_token if timing.first_token is not None else ended
    metrics.time_to_first_token.observe(first - timing.arrived)
    longest = max((o.completion_tokens for o in outputs), default=0)
    if longest > 1:
        metrics.time_per_output_token.observe((ended - first) / (longest - 1))
    metrics.e2e_latency.observe(ended - timing.arrived)
    metrics.request_success[_finished_reason(outputs, finished)].inc()


def _finished_reason(outputs: Sequence[Output], finished: bool) -> str:
    """vLLM's ``finished_reason`` label: stop, length, or abort (the client went away)."""
    if not finished:
        return "abort"
    if outputs and outputs[0].finish_reason == "length":
        return "length"
    return "stop"
