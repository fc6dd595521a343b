"""The pure core's cost per NimService: parse, params, render, and status computation."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from nimop import models, params, pods, render, status
from nimop.probe import ProbeResult

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "llama-3.1-8b-instruct.yaml"


def _per_call_ms(fn: object, rounds: int) -> float:
    assert callable(fn)
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) * 1000 / rounds


def run(rounds: int = 300) -> dict[str, float]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    body = {
        "metadata": {**doc["metadata"], "namespace": "bench", "uid": "u", "generation": 1},
        "spec": doc["spec"],
    }
    spec = models.NimServiceSpec.model_validate(body["spec"])
    p = params.build(spec, body, params.SURGE)
    facts = [
        pods.facts({"metadata": {"name": f"p{i}", "labels": {}}, "status": {"phase": "Running"}})
        for i in range(4)
    ]
    snap = status.Snapshot(
        name="bench",
        namespace="bench",
        generation=1,
        now=datetime.now(UTC),
        spec=spec,
        facts=facts,
        probes={f.name: ProbeResult(f.name, "Serving", (spec.model,)) for f in facts},
        desired_replicas=4,
    )
    prev = models.NimServiceStatus()
    return {
        "parse spec (ms)": _per_call_ms(
            lambda: models.NimServiceSpec.model_validate(body["spec"]), rounds
        ),
        "build params (ms)": _per_call_ms(lambda: params.build(spec, body, params.SURGE), rounds),
        "render children (ms)": _per_call_ms(lambda: render.render(p), rounds),
        "compute status (ms)": _per_call_ms(lambda: status.compute(snap, prev), rounds),
    }
