"""What a probe of a NIM replica found, as data: the verdicts status and rollouts reason about.

A real NIM does not listen at all while it downloads its model (its startup probe sees
`connection refused` for tens of minutes on a cold node), then answers 503 on
/v1/health/ready while the model loads, then 200. `Refused` keeps the first phase apart from a
replica that answered and stopped, so a cold start reads as a cold start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pydantic_core

Verdict = Literal["Serving", "Loading", "Refused", "Unreachable", "Mismatch"]


@dataclass(frozen=True)
class ProbeResult:
    pod: str
    verdict: Verdict
    models: tuple[str, ...] = ()
    detail: str = ""
    answered: bool = True
    """The NIM's HTTP server responded at all (any status code): false when the connection was
    refused or timed out."""

    @property
    def serving(self) -> bool:
        return self.verdict == "Serving"


def served_models(body: str) -> tuple[str, ...]:
    """Model ids from a /v1/models body; lenient, since a broken body means 'serves nothing'."""
    try:
        data = pydantic_core.from_json(body).get("data", [])
        return tuple(str(m["id"]) for m in data if isinstance(m, dict) and "id" in m)
    except (ValueError, AttributeError, TypeError):
        return ()


def judge_models(pod: str, status: int, body: str, model: str) -> ProbeResult:
    """Verdict from GET /v1/models: 200 listing `model` is Serving."""
    if status == 503:
        return ProbeResult(pod, "Loading", detail="/v1/models answered 503")
    if status != 200:
        return ProbeResult(pod, "Unreachable", detail=f"/v1/models answered {status}")
    models = served_models(body)
    if model not in models:
        return ProbeResult(
            pod, "Mismatch", models, detail=f"serves {', '.join(models) or 'no model'}, not {model}"
        )
    return ProbeResult(pod, "Serving", models)


def no_answer(pod: str, refused: bool, detail: str) -> ProbeResult:
    """The replica did not answer: its port is closed (`refused`), or it timed out."""
    return ProbeResult(pod, "Refused" if refused else "Unreachable", detail=detail, answered=False)


def judge_ready(pod: str, status: int) -> ProbeResult | None:
    """Verdict from GET /v1/health/ready, or None when the model list must decide."""
    if status == 200:
        return None
    if status == 503:
        return ProbeResult(pod, "Loading", detail="/v1/health/ready answered 503")
    return ProbeResult(pod, "Unreachable", detail=f"/v1/health/ready answered {status}")
