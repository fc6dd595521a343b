"""The NimCache API (nimcache.models) and its CRD (crd.nimcache_crd): defaults, and every CEL
rule's intent mirrored in pydantic with a clear message naming what is wrong."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from nimop import crd
from nimop.core import apitypes, k8s
from nimop.nimcache import models

Obj = dict[str, Any]
BASE: Obj = {
    "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
    "authSecret": "ngc-api",
    "storage": {"size": "50Gi"},
}
CRD = crd.nimcache_crd()
VERSION = CRD["spec"]["versions"][0]
SPEC_SCHEMA: Obj = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]


def spec(**changes: Any) -> models.NimCacheSpec:
    return models.NimCacheSpec.model_validate({**BASE, **changes})


def refused(**changes: Any) -> str:
    with pytest.raises(ValidationError) as info:
        spec(**changes)
    return apitypes.describe_errors(info.value)


def walk(node: Obj, path: str = "") -> Iterator[tuple[str, Obj]]:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_defaults() -> None:
    s = spec()
    assert s.auth_secret_key == "NGC_API_KEY"
    assert s.backoff_limit == 3
    assert s.active_deadline_seconds is None
    assert (s.profiles, s.all_profiles, s.selector) == (None, False, None)
    assert s.storage.access_modes is None, "the default [ReadWriteMany] is decided in params"
    assert s.tolerations is None
    assert s.proxy is None
    assert s.image.reference == "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.3.3"


def test_image_digest() -> None:
    digest = "sha256:" + "a" * 64
    pinned = spec(image={"repository": "nvcr.io/nim/x", "digest": digest})
    assert pinned.image.reference == f"nvcr.io/nim/x@{digest}"
    both = spec(image={"repository": "nvcr.io/nim/x", "tag": "1", "digest": digest})
    assert both.image.reference == f"nvcr.io/nim/x:1@{digest}"
    assert "set image.tag, image.digest, or both" in refused(image={"repository": "nvcr.io/x"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"profiles": ["a"], "allProfiles": True},
            "set at most one of profiles, allProfiles or selector",
        ),
        ({"profiles": ["a"], "selector": {"engine": "vllm"}}, "set at most one of profiles"),
        ({"allProfiles": True, "selector": {"engine": "vllm"}}, "set at most one of profiles"),
        ({"selector": {}}, "a selector needs at least one of engine"),
        ({"selector": {"engine": "onnx"}}, "spec.selector.engine"),
        ({"selector": {"precision": "fp9"}}, "spec.selector.precision"),
        ({"selector": {"gpu": "H100"}}, "spec.selector.gpu"),
        ({"selector": {"gpu": "h100|a100"}}, "spec.selector.gpu"),
        ({"selector": {"tensorParallelism": 0}}, "spec.selector.tensorParallelism"),
        ({"selector": {"kind": "fast"}}, "spec.selector.kind"),
        ({"profiles": []}, "spec.profiles"),
        ({"profiles": ["x", "x"]}, "'x' is listed twice"),
        ({"profiles": ["--all"]}, "spec.profiles.0"),
        ({"profiles": ["a b"]}, "spec.profiles.0"),
        ({"profiles": ["$(rm -rf /)"]}, "spec.profiles.0"),
        ({"storage": {}}, "set exactly one of storage.size"),
        ({"storage": {"size": "1Gi", "existingClaim": "c"}}, "set exactly one of storage.size"),
        ({"storage": {"existingClaim": "c", "storageClassName": "fast"}}, "only apply to a claim"),
        ({"storage": {"existingClaim": "c", "accessModes": ["ReadWriteOnce"]}}, "only apply"),
        ({"storage": {"size": "lots"}}, "is not a Kubernetes quantity"),
        ({"storage": {"size": "1Gi", "accessModes": []}}, "spec.storage.accessModes"),
        ({"storage": {"size": "1Gi", "accessModes": ["ReadOnlyMany"]}}, "accessModes"),
        ({"storage": {"size": "1Gi", "accessModes": ["ReadWriteOnce"] * 2}}, "listed twice"),
        ({"storage": {"size": "1Gi", "subPath": "/abs"}}, "subPath must be a relative path"),
        ({"storage": {"size": "1Gi", "subPath": ".."}}, "subPath must be a relative path"),
        ({"storage": {"size": "1Gi", "subPath": "a/../../b"}}, "subPath must be a relative path"),
        ({"storage": {"size": "1Gi", "subPath": "a/.."}}, "subPath must be a relative path"),
        ({"storage": {"size": "1Gi", "subPath": "../a"}}, "subPath must be a relative path"),
        ({"backoffLimit": -1}, "spec.backoffLimit"),
        ({"backoffLimit": 2**31}, "spec.backoffLimit"),
        ({"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds"),
        ({"authSecret": "Not_A_Name"}, "spec.authSecret"),
        ({"authSecretKey": "a key"}, "spec.authSecretKey"),
        ({"imagePullSecrets": ["a", "a"]}, "listed twice"),
        ({"resources": {"requests": {"gpus": 1}}}, "resource names are cpu, memory"),
        ({"resources": {"limits": {"memory": "lots"}}}, "is not a Kubernetes quantity"),
        ({"proxy": {"caBundle": {"configMapName": "ca", "key": "a/b"}}}, "spec.proxy.caBundle.key"),
        ({"proxy": {"httpsProxy": ""}}, "spec.proxy.httpsProxy"),
        ({"proxy": {"httpsProxy": "x" * 2049}}, "spec.proxy.httpsProxy"),
        ({"tolerations": [{"value": "x"}]}, "a toleration without a key must use operator Exists"),
        ({"nodeSelector": {"bad key!": "x"}}, "spec.nodeSelector"),
        ({"unknown": 1}, "spec.unknown"),
    ],
)
def test_refused_with_a_clear_message(changes: Obj, message: str) -> None:
    assert message in refused(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"profiles": ["tensorrt_llm-h100-fp8-tp1-throughput", "a" * 64]},
        {"profiles": ["tensorrt_llm-h100_nvl-fp8-tp1-pp1-throughput-2330:10de"]},
        {"allProfiles": True},
        {"allProfiles": False, "selector": {"engine": "vllm"}},
        {"selector": {"engine": "tensorrt_llm", "gpu": "h100", "precision": "fp8", "lora": False}},
        {"selector": {"tensorParallelism": 2, "kind": "latency"}},
        {"storage": {"existingClaim": "models", "subPath": "llama/3.1-8b"}},
        {
            "storage": {
                "size": 50 * 2**30,
                "storageClassName": "fast",
                "accessModes": ["ReadWriteOnce"],
            }
        },
        {"storage": {"size": "1Gi", "subPath": "a..b/c"}},
        {
            "resources": {
                "requests": {"cpu": "500m", "nvidia.com/gpu": 1},
                "limits": {"memory": "4Gi"},
            }
        },
        {"proxy": {"httpsProxy": "http://proxy:3128", "noProxy": ".svc, 10.0.0.0/8"}},
        {"proxy": {"caBundle": {"configMapName": "corp-ca"}}},
        {"tolerations": []},
        {"activeDeadlineSeconds": 3600, "backoffLimit": 0},
    ],
)
def test_accepted(changes: Obj) -> None:
    spec(**changes)


def test_ca_bundle_key_defaults_to_ca_crt() -> None:
    proxy = spec(proxy={"caBundle": {"configMapName": "corp-ca"}}).proxy
    assert proxy is not None
    assert proxy.ca_bundle is not None
    assert proxy.ca_bundle.key == "ca.crt"


# -- the CRD carries the same rules ------------------------------------------------------------


def rules_at(path: str) -> list[str]:
    node = dict(walk(SPEC_SCHEMA))[path]
    return [r["rule"] for r in node.get("x-kubernetes-validations", [])]


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("", models.NimCacheSpec),
        (".storage", models.Storage),
        (".selector", models.ProfileSelector),
        (".image", apitypes.Image),
    ],
)
def test_every_python_rule_is_a_cel_rule(path: str, model: type[k8s.Strict]) -> None:
    assert [r.cel for r in model.rules] == rules_at(path)
    assert model.rules, "each of these has rules"


def test_crd_identity_and_columns() -> None:
    assert CRD["metadata"]["name"] == "nimcaches.nimop.dev"
    names_ = CRD["spec"]["names"]
    assert (names_["kind"], names_["plural"], names_["shortNames"], names_["categories"]) == (
        "NimCache",
        "nimcaches",
        ["nimc"],
        ["nim"],
    )
    columns = [c["name"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Ready", "Reason", "Phase", "Profiles", "Size", "PVC", "Age"]
    assert VERSION["subresources"] == {"status": {}}


def test_crd_schema_is_structural() -> None:
    nodes = list(walk(VERSION["schema"]["openAPIV3Schema"]))
    for key in ("$ref", "$defs", "title", "allOf", "oneOf", "patternProperties", "propertyNames"):
        assert [p for p, n in nodes if key in n] == [], key
    untyped = [
        p
        for p, n in nodes
        if "type" not in n
        and not n.get("x-kubernetes-int-or-string")
        and not n.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert untyped == []
    assert not [p for p, n in nodes if "default" in n], "defaults are the operator's, not stored"


def test_every_spec_field_is_explained() -> None:
    missing = [
        p
        for p, n in walk(SPEC_SCHEMA)
        if p and not p.endswith(("[]", "{}")) and not n.get("description")
    ]
    assert missing == []


# -- parse ----------------------------------------------------------------------------------------


def body(spec_: Any, status: Any = None) -> Obj:
    obj: Obj = {
        "apiVersion": "nimop.dev/v1alpha1",
        "kind": "NimCache",
        "metadata": {"name": "c", "namespace": "ns", "uid": "u", "generation": 3},
        "spec": spec_,
    }
    if status is not None:
        obj["status"] = status
    return obj


def test_parse_a_good_body() -> None:
    parsed = models.parse(body(BASE, {"phase": "Ready", "bytes": 5, "profiles": ["x"]}))
    assert parsed.spec is not None
    assert parsed.invalid is None
    assert (parsed.ref.generation, parsed.status.phase, parsed.status.size_bytes) == (3, "Ready", 5)


@pytest.mark.parametrize("spec_", [{"storage": {}}, "a string", None, {"image": [1]}])
def test_parse_never_raises_on_a_bad_spec(spec_: Any) -> None:
    parsed = models.parse(body(spec_))
    assert parsed.spec is None
    assert parsed.invalid


@pytest.mark.parametrize("status", [{"phase": "Exploded"}, "junk", {"conditions": "x"}])
def test_unreadable_status_counts_as_empty(status: Any) -> None:
    assert models.parse(body(BASE, status)).status == models.NimCacheStatus()
