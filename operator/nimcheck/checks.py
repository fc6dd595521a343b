"""Every check of the NIM API reference, what it requires to pass, and the order they run in.

A check is required when a client that follows the reference would break without it;
informational when the reference shows it but a correct NIM may lack it (``GET
/v1/models/{id}`` is not in NIM 2.x's API, and vLLM serves only ``/v1/models``; metrics are
"if enabled"), or when it is a measurement (time to first token). Checks that cannot mean
anything once an earlier one failed (chat against a model that is not loaded) are skipped with
the reason, so a broken NIM shows one failure and its cause, not twenty.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from nimcheck import chat, load, prom
from nimcheck.chat import CHAT_PATH, ChatCase, ShapeError, completion, error_body, failure
from nimcheck.progress import Progress
from nimcheck.transport import NimHttp, NoAnswerError, Reply, StreamReply, one_line

FALLBACK_EXCESS_TOKENS = 10_000_000
"""max_tokens for the context check when /v1/models does not say max_model_len."""


@dataclass(frozen=True)
class Settings:
    requests: int = 20
    concurrency: int = 10
    readiness_timeout: float = 1.0
    liveness_timeout: float = 1.0
    max_p95: float | None = None


@dataclass
class Context:
    """What the checks share: the client, the model, and facts earlier checks established."""

    http: NimHttp
    model: str
    settings: Settings
    progress: Progress
    ready: bool = False
    serves_model: bool = False
    max_model_len: int | None = None
    stream: StreamReply | None = None
    stream_error: str = ""
    latency: load.LatencyStats | None = None
    throughput: load.ThroughputStats | None = None


@dataclass(frozen=True)
class Outcome:
    passed: bool
    detail: str
    seconds: float | None = None
    """When set, the time that matters for this check (e.g. time to first token)."""


@dataclass(frozen=True)
class Need:
    met: Callable[[Context], bool]
    reason: Callable[[Context], str]


@dataclass(frozen=True)
class Check:
    name: str
    required: bool
    run: Callable[[Context], Awaitable[Outcome]]
    summary: str
    needs: tuple[Need, ...] = ()


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    required: bool
    seconds: float
    detail: str
    skipped: bool = False

    @property
    def label(self) -> str:
        if self.skipped:
            return "SKIP"
        if self.passed:
            return "PASS"
        return "FAIL" if self.required else "WARN"


READY = Need(lambda c: c.ready, lambda c: "/v1/health/ready did not answer 200")
SERVES = Need(lambda c: c.serves_model, lambda c: f"/v1/models does not list {c.model}")
STREAMED = Need(
    lambda c: (
        c.stream is not None
        and c.stream.status == 200
        and c.stream.content_type.startswith("text/event-stream")
    ),
    lambda c: f"the streaming request failed ({c.stream_error or 'no event stream'})",
)


# -- health and models -------------------------------------------------------------------------


def _health(
    path: str, probe: str, timeout: Callable[[Settings], float], ready: bool
) -> Callable[[Context], Awaitable[Outcome]]:
    async def run(ctx: Context) -> Outcome:
        reply = await ctx.http.get(path)
        if reply.status != 200:
            hint = " (the model is still loading, or failed to load)" if ready else ""
            return Outcome(False, failure(reply) + hint)
        if ready:
            ctx.ready = True
        limit = timeout(ctx.settings)
        if reply.seconds > limit:
            return Outcome(
                False,
                f"200 after {reply.seconds:.2f} s, over the {probe} probe's timeoutSeconds "
                f"({limit:g} s): the kubelet would count this answer as a failure",
            )
        return Outcome(True, f"200 {reply.text(80)}")

    return run


async def models_list(ctx: Context) -> Outcome:
    reply = await ctx.http.get("/v1/models")
    if reply.status != 200:
        return Outcome(False, failure(reply))
    body = reply.json()
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or (isinstance(body, dict) and body.get("object") != "list"):
        return Outcome(False, f"not a model list: {reply.text()}")
    entries = [e for e in data if isinstance(e, dict) and isinstance(e.get("id"), str)]
    ids = [str(e["id"]) for e in entries]
    entry = next((e for e in entries if e["id"] == ctx.model), None)
    if entry is None:
        listed = ", ".join(ids) if ids else "no models"
        return Outcome(False, f"lists {listed}; {ctx.model} is not served")
    ctx.serves_model = True
    length = entry.get("max_model_len")
    if isinstance(length, int) and not isinstance(length, bool) and length > 0:
        ctx.max_model_len = length
    others = [i for i in ids if i != ctx.model]
    extra = f" (and {', '.join(others)})" if others else ""
    context = f", max_model_len {ctx.max_model_len}" if ctx.max_model_len else ""
    return Outcome(True, f"lists {ctx.model}{context}{extra}")


async def models_get(ctx: Context) -> Outcome:
    reply = await ctx.http.get(f"/v1/models/{quote(ctx.model, safe='/')}")
    if reply.status != 200:
        return Outcome(False, failure(reply) + " (NIM 2.x serves only GET /v1/models)")
    body = reply.json()
    if not isinstance(body, dict) or body.get("id") != ctx.model:
        return Outcome(False, f"not the model object of {ctx.model}: {reply.text()}")
    return Outcome(True, f"200 {body.get('object', '')} {ctx.model}".replace("  ", " "))


# -- chat --------------------------------------------------------------------------------------


async def _chat(ctx: Context, request: ChatCase) -> tuple[Reply, chat.Completion]:
    reply = await ctx.http.post(CHAT_PATH, request.body(ctx.model))
    return reply, completion(reply, ctx.model)


def _chat_check(request: ChatCase) -> Callable[[Context], Awaitable[Outcome]]:
    async def run(ctx: Context) -> Outcome:
        _, answer = await _chat(ctx, request)
        return Outcome(True, answer.summary())

    return run


async def chat_stop(ctx: Context) -> Outcome:
    _, answer = await _chat(ctx, chat.STOP)
    found = [s for s in chat.STOP_STRINGS if s in answer.content]
    if found:
        return Outcome(False, f"output contains stop string {found[0]!r}: {answer.summary()}")
    return Outcome(True, f"no stop string in the output; {answer.summary()}")


async def chat_usage(ctx: Context) -> Outcome:
    _, answer = await _chat(ctx, chat.USAGE)
    limit = int(chat.USAGE.params["max_tokens"])
    problem = chat.usage_problem(answer.usage, limit)
    if problem:
        return Outcome(False, problem)
    usage = answer.usage or {}
    return Outcome(
        True,
        f"prompt {usage['prompt_tokens']} + completion {usage['completion_tokens']} "
        f"= total {usage['total_tokens']}",
    )


# -- streaming ---------------------------------------------------------------------------------


async def stream_sse(ctx: Context) -> Outcome:
    try:
        ctx.stream = await ctx.http.stream(CHAT_PATH, chat.STREAM.body(ctx.model))
    except NoAnswerError as err:
        ctx.stream_error = err.message
        raise
    reply = ctx.stream
    if reply.status != 200 or not reply.content_type.startswith("text/event-stream"):
        failed = Reply(reply.status, reply.body, reply.content_type, reply.seconds)
        ctx.stream_error = (
            failure(failed)
            if reply.status != 200
            else f"Content-Type is {reply.content_type!r}, not text/event-stream"
        )
        return Outcome(False, ctx.stream_error, reply.seconds)
    problems = sse_problems(reply)
    if problems:
        return Outcome(False, problems[0], reply.seconds)
    return Outcome(True, f"{len(reply.events)} events, every one a data: line", reply.seconds)


def sse_problems(reply: StreamReply) -> list[str]:
    """What is wrong with the framing: events that are not chunks, a torn end, no events."""
    problems: list[str] = []
    if not reply.events:
        problems.append("the stream carried no events")
    for index, item in enumerate(reply.events):
        data = item.event.data
        if data == "[DONE]":
            continue
        chunk = _json(data)
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            problems.append(f"event {index} is not a chat completion chunk: {one_line(data, 80)}")
            break
        if item.event.event != "message":
            problems.append(f"event {index} has event type {item.event.event!r}")
            break
    if reply.incomplete_tail:
        problems.append("the stream ended in the middle of an event (no blank line after it)")
    return problems


def _chunks(reply: StreamReply) -> list[tuple[float, dict[str, Any]]]:
    """(arrival time, choices[0]) of every chunk that has a choice."""
    found: list[tuple[float, dict[str, Any]]] = []
    for item in reply.events:
        chunk = _json(item.event.data)
        if not isinstance(chunk, dict):
            continue
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            found.append((item.at, choices[0]))
    return found


def _delta(choice: dict[str, Any]) -> dict[str, Any]:
    delta = choice.get("delta")
    return delta if isinstance(delta, dict) else {}


async def stream_role(ctx: Context) -> Outcome:
    assert ctx.stream is not None
    chunks = _chunks(ctx.stream)
    if not chunks:
        return Outcome(False, "no chunk with a choice", ctx.stream.seconds)
    at, first = chunks[0]
    role = _delta(first).get("role")
    if role != "assistant":
        return Outcome(False, f"first delta is {one_line(str(_delta(first)), 80)}, no role", at)
    return Outcome(True, "first delta carries role 'assistant'", at)


async def stream_content(ctx: Context) -> Outcome:
    assert ctx.stream is not None
    pieces = [
        (at, _delta(c)["content"])
        for at, c in _chunks(ctx.stream)
        if isinstance(_delta(c).get("content"), str) and _delta(c)["content"]
    ]
    if not pieces:
        return Outcome(False, "no content deltas", ctx.stream.seconds)
    text = "".join(p for _, p in pieces)
    return Outcome(True, f"{len(pieces)} content deltas: {chat.preview(text)}", pieces[-1][0])


async def stream_done(ctx: Context) -> Outcome:
    reply = ctx.stream
    assert reply is not None
    done = [i for i, e in enumerate(reply.events) if e.event.data == "[DONE]"]
    if not done:
        return Outcome(False, "no data: [DONE] event", reply.seconds)
    if done != [len(reply.events) - 1]:
        return Outcome(False, "data: [DONE] is not the single last event", reply.seconds)
    reasons = [c.get("finish_reason") for _, c in _chunks(reply) if c.get("finish_reason")]
    if not reasons:
        return Outcome(False, "[DONE] arrived but no chunk carried a finish_reason", reply.seconds)
    return Outcome(True, f"finish_reason {reasons[-1]}, then [DONE]", reply.events[done[0]].at)


async def stream_ttft(ctx: Context) -> Outcome:
    assert ctx.stream is not None
    for at, choice in _chunks(ctx.stream):
        content = _delta(choice).get("content")
        if isinstance(content, str) and content:
            return Outcome(True, f"first token after {_ms(at)}", at)
    return Outcome(False, "no token arrived", ctx.stream.seconds)


# -- errors ------------------------------------------------------------------------------------


async def unknown_model(ctx: Context) -> Outcome:
    name = chat.UNKNOWN_MODEL_NAME
    if name == ctx.model:
        name = f"nimcheck-{name}"
    reply = await ctx.http.post(CHAT_PATH, chat.UNKNOWN_MODEL.body(name))
    if reply.status != 404:
        return Outcome(False, f"expected 404 for model {name!r}, got {failure(reply)}")
    err = error_body(reply.json())
    if err is None:
        return Outcome(False, f"404 without an OpenAI-style error object: {reply.text()}")
    tag = "/".join(x for x in (err.type, err.code) if x)
    return Outcome(True, f"404 {tag}: {one_line(err.message, 100)}")


async def context_exceeded(ctx: Context) -> Outcome:
    known = ctx.max_model_len
    limit = known + 1 if known else FALLBACK_EXCESS_TOKENS
    reply = await ctx.http.post(CHAT_PATH, chat.LATENCY.body(ctx.model, max_tokens=limit))
    against = f"context {known}" if known else "context length unknown"
    if reply.status != 400:
        return Outcome(
            False, f"expected 400 for max_tokens {limit} ({against}), got {failure(reply)}"
        )
    err = error_body(reply.json())
    if err is None:
        return Outcome(False, f"400 without an OpenAI-style error object: {reply.text()}")
    return Outcome(True, f"400 for max_tokens {limit} ({against}): {one_line(err.message, 100)}")


# -- load --------------------------------------------------------------------------------------


async def latency(ctx: Context) -> Outcome:
    count = ctx.settings.requests
    ctx.progress.start("perf.latency", count, f"{count} sequential requests")
    try:
        samples = await load.sequential(ctx.http, chat.LATENCY, ctx.model, count, ctx.progress)
    finally:
        ctx.progress.finish()
    stats = ctx.latency = load.latency_stats(samples)
    if stats.errors:
        return Outcome(False, f"{stats.errors}/{stats.requests} failed, first: {stats.first_error}")
    assert stats.p50 is not None
    assert stats.p95 is not None
    assert stats.max is not None
    numbers = (
        f"p50 {_ms(stats.p50)}, p95 {_ms(stats.p95)}, max {_ms(stats.max)} "
        f"over {stats.requests} requests"
    )
    limit = ctx.settings.max_p95
    if limit is not None and stats.p95 > limit:
        return Outcome(False, f"{numbers}: p95 is over --max-p95 {limit:g} s")
    return Outcome(True, numbers)


async def throughput(ctx: Context) -> Outcome:
    count, width = ctx.settings.requests, ctx.settings.concurrency
    ctx.progress.start("perf.throughput", count, f"{count} requests, {width} concurrent")
    try:
        samples, wall = await load.concurrent(
            ctx.http, chat.THROUGHPUT, ctx.model, count, width, ctx.progress
        )
    finally:
        ctx.progress.finish()
    stats = ctx.throughput = load.throughput_stats(samples, wall, width)
    numbers = (
        f"{stats.requests_per_second:.1f} req/s, {stats.tokens_per_second:.0f} tokens/s, "
        f"{stats.errors} errors ({stats.requests} requests, {width} concurrent)"
    )
    if stats.errors:
        return Outcome(False, f"{numbers}; first error: {stats.first_error}", wall)
    return Outcome(True, numbers, wall)


async def metrics(ctx: Context) -> Outcome:
    tried: list[str] = []
    for path in prom.PATHS:
        reply = await ctx.http.get(path)
        if reply.status == 404:
            tried.append(path)
            continue
        if reply.status != 200:
            return Outcome(False, f"{path}: {failure(reply)}")
        try:
            scrape = prom.parse(reply.body.decode(errors="replace"))
        except ValueError as err:
            return Outcome(False, f"{path} is not Prometheus text: {one_line(str(err), 120)}")
        missing = f"; missing {', '.join(scrape.missing)}" if scrape.missing else ""
        return Outcome(
            True,
            f"{path}: {scrape.families} families, {len(scrape.present)}/"
            f"{len(prom.NIM_SERIES)} NIM series{missing}",
        )
    return Outcome(False, f"404 at {' and '.join(tried)} (metrics disabled?)")


def _ms(seconds: float) -> str:
    """Milliseconds, with a decimal while they are few (loopback answers take 1-3 ms)."""
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


# -- the list ----------------------------------------------------------------------------------


CHECKS: tuple[Check, ...] = (
    Check(
        "health.live",
        True,
        _health("/v1/health/live", "liveness", lambda s: s.liveness_timeout, ready=False),
        "GET /v1/health/live answers 200 within the liveness probe's timeout",
    ),
    Check(
        "health.ready",
        True,
        _health("/v1/health/ready", "readiness", lambda s: s.readiness_timeout, ready=True),
        "GET /v1/health/ready answers 200 within the readiness probe's timeout",
    ),
    Check("models.list", True, models_list, "GET /v1/models lists the model"),
    Check(
        "models.get",
        False,
        models_get,
        "GET /v1/models/{id} returns the model object",
        (READY, SERVES),
    ),
    Check("chat.basic", True, _chat_check(chat.BASIC), "a one-question chat", (READY, SERVES)),
    Check(
        "chat.system",
        True,
        _chat_check(chat.SYSTEM_PROMPT),
        "a chat with a system prompt",
        (READY, SERVES),
    ),
    Check(
        "chat.multi_turn",
        True,
        _chat_check(chat.MULTI_TURN),
        "system, user, assistant, user",
        (READY, SERVES),
    ),
    Check(
        "chat.temperature_low",
        True,
        _chat_check(chat.LOW_TEMPERATURE),
        "temperature 0.1",
        (READY, SERVES),
    ),
    Check(
        "chat.temperature_high",
        True,
        _chat_check(chat.HIGH_TEMPERATURE),
        "temperature 1.5",
        (READY, SERVES),
    ),
    Check("chat.top_p", True, _chat_check(chat.TOP_P), "top_p 0.9", (READY, SERVES)),
    Check(
        "chat.penalties",
        True,
        _chat_check(chat.PENALTIES),
        "presence_penalty 0.6, frequency_penalty 0.3",
        (READY, SERVES),
    ),
    Check("chat.stop", True, chat_stop, "the output never contains a stop string", (READY, SERVES)),
    Check("chat.usage", True, chat_usage, "usage: total = prompt + completion", (READY, SERVES)),
    Check("stream.sse", True, stream_sse, "text/event-stream, data: events", (READY, SERVES)),
    Check(
        "stream.role_first",
        True,
        stream_role,
        "the first delta carries the role",
        (READY, SERVES, STREAMED),
    ),
    Check(
        "stream.content",
        True,
        stream_content,
        "content arrives in deltas",
        (READY, SERVES, STREAMED),
    ),
    Check(
        "stream.done",
        True,
        stream_done,
        "a finish_reason, then data: [DONE] last",
        (READY, SERVES, STREAMED),
    ),
    Check(
        "stream.ttft",
        False,
        stream_ttft,
        "time to first token",
        (READY, SERVES, STREAMED),
    ),
    Check(
        "errors.unknown_model",
        True,
        unknown_model,
        "an unknown model gives 404 with an error object",
        (READY,),
    ),
    Check(
        "errors.max_tokens",
        True,
        context_exceeded,
        "max_tokens beyond the context gives 400",
        (READY, SERVES),
    ),
    Check("perf.latency", True, latency, "N sequential requests: p50, p95, max", (READY, SERVES)),
    Check(
        "perf.throughput",
        True,
        throughput,
        "N requests, C concurrent: requests/s, tokens/s, errors",
        (READY, SERVES),
    ),
    Check("metrics", False, metrics, "/v1/metrics (or /metrics) is Prometheus text"),
)


@dataclass
class Runner:
    """Runs checks in order; a check's exception becomes its failure, never the run's."""

    ctx: Context
    results: list[CheckResult] = field(default_factory=list)

    async def run(
        self, checks: tuple[Check, ...], report: Callable[[CheckResult], None]
    ) -> list[CheckResult]:
        for check in checks:
            result = await self.one(check)
            self.results.append(result)
            report(result)
        return self.results

    async def one(self, check: Check) -> CheckResult:
        unmet = next((n for n in check.needs if not n.met(self.ctx)), None)
        if unmet is not None:
            return CheckResult(
                check.name, False, check.required, 0.0, f"skipped: {unmet.reason(self.ctx)}", True
            )
        started = time.perf_counter()
        try:
            outcome = await check.run(self.ctx)
        except NoAnswerError as err:
            if not self.ctx.http.reached:
                raise
            outcome = Outcome(False, err.message)
        except ShapeError as err:
            outcome = Outcome(False, str(err))
        seconds = outcome.seconds if outcome.seconds is not None else time.perf_counter() - started
        return CheckResult(check.name, outcome.passed, check.required, seconds, outcome.detail)
