"""The reference's latency and throughput tests, with numbers instead of `time curl`.

Latency sends N requests one after another (the reference's "Hi", 10 tokens), so each number is
the service time of one request on an otherwise idle NIM. Throughput sends N requests with C in
flight at a time (the reference's "Hello" x 10 in parallel), and divides by the wall time of the
whole batch: requests per second and generated tokens per second, as a load generator reports
them. A request counts as an error unless it answered 200 with a valid completion.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from nimcheck.chat import CHAT_PATH, ChatCase, ShapeError, completion
from nimcheck.progress import Progress
from nimcheck.stats import percentile
from nimcheck.transport import NimHttp, NoAnswerError


@dataclass(frozen=True)
class Sample:
    seconds: float
    error: str = ""
    completion_tokens: int = 0

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class LatencyStats:
    requests: int
    ok: int
    p50: float | None
    p95: float | None
    max: float | None
    mean: float | None
    first_error: str

    @property
    def errors(self) -> int:
        return self.requests - self.ok


@dataclass(frozen=True)
class ThroughputStats:
    requests: int
    concurrency: int
    ok: int
    seconds: float
    requests_per_second: float
    tokens_per_second: float
    completion_tokens: int
    first_error: str

    @property
    def errors(self) -> int:
        return self.requests - self.ok


def latency_stats(samples: Sequence[Sample]) -> LatencyStats:
    good = [s.seconds for s in samples if s.ok]
    first_error = next((s.error for s in samples if not s.ok), "")
    if not good:
        return LatencyStats(len(samples), 0, None, None, None, None, first_error)
    return LatencyStats(
        requests=len(samples),
        ok=len(good),
        p50=percentile(good, 50),
        p95=percentile(good, 95),
        max=max(good),
        mean=sum(good) / len(good),
        first_error=first_error,
    )


def throughput_stats(samples: Sequence[Sample], wall: float, concurrency: int) -> ThroughputStats:
    good = [s for s in samples if s.ok]
    tokens = sum(s.completion_tokens for s in good)
    return ThroughputStats(
        requests=len(samples),
        concurrency=concurrency,
        ok=len(good),
        seconds=wall,
        requests_per_second=len(good) / wall if wall > 0 else 0.0,
        tokens_per_second=tokens / wall if wall > 0 else 0.0,
        completion_tokens=tokens,
        first_error=next((s.error for s in samples if not s.ok), ""),
    )


async def one(http: NimHttp, request: ChatCase, model: str) -> Sample:
    started = time.perf_counter()
    try:
        reply = await http.post(CHAT_PATH, request.body(model))
        answer = completion(reply, model)
    except (NoAnswerError, ShapeError) as err:
        return Sample(time.perf_counter() - started, error=str(err))
    return Sample(reply.seconds, completion_tokens=answer.completion_tokens)


async def sequential(
    http: NimHttp, request: ChatCase, model: str, count: int, progress: Progress
) -> list[Sample]:
    samples: list[Sample] = []
    for _ in range(count):
        samples.append(await one(http, request, model))
        progress.advance()
    return samples


async def concurrent(
    http: NimHttp, request: ChatCase, model: str, count: int, width: int, progress: Progress
) -> tuple[list[Sample], float]:
    """`count` requests, `width` in flight; returns the samples and the batch's wall time."""
    samples: list[Sample] = []
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            samples.append(await one(http, request, model))
            progress.advance()

    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(width, count)):
                group.create_task(worker())
    except BaseExceptionGroup as group:
        # The API server refusing us mid-run ends the run; callers expect that error itself.
        raise group.exceptions[0] from None
    return samples, time.perf_counter() - started
