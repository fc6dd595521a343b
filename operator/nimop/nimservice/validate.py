"""Spec checks the CRD schema cannot express. Each problem becomes Stalled/InvalidSpec with an
Event, and nothing is applied, so a bad edit never disturbs what already serves. Anything these
miss and the API server rejects on apply lands in the same place with the server's message.
(Rules the schema does express, such as a toleration's, are `Rule`s on the models: pydantic
refuses what the API server would, and the spec never gets this far.)"""

from __future__ import annotations

from nimop import names
from nimop.nimservice import models


def _zero(value: int | str) -> bool:
    return value in (0, "0%")


def _percent_over_100(value: int | str | None) -> bool:
    return isinstance(value, str) and value.endswith("%") and int(value[:-1]) > 100


def problems(spec: models.NimServiceSpec) -> list[str]:
    found: list[str] = []
    rollout = spec.rollout
    if rollout.strategy == "RollingUpdate":
        surge = rollout.max_surge if rollout.max_surge is not None else 1
        unavailable = rollout.max_unavailable if rollout.max_unavailable is not None else 0
        if _zero(surge) and _zero(unavailable):
            found.append("rollout.maxSurge and rollout.maxUnavailable cannot both be 0")
        if _percent_over_100(unavailable):
            found.append("rollout.maxUnavailable cannot exceed 100%")
    selected = spec.node_selector.get(names.GPU_PRODUCT_LABEL)
    if spec.gpu.product and selected not in (None, spec.gpu.product):
        found.append(
            f"gpu.product {spec.gpu.product} contradicts nodeSelector "
            f"{names.GPU_PRODUCT_LABEL}={selected}"
        )
    seen: set[str] = set()
    for secret in spec.image_pull_secrets:
        if secret in seen:
            # The CRD's list-type set refuses this at apply; an object stored before it did not.
            found.append(f"imagePullSecrets lists {secret} twice")
        seen.add(secret)
    for i, env in enumerate(spec.env):
        if env.value_from is not None and env.value_from.secret_key_ref is not None:
            ref = env.value_from.secret_key_ref
            if ref.name == spec.auth_secret and ref.key == spec.auth_secret_key:
                found.append(f"env[{i}] ({env.name}) copies the NGC key; use authSecret")
    nim_cache = spec.cache.nim_cache if spec.cache else None
    if nim_cache is not None and nim_cache.profile:
        for i, env in enumerate(spec.env):
            if env.name == "NIM_MODEL_PROFILE":
                found.append(
                    f"env[{i}] sets NIM_MODEL_PROFILE, which cache.nimCache.profile sets; "
                    "keep one of them"
                )
    return found
