"""The pure core's cost per NimService: parse, params, render, and status computation."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from nimop.core import pods, render
from nimop.core.meta import object_ref
from nimop.core.probes import ProbeResult
from nimop.nimservice import models, params, status

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
        "apiVersion": doc["apiVersion"],
        "kind": doc["kind"],
        "metadata": {**doc["metadata"], "namespace": "bench", "uid": "u", "generation": 1},
        "spec": doc["spec"],
    }
    spec = models.NimServiceSpec.model_validate(body["spec"])
    ref = object_ref(body)
    p = params.build(spec, ref, params.SURGE)
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
        "build params (ms)": _per_call_ms(lambda: params.build(spec, ref, params.SURGE), rounds),
        "render children, first time (ms)": _per_call_ms(
            lambda: render.render(p, params.RESOURCE, use_cache=False), rounds
        ),
        "render children, params unchanged (ms)": _per_call_ms(
            lambda: render.render(p, params.RESOURCE), rounds
        ),
        "compute status (ms)": _per_call_ms(lambda: status.compute(snap, prev), rounds),
    }
