"""The HTTP surface of a NIM: health, models, chat completions and metrics.

Paths, JSON shapes and error bodies follow the NIM API reference so clients and
the operator cannot tell the simulator from a real NIM by the protocol alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from nimsim.config import SimConfig
from nimsim.errors import ApiError, invalid_request
from nimsim.generate import Completion, complete, natural_answer
from nimsim.metrics import CONTENT_TYPE_LATEST
from nimsim.schema import ChatRequest, parse_chat_request
from nimsim.state import SimState
from nimsim.tokens import count_prompt_tokens, tokenize

log = logging.getLogger(__name__)

STATE = web.AppKey("nimsim_state", SimState)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_JSON = dict[str, Any]


def make_app(config: SimConfig) -> web.Application:
    """Build an application for one simulated NIM.

    The load clock starts when the application starts up, so the same app
    behaves alike under :class:`nimsim.Simulator` and aiohttp's test server.
    """
    app = web.Application(middlewares=[_observe])
    state = SimState(config)
    app[STATE] = state

    async def on_startup(_: web.Application) -> None:
        state.mark_started()

    async def on_shutdown(_: web.Application) -> None:
        state.mark_stopped()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/v1/health/ready", _health_ready)
    app.router.add_get("/v1/health/live", _health_live)
    app.router.add_get("/v1/models", _list_models)
    app.router.add_get("/v1/models/{model_id:.+}", _get_model)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/v1/metrics", _metrics)
    return app


@web.middleware
async def _observe(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Apply the ``slow`` fault, render every failure as an API error, and record metrics."""
    state = request.app[STATE]
    started = time.perf_counter()
    status = 500
    try:
        if state.config.faults.slow:
            await asyncio.sleep(state.config.slow_seconds)
        response = await _render_errors(request, handler)
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else "other"
        state.metrics.http_requests.labels(path, request.method, str(status)).inc()
        state.metrics.http_latency.labels(path).observe(time.perf_counter() - started)


async def _render_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return ApiError(
            405,
            f"Method {request.method} is not allowed for {request.path}; allowed: {allowed}",
            code="method_not_allowed",
            headers={"Allow": allowed},
        ).response()
    except web.HTTPNotFound:
        return ApiError(
            404, f"No such endpoint: {request.method} {request.path}", code="not_found"
        ).response()
    except web.HTTPRequestEntityTooLarge as exc:
        return ApiError(
            413, exc.text or "Request body too large", code="payload_too_large"
        ).response()
    except web.HTTPException as exc:
        return ApiError(
            exc.status, exc.reason, code=exc.reason.lower().replace(" ", "_")
        ).response()
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return ApiError(
            500, "Internal server error", code="internal_error", error_type="server_error"
        ).response()


async def _health_ready(request: web.Request) -> web.Response:
    readiness = request.app[STATE].readiness()
    if readiness.ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready", "message": readiness.reason}, status=503)


async def _health_live(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


def _model_object(state: SimState) -> _JSON:
    return {
        "id": state.config.served_model,
        "object": "model",
        "created": state.created,
        "owned_by": state.config.owner,
    }


async def _list_models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [_model_object(request.app[STATE])]})


async def _get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    model_id = request.match_info["model_id"]
    if model_id != state.config.served_model:
        raise _model_not_found(model_id)
    return web.json_response(_model_object(state))


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _model_not_found(model: str) -> ApiError:
    return ApiError(404, f"Model '{model}' not found", code="model_not_found")


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    config = state.config
    readiness = state.readiness()
    if not readiness.ready:
        raise ApiError(
            503,
            f"Model is not ready: {readiness.reason}",
            code="model_not_ready",
            error_type="service_unavailable_error",
            headers={"Retry-After": "1"},
        )
    chat = parse_chat_request(await request.read())
    if chat.model != config.served_model:
        raise _model_not_found(chat.model)

    prompt_tokens = count_prompt_tokens(m.content for m in chat.messages)
    budget = _completion_budget(prompt_tokens, chat.max_tokens, config.max_model_len)
    completion = complete(natural_answer(chat.messages), budget, chat.stop)

    metrics = state.metrics
    metrics.prompt_tokens.inc(prompt_tokens)
    metrics.generation_tokens.inc(completion.completion_tokens)
    metrics.requests_running.inc()
    started = time.perf_counter()
    try:
        if chat.stream:
            return await _stream(request, chat, completion, prompt_tokens, config.token_delay)
        if config.token_delay:
            await asyncio.sleep(config.token_delay * completion.completion_tokens)
        return web.json_response(_completion_body(chat, completion, prompt_tokens))
    finally:
        metrics.requests_running.dec()
        metrics.e2e_latency.observe(time.perf_counter() - started)


def _completion_budget(prompt_tokens: int, max_tokens: int | None, context: int) -> int:
    """How many tokens may be generated; rejects requests that cannot fit the context."""
    if max_tokens is None:
        if prompt_tokens >= context:
            raise invalid_request(
                f"This model's maximum context length is {context} tokens. However, your "
                f"messages resulted in {prompt_tokens} tokens. Please reduce the length of "
                "the messages.",
                code="context_length_exceeded",
                param="messages",
            )
        return context - prompt_tokens
    if prompt_tokens + max_tokens > context:
        raise invalid_request(
            f"This model's maximum context length is {context} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{max_tokens} in the completion). Please reduce the length of the messages or "
            "completion.",
            code="context_length_exceeded",
            param="max_tokens",
        )
    return max_tokens


def _usage(prompt_tokens: int, completion: Completion) -> _JSON:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": prompt_tokens + completion.completion_tokens,
    }


def _completion_body(chat: ChatRequest, completion: Completion, prompt_tokens: int) -> _JSON:
    return {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": chat.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.content},
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": _usage(prompt_tokens, completion),
    }


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


async def _stream(
    request: web.Request,
    chat: ChatRequest,
    completion: Completion,
    prompt_tokens: int,
    token_delay: float,
) -> web.StreamResponse:
    """Send the completion as server-sent events, one content token per chunk."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    header = {
        "id": _completion_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": chat.model,
    }

    async def send(data: _JSON | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        await response.write(f"data: {text}\n\n".encode())

    def chunk(delta: _JSON, finish_reason: str | None = None) -> _JSON:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {**header, "choices": [choice]}

    try:
        await send(chunk({"role": "assistant"}))
        for token in tokenize(completion.content):
            if token_delay:
                await asyncio.sleep(token_delay)
            await send(chunk({"content": token}))
        await send(chunk({}, completion.finish_reason))
        if chat.include_usage:
            await send({**header, "choices": [], "usage": _usage(prompt_tokens, completion)})
        await send("[DONE]")
        await response.write_eof()
    except ConnectionResetError:
        log.info("client went away during a streamed completion")
    return response
