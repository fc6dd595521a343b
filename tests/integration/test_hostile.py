"""Hostile and careless tenants: over a hundred invalid or hostile NimServices on the real
control plane, each refused at apply with a message naming the field or Stalled with a reason,
while a NimService that served before the suite keeps serving untouched.

Refusals are sent as `kubectl apply` sends them (create with fieldValidation=Strict), straight to
the API server, so a hundred cost a second. Everything that passes the schema is applied at
once, one namespace per group, and then every object is waited for together. The operator runs
with the shipped templates plus one that fails to render for a marked NimService (an admin's
template bug), so a render failure is exercised too. At the end the suite checks that every
child object the operator applied holds only keys the shipped templates can produce (read from
the operator's own managedFields entry), that the operator is alive, and prints the count of
cases by outcome.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from nimlab.cluster import Cluster
from nimop import names
from nimop.core import render
from nimop.core.meta import object_ref
from nimop.nimservice import models, params

from .helpers import REPO, Kubectl, OperatorProcess, nimservice, wait_for

pytestmark = pytest.mark.integration

Obj = dict[str, Any]
TRAP_LABEL = "render-trap"
TRAP_TEMPLATE = (
    "{#- Fails to render for a NimService labelled render-trap: an admin's template bug. -#}\n"
    f'{{%- if "{TRAP_LABEL}" in p.pod_labels %}}\n'
    "trap: {{ p.pod_labels['missing-label'] | y }}\n"
    "{%- endif %}\n"
)
DIGEST = "sha256:" + "0123456789abcdef" * 4
LONG = "a" * 300
INT32_MAX = 2**31 - 1


# -- cases ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    spec: Obj
    """Merged over the base spec; a value of None removes the key."""
    field: str = ""
    """For refusals: the field path the API server's message must name."""
    reason: str = ""
    """For Stalled cases: the Stalled reason."""
    message: str = ""
    """For Stalled cases: a part of the Stalled message."""
    object_name: str = ""
    """The NimService's own name, when the case is about names."""

    @property
    def refused(self) -> bool:
        return bool(self.field)


def r(name: str, field: str, **spec: Any) -> Case:
    return Case(name, spec, field=field)


def deep_affinity(depth: int) -> Obj:
    root: Obj = {}
    node = root
    for _ in range(depth):
        node["nodeAffinity"] = {}
        node = node["nodeAffinity"]
    return root


def node_expr(**expression: Any) -> Obj:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [expression]}]
            }
        }
    }


def pod_term(**term: Any) -> Obj:
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}


def image(**fields: Any) -> Obj:
    return {"repository": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "tag": "1.3.3", **fields}


def many(n: int, prefix: str = "k") -> dict[str, str]:
    return {f"{prefix}{i}": "v" for i in range(n)}


