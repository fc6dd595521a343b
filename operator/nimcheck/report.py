"""The two outputs: one line per check for people, one JSON document for programs.

Text lines are printed as each check finishes, so a slow NIM shows where it is slow. The JSON
document is printed once at the end and holds everything the lines say, plus the raw latency
and throughput numbers, with camelCase keys as kubectl's own JSON has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nimcheck.checks import CheckResult, Context
from nimcheck.cluster import NimServiceInfo

_COLORS = {"PASS": "32", "FAIL": "31", "WARN": "33", "SKIP": "2"}
_NAME_WIDTH = 22


@dataclass(frozen=True)
class Target:
    model: str
    endpoint: str
    via: str
    """"service-proxy" (through the API server) or "endpoint" (--endpoint)."""
    nimservice: NimServiceInfo | None


def header(target: Target) -> list[str]:
    lines: list[str] = []
    nim = target.nimservice
    if nim is not None:
        reason = f" ({nim.ready.reason})" if nim.ready and nim.ready.reason else ""
        lines.append(f"NimService {nim.namespace}/{nim.name} is Ready{reason}")
    how = "through the API server's service proxy" if target.via == "service-proxy" else ""
    lines.append(f"Checking {target.model} at {target.endpoint} {how}".rstrip())
    return lines


def line(result: CheckResult, color: bool = False) -> str:
    label = result.label
    if color:
        label = f"\033[{_COLORS[label]}m{label}\033[0m"
    seconds = "-" if result.skipped else f"{result.seconds:.3f}s"
    return f"{label}  {result.name:<{_NAME_WIDTH}} {seconds:>8}  {result.detail}"


def passed(results: Sequence[CheckResult]) -> bool:
    return all(r.passed for r in results if r.required)


def summary(results: Sequence[CheckResult]) -> str:
    counts = dict.fromkeys(("PASS", "FAIL", "WARN", "SKIP"), 0)
    for result in results:
        counts[result.label] += 1
    text = (
        f"{len(results)} checks: {counts['PASS']} passed, {counts['FAIL']} failed, "
        f"{counts['WARN']} warnings, {counts['SKIP']} skipped."
    )
    failed = [r.name for r in results if r.required and not r.passed and not r.skipped]
    if failed:
        return f"{text} Required checks failed: {', '.join(failed)}."
    if not passed(results):
        return f"{text} Required checks were skipped."
    return f"{text} Every required check passed."


def document(
    target: Target | None,
    results: Sequence[CheckResult],
    ctx: Context | None,
    error: str | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "passed": error is None and passed(results),
        "model": target.model if target else None,
        "endpoint": target.endpoint if target else None,
        "via": target.via if target else None,
        "nimService": _nimservice(target.nimservice) if target else None,
        "checks": [
            {
                "name": r.name,
                "passed": r.passed,
                "required": r.required,
                "skipped": r.skipped,
                "seconds": round(r.seconds, 6),
                "detail": r.detail,
            }
            for r in results
        ],
        "latency": _latency(ctx),
        "throughput": _throughput(ctx),
        "timeToFirstTokenSeconds": _ttft(results),
    }
    if error is not None:
        doc["error"] = error
    return doc


def _nimservice(nim: NimServiceInfo | None) -> dict[str, Any] | None:
    if nim is None:
        return None
    ready = (
        {"status": nim.ready.status, "reason": nim.ready.reason, "message": nim.ready.message}
        if nim.ready
        else None
    )
    return {
        "namespace": nim.namespace,
        "name": nim.name,
        "service": nim.service,
        "port": nim.port,
        "ready": ready,
    }


def _latency(ctx: Context | None) -> dict[str, Any] | None:
    stats = ctx.latency if ctx else None
    if stats is None:
        return None
    return {
        "requests": stats.requests,
        "ok": stats.ok,
        "errors": stats.errors,
        "p50Seconds": stats.p50,
        "p95Seconds": stats.p95,
        "maxSeconds": stats.max,
        "meanSeconds": stats.mean,
    }


def _throughput(ctx: Context | None) -> dict[str, Any] | None:
    stats = ctx.throughput if ctx else None
    if stats is None:
        return None
    return {
        "requests": stats.requests,
        "concurrency": stats.concurrency,
        "ok": stats.ok,
        "errors": stats.errors,
        "seconds": stats.seconds,
        "requestsPerSecond": stats.requests_per_second,
        "tokensPerSecond": stats.tokens_per_second,
        "completionTokens": stats.completion_tokens,
    }


def _ttft(results: Sequence[CheckResult]) -> float | None:
    for r in results:
        if r.name == "stream.ttft" and r.passed:
            return r.seconds
    return None
