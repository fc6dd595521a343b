"""The HTTP surface of a NIM for LLMs: health, models, completions and metrics.

Paths, JSON shapes and error bodies follow the NIM API reference and vLLM's
OpenAI server, so clients and the operator cannot tell the simulator from a
real NIM by the protocol alone (sources in ``docs/simulator.md``):

- ``/v1/health/ready``: 200 ``{"object": "health.response", "message": "Service
  is ready.", "status": "ready"}`` once loaded, 503 before. A real NIM's body
  has ``object`` and ``message`` (NIM LLM API reference, health-ready; seen on
  live NIMs as ``{"object":"health.response","message":"Service is ready."}``);
  ``status`` is kept because the NIM API reference examples show it.
- ``/v1/health/live``: 200 as soon as the server listens.
- ``/v1/models``: vLLM ``ModelCard`` entries (``root``, ``parent``,
  ``max_model_len``, ``permission``), LoRA adapters beside the base model.
- ``/v1/chat/completions``, ``/v1/completions``: :mod:`nimsim.serving`.
- ``/v1/metrics`` and ``/metrics``: Prometheus text, :mod:`nimsim.metrics`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from nimsim import lora, serving
from nimsim.config import SimConfig
from nimsim.errors import ApiError
from nimsim.metrics import CONTENT_TYPE_LATEST
from nimsim.state import SimState

log = logging.getLogger(__name__)

STATE = web.AppKey("nimsim_state", SimState)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_JSON = dict[str, Any]


def make_app(config: SimConfig) -> web.Application:
    """Build an application for one simulated NIM.

    The load clock starts when the application starts up (and again when
    :class:`nimsim.Simulator` binds), so the same app behaves alike under the
    simulator and aiohttp's test server.
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
    app.router.add_post("/v1/completions", _completions)
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
        return web.json_response(
            {"object": "health.response", "message": "Service is ready.", "status": "ready"}
        )
    return web.json_response(
        {
            "object": "health.response",
            "message": f"Service is not ready: {readiness.reason}.",
            "status": "not ready",
        },
        status=503,
    )


async def _health_live(request: web.Request) -> web.Response:
    return web.json_response(
        {"object": "health.response", "message": "Service is live.", "status": "alive"}
    )


def _permission(model: str, created: int) -> _JSON:
    """vLLM's ``ModelPermission`` with its defaults (the id is stable per model here)."""
    return {
        "id": f"modelperm-{hashlib.sha256(model.encode()).hexdigest()[:32]}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }


def _model_cards(state: SimState) -> list[_JSON]:
    config = state.config
    base = config.served_model
    cards = [
        {
            "id": base,
            "object": "model",
            "created": state.created,
            "owned_by": config.owner,
            "root": base,
            "parent": None,
            "max_model_len": config.context_len,
            "permission": [_permission(base, state.created)],
        }
    ]
    for adapter in lora.adapters(config):
        cards.append(
            {
                "id": adapter.name,
                "object": "model",
                "created": state.created,
                "owned_by": config.owner,
                "root": adapter.path,
                "parent": base,
                "max_model_len": None,
                "permission": [_permission(adapter.name, state.created)],
            }
        )
    return cards


async def _list_models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": _model_cards(request.app[STATE])})


async def _get_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    for card in _model_cards(request.app[STATE]):
        if card["id"] == model_id:
            return web.json_response(card)
    raise serving.model_not_found(model_id)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await serving.chat_completions(request, request.app[STATE])


async def _completions(request: web.Request) -> web.StreamResponse:
    return await serving.completions(request, request.app[STATE])
