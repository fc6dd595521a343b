"""Semantic spec checks the CRD schema cannot express (nimop.validate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from nimop.nimservice import models, validate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MINIMAL: dict[str, Any] = {
    "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
    "model": "meta/llama-3.1-8b-instruct",
    "authSecret": "ngc-api",
}


def problems(**fields: Any) -> list[str]:
    return validate.problems(models.NimServiceSpec.model_validate({**MINIMAL, **fields}))


def rolling(**fields: Any) -> dict[str, Any]:
    return {"strategy": "RollingUpdate", **fields}


def test_a_clean_spec_has_no_problems() -> None:
    assert problems() == []


def test_a_full_clean_spec_has_no_problems() -> None:
    assert (
        problems(
            replicas=3,
            gpu={"count": 2, "product": "NVIDIA-H100-80GB-HBM3"},
            nodeSelector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "gpu"},
            tolerations=[
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Equal", "value": "yes"},
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 30,
                },
            ],
            env=[
                {"name": "OTHER", "valueFrom": {"secretKeyRef": {"name": "ngc-api", "key": "x"}}},
                {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "o", "key": "NGC_API_KEY"}}},
                {
                    "name": "CM",
                    "valueFrom": {"configMapKeyRef": {"name": "ngc-api", "key": "NGC_API_KEY"}},
                },
            ],
            rollout=rolling(maxSurge="25%", maxUnavailable="100%"),
        )
        == []
    )


def example_specs() -> list[models.NimServiceSpec]:
    return [
        models.NimServiceSpec.model_validate(doc["spec"])
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "NimService"
    ]


def test_examples_have_no_problems() -> None:
    specs = example_specs()
    assert specs
    assert [validate.problems(s) for s in specs] == [[] for _ in specs]


# -- rollout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rollout",
    [
        rolling(maxSurge=0, maxUnavailable=0),
        rolling(maxSurge="0%", maxUnavailable=0),
        rolling(maxSurge=0, maxUnavailable="0%"),
        rolling(maxSurge="0%", maxUnavailable="0%"),
        rolling(maxSurge=0),  # maxUnavailable defaults to 0
    ],
)
def test_rolling_update_that_can_never_progress_is_a_problem(rollout: dict[str, Any]) -> None:
    assert problems(rollout=rollout) == [
        "rollout.maxSurge and rollout.maxUnavailable cannot both be 0"
    ]


@pytest.mark.parametrize(
    "rollout",
    [
        rolling(),
        rolling(maxSurge=0, maxUnavailable=1),
        rolling(maxSurge="0%", maxUnavailable="10%"),
        rolling(maxSurge=1, maxUnavailable=0),
        rolling(maxUnavailable=0),  # maxSurge defaults to 1
        {"strategy": "Recreate"},
        {"strategy": "Auto"},
    ],
)
def test_rollouts_that_can_progress_are_fine(rollout: dict[str, Any]) -> None:
    assert problems(rollout=rollout) == []


@pytest.mark.parametrize("value", ["101%", "150%", "1000%"])
def test_max_unavailable_over_100_percent_is_a_problem(value: str) -> None:
    assert problems(rollout=rolling(maxUnavailable=value)) == [
        "rollout.maxUnavailable cannot exceed 100%"
    ]


def test_max_surge_over_100_percent_is_fine() -> None:
    assert problems(rollout=rolling(maxSurge="200%")) == []


# -- scheduling ------------------------------------------------------------------------------------


def test_gpu_product_contradicting_node_selector_is_a_problem() -> None:
    found = problems(
        gpu={"product": "NVIDIA-H100-80GB-HBM3"},
        nodeSelector={"nvidia.com/gpu.product": "NVIDIA-A10"},
    )
    assert len(found) == 1
    assert "NVIDIA-H100-80GB-HBM3" in found[0]
    assert "NVIDIA-A10" in found[0]


@pytest.mark.parametrize(
    "fields",
    [
        {"gpu": {"product": "NVIDIA-A10"}},
        {
            "gpu": {"product": "NVIDIA-A10"},
            "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A10"},
        },
        {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A10"}},
        {"gpu": {"product": "NVIDIA-A10"}, "nodeSelector": {"pool": "gpu"}},
    ],
)
def test_consistent_gpu_product_is_fine(fields: dict[str, Any]) -> None:
    assert problems(**fields) == []


@pytest.mark.parametrize(
    ("toleration", "message"),
    [
        ({"key": "b", "operator": "Exists", "value": "x"}, "value must be empty"),
        ({"key": "a", "operator": "Exists", "tolerationSeconds": 60}, "needs effect NoExecute"),
        (
            {"key": "a", "effect": "NoSchedule", "tolerationSeconds": 60},
            "needs effect NoExecute",
        ),
        ({"operator": "Equal", "value": "x"}, "without a key must use operator Exists"),
    ],
)
def test_toleration_rules_are_schema_rules(toleration: dict[str, Any], message: str) -> None:
    """The API server refuses these at apply (CEL); pydantic refuses the same, so the spec
    never reaches the semantic checks."""
    with pytest.raises(ValidationError, match=message):
        problems(tolerations=[toleration])


def test_duplicate_pull_secrets_are_a_problem() -> None:
    assert problems(imagePullSecrets=["a", "b", "a"]) == ["imagePullSecrets lists a twice"]


# -- env -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "secret", "key"),
    [
        ({}, "ngc-api", "NGC_API_KEY"),
        ({"authSecret": "mine", "authSecretKey": "token"}, "mine", "token"),
    ],
)
def test_env_copying_the_ngc_key_is_a_problem(
    fields: dict[str, Any], secret: str, key: str
) -> None:
    env = [
        {"name": "FINE", "value": "1"},
        {"name": "COPY", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}},
    ]
    assert problems(env=env, **fields) == ["env[1] (COPY) copies the NGC key; use authSecret"]


def test_every_problem_is_reported() -> None:
    found = problems(
        gpu={"product": "A"},
        nodeSelector={"nvidia.com/gpu.product": "B"},
        imagePullSecrets=["a", "a"],
        env=[
            {"name": "K", "valueFrom": {"secretKeyRef": {"name": "ngc-api", "key": "NGC_API_KEY"}}}
        ],
        rollout=rolling(maxSurge=0, maxUnavailable="150%"),
    )
    assert len(found) == 4