PA = "spec.probes.readiness"
REFUSED: list[Case] = [
    # image
    r("image-repository-space", "spec.image.repository", image=image(repository="nvcr.io/x y")),
    r("image-repository-empty", "spec.image.repository", image=image(repository="")),
    r("image-repository-tagged", "spec.image.repository", image=image(repository="nvcr.io/x:1")),
    r("image-tag-space", "spec.image.tag", image=image(tag="1.3 .3")),
    r("image-tag-too-long", "spec.image.tag", image=image(tag="t" * 129)),
    r("image-digest-short", "spec.image.digest", image=image(digest="sha256:abc")),
    r("image-digest-upper", "spec.image.digest", image=image(digest=DIGEST.upper())),
    r("image-no-tag-no-digest", "spec.image", image={"repository": "nvcr.io/x"}),
    r("image-pull-policy", "spec.image.pullPolicy", image=image(pullPolicy="Sometimes")),
    r("image-unknown-field", "spec.image.layers", image=image(layers=3)),
    # model and secrets
    r("model-space", "spec.model", model="meta/llama 3"),
    r("model-empty", "spec.model", model=""),
    r("model-too-long", "spec.model", model="m" * 257),
    r("auth-secret-syntax", "spec.authSecret", authSecret="Not_A_Name"),
    r("auth-secret-too-long", "spec.authSecret", authSecret="s" * 254),
    r("auth-secret-key-too-long", "spec.authSecretKey", authSecretKey="k" * 254),
    r("pull-secret-syntax", "spec.imagePullSecrets[0]", imagePullSecrets=["UPPER"]),
    r("pull-secret-duplicate", "spec.imagePullSecrets[1]", imagePullSecrets=["a", "a"]),
    r(
        "pull-secret-too-many",
        "spec.imagePullSecrets",
        imagePullSecrets=[f"s{i}" for i in range(17)],
    ),
    # replicas and GPUs
    r("replicas-negative", "spec.replicas", replicas=-1),
    r("replicas-too-many", "spec.replicas", replicas=1025),
    r("replicas-int32-overflow", "spec.replicas", replicas=2**31),
    r("gpu-count-too-many", "spec.gpu.count", gpu={"count": 65}),
    r("gpu-count-int64-overflow", "spec.gpu.count", gpu={"count": 4294967301}),
    r("gpu-product-syntax", "spec.gpu.product", gpu={"count": 1, "product": "has space"}),
    # resources
    r(
        "resources-bad-quantity",
        "spec.resources.requests.memory",
        resources={"requests": {"memory": "lots"}},
    ),
    r("resources-bad-name", "spec.resources.requests", resources={"requests": {"gpus": 1}}),
    r("resources-gpu-in-limits", "spec.resources", resources={"limits": {"nvidia.com/gpu": 2}}),
    r(
        "resources-long-quantity",
        "spec.resources.limits.cpu",
        resources={"limits": {"cpu": "1" * 65}},
    ),
    r(
        "resources-too-many",
        "spec.resources.requests",
        resources={"requests": {f"example.com/r{i}": 1 for i in range(17)}},
    ),
    r("resources-negative", "spec.resources.requests.cpu", resources={"requests": {"cpu": -1}}),
    # nodeSelector
    r("node-selector-key", "spec.nodeSelector", nodeSelector={"bad key": "x"}),
    r("node-selector-value", "spec.nodeSelector.pool", nodeSelector={"pool": "v" * 64}),
    r("node-selector-too-many", "spec.nodeSelector", nodeSelector=many(33)),
    r("node-selector-injection", "spec.nodeSelector", nodeSelector={"x\n  hostNetwork: true": "y"}),
    # tolerations
    r(
        "toleration-operator",
        "spec.tolerations[0].operator",
        tolerations=[{"key": "a", "operator": "Maybe"}],
    ),
    r(
        "toleration-exists-value",
        "spec.tolerations[0].value",
        tolerations=[{"key": "a", "operator": "Exists", "value": "x"}],
    ),
    r(
        "toleration-seconds-effect",
        "spec.tolerations[0].tolerationSeconds",
        tolerations=[{"key": "a", "tolerationSeconds": 5}],
    ),
    r(
        "toleration-no-key-equal",
        "spec.tolerations[0]",
        tolerations=[{"operator": "Equal", "value": "x"}],
    ),
    r(
        "toleration-seconds-int64-overflow",
        "spec.tolerations[0].tolerationSeconds",
        tolerations=[{"key": "a", "effect": "NoExecute", "tolerationSeconds": 2**63 - 1}],
    ),
    r("toleration-too-many", "spec.tolerations", tolerations=[{"operator": "Exists"}] * 33),
    r("toleration-unknown-field", "spec.tolerations[0].foo", tolerations=[{"key": "a", "foo": 1}]),
    r("toleration-key-syntax", "spec.tolerations[0].key", tolerations=[{"key": "bad key"}]),
    # affinity
    r("affinity-string", "spec.affinity.nodeAffinity", affinity={"nodeAffinity": "yes"}),
    r(
        "affinity-unknown-field",
        "spec.affinity.nodeAffinity.foo",
        affinity={"nodeAffinity": {"foo": 1}},
    ),
    r(
        "affinity-1000-deep",
        "spec.affinity.nodeAffinity.nodeAffinity",
        affinity=deep_affinity(1000),
    ),
    r("affinity-unknown-kind", "spec.affinity.gpuAffinity", affinity={"gpuAffinity": {}}),
    r(
        "affinity-weight-101",
        "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
        affinity={
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 101, "preference": {}}
                ]
            }
        },
    ),
    r(
        "affinity-weight-int32-overflow",
        "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight",
        affinity={
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 2**31, "preference": {}}
                ]
            }
        },
    ),
    r(
        "affinity-gt-not-integer",
        "matchExpressions[0].values",
        affinity=node_expr(key="a", operator="Gt", values=["x"]),
    ),
    r(
        "affinity-in-without-values",
        "matchExpressions[0].values",
        affinity=node_expr(key="a", operator="In"),
    ),
    r(
        "affinity-operator",
        "matchExpressions[0].operator",
        affinity=node_expr(key="a", operator="Near"),
    ),
    r(
        "affinity-expression-key",
        "matchExpressions[0].key",
        affinity=node_expr(key="bad key", operator="Exists"),
    ),
    r(
        "affinity-no-terms",
        "nodeSelectorTerms",
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
            }
        },
    ),
    r(
        "affinity-too-many-terms",
        "nodeSelectorTerms",
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}] * 9}
            }
        },
    ),
    r(
        "affinity-match-fields-key",
        "matchFields[0].key",
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchFields": [
                                {"key": "metadata.labels", "operator": "In", "values": ["x"]}
                            ]
                        }
                    ]
                }
            }
        },
    ),
    r("affinity-no-topology-key", "topologyKey", affinity=pod_term(labelSelector={})),
    r(
        "affinity-match-label-keys-alone",
        "requiredDuringSchedulingIgnoredDuringExecution[0]",
        affinity=pod_term(topologyKey="zone", matchLabelKeys=["app"]),
    ),
    r(
        "affinity-namespace-syntax",
        "namespaces[0]",
        affinity=pod_term(topologyKey="zone", namespaces=["UPPER"]),
    ),
    r(
        "affinity-selector-key",
        "labelSelector.matchLabels",
        affinity=pod_term(topologyKey="zone", labelSelector={"matchLabels": {"bad key": "x"}}),
    ),
    # class and account names
    r("priority-class-syntax", "spec.priorityClassName", priorityClassName="System_Critical"),
    r("priority-class-too-long", "spec.priorityClassName", priorityClassName="p" * 254),
    r("runtime-class-syntax", "spec.runtimeClassName", runtimeClassName="has space"),
    r("service-account-syntax", "spec.serviceAccountName", serviceAccountName="UPPER"),
    # env
    r("env-name", "spec.env[0].name", env=[{"name": "1BAD", "value": "x"}]),
    r("env-ngc-api-key", "spec.env", env=[{"name": "NGC_API_KEY", "value": "leak"}]),
    r("env-nim-cache-path", "spec.env", env=[{"name": "NIM_CACHE_PATH", "value": "/x"}]),
    r(
        "env-value-and-value-from",
        "spec.env[0]",
        env=[{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    ),
    r(
        "env-two-sources",
        "spec.env[0].valueFrom",
        env=[
            {
                "name": "A",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "status.podIP"},
                    "configMapKeyRef": {"name": "c", "key": "k"},
                },
            }
        ],
    ),
    r(
        "env-field-path",
        "spec.env[0].valueFrom.fieldRef.fieldPath",
        env=[{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}],
    ),
    r(
        "env-secret-key-syntax",
        "spec.env[0].valueFrom.secretKeyRef.key",
        env=[{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a b"}}}],
    ),
    r(
        "env-duplicate-name",
        "spec.env[1]",
        env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
    ),
    r("env-value-too-long", "spec.env[0].value", env=[{"name": "A", "value": "v" * 32769}]),
    r("env-too-many", "spec.env", env=[{"name": f"E{i}", "value": "x"} for i in range(129)]),
    # cache
    r("cache-claim-and-size", "spec.cache", cache={"existingClaim": "c", "size": "10Gi"}),
    r("cache-class-without-size", "spec.cache", cache={"storageClassName": "fast"}),
    r("cache-mount-dev-shm", "spec.cache", cache={"mountPath": "/dev/shm"}),
    r("cache-mount-tmp", "spec.cache", cache={"mountPath": "/tmp"}),
    r("cache-mount-workspace", "spec.cache", cache={"mountPath": "/opt/nim/workspace"}),
    r("cache-mount-dot-dot", "spec.cache", cache={"mountPath": "/opt/../etc"}),
    r("cache-mount-relative", "spec.cache.mountPath", cache={"mountPath": "relative"}),
    r(
        "cache-access-mode",
        "spec.cache.accessMode",
        cache={"size": "1Gi", "accessMode": "ReadOnlyMany"},
    ),
    r(
        "cache-storage-class-syntax",
        "spec.cache",
        cache={"size": "1Gi", "storageClassName": "Fast_SSD"},
    ),
    r("shm-size-quantity", "spec.shmSize", shmSize="lots"),
    # service
    r("service-type", "spec.service.type", service={"type": "ExternalName"}),
    r("service-port-zero", "spec.service.port", service={"port": 0}),
    r("service-port-65536", "spec.service.port", service={"port": 65536}),
    r(
        "service-reserved-annotation",
        "spec.service.annotations",
        service={"annotations": {"nimop.dev/applied-hash": "x"}},
    ),
    r(
        "service-annotation-key",
        "spec.service.annotations",
        service={"annotations": {"bad key": "x"}},
    ),
    r(
        "service-annotation-value",
        "spec.service.annotations.a",
        service={"annotations": {"a": "v" * 4097}},
    ),
    # probes: int32 edges and bounds
    r(
        "probe-timeout-4294967301",
        f"{PA}.timeoutSeconds",
        probes={"readiness": {"timeoutSeconds": 4294967301}},
    ),
    r(
        "probe-timeout-2147483648",
        f"{PA}.timeoutSeconds",
        probes={"readiness": {"timeoutSeconds": 2147483648}},
    ),
    r(
        "probe-timeout-2147483647",
        f"{PA}.timeoutSeconds",
        probes={"readiness": {"timeoutSeconds": INT32_MAX}},
    ),
    r("probe-period-zero", f"{PA}.periodSeconds", probes={"readiness": {"periodSeconds": 0}}),
    r("probe-period-negative", f"{PA}.periodSeconds", probes={"readiness": {"periodSeconds": -5}}),
    r(
        "probe-startup-failures",
        "spec.probes.startup.failureThreshold",
        probes={"startup": {"failureThreshold": 10001}},
    ),
    r(
        "probe-startup-delay-negative",
        "spec.probes.startup.initialDelaySeconds",
        probes={"startup": {"initialDelaySeconds": -1}},
    ),
    r(
        "probe-liveness-success",
        "spec.probes.liveness.successThreshold",
        probes={"liveness": {"successThreshold": 2}},
    ),
    r("probe-path-relative", "spec.probes.startup.path", probes={"startup": {"path": "no-slash"}}),
    r("probe-path-space", f"{PA}.path", probes={"readiness": {"path": "/a b"}}),
    # pod labels and annotations
    r("label-reserved-revision", "spec.podLabels", podLabels={"nimop.dev/revision": "x"}),
    r(
        "label-reserved-managed-by",
        "spec.podLabels",
        podLabels={"app.kubernetes.io/managed-by": "x"},
    ),
    r("label-reserved-component", "spec.podLabels", podLabels={"app.kubernetes.io/component": "x"}),
    r("label-reserved-pod-template-hash", "spec.podLabels", podLabels={"pod-template-hash": "x"}),
    r("label-key-syntax", "spec.podLabels", podLabels={"bad key": "x"}),
    r("label-key-name-64", "spec.podLabels", podLabels={"n" * 64: "x"}),
    r("label-key-prefix-254", "spec.podLabels", podLabels={f"{'p' * 254}/n": "x"}),
    r("label-value-64", "spec.podLabels.team", podLabels={"team": "v" * 64}),
    r("label-too-many", "spec.podLabels", podLabels=many(33)),
    r(
        "annotation-reserved-model",
        "spec.podAnnotations",
        podAnnotations={"nimop.dev/model": "spoofed"},
    ),
    r("annotation-key-syntax", "spec.podAnnotations", podAnnotations={"bad key": "x"}),
    r("annotation-value-4097", "spec.podAnnotations.a", podAnnotations={"a": "v" * 4097}),
    r("annotation-too-many", "spec.podAnnotations", podAnnotations=many(33)),
    # security context
    r(
        "root-with-run-as-non-root",
        "spec.securityContext.runAsUser",
        securityContext={"runAsUser": 0},
    ),
    r("uid-int32-overflow", "spec.securityContext.runAsUser", securityContext={"runAsUser": 2**31}),
    r("fs-group-negative", "spec.securityContext.fsGroup", securityContext={"fsGroup": -1}),
    r(
        "security-unknown-field",
        "spec.securityContext.privileged",
        securityContext={"privileged": True},
    ),
    # rollout
    r("rollout-strategy", "spec.rollout.strategy", rollout={"strategy": "BlueGreen"}),
    r("rollout-surge-with-auto", "spec.rollout", rollout={"strategy": "Auto", "maxSurge": 1}),
    r(
        "rollout-deadline-int32-overflow",
        "spec.rollout.progressDeadlineSeconds",
        rollout={"progressDeadlineSeconds": 2**31},
    ),
    r(
        "rollout-deadline-too-short",
        "spec.rollout.progressDeadlineSeconds",
        rollout={"progressDeadlineSeconds": 9},
    ),
    r(
        "rollout-percent",
        "spec.rollout.maxUnavailable",
        rollout={"strategy": "RollingUpdate", "maxUnavailable": "abc%"},
    ),
    r(
        "rollout-surge-int32-overflow",
        "spec.rollout.maxSurge",
        rollout={"strategy": "RollingUpdate", "maxSurge": 2**31},
    ),
    # the object itself
    r("unknown-spec-field", "spec.replica", replica=2),
    r("host-network-smuggled", "spec.hostNetwork", hostNetwork=True),
    Case("name-254-characters", {}, field="metadata.name", object_name="n" * 254),
    Case("name-upper-case", {}, field="metadata.name", object_name="Upper"),
]

STALLED: list[Case] = [
    # guardrails (settings-dependent): PolicyViolation, naming the setting
    Case(
        "policy-root",
        {"securityContext": {"runAsUser": 0, "runAsNonRoot": False}},
        reason="PolicyViolation",
        message="NIMOP_ALLOW_ROOT",
    ),
    Case(
        "policy-root-group",
        {"securityContext": {"runAsGroup": 0}},
        reason="PolicyViolation",
        message="runAsGroup 0",
    ),
    Case(
        "policy-root-fs-group",
        {"securityContext": {"fsGroup": 0}},
        reason="PolicyViolation",
        message="fsGroup 0",
    ),
    Case(
        "policy-run-as-non-root-false",
        {"securityContext": {"runAsNonRoot": False}},
        reason="PolicyViolation",
        message="runAsNonRoot false",
    ),
    Case(
        "policy-system-node-critical",
        {"priorityClassName": "system-node-critical"},
        reason="PolicyViolation",
        message="NIMOP_ALLOWED_PRIORITY_CLASSES",
    ),
    Case(
        "policy-system-cluster-critical",
        {"priorityClassName": "system-cluster-critical"},
        reason="PolicyViolation",
        message="system priority class",
    ),
    Case(
        "policy-apparmor-unconfined",
        {"podAnnotations": {"container.apparmor.security.beta.kubernetes.io/nim": "unconfined"}},
        reason="PolicyViolation",
        message="NIMOP_ALLOWED_POD_ANNOTATIONS",
    ),
    Case(
        "policy-apparmor-mixed-case",
        {"podAnnotations": {"Container.AppArmor.Security.Beta.Kubernetes.IO/nim": "unconfined"}},
        reason="PolicyViolation",
        message="security-related",
    ),
    Case(
        "policy-seccomp-pod",
        {"podAnnotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}},
        reason="PolicyViolation",
        message="seccomp",
    ),
    Case(
        "policy-seccomp-container",
        {"podAnnotations": {"container.seccomp.security.alpha.kubernetes.io/nim": "unconfined"}},
        reason="PolicyViolation",
        message="seccomp",
    ),
    Case(
        "policy-cri-o-annotation",
        {"podAnnotations": {"io.kubernetes.cri-o.userns-mode": "host"}},
        reason="PolicyViolation",
        message="cri-o",
    ),
    Case(
        "policy-kata-annotation",
        {"podAnnotations": {"io.katacontainers.config.hypervisor.kernel_params": "x"}},
        reason="PolicyViolation",
        message="katacontainers",
    ),
    # semantic checks the schema cannot express
    Case(
        "invalid-surge-and-unavailable-zero",
        {"rollout": {"strategy": "RollingUpdate", "maxSurge": 0, "maxUnavailable": 0}},
        reason="InvalidSpec",
        message="cannot both be 0",
    ),
    Case(
        "invalid-unavailable-over-100",
        {"rollout": {"strategy": "RollingUpdate", "maxUnavailable": "150%"}},
        reason="InvalidSpec",
        message="cannot exceed 100%",
    ),
    Case(
        "invalid-gpu-product-contradiction",
        {"gpu": {"count": 1, "product": "A"}, "nodeSelector": {"nvidia.com/gpu.product": "B"}},
        reason="InvalidSpec",
        message="contradicts",
    ),
    Case(
        "invalid-env-copies-ngc-key",
        {
            "env": [
                {
                    "name": "K",
                    "valueFrom": {"secretKeyRef": {"name": "ngc-api", "key": "NGC_API_KEY"}},
                }
            ]
        },
        reason="InvalidSpec",
        message="copies the NGC key",
    ),
    # what only the API server knows: the rendered Deployment is refused
    Case(
        "rejected-cpu-limit-below-request",
        {"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "1"}}},
        reason="InvalidSpec",
        message="rejected",
    ),
    Case(
        "rejected-extended-resource-without-limit",
        {"resources": {"requests": {"example.com/fpga": 1}}},
        reason="InvalidSpec",
        message="rejected",
    ),
    # an admin's template that cannot render this spec
    Case(
        "render-failure",
        {"podLabels": {TRAP_LABEL: "yes"}},
        reason="InvalidSpec",
        message="cannot render",
    ),
]
CONFLICT = Case("col-x-d28f48b9", {}, reason="NameConflict", object_name="col-x-d28f48b9")
ACCEPTED: list[Case] = [
    Case(
        "hostile-annotation-values",
        {
            "podAnnotations": {
                "a": "x\n  hostNetwork: true",
                "b": "{{ p.image }}",
                "c": "---\nkind: Secret",
                "d": "!!python/object/apply:os.system ['true']",
            },
            "service": {"annotations": {"e": "x\n  hostPID: true"}},
            "env": [{"name": "H", "value": "}\n      hostNetwork: true\n      x: {"}],
        },
    ),
    Case(
        "labels-at-their-limits",
        {
            "podLabels": {f"{'p' * 253}/{'n' * 63}": "v" * 63, "n" * 63: ""},
            "podAnnotations": {"a": "x" * 4096},
        },
    ),
    Case("name-253", {}, object_name=".".join(["a" * 63] * 4)[:253].rstrip(".")),
    Case("digest-pinned", {"image": image(tag="1.3.3-load-1s", digest=DIGEST)}),
]


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trap_templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("templates")
    for source in (REPO / "manifests").glob("*.yaml.j2"):
        shutil.copy(source, directory / source.name)
    (directory / "nimservice-zz-trap.yaml.j2").write_text(TRAP_TEMPLATE)
    return directory


@pytest.fixture(scope="module")
def operator(
    lab: Cluster, crd: Path, trap_templates: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The module's operator, with the shipped templates plus the trap."""
    proc = OperatorProcess(
        lab,
        Path(tmp_path_factory.mktemp("operator")),
        env={"NIMOP_TEMPLATES_DIR": str(trap_templates)},
    )
    proc.start()
    yield proc
    proc.stop()


def new_namespace(lab: Cluster, group: str) -> Kubectl:
    name = f"h-{group}-{uuid.uuid4().hex[:6]}"
    lab.create_namespace(name)
    k = Kubectl(lab, name)
    k.secrets()
    return k


def merged(base: Obj, patch: Obj) -> Obj:
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def manifest(case: Case, gpus: int = 0) -> Obj:
    obj = nimservice(case.object_name or case.name, gpus=gpus)
    obj["spec"] = merged(obj["spec"], case.spec)
    return obj


def create(api: httpx.Client, namespace: str, obj: Obj, strict: bool = True) -> httpx.Response:
    query = "?fieldValidation=Strict" if strict else ""
    path = f"/apis/{names.API_VERSION}/namespaces/{namespace}/{names.PLURAL}{query}"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # the 1000-deep affinity, encoded as is
    try:
        body = json.dumps(obj).encode()
    finally:
        sys.setrecursionlimit(limit)
    return api.post(path, content=body, headers={"Content-Type": "application/json"})


@dataclass
class Outcome:
    kind: str
    """refused, stalled or accepted"""
    reason: str
    message: str


@dataclass
class Suite:
    outcomes: dict[str, Outcome]
    namespaces: list[Kubectl]
    sentinel: Kubectl
    sentinel_versions: dict[str, str]
    conflict: Kubectl


def versions(k: Kubectl, name: str) -> dict[str, str]:
    found = {}
    for kind in ("deployment", "service"):
        obj = k.get(kind, names.deployment_name(name))
        assert obj is not None, f"{kind} {name}"
        found[kind] = obj["metadata"]["resourceVersion"]
    return found


def stalled(k: Kubectl, name: str) -> Outcome | None:
    obj = k.nim(name)
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    for cond in status.get("conditions", []):
        if cond["type"] == "Stalled" and cond["status"] == "True":
            return Outcome("stalled", cond["reason"], cond["message"])
    return None


@pytest.fixture(scope="module")
def suite(lab: Cluster, operator: OperatorProcess) -> Suite:
    outcomes: dict[str, Outcome] = {}

    # A NimService that serves before the suite starts, and must not notice it.
    sentinel = new_namespace(lab, "sentinel")
    sentinel.apply(nimservice("sentinel"))
    sentinel.wait_condition("sentinel", "Ready", "True", timeout=90)
    time.sleep(2)  # let the last transition's writes land
    before = versions(sentinel, "sentinel")

    # 1. Refused at apply: sent as kubectl apply sends them.
    refused_ns = new_namespace(lab, "refused")
    with lab.api() as api:
        for case in REFUSED:
            resp = create(api, refused_ns.ns, manifest(case))
            message = resp.json().get("message", resp.text) if resp.content else ""
            kind = "refused" if resp.status_code in (400, 422) else f"created ({resp.status_code})"
            outcomes[case.name] = Outcome(kind, str(resp.status_code), message)

    # 2. Accepted by the schema, refused by the operator: all at once, one namespace per group.
    groups: dict[str, Kubectl] = {}
    with lab.api() as api:
        for case in STALLED:
            group = case.reason.lower()
            k = groups.get(group) or groups.setdefault(group, new_namespace(lab, group))
            resp = create(api, k.ns, manifest(case))
            assert resp.status_code == 201, f"{case.name}: {resp.text}"

    # 3. A name collision: col.x serves first; col-x-d28f48b9 renders the same child names.
    conflict = new_namespace(lab, "conflict")
    conflict.apply(nimservice("col.x"))
    conflict.wait_condition("col.x", "Ready", "True", timeout=90)
    conflict.apply(manifest(CONFLICT, gpus=1))

    # 4. Hostile but valid: accepted, and nothing beyond the schema reaches the pods. The deep
    # affinity goes through a client that does not ask for strict validation: the API server
    # prunes what the schema does not know instead of storing it.
    accepted = new_namespace(lab, "accepted")
    with lab.api() as api:
        for case in ACCEPTED:
            resp = create(api, accepted.ns, manifest(case))
            assert resp.status_code == 201, f"{case.name}: {resp.text}"
        deep = Case("affinity-1000-deep-pruned", {"affinity": deep_affinity(1000)})
        resp = create(api, accepted.ns, manifest(deep), strict=False)
        assert resp.status_code == 201, resp.text
        stored = api.get(
            f"/apis/{names.API_VERSION}/namespaces/{accepted.ns}/{names.PLURAL}/{deep.name}"
        ).json()
        assert stored["spec"]["affinity"] == {"nodeAffinity": {}}, "pruned to the schema"
    accepted_cases = [*ACCEPTED, deep]

    def all_stalled() -> bool:
        for case in STALLED:
            k = groups[case.reason.lower()]
            outcome = stalled(k, case.object_name or case.name)
            if outcome is None:
                return False
            outcomes[case.name] = outcome
        outcome = stalled(conflict, CONFLICT.object_name)
        if outcome is None:
            return False
        outcomes[CONFLICT.name] = outcome
        return True

    wait_for("every schema-valid hostile NimService Stalled", all_stalled, timeout=90)

    def all_ready() -> bool:
        for case in accepted_cases:
            name = case.object_name or case.name
            cond = accepted.condition(name, "Ready")
            if not cond or cond["status"] != "True":
                return False
            outcomes[case.name] = Outcome("accepted", "Ready", "")
        return True

    wait_for("every hostile but valid NimService Ready", all_ready, timeout=120)
    return Suite(
        outcomes,
        [refused_ns, *groups.values(), conflict, accepted],
        sentinel,
        before,
        conflict,
    )


# -- what the templates can produce ---------------------------------------------------------------

OPAQUE = (".labels", ".annotations", ".matchLabels", ".nodeSelector", ".requests", ".limits")
"""Maps whose keys the user chooses: compared as one node, not by their keys."""


def opaque(path: str) -> bool:
    return path.endswith(OPAQUE) or path == "Service.spec.selector"


def rendered_paths(node: Any, path: str, out: set[str]) -> None:
    out.add(path)
    if opaque(path):
        return
    if isinstance(node, dict):
        for key, value in node.items():
            rendered_paths(value, f"{path}.{key}", out)
    elif isinstance(node, list):
        for item in node:
            rendered_paths(item, f"{path}[]", out)


def managed_paths(fields: Obj, path: str, out: set[str]) -> None:
    """Key paths of a managedFields fieldsV1 tree, in the same notation."""
    out.add(path)
    if opaque(path):
        return
    for key, sub in fields.items():
        if key == ".":
            continue
        if key.startswith("f:"):
            managed_paths(sub, f"{path}.{key[2:]}", out)
        else:  # k:{...}, v:..., i:N: a list item
            managed_paths(sub, f"{path}[]", out)


POD_TERM: Obj = {
    "topologyKey": "zone",
    "labelSelector": {
        "matchLabels": {"a": "b"},
        "matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}],
    },
    "namespaceSelector": {"matchLabels": {"a": "b"}},
    "namespaces": ["x"],
    "matchLabelKeys": ["a"],
    "mismatchLabelKeys": ["b"],
}
MAXIMAL: Obj = {
    "image": image(digest=DIGEST),
    "model": "m",
    "authSecret": "ngc-api",
    "imagePullSecrets": ["ngc-secret"],
    "replicas": 2,
    "gpu": {"count": 2, "product": "H100"},
    "resources": {"requests": {"cpu": 1}, "limits": {"memory": "1Gi"}},
    "nodeSelector": {"pool": "gpu"},
    "tolerations": [
        {
            "key": "a",
            "operator": "Equal",
            "value": "b",
            "effect": "NoExecute",
            "tolerationSeconds": 1,
        }
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}],
                        "matchFields": [
                            {"key": "metadata.name", "operator": "In", "values": ["n"]}
                        ],
                    }
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 1,
                    "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
                }
            ],
        },
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [POD_TERM],
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "podAffinityTerm": POD_TERM}
            ],
        },
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [POD_TERM],
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "podAffinityTerm": POD_TERM}
            ],
        },
    },
    "priorityClassName": "high",
    "runtimeClassName": "nvidia",
    "serviceAccountName": "sa",
    "env": [
        {"name": "A", "value": "1"},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": True}}},
        {
            "name": "C",
            "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k", "optional": True}},
        },
        {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ],
    "cache": {"size": "1Gi", "storageClassName": "fast", "accessMode": "ReadWriteMany"},
    "shmSize": "1Gi",
    "service": {"type": "LoadBalancer", "port": 443, "annotations": {"a": "b"}},
    "podLabels": {"a": "b"},
    "podAnnotations": {"a": "b"},
}


