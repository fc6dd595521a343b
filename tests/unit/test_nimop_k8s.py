"""Kubernetes types embedded in the spec (nimop.core.k8s): structure, syntax, rules, bounds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from nimop.core import k8s


def affinity(raw: dict[str, Any]) -> k8s.Affinity:
    return k8s.Affinity.model_validate(raw)


def node_term(*expressions: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": list(expressions)}]
            }
        }
    }


FULL_AFFINITY: dict[str, Any] = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100"]},
                        {"key": "node.kubernetes.io/exclude", "operator": "DoesNotExist"},
                        {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["40000"]},
                    ],
                    "matchFields": [
                        {"key": "metadata.name", "operator": "NotIn", "values": ["bad-node"]}
                    ],
                }
            ]
        },
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "preference": {"matchExpressions": [{"key": "z", "operator": "Exists"}]},
            }
        ],
    },
    "podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {
                "topologyKey": "topology.kubernetes.io/zone",
                "labelSelector": {"matchLabels": {"app": "cache"}},
                "namespaces": ["shared"],
                "matchLabelKeys": ["pod-template-hash"],
            }
        ]
    },
    "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 1,
                "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {
                        "matchExpressions": [{"key": "app", "operator": "In", "values": ["nim"]}]
                    },
                    "namespaceSelector": {},
                },
            }
        ]
    },
}


def test_a_full_core_v1_affinity_round_trips_as_written() -> None:
    parsed = affinity(FULL_AFFINITY)
    assert parsed.model_dump(by_alias=True, exclude_unset=True) == FULL_AFFINITY


@pytest.mark.parametrize(
    "raw",
    [
        {"nodeAffinity": "yes"},
        {"nodeAffinity": {"foo": 1}},
        {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{}]}},
        {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"topologyKey": "x"}}},
        {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}},
        {"unknownAffinity": {}},
    ],
    ids=["string", "unknown-field", "no-topology-key", "not-a-list", "no-terms", "unknown-kind"],
)
def test_malformed_affinities_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        affinity(raw)


def test_a_deeply_nested_affinity_is_refused_not_a_recursion_error() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(1000):
        node["nodeAffinity"] = {}
        node = node["nodeAffinity"]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        affinity(deep)


@pytest.mark.parametrize(
    ("expression", "ok"),
    [
        ({"key": "a", "operator": "In", "values": ["x"]}, True),
        ({"key": "a", "operator": "In"}, False),
        ({"key": "a", "operator": "NotIn", "values": []}, False),
        ({"key": "a", "operator": "Exists"}, True),
        ({"key": "a", "operator": "Exists", "values": ["x"]}, False),
        ({"key": "a", "operator": "DoesNotExist", "values": ["x"]}, False),
        ({"key": "a", "operator": "Gt", "values": ["10"]}, True),
        ({"key": "a", "operator": "Lt", "values": ["-3"]}, True),
        ({"key": "a", "operator": "Gt", "values": ["x"]}, False),
        ({"key": "a", "operator": "Lt", "values": ["1", "2"]}, False),
        ({"key": "a", "operator": "Near", "values": ["1"]}, False),
        ({"key": "bad key", "operator": "Exists"}, False),
        ({"key": "a", "operator": "In", "values": ["x" * 64]}, False),
        ({"key": "a", "operator": "In", "values": ["x"] * 33}, False),
    ],
)
def test_node_selector_requirements_follow_their_operator(
    expression: dict[str, Any], ok: bool
) -> None:
    if ok:
        affinity(node_term(expression))
    else:
        with pytest.raises(ValidationError):
            affinity(node_term(expression))


@pytest.mark.parametrize("weight", [0, 101, -1, 2**31])
def test_weights_are_1_to_100(weight: int) -> None:
    term = {"weight": weight, "preference": {}}
    with pytest.raises(ValidationError):
        affinity({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [term]}})


def test_match_label_keys_need_a_label_selector() -> None:
    with pytest.raises(ValidationError, match="need a labelSelector"):
        k8s.PodAffinityTerm.model_validate({"topologyKey": "x", "matchLabelKeys": ["app"]})


@pytest.mark.parametrize(
    "key",
    [
        "app",
        "nvidia.com/gpu.product",
        "a.b-c.d/x_y.z-1",
        "A_b.C",
        f"{'a' * 253}/{'b' * 63}",
        "k8s.io/" + "n" * 63,
    ],
)
def test_valid_label_keys(key: str) -> None:
    k8s.LabelSelector.model_validate({"matchLabels": {key: "v"}})


@pytest.mark.parametrize(
    "key",
    [
        "",
        "bad key",
        "-leading",
        "trailing-",
        "UPPER.example.com/x",
        "a/b/c",
        "/x",
        "x/",
        f"{'a' * 254}/b",
        "n" * 64,
        "x\n  hostNetwork: true",
        "ünïcode",
    ],
)
def test_invalid_label_keys(key: str) -> None:
    with pytest.raises(ValidationError, match="label key"):
        k8s.LabelSelector.model_validate({"matchLabels": {key: "v"}})


class Annotated(BaseModel):
    annotations: k8s.Annotations


@pytest.mark.parametrize(
    "key", ["team", "Example.COM/Owner", "container.apparmor.security.beta.kubernetes.io/nim"]
)
def test_annotation_key_prefixes_are_case_insensitive(key: str) -> None:
    assert Annotated.model_validate({"annotations": {key: "v"}}).annotations == {key: "v"}


@pytest.mark.parametrize("key", ["has space", "a/b/c", "x" * 64, ""])
def test_invalid_annotation_keys(key: str) -> None:
    with pytest.raises(ValidationError, match="annotation key"):
        Annotated.model_validate({"annotations": {key: "v"}})


def test_annotation_values_are_bounded() -> None:
    Annotated.model_validate({"annotations": {"k": "x" * k8s.MAX_ANNOTATION_VALUE}})
    with pytest.raises(ValidationError):
        Annotated.model_validate({"annotations": {"k": "x" * (k8s.MAX_ANNOTATION_VALUE + 1)}})


@pytest.mark.parametrize(
    ("toleration", "message"),
    [
        ({"operator": "Equal", "value": "x"}, "without a key"),
        ({"key": "a", "operator": "Exists", "value": "x"}, "value must be empty"),
        ({"key": "a", "tolerationSeconds": 5}, "tolerationSeconds needs effect NoExecute"),
        ({"key": "bad key"}, "should match"),
        ({"key": "a", "value": "x" * 64}, "at most 63"),
        ({"key": "a", "effect": "NoExecute", "tolerationSeconds": 2**63}, "less than or equal"),
        ({"key": "a", "effect": "NoExecute", "tolerationSeconds": -1}, "greater than or equal"),
    ],
)
def test_toleration_rules(toleration: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        k8s.Toleration.model_validate(toleration)


@pytest.mark.parametrize(
    "toleration",
    [
        {"operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "value": "yes"},
        {"key": "x", "effect": "NoExecute", "tolerationSeconds": k8s.INT64_MAX},
    ],
)
def test_valid_tolerations(toleration: dict[str, Any]) -> None:
    k8s.Toleration.model_validate(toleration)


def test_rules_reach_the_json_schema_of_their_own_model_only() -> None:
    schema = k8s.Toleration.model_json_schema(by_alias=True)
    rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert len(rules) == len(k8s.Toleration.rules) == 3
    term = k8s.NodeSelectorTerm.model_json_schema(by_alias=True)
    assert "x-kubernetes-validations" not in term
    requirement = term["$defs"]["NodeSelectorRequirement"]
    assert [r["fieldPath"] for r in requirement["x-kubernetes-validations"]] == [".values"]


def test_every_model_refuses_unknown_fields() -> None:
    for model in (
        k8s.Affinity,
        k8s.NodeAffinity,
        k8s.NodeSelector,
        k8s.NodeSelectorTerm,
        k8s.PodAffinity,
        k8s.PodAffinityTerm,
        k8s.LabelSelector,
        k8s.Toleration,
    ):
        assert model.model_config.get("extra") == "forbid", model
