"""Rendering a NimCache's children (manifests/nimcache-*.yaml.j2): golden files, and hostile
strings that must land verbatim where they belong and add no field anywhere.

Regenerate the golden files after an intended change to params or the templates, and review the
diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_nimcache_render.py -q
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimop import names
from nimop.core import render
from nimop.core.meta import object_ref
from nimop.nimcache import models, params

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
GOLDEN = Path(__file__).parent / "golden" / "nimcache"
"""A directory of its own: the NimService golden test prunes files in golden/ it does not know."""
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"
UID = "00000000-0000-0000-0000-000000000000"
Obj = dict[str, Any]

BASE: Obj = {
    "image": {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3"},
    "authSecret": "ngc-api",
    "imagePullSecrets": ["ngc-secret"],
    "storage": {"size": "50Gi"},
}
VARIANTS: dict[str, Obj] = {
    "profiles": {"profiles": ["tensorrt_llm-h100-fp8-tp1-throughput"]},
    "all": {"allProfiles": True, "backoffLimit": 1, "activeDeadlineSeconds": 7200},
    "selector": {
        "selector": {"engine": "tensorrt_llm", "gpu": "h100", "precision": "fp8", "lora": False},
        "storage": {"size": "200Gi", "storageClassName": "fss", "accessModes": ["ReadWriteOnce"]},
    },
    "existing-claim": {
        "storage": {"existingClaim": "shared-models", "subPath": "llama-3.1-8b"},
        "nodeSelector": {"node.kubernetes.io/instance-type": "VM.Standard.E4.Flex"},
        "tolerations": [],
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
    },
    "proxy-ca": {
        "proxy": {
            "httpProxy": "http://proxy.corp.example:3128",
            "httpsProxy": "http://proxy.corp.example:3128",
            "noProxy": ".svc,.cluster.local,10.0.0.0/8",
            "caBundle": {"configMapName": "corp-ca", "key": "ca-bundle.crt"},
        }
    },
}


def ref(name: str = "llama-3-1-8b", generation: int = 1) -> Any:
    return object_ref(
        {
            "apiVersion": names.API_VERSION,
            "kind": models.KIND,
            "metadata": {
                "name": name,
                "namespace": "default",
                "uid": UID,
                "generation": generation,
            },
        }
    )


def rendered(raw: Obj, name: str = "llama-3-1-8b") -> list[Obj]:
    spec = models.NimCacheSpec.model_validate({**BASE, **raw})
    p = params.build(spec, ref(name), render.fingerprint(MANIFESTS, params.RESOURCE))
    p = params.with_job(p, params.choose_job(name, p.job_hash, 1, [], None))
    return list(render.render(p, params.RESOURCE, MANIFESTS, use_cache=False))


def by_kind(objects: list[Obj]) -> dict[str, Obj]:
    return {o["kind"]: o for o in objects}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_golden(variant: str) -> None:
    text = yaml.safe_dump_all(rendered(VARIANTS[variant]), sort_keys=False)
    golden = GOLDEN / f"{variant}.yaml"
    if UPDATE_GOLDEN:
        golden.write_text(text)
    assert golden.is_file(), f"missing {golden}: run with UPDATE_GOLDEN=1"
    assert text == golden.read_text()


def test_objects_and_ownership() -> None:
    objects = by_kind(rendered(VARIANTS["profiles"]))
    assert set(objects) == {"Job", "PersistentVolumeClaim"}
    for obj in objects.values():
        assert obj["metadata"]["ownerReferences"][0]["kind"] == "NimCache"
        assert obj["metadata"]["ownerReferences"][0]["controller"] is True
        assert obj["metadata"]["labels"][names.LABEL_NIMCACHE] == "llama-3-1-8b"
        assert obj["metadata"]["labels"][names.LABEL_MANAGED_BY] == "nimop"
    assert set(by_kind(rendered(VARIANTS["existing-claim"]))) == {"Job"}


def test_job_shape() -> None:
    job = by_kind(rendered(VARIANTS["profiles"]))["Job"]
    pod = job["spec"]["template"]
    assert pod["metadata"]["labels"][names.LABEL_NIMCACHE] == "llama-3-1-8b"
    assert pod["metadata"]["labels"][names.LABEL_MANAGED_BY] == "nimop"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"] == {
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = spec["containers"]
    assert container["command"] == ["/bin/sh", "-ec", params.SCRIPT, "nimcache"]
    assert container["args"] == ["profiles", "tensorrt_llm-h100-fp8-tp1-throughput"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert job["spec"]["backoffLimit"] == 3
    assert "activeDeadlineSeconds" not in job["spec"]
    assert (
        job["metadata"]["name"]
        == f"llama-3-1-8b-{job['metadata']['labels'][params.LABEL_JOB_HASH]}"
    )


def test_no_job_when_ready_without_one() -> None:
    spec = models.NimCacheSpec.model_validate({**BASE, **VARIANTS["profiles"]})
    p = params.build(spec, ref())
    p = params.with_job(p, params.choose_job("llama-3-1-8b", p.job_hash, 1, [], p.job_hash))
    assert [o["kind"] for o in render.render(p, params.RESOURCE, MANIFESTS)] == [
        "PersistentVolumeClaim"
    ]


def test_example_renders() -> None:
    docs = [
        d
        for d in yaml.safe_load_all((REPO / "examples" / "nimcache-llama-3.1-8b.yaml").read_text())
        if d
    ]
    caches = [d for d in docs if d["kind"] == "NimCache"]
    assert caches
    for doc in caches:
        spec = models.NimCacheSpec.model_validate(doc["spec"])
        p = params.build(spec, ref(doc["metadata"]["name"]))
        p = params.with_job(p, params.choose_job(p.name, p.job_hash, 1, [], None))
        assert {o["kind"] for o in render.render(p, params.RESOURCE, MANIFESTS)} >= {"Job"}


# -- hostile input --------------------------------------------------------------------------------

HOSTILE = [
    'a"\n  injected: true\n',
    "x\n        - name: EVIL\n          value: yes",
    "{{ p.image }} {% if true %}x{% endif %}",
    "&anchor *alias !!python/object:os.system",
    "line\u2028separator\u2029paragraph\x85next",
    "'; touch /tmp/pwned; echo '",
    "$(touch /tmp/pwned) `id` $$ $(NGC_API_KEY)",
    "x" * 2000,
    "- item\n- other",
    "#comment",
]


def leaves(node: Any, path: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(leaves(value, f"{path}.{key}"))
        return out
    if isinstance(node, list):
        out = {}
        for i, value in enumerate(node):
            out.update(leaves(value, f"{path}[{i}]"))
        return out
    return {path: node}


def plain_paths(objects: list[Obj]) -> set[str]:
    """Every leaf path, with list indexes of env and volumes kept (their order is fixed)."""
    return {f"{o['kind']}{p}" for o in objects for p in leaves(o)}


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize("field", ["httpProxy", "httpsProxy", "noProxy"])
def test_hostile_proxy_values_stay_values(field: str, text: str) -> None:
    reference = rendered({"proxy": {field: "http://proxy:3128"}})
    hostile = rendered({"proxy": {field: text}})
    assert plain_paths(hostile) == plain_paths(reference), "no field added or removed"
    env = by_kind(hostile)["Job"]["spec"]["template"]["spec"]["containers"][0]["env"]
    upper = {"httpProxy": "HTTP_PROXY", "httpsProxy": "HTTPS_PROXY", "noProxy": "NO_PROXY"}[field]
    values = {e["name"]: e.get("value") for e in env}
    assert values[upper] == values[upper.lower()] == text


@pytest.mark.parametrize(
    "text",
    [t for t in HOSTILE if models._sub_path_ok(t) and len(t) <= 1024],
)
def test_hostile_sub_path_stays_a_value(text: str) -> None:
    reference = rendered({"storage": {"size": "1Gi", "subPath": "models"}})
    hostile = rendered({"storage": {"size": "1Gi", "subPath": text}})
    assert plain_paths(hostile) == plain_paths(reference)
    mounts = by_kind(hostile)["Job"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert mounts[0]["subPath"] == text


@pytest.mark.parametrize(
    "field",
    [
        {"storage": {"size": "1Gi", "storageClassName": "x\n  evil: 1"}},
        {"authSecret": "a\nb"},
        {"imagePullSecrets": ["a b"]},
        {"proxy": {"caBundle": {"configMapName": "ca", "key": "k\n: v"}}},
        {"nodeSelector": {"k": "v\nx: y"}},
        {"profiles": ["a\nb"]},
        {"image": {"repository": "nvcr.io/x\n  y: z", "tag": "1"}},
    ],
)
def test_constrained_fields_refuse_what_could_not_be_a_value(field: Obj) -> None:
    with pytest.raises(ValueError, match=r"should match pattern|spec"):
        models.NimCacheSpec.model_validate({**BASE, **field})