def possible_paths(templates: Path) -> set[str]:
    spec = models.NimServiceSpec.model_validate(MAXIMAL)
    ref = object_ref(
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": "maximal", "namespace": "x", "uid": "u"},
        }
    )
    found: set[str] = set()
    fingerprint = render.fingerprint(templates, params.RESOURCE)
    for strategy in (params.SURGE, params.RECREATE):
        p = params.build(spec, ref, strategy, template_fingerprint=fingerprint)
        for obj in render.render(p, params.RESOURCE, templates):
            rendered_paths(obj, obj["kind"], found)
    return found


# -- assertions -----------------------------------------------------------------------------------

ALL_CASES = [*REFUSED, *STALLED, CONFLICT]


def test_the_suite_has_over_a_hundred_refused_or_stalled_cases() -> None:
    assert len(ALL_CASES) >= 100
    assert len({c.name for c in ALL_CASES}) == len(ALL_CASES)


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
def test_refused_at_apply_with_a_message_naming_the_field(suite: Suite, case: Case) -> None:
    outcome = suite.outcomes[case.name]
    assert outcome.kind == "refused", f"{case.name} was not refused: {outcome}"
    assert case.field in outcome.message, outcome.message


@pytest.mark.parametrize("case", STALLED, ids=[c.name for c in STALLED])
def test_stalled_with_a_reason_and_nothing_applied(suite: Suite, case: Case) -> None:
    outcome = suite.outcomes[case.name]
    assert (outcome.kind, outcome.reason) == ("stalled", case.reason), outcome
    assert case.message in outcome.message, outcome.message
    k = next(k for k in suite.namespaces if k.ns.startswith(f"h-{case.reason.lower()}-"))
    child = names.deployment_name(case.object_name or case.name)
    assert k.get("deployment", child) is None
    if not case.name.startswith("rejected-"):
        # Refused before anything is sent. (The API server's rejection of a rendered Deployment
        # comes after the applier has sent the objects before it.)
        assert k.get("service", child) is None


