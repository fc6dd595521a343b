"""The pods' readiness gate: a pod condition the operator sets from the NIM probe.

Every NIM pod declares the gate `nimop.dev/model-ready`, so the kubelet reports it Ready only once
the operator has seen its /v1/models list the expected model. That makes the Deployment
controller's own rollout health-gated (an unverified replica is not available, so no old replica
is stopped for it) and keeps the Service from routing to a replica serving the wrong model.
The gate changes only on a verdict: Serving sets it True, ModelMismatch sets it False; loading
or unreachable replicas are the kubelet's business and cost no writes.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from nimop import names
from nimop.core import pods
from nimop.core.conditions import timestamp
from nimop.core.probes import ProbeResult
from nimop.runtime import kube


def wanted(fact: pods.PodFacts, result: ProbeResult | None) -> tuple[str, str, str] | None:
    """(status, reason, message) the gate should have, or None to leave it as it is."""
    if result is None:
        return None
    if result.verdict == "Serving":
        return "True", "ModelServing", "the NIM API lists the expected model"
    if result.verdict == "Mismatch":
        return "False", "ModelMismatch", result.detail
    return None


async def sync(
    api: kube.Kube,
    namespace: str,
    facts: list[pods.PodFacts],
    probes: dict[str, ProbeResult],
    now: datetime,
) -> int:
    """Patch the gate on pods whose verdict changed; returns the number of writes."""
    jobs = []
    for fact in facts:
        want = wanted(fact, probes.get(fact.name))
        if want is None or fact.terminating or fact.gate == want[0]:
            continue
        status, reason, message = want
        body = {
            "status": {
                "conditions": [
                    {
                        "type": names.READINESS_GATE,
                        "status": status,
                        "reason": reason,
                        "message": message[:512],
                        "lastTransitionTime": timestamp(now),
                    }
                ]
            }
        }
        path = f"/api/v1/namespaces/{namespace}/pods/{fact.name}/status"
        jobs.append(api.request("PATCH", path, body=body, content_type=kube.STRATEGIC_MERGE_PATCH))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for result in results:
        if isinstance(result, kube.ApiError) and result.status != 404:
            raise result
        if isinstance(result, BaseException) and not isinstance(result, kube.ApiError):
            raise result
    return len(jobs)