def test_a_colliding_name_is_stalled_and_neither_applies_nor_adopts(suite: Suite) -> None:
    k = suite.conflict
    outcome = suite.outcomes[CONFLICT.name]
    assert (outcome.kind, outcome.reason) == ("stalled", "NameConflict"), outcome
    assert "col-x-d28f48b9" in outcome.message
    owner_uid = k.nim("col.x")["metadata"]["uid"]
    for kind in ("deployment", "service"):
        child = k.get(kind, "col-x-d28f48b9")
        assert child is not None
        assert [o["uid"] for o in child["metadata"]["ownerReferences"]] == [owner_uid]
    image_in_use = k.get("deployment", "col-x-d28f48b9")["spec"]["template"]["spec"]  # type: ignore[index]
    assert image_in_use["containers"][0]["image"].endswith(":1.3.3-load-1s")
    ready = k.condition("col.x", "Ready")
    assert ready is not None
    assert ready["status"] == "True"


def test_children_hold_only_keys_the_templates_can_produce(
    suite: Suite, trap_templates: Path
) -> None:
    possible = possible_paths(trap_templates)
    checked = 0
    for k in [*suite.namespaces, suite.sentinel]:
        for kind in ("deployments", "services", "persistentvolumeclaims", "poddisruptionbudgets"):
            listed = json.loads(k("get", kind, "-o", "json", "--show-managed-fields"))
            for obj in listed["items"]:
                entries = [
                    m
                    for m in obj["metadata"].get("managedFields", [])
                    if m.get("manager") == names.FIELD_MANAGER and m.get("operation") == "Apply"
                ]
                assert entries, f"{kind} {obj['metadata']['name']} not applied by the operator"
                found: set[str] = set()
                for entry in entries:
                    managed_paths(entry["fieldsV1"], obj["kind"], found)
                unexpected = sorted(found - possible)
                assert unexpected == [], f"{obj['kind']} {obj['metadata']['name']}: {unexpected}"
                checked += 1
    assert checked >= 2 * (len(ACCEPTED) + 3)


def test_hostile_annotation_values_land_verbatim_and_add_nothing(suite: Suite) -> None:
    k = next(k for k in suite.namespaces if k.ns.startswith("h-accepted-"))
    case = ACCEPTED[0]
    pod_spec = k.get("deployment", case.name)["spec"]["template"]  # type: ignore[index]
    annotations = pod_spec["metadata"]["annotations"]
    for key, value in case.spec["podAnnotations"].items():
        assert annotations[key] == value
    assert "hostNetwork" not in pod_spec["spec"]
    service = k.get("service", case.name)
    assert service is not None
    assert "hostPID" not in service["spec"]


def test_the_operator_is_alive_and_the_sentinel_untouched(
    suite: Suite, operator: OperatorProcess
) -> None:
    assert operator.proc is not None
    assert operator.proc.poll() is None
    assert httpx.get(f"http://127.0.0.1:{operator.port}/healthz", timeout=2).status_code == 200
    assert versions(suite.sentinel, "sentinel") == suite.sentinel_versions
    ready = suite.sentinel.condition("sentinel", "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("True", "Serving")
    assert "Traceback" not in operator.log_path.read_text(errors="replace")


def test_print_the_count_by_outcome(suite: Suite, capsys: pytest.CaptureFixture[str]) -> None:
    counts = Counter(
        "refused at apply" if o.kind == "refused" else f"{o.kind} {o.reason}"
        for o in suite.outcomes.values()
    )
    with capsys.disabled():
        print(f"\nhostile suite: {len(suite.outcomes)} NimServices")
        for outcome, count in sorted(counts.items()):
            print(f"  {outcome}: {count}")
    assert counts["refused at apply"] == len(REFUSED)
