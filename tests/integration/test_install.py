"""Installing nimop: the Helm chart and the kustomize base, on the real control plane.

The operator's image cannot run in the lab (the lab's "containers" are NIM simulators), so an
install test installs the chart with no running operator pod, then runs the operator as a local
process whose kubeconfig holds a token of the chart's ServiceAccount. The operator then works with
exactly the RBAC the chart grants: a NimService reaching Ready proves the rules are enough, and
`kubectl auth can-i` proves they are not more than needed. Two such processes with the chart's
env show its leader election: one reconciles, the other stands by and takes over.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from nimlab.binaries import ensure_binaries
from nimlab.cluster import Cluster, free_port

from .helpers import CRD, OPERATOR_ENV, REPO, Kubectl, OperatorProcess, nimservice, wait_for

pytestmark = pytest.mark.integration

Obj = dict[str, Any]
Rule = tuple[str, str, str]  # apiGroup, resource, verb
NamedRule = tuple[str, str, str, str]  # apiGroup, resource, verb, resource name ("*": any)

CHART = REPO / "charts" / "nimop"
CI_VALUES = CHART / "ci"
KUSTOMIZE_BASE = REPO / "deploy" / "kustomize" / "base"

# The operator's rules in every namespace it manages: the contract docs/install.md explains.
# Anything added to the chart or the kustomize base must be added here, on purpose. Nothing on
# Secrets: the operator learns that one is missing from the pods that wait for it.
APPLIED = ("list", "watch", "create", "patch")  # watched children, server-side applied
PRUNED = (*APPLIED, "delete")  # ... and deleted when no longer rendered
NAMESPACE_RULES: set[Rule] = {
    *{("nimop.dev", r, v) for r in ("nimservices", "nimcaches") for v in ("get", "list", "watch")},
    ("nimop.dev", "nimservices/status", "patch"),
    ("nimop.dev", "nimcaches/status", "patch"),
    ("nimop.dev", "nimservices/finalizers", "update"),
    ("nimop.dev", "nimcaches/finalizers", "update"),
    *{("apps", "deployments", v) for v in APPLIED},
    *{("", "services", v) for v in APPLIED},
    *{("", "persistentvolumeclaims", v) for v in ("get", *PRUNED)},
    *{("policy", "poddisruptionbudgets", v) for v in PRUNED},
    *{("batch", "jobs", v) for v in PRUNED},
    *{("apps", "replicasets", v) for v in ("get", "list", "watch")},
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods/status", "patch"),
    ("", "configmaps", "get"),
    *{("", "events", v) for v in ("create", "list", "watch")},
}
# Read-only and cluster-wide (rbac.clusterCapacityAccess): GPU placement and node autoscaling.
CAPACITY_RULES: set[Rule] = {
    *{("", r, v) for r in ("nodes", "pods") for v in ("list", "watch")},
    *{("karpenter.sh", r, v) for r in ("nodepools", "nodeclaims") for v in ("list", "watch")},
}
# What the API server grants every ServiceAccount whatever its bindings (system:basic-user,
# system:discovery, system:public-info-viewer, system:service-account-issuer-discovery): the
# resources among them. The rest are non-resource URLs (discovery, /livez, ...).
EVERYONE = {
    "selfsubjectreviews.authentication.k8s.io",
    "selfsubjectaccessreviews.authorization.k8s.io",
    "selfsubjectrulesreviews.authorization.k8s.io",
}


def lease_rules(lease: str) -> set[NamedRule]:
    """Leader election, in the release namespace only: the one Lease, and a create (which RBAC
    cannot restrict by name) for the first replica ever to campaign."""
    return {
        ("coordination.k8s.io", "leases", "get", lease),
        ("coordination.k8s.io", "leases", "update", lease),
        ("coordination.k8s.io", "leases", "create", "*"),
    }


# The Lease handover, with the test's NIMOP_LEASE_SECONDS. A leader renews every third of the
# lease, so a standby that takes over sooner than LEASE_SECONDS - LEASE_SECONDS / 3 after the
# leader got SIGTERM was handed the Lease (released), not left to wait for it to expire. The
# lease is long enough that the two cannot be confused on a busy machine (a release takes well
# under a second).
LEASE_SECONDS = 10
RELEASED_HANDOVER = LEASE_SECONDS * 2 / 3 - 0.5

# A namespace-scoped operator waits for kopf's namespace listing, which it is not allowed to do,
# to give up (kopf retries a 403 for about a minute) before it watches anything.
NAMESPACED_START = 60.0
RBAC_DENIAL = re.compile(r'is forbidden: User \\?"[^"\\]+\\?" cannot ')
KOPF_SCANS = re.compile(
    r"GET \S+/(apis/apiextensions\.k8s\.io/v1/customresourcedefinitions|api/v1/namespaces)"
    r"(\?\S*)? ->"
)


def rule_set(rules: list[Obj]) -> set[Rule]:
    found: set[Rule] = set()
    for rule in rules:
        assert not rule.get("resourceNames"), rule
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                found.update((group, resource, verb) for verb in rule["verbs"])
    return found


def named_rule_set(rules: list[Obj]) -> set[NamedRule]:
    found: set[NamedRule] = set()
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for name in rule.get("resourceNames") or ["*"]:
                    found.update((group, resource, verb, name) for verb in rule["verbs"])
    return found


def find(docs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def container_env(deployment: Obj) -> dict[str, str]:
    """Values, and `fieldRef:<path>` for those the kubelet fills in."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {
        e["name"]: e["value"]
        if "value" in e
        else f"fieldRef:{e['valueFrom']['fieldRef']['fieldPath']}"
        for e in container.get("env", [])
    }


def pod_env(container: Obj, pod: str, namespace: str) -> dict[str, str]:
    """The container's env as the kubelet would give it to a pod of this name and namespace."""
    fields = {"metadata.name": pod, "metadata.namespace": namespace}
    return {
        e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in container["env"]
    }


@dataclass
class Helm:
    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        env.pop("KUBECONFIG", None)
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        out = subprocess.run(
            [str(self.binary), *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out

    def template(self, *args: str, release: str = "t") -> list[Obj]:
        out = self.run("template", release, str(CHART), "--namespace", "nimop-system", *args)
        return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = ensure_binaries() / "helm"
    assert binary.is_file(), f"{binary} is missing: run hack/k8s/build.sh"
    return Helm(binary, tmp_path_factory.mktemp("helm"))


@pytest.fixture
def lab_helm(lab: Cluster, helm: Helm) -> Helm:
    return Helm(helm.binary, helm.home, lab.kubeconfig)


# -- the chart, offline -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["-f", str(CI_VALUES / "namespaced-values.yaml")],
        ["-f", str(CI_VALUES / "ha-values.yaml")],
        ["--set", "leaderElection.enabled=false"],
        ["--set", "probe.mode=proxy,customTemplates.configMap=my-templates,log.json=true"],
    ],
    ids=["defaults", "namespaced", "ha", "no-election", "options"],
)
def test_chart_lints_clean(helm: Helm, values: list[str]) -> None:
    out = helm.run("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in out.stdout
    assert "[WARNING]" not in out.stdout, out.stdout
    assert "[ERROR]" not in out.stdout, out.stdout


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["-f", str(CI_VALUES / "namespaced-values.yaml")],
        ["-f", str(CI_VALUES / "ha-values.yaml")],
        ["--set", "probe.mode=proxy"],
        ["--set", "rbac.clusterCapacityAccess=false"],
    ],
    ids=["defaults", "namespaced", "ha", "proxy", "no-capacity"],
)
def test_no_rule_touches_secrets_or_wildcards(helm: Helm, values: list[str]) -> None:
    roles = [d for d in helm.template(*values) if d["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], (role["metadata"]["name"], rule)
            assert not [r for r in rule["resources"] if r.partition("/")[0] == "secrets"], rule
            assert not rule.get("nonResourceURLs"), rule


def test_default_render_is_cluster_wide_and_locked_down(helm: Helm) -> None:
    docs = helm.template()
    # The only namespaced RBAC: leader election, in the release namespace.
    assert [r["metadata"]["name"] for r in find(docs, "Role")] == ["t-nimop-leader-election"]
    assert [b["metadata"]["name"] for b in find(docs, "RoleBinding")] == ["t-nimop-leader-election"]
    assert not find(docs, "CustomResourceDefinition")  # crds/ is not a template
    assert rule_set(one(docs, "ClusterRole", "t-nimop")["rules"]) == NAMESPACE_RULES
    assert rule_set(one(docs, "ClusterRole", "t-nimop-capacity")["rules"]) == CAPACITY_RULES
    for binding in find(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "t-nimop", "namespace": "nimop-system"}
        ]

    deployment = one(docs, "Deployment", "t-nimop")
    spec = deployment["spec"]
    # The old and the new pod overlap; only the one holding the Lease reconciles.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "t-nimop"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    assert container["image"] == "nimop:0.1.0"
    assert container["args"] == ["run"]
    assert "command" not in container
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http-metrics"}
    assert container["ports"][0]["containerPort"] == 8080
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    env = container_env(deployment)
    assert "NIMOP_NAMESPACES" not in env
    assert env["NIMOP_HTTP_ADDRESS"] == "0.0.0.0:8080"
    assert env["NIMOP_PROBE_MODE"] == "direct"
    assert env["NIMOP_PROBE_INTERVAL_FAST"] == "5"
    assert env["NIMOP_PROBE_INTERVAL_STEADY"] == "60"
    assert env["NIMOP_LEADER_ELECTION"] == "true"
    assert env["NIMOP_LEASE_NAME"] == "t-nimop"
    assert env["NIMOP_LEASE_NAMESPACE"] == "fieldRef:metadata.namespace"
    assert env["NIMOP_LEASE_SECONDS"] == "15"
    assert env["POD_NAME"] == "fieldRef:metadata.name"
    # kopf peering is gone: kopf runs standalone and the Lease decides who reconciles.
    assert not {"NIMOP_PEERING", "NIMOP_PRIORITY", "POD_ID"} & set(env)

    service = one(docs, "Service", "t-nimop-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    assert not find(docs, "ServiceMonitor")


def test_namespace_scoped_render_grants_roles_per_namespace(helm: Helm) -> None:
    docs = helm.template("-f", str(CI_VALUES / "namespaced-values.yaml"))
    roles = find(docs, "Role", "t-nimop")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["nim-team-a", "nim-team-b"]
    for role in roles:
        assert rule_set(role["rules"]) == NAMESPACE_RULES
    bindings = find(docs, "RoleBinding", "t-nimop")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["nim-team-a", "nim-team-b"]
    assert all(b["subjects"][0]["namespace"] == "nimop-system" for b in bindings)
    # Leader election stays in the release namespace, whatever the watched ones.
    lease_role = one(docs, "Role", "t-nimop-leader-election")
    assert lease_role["metadata"]["namespace"] == "nimop-system"
    assert named_rule_set(lease_role["rules"]) == lease_rules("t-nimop")
    assert len(find(docs, "Role")) == 3
    assert one(docs, "RoleBinding", "t-nimop-leader-election")["metadata"]["namespace"] == (
        "nimop-system"
    )
    # Only the read-only capacity role is cluster-wide.
    assert [r["metadata"]["name"] for r in find(docs, "ClusterRole")] == ["t-nimop-capacity"]
    env = container_env(one(docs, "Deployment"))
    assert env["NIMOP_NAMESPACES"] == "nim-team-a,nim-team-b"

    no_capacity = helm.template(
        "-f", str(CI_VALUES / "namespaced-values.yaml"), "--set", "rbac.clusterCapacityAccess=false"
    )
    assert not find(no_capacity, "ClusterRole")
    assert not find(no_capacity, "ClusterRoleBinding")

    no_rbac = helm.template("--set", "rbac.create=false")
    assert not {d["kind"] for d in no_rbac} & {
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    }


def test_leader_election_render(helm: Helm) -> None:
    for docs in (
        helm.template(),
        helm.template("--set", "replicas=3"),
        helm.template("-f", str(CI_VALUES / "ha-values.yaml")),
        helm.template("-f", str(CI_VALUES / "namespaced-values.yaml")),
    ):
        # No kopf peering left: no peering CRDs or objects, no hooks, no kopf.dev rules.
        assert not find(docs, "CustomResourceDefinition")
        assert not {"ClusterKopfPeering", "KopfPeering"} & {d["kind"] for d in docs}
        assert not [d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
        for role in find(docs, "ClusterRole") + find(docs, "Role"):
            assert all("kopf.dev" not in r.get("apiGroups", []) for r in role["rules"]), role
        role = one(docs, "Role", "t-nimop-leader-election")
        assert role["metadata"]["namespace"] == "nimop-system"
        assert named_rule_set(role["rules"]) == lease_rules("t-nimop")
        binding = one(docs, "RoleBinding", "t-nimop-leader-election")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "t-nimop-leader-election",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "t-nimop", "namespace": "nimop-system"}
        ]
        deployment = one(docs, "Deployment")
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        env = container_env(deployment)
        assert env["NIMOP_LEADER_ELECTION"] == "true"
        assert env["NIMOP_LEASE_NAME"] == "t-nimop"
        assert env["NIMOP_LEASE_NAMESPACE"] == "fieldRef:metadata.namespace"
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "command" not in container
        assert container["args"] == ["run"]

    ha = helm.template("-f", str(CI_VALUES / "ha-values.yaml"))
    assert one(ha, "Deployment")["spec"]["replicas"] == 2
    assert container_env(one(ha, "Deployment"))["NIMOP_LEASE_SECONDS"] == "10"

    # The Lease is named after the release, and the Role names exactly that Lease.
    renamed = helm.template("--set", "fullnameOverride=nim-ops")
    assert container_env(one(renamed, "Deployment"))["NIMOP_LEASE_NAME"] == "nim-ops"
    assert named_rule_set(one(renamed, "Role", "nim-ops-leader-election")["rules"]) == (
        lease_rules("nim-ops")
    )

    # The release namespace may also be a watched one: two Roles there, with distinct names.
    home = helm.template("--set", "watchNamespaces={nimop-system}")
    assert sorted(r["metadata"]["name"] for r in find(home, "Role")) == [
        "t-nimop",
        "t-nimop-leader-election",
    ]

    off = helm.template("--set", "leaderElection.enabled=false")
    assert not find(off, "Role")
    assert not find(off, "RoleBinding")
    deployment = one(off, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two at once
    env = container_env(deployment)
    assert env["NIMOP_LEADER_ELECTION"] == "false"
    assert not [name for name in env if name.startswith("NIMOP_LEASE_")]

    no_rbac = helm.template("--set", "rbac.create=false")
    assert "NIMOP_LEASE_NAME" in container_env(one(no_rbac, "Deployment"))
    assert not find(no_rbac, "Role")

    unsafe = helm.run(
        "template", "t", str(CHART), "--set", "replicas=2,leaderElection.enabled=false", check=False
    )
    assert unsafe.returncode != 0
    assert "replicas > 1 needs leaderElection.enabled" in unsafe.stderr


def test_optional_parts_render(helm: Helm) -> None:
    proxy = helm.template("--set", "probe.mode=proxy")
    assert ("", "pods/proxy", "get") in rule_set(one(proxy, "ClusterRole", "t-nimop")["rules"])

    monitor = ["--set", "metrics.serviceMonitor.enabled=true"]
    assert not find(helm.template(*monitor), "ServiceMonitor")  # no Prometheus Operator API
    detected = helm.template(*monitor, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    endpoint = one(detected, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["port"] == "http-metrics"
    assert endpoint["path"] == "/metrics"
    assert find(
        helm.template(*monitor, "--set", "metrics.serviceMonitor.force=true"), "ServiceMonitor"
    )

    templates = helm.template("--set", "customTemplates.configMap=my-templates")
    pod = one(templates, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "templates", "configMap": {"name": "my-templates"}} in pod["volumes"]
    assert container_env(one(templates, "Deployment"))["NIMOP_TEMPLATES_DIR"].startswith(
        "/etc/nimop/templates"
    )

    extra = helm.template(
        "--set-json",
        'rbac.extraRules=[{"apiGroups":[""],"resources":["configmaps"],"verbs":["patch"]}]',
    )
    assert ("", "configmaps", "patch") in rule_set(one(extra, "ClusterRole", "t-nimop")["rules"])

    no_sa = helm.run(
        "template", "t", str(CHART), "--set", "serviceAccount.create=false", check=False
    )
    assert no_sa.returncode != 0
    assert "serviceAccount.name is required" in no_sa.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (["--set", "replicas=two"], "at '/replicas': got string, want integer"),
        (["--set", "replicas=-1"], "/replicas"),
        (["--set", "probe.mode=sideways"], "at '/probe/mode'"),
        (["--set", "watchNamespaces=team-a"], "at '/watchNamespaces': got string, want array"),
        (["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (["--set", "resources.requests.cpu=lots"], "/resources/requests/cpu"),
        (["--set", "log.json=maybe"], "at '/log/json'"),
        (["--set", "leaderElection.enabled=maybe"], "at '/leaderElection/enabled'"),
        (["--set", "leaderElection.leaseSeconds=0"], "at '/leaderElection/leaseSeconds'"),
        (["--set", "leaderElection.leaseSeconds=1.5"], "at '/leaderElection/leaseSeconds'"),
        (["--set", "replica=2"], "additional properties 'replica' not allowed"),
        (["--set", "peering.enabled=true"], "additional properties 'peering' not allowed"),
    ],
    ids=[
        "replicas-string",
        "replicas-negative",
        "probe-mode",
        "namespaces-string",
        "namespace-invalid",
        "quantity",
        "log-json",
        "election-enabled",
        "lease-seconds-zero",
        "lease-seconds-fraction",
        "typo",
        "peering-removed",
    ],
)
def test_schema_rejects_bad_values(helm: Helm, setting: list[str], message: str) -> None:
    out = helm.run("template", "t", str(CHART), *setting, check=False)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr
    assert message in out.stderr, out.stderr


# -- the chart, installed -----------------------------------------------------------------------


@dataclass
class Release:
    name: str
    namespace: str
    notes: str

    @property
    def service_account(self) -> str:
        return f"{self.name}-nimop"

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    @property
    def lease(self) -> str:
        return f"{self.name}-nimop"


@contextmanager
def installed(lab: Cluster, helm: Helm, *values: str) -> Iterator[Release]:
    """The chart in a fresh namespace that enforces the restricted Pod Security Standard."""
    suffix = uuid.uuid4().hex[:6]
    release = Release(f"r{suffix}", f"nimop-{suffix}", "")
    lab.kubectl("create", "namespace", release.namespace)
    lab.kubectl(
        "label",
        "namespace",
        release.namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    try:
        out = helm.run("install", release.name, str(CHART), "-n", release.namespace, *values)
        assert "PodSecurity" not in out.stderr, out.stderr
        release.notes = out.stdout
        yield release
    finally:
        helm.run("uninstall", release.name, "-n", release.namespace, check=False)
        lab.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


def token_kubeconfig(lab: Cluster, release: Release, path: Path) -> Path:
    """A kubeconfig whose user is the chart's ServiceAccount, and nothing more."""
    token = lab.kubectl(
        "create", "token", release.service_account, "-n", release.namespace, "--duration=1h"
    ).strip()
    return lab.write_kubeconfig(path, token, user="operator")


def can_i(
    lab: Cluster,
    user: str,
    verb: str,
    resource: str,
    namespace: str | None = None,
    subresource: str | None = None,
) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}"]
    args += ["--all-namespaces"] if namespace is None else ["-n", namespace]
    if subresource:
        args.append(f"--subresource={subresource}")
    answer = lab.kubectl(*args, check=False).strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {answer!r}"
    return answer == "yes"


def denied(lab: Cluster, user: str, checks: list[tuple[str, str, str | None, str | None]]) -> None:
    allowed = [c for c in checks if can_i(lab, user, *c)]
    assert not allowed, f"{user} may do what it should not: {allowed}"


def permitted(
    lab: Cluster, user: str, checks: list[tuple[str, str, str | None, str | None]]
) -> None:
    refused = [c for c in checks if not can_i(lab, user, *c)]
    assert not refused, f"{user} may not do what the operator needs: {refused}"


Listed = tuple[str, str, str]  # resource or non-resource URL, resource name ("": any), verb


def listed_name(group: str, resource: str) -> str:
    """A rule's resource as `kubectl auth can-i --list` prints it: `deployments.apps`,
    `pods/status`, `nimservices.nimop.dev/status`."""
    base, _, sub = resource.partition("/")
    name = f"{base}.{group}" if group else base
    return f"{name}/{sub}" if sub else name


def as_listed(rules: set[Rule]) -> set[Listed]:
    return {(listed_name(g, r), "", v) for g, r, v in rules}


def named_as_listed(rules: set[NamedRule]) -> set[Listed]:
    return {(listed_name(g, r), "" if n == "*" else n, v) for g, r, v, n in rules}


def can_i_list(lab: Cluster, user: str, namespace: str) -> tuple[str, set[Listed]]:
    """`kubectl auth can-i --list` in a namespace, as printed and as a set. It lists the rules
    that hold there: the namespace's Roles and every ClusterRole, cluster-scoped kinds included.
    Its columns are located from the header (cells are padded, some empty)."""
    out = lab.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", namespace)
    header, *rows = out.splitlines()
    starts = [header.index(h) for h in ("Resources", "Non-Resource URLs", "Resource Names")]
    starts.append(header.index("Verbs"))
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    found: set[Listed] = set()
    for row in rows:
        resource, urls, names_, verbs = (row[a:b].strip() for a, b in bounds)
        targets = [resource] if resource else urls.strip("[]").split()
        for verb in verbs.strip("[]").split():
            for target in targets:
                for name in names_.strip("[]").split() or [""]:
                    found.add((target, name, verb))
    return out, found


def everyone(lab: Cluster, namespace: str) -> set[Listed]:
    """What any ServiceAccount may do with no binding of its own: a fresh one's list."""
    account = f"nobody-{uuid.uuid4().hex[:6]}"
    lab.kubectl("create", "serviceaccount", account, "-n", namespace)
    _, found = can_i_list(lab, f"system:serviceaccount:{namespace}:{account}", namespace)
    assert {t for t, _, _ in found if not t.startswith("/")} == EVERYONE, found
    assert {v for t, _, v in found if t.startswith("/")} == {"get"}, found
    return found


def assert_permissions(
    lab: Cluster, user: str, namespace: str, expected: set[Listed], baseline: set[Listed]
) -> None:
    """The exact list `kubectl auth can-i --list` prints in a namespace: what everyone may do,
    plus `expected`, and nothing on Secrets. Printed for the record (pytest -s)."""
    out, found = can_i_list(lab, user, namespace)
    print(f"\n$ kubectl auth can-i --list --as={user} -n {namespace}\n{out}")
    want = baseline | expected
    assert found == want, (
        f"in {namespace}, {user} may also {sorted(found - want)} and may not {sorted(want - found)}"
    )
    assert not [f for f in found if f[0].partition("/")[0] in ("secrets", "*", "*.*")], found
    assert not [f for f in found if f[2] == "*"], found


def never_allowed(namespace: str) -> list[tuple[str, str, str | None, str | None]]:
    """What no install mode may grant, checked in the operator's own namespace of NimServices."""
    checks: list[tuple[str, str, str | None, str | None]] = [("*", "*", None, None)]
    for ns in (namespace, "kube-system"):
        checks += [(v, "secrets", ns, None) for v in ("get", "list", "watch", "create")]
        checks += [(v, "secrets", ns, None) for v in ("update", "patch", "delete")]
        checks += [("deletecollection", "secrets", ns, None)]
    checks += [("get", "secrets", None, None), ("list", "secrets", None, None)]
    checks += [
        ("delete", "deployments.apps", namespace, None),
        ("update", "deployments.apps", namespace, None),
        ("delete", "services", namespace, None),
        ("update", "services", namespace, None),
        ("create", "nimservices.nimop.dev", namespace, None),
        ("update", "nimservices.nimop.dev", namespace, None),
        ("patch", "nimservices.nimop.dev", namespace, None),
        ("delete", "nimservices.nimop.dev", namespace, None),
        ("create", "pods", namespace, None),
        ("delete", "pods", namespace, None),
        ("get", "pods", namespace, "proxy"),  # probe.mode=direct
        ("create", "pods", namespace, "exec"),
        ("create", "serviceaccounts", namespace, "token"),
        ("create", "rolebindings.rbac.authorization.k8s.io", namespace, None),
        ("create", "clusterroles.rbac.authorization.k8s.io", None, None),
        ("bind", "clusterroles.rbac.authorization.k8s.io", None, None),
        ("escalate", "clusterroles.rbac.authorization.k8s.io", None, None),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None, None),
        ("impersonate", "users", None, None),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", None, None),
        ("patch", "nodes", None, None),
        ("delete", "nodes", None, None),
        ("get", "nodes", None, "proxy"),
    ]
    # Pods in kube-system: nothing beyond the capacity role's cluster-wide list and watch.
    checks += [(v, "pods", "kube-system", None) for v in ("get", "create", "update")]
    checks += [(v, "pods", "kube-system", None) for v in ("patch", "delete")]
    checks += [
        ("get", "pods", "kube-system", "log"),
        ("create", "pods", "kube-system", "exec"),
        ("create", "pods", "kube-system", "eviction"),
    ]
    return checks


def lease_access(lab: Cluster, user: str, lease: str, home: str, elsewhere: str) -> None:
    """Leader election RBAC: the one named Lease in the operator's own namespace (`home`), and a
    create there; no other Lease, nothing in other namespaces."""
    leases = "leases.coordination.k8s.io"
    permitted(
        lab,
        user,
        [
            ("get", f"{leases}/{lease}", home, None),
            ("update", f"{leases}/{lease}", home, None),
            ("create", leases, home, None),
        ],
    )
    denied(
        lab,
        user,
        [
            ("get", f"{leases}/other", home, None),
            ("update", f"{leases}/other", home, None),
            ("get", leases, home, None),  # a get of any Lease
            ("list", leases, home, None),
            ("watch", leases, home, None),
            ("patch", f"{leases}/{lease}", home, None),
            ("delete", f"{leases}/{lease}", home, None),
            ("deletecollection", leases, home, None),
            ("update", f"{leases}/kube-controller-manager", "kube-system", None),
            ("update", f"{leases}/{lease}", "kube-system", None),
            ("get", f"{leases}/{lease}", "kube-system", None),
            ("create", leases, "kube-system", None),
            ("update", f"{leases}/{lease}", elsewhere, None),
            ("create", leases, elsewhere, None),
            ("list", leases, None, None),
        ],
    )


def refusals(operator: OperatorProcess) -> list[str]:
    """Requests RBAC refused, except kopf's own optional scans of CRDs and namespaces (it
    carries on without them)."""
    return [
        line
        for line in operator.log_path.read_text(errors="replace").splitlines()
        if RBAC_DENIAL.search(line) and not KOPF_SCANS.search(line)
    ]


def test_cluster_wide_install_serves_a_nimservice(
    lab: Cluster, crd: Path, k: Kubectl, lab_helm: Helm, tmp_path: Path
) -> None:
    with installed(lab, lab_helm, "--set", "replicas=0") as release:
        assert "Mode: cluster-wide" in release.notes
        user = release.user
        baseline = everyone(lab, k.ns)
        everywhere = as_listed(NAMESPACE_RULES | CAPACITY_RULES)
        # The same rules in every namespace, kube-system included (docs/install.md says so).
        for ns in (k.ns, "kube-system"):
            assert_permissions(lab, user, ns, everywhere, baseline)
        assert_permissions(
            lab,
            user,
            release.namespace,
            everywhere | named_as_listed(lease_rules(release.lease)),
            baseline,
        )
        permitted(
            lab,
            user,
            [
                ("watch", "nimservices.nimop.dev", None, None),
                ("patch", "nimservices.nimop.dev", k.ns, "status"),
                ("update", "nimservices.nimop.dev", k.ns, "finalizers"),
                ("patch", "nimcaches.nimop.dev", k.ns, "status"),
                ("create", "deployments.apps", k.ns, None),
                ("patch", "deployments.apps", k.ns, None),
                ("delete", "persistentvolumeclaims", k.ns, None),
                ("delete", "jobs.batch", k.ns, None),
                ("get", "replicasets.apps", k.ns, None),
                ("patch", "pods", k.ns, "status"),
                ("get", "configmaps", k.ns, None),
                ("create", "events", k.ns, None),
                ("watch", "events", k.ns, None),
                ("list", "pods", "kube-system", None),
                ("list", "nodes", None, None),
                # What cluster-wide mode means: writes in every namespace.
                ("patch", "deployments.apps", "kube-system", None),
                ("delete", "persistentvolumeclaims", "kube-system", None),
            ],
        )
        denied(lab, user, never_allowed(k.ns))
        lease_access(lab, user, release.lease, release.namespace, k.ns)

        kubeconfig = token_kubeconfig(lab, release, tmp_path / "kubeconfig")
        operator = OperatorProcess(lab, tmp_path, env={"KUBECONFIG": str(kubeconfig)})
        operator.start()
        try:
            k.apply(nimservice("wide", replicas=2))
            k.wait_condition("wide", "Ready", "True", "Serving", timeout=90)
            assert [e for e in k.events("wide") if e["reason"] == "Ready"]
            assert not refusals(operator), operator.logs()
        finally:
            operator.stop()


def test_namespace_scoped_install_is_confined(
    lab: Cluster, crd: Path, k: Kubectl, lab_helm: Helm, tmp_path: Path
) -> None:
    other = Kubectl(lab, f"t-{uuid.uuid4().hex[:8]}")
    lab.kubectl("create", "namespace", other.ns)
    try:
        with installed(
            lab, lab_helm, "--set", "replicas=0", "--set", f"watchNamespaces={{{k.ns}}}"
        ) as release:
            assert "Mode: namespace-scoped" in release.notes
            user = release.user
            baseline = everyone(lab, k.ns)
            capacity = as_listed(CAPACITY_RULES)
            # Watched: the operator's rules. Anywhere else, kube-system included: the read-only
            # capacity role alone, which is also all it holds cluster-wide. Its own namespace:
            # that and its Lease.
            assert_permissions(lab, user, k.ns, as_listed(NAMESPACE_RULES) | capacity, baseline)
            for ns in (other.ns, "kube-system"):
                assert_permissions(lab, user, ns, capacity, baseline)
            assert_permissions(
                lab,
                user,
                release.namespace,
                capacity | named_as_listed(lease_rules(release.lease)),
                baseline,
            )
            permitted(
                lab,
                user,
                [
                    ("list", "nimservices.nimop.dev", k.ns, None),
                    ("patch", "nimservices.nimop.dev", k.ns, "status"),
                    ("patch", "pods", k.ns, "status"),
                    ("patch", "deployments.apps", k.ns, None),
                    ("list", "nodes", None, None),
                    ("list", "pods", other.ns, None),  # the read-only capacity role
                ],
            )
            # Every write the operator has, none of them outside the watched namespace (None:
            # in every namespace at once, as a ClusterRole would grant it).
            writes = [
                ("create", "deployments.apps", None),
                ("patch", "deployments.apps", None),
                ("create", "services", None),
                ("patch", "services", None),
                ("patch", "persistentvolumeclaims", None),
                ("delete", "persistentvolumeclaims", None),
                ("delete", "poddisruptionbudgets.policy", None),
                ("delete", "jobs.batch", None),
                ("patch", "pods", "status"),
                ("create", "events", None),
                ("patch", "nimservices.nimop.dev", "status"),
            ]
            denied(
                lab,
                user,
                [
                    *never_allowed(k.ns),
                    ("get", "nimservices.nimop.dev", other.ns, None),
                    ("list", "nimservices.nimop.dev", other.ns, None),
                    ("list", "nimservices.nimop.dev", None, None),
                    ("get", "secrets", other.ns, None),
                    ("list", "events", other.ns, None),
                    ("get", "configmaps", other.ns, None),
                    *[
                        (verb, resource, ns, sub)
                        for ns in (other.ns, "kube-system", None)
                        for verb, resource, sub in writes
                    ],
                ],
            )
            lease_access(lab, user, release.lease, release.namespace, k.ns)

            kubeconfig = token_kubeconfig(lab, release, tmp_path / "kubeconfig")
            operator = OperatorProcess(
                lab, tmp_path, env={"KUBECONFIG": str(kubeconfig), "NIMOP_NAMESPACES": k.ns}
            )
            operator.start()
            try:
                other.apply(nimservice("elsewhere"))
                k.apply(nimservice("scoped"))
                k.wait_condition("scoped", "Ready", "True", "Serving", timeout=NAMESPACED_START)
                assert "status" not in other.nim("elsewhere")
                assert other.get("deployment", "elsewhere") is None
                assert not refusals(operator), operator.logs()
            finally:
                operator.stop()
    finally:
        lab.kubectl("delete", "namespace", other.ns, "--wait=false", check=False)


@dataclass
class PodProcess(OperatorProcess):
    """The operator started the way the chart's Deployment starts it: its command and env."""

    argv: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.starts += 1
        self.port = free_port()
        env = {
            **os.environ,
            **self.env,
            **OPERATOR_ENV,
            "NIMOP_HTTP_ADDRESS": f"127.0.0.1:{self.port}",
        }
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for("operator /healthz", self._healthy, timeout=30)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def leading(self) -> bool:
        return self.metric("nimop_leader") == 1

    def standing_by(self) -> bool:
        """Campaigned at least once and lost: the gauge is 0 before the first round too."""
        log = self.log_path.read_text(errors="replace")
        return "standing by: lease" in log and self.metric("nimop_leader") == 0


def sole_leader(replicas: dict[str, PodProcess]) -> str | None:
    """The one running replica that leads, once every other running one stands by."""
    live = {name: proc for name, proc in replicas.items() if proc.running}
    leaders = [name for name, proc in live.items() if proc.leading()]
    if len(leaders) != 1:
        return None
    if not all(proc.standing_by() for name, proc in live.items() if name != leaders[0]):
        return None
    return leaders[0]


def test_leader_election_fails_over(
    lab: Cluster, crd: Path, k: Kubectl, lab_helm: Helm, tmp_path: Path
) -> None:
    """Two replicas with the chart's env, RBAC and ServiceAccount: one leads and reconciles, the
    other stands by and reconciles nothing; a stopped leader hands the Lease over at once, a
    killed one loses it when it expires."""
    nowhere = '{"nimop.dev/install-test":"nowhere"}'  # the pods are admitted, never scheduled
    with installed(
        lab, lab_helm, "--set", "replicas=2", "--set-json", f"nodeSelector={nowhere}"
    ) as release:
        release_ns = Kubectl(lab, release.namespace)
        wait_for(
            "two operator pods admitted under the restricted Pod Security Standard",
            lambda: len(release_ns.items("pods")) == 2,
            timeout=30,
        )
        assert "Leader election" in release.notes
        manifest = lab_helm.run("get", "manifest", release.name, "-n", release.namespace)
        deployment = one(
            [d for d in yaml.safe_load_all(manifest.stdout) if d], "Deployment", release.lease
        )
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        argv = [sys.executable, "-m", "nimop", *container["args"]]
        kubeconfig = token_kubeconfig(lab, release, tmp_path / "kubeconfig")
        replicas: dict[str, PodProcess] = {}
        for name in ("nimop-a", "nimop-b"):
            env = pod_env(container, name, release.namespace)
            assert env["NIMOP_LEADER_ELECTION"] == "true"
            assert env["NIMOP_LEASE_NAME"] == release.lease
            assert env["NIMOP_LEASE_NAMESPACE"] == release.namespace
            assert env["POD_NAME"] == name
            env |= {"NIMOP_LEASE_SECONDS": str(LEASE_SECONDS), "KUBECONFIG": str(kubeconfig)}
            (tmp_path / name).mkdir()
            replicas[name] = PodProcess(lab, tmp_path / name, env=env, argv=argv)

        def holder() -> str:
            lease = release_ns.get("lease", release.lease)
            assert lease is not None, f"no Lease {release.lease}"
            return str(lease["spec"].get("holderIdentity") or "")

        def leads(name: str) -> bool:
            return replicas[name].leading() and holder().startswith(f"{name}-")

        try:
            for proc in replicas.values():
                proc.start()
            first = wait_for("exactly one leader", lambda: sole_leader(replicas), timeout=30)
            (standby,) = set(replicas) - {first}
            assert holder().startswith(f"{first}-"), holder()

            # The standby watches (it knows the NimService) but reconciles nothing.
            idle = replicas[standby].metric("nimop_reconcile_total")
            k.apply(nimservice("ha-1"))
            k.wait_condition("ha-1", "Ready", "True", "Serving", timeout=90)
            assert replicas[first].metric("nimop_reconcile_total") > 0
            assert replicas[standby].metric("nimop_managed_objects", {"kind": "NimService"}) >= 1
            assert replicas[standby].metric("nimop_reconcile_total") == idle
            assert sole_leader(replicas) == first

            # SIGTERM: the leader releases the Lease on its way out; the standby takes over
            # sooner than the Lease could have expired.
            stopped = replicas[first].proc
            assert stopped is not None
            sent = time.monotonic()
            stopped.send_signal(signal.SIGTERM)
            wait_for(f"{standby} to lead", lambda: leads(standby), timeout=RELEASED_HANDOVER + 1)
            handover = time.monotonic() - sent
            assert handover < RELEASED_HANDOVER, f"took {handover:.1f}s: Lease not released?"
            stopped.wait(15)  # on its own: a second SIGTERM would cut kopf's clean-up short
            assert stopped.returncode == 0, replicas[first].logs()
            assert not refusals(replicas[first]), replicas[first].logs()
            k.apply(nimservice("ha-2"))
            k.wait_condition("ha-2", "Ready", "True", "Serving", timeout=90)

            # The stopped replica comes back as a standby; then SIGKILL the leader: nothing
            # releases the Lease, and the standby takes it once it has expired.
            replicas[first].start()
            wait_for(f"{first} stands by", replicas[first].standing_by, timeout=15)
            assert sole_leader(replicas) == standby
            replicas[standby].kill()
            killed = time.monotonic()
            wait_for(f"{first} to lead", lambda: leads(first), timeout=LEASE_SECONDS + 5)
            takeover = time.monotonic() - killed
            # Not before the Lease expired (the dead leader renewed up to a third of it before).
            assert takeover > LEASE_SECONDS * 2 / 3 - 0.5, f"took over after {takeover:.1f}s"
            wait_for(
                f"{first} reconciles",
                lambda: replicas[first].metric("nimop_reconcile_total") > 0,
                timeout=10,
            )
            lease = release_ns.get("lease", release.lease)
            assert lease is not None
            assert lease["spec"]["holderIdentity"].startswith(f"{first}-")
            assert lease["spec"]["leaseDurationSeconds"] == LEASE_SECONDS
            assert lease["spec"]["leaseTransitions"] == 3  # first, standby, first again
            shown = release_ns("get", "lease", release.lease, "-o", "wide")
            assert f" {first}-" in shown, shown
            for proc in replicas.values():
                assert not refusals(proc), proc.logs()
            k.wait_condition("ha-1", "Ready", "True", "Serving", timeout=30)
        finally:
            for proc in replicas.values():
                proc.stop()


# -- the kustomize base -------------------------------------------------------------------------


def test_kustomize_base_applies_and_matches_the_chart(lab: Cluster, crd: Path, helm: Helm) -> None:
    built = [d for d in yaml.safe_load_all(lab.kubectl("kustomize", str(KUSTOMIZE_BASE))) if d]
    # The CRDs are the generated files themselves.
    generated = [
        yaml.safe_load(f.read_text()) for f in sorted((REPO / "crds").glob("*.nimop.dev.yaml"))
    ]
    assert CRD.name in {f"{c['metadata']['name']}.yaml" for c in generated}
    assert sorted(find(built, "CustomResourceDefinition"), key=lambda c: c["metadata"]["name"]) == (
        sorted(generated, key=lambda c: c["metadata"]["name"])
    )
    assert one(built, "Namespace")["metadata"]["name"] == "nimop-system"

    # Identical RBAC content to the chart with default values, installed as release "nimop"
    # (whose full name, and Lease name, is then "nimop" too).
    chart = helm.template(release="nimop")
    assert rule_set(one(built, "ClusterRole", "nimop")["rules"]) == rule_set(
        one(chart, "ClusterRole", "nimop")["rules"]
    )
    assert rule_set(one(built, "ClusterRole", "nimop-capacity")["rules"]) == rule_set(
        one(chart, "ClusterRole", "nimop-capacity")["rules"]
    )
    assert rule_set(one(built, "ClusterRole", "nimop")["rules"]) == NAMESPACE_RULES
    lease_role = one(built, "Role", "nimop-leader-election")
    assert lease_role["metadata"]["namespace"] == "nimop-system"
    assert named_rule_set(lease_role["rules"]) == named_rule_set(
        one(chart, "Role", "nimop-leader-election")["rules"]
    )
    assert named_rule_set(lease_role["rules"]) == lease_rules("nimop")
    assert len(find(built, "Role")) == 1
    lease_binding = one(built, "RoleBinding", "nimop-leader-election")
    assert lease_binding["metadata"]["namespace"] == "nimop-system"
    assert lease_binding["roleRef"]["name"] == "nimop-leader-election"
    for binding in [*find(built, "ClusterRoleBinding"), lease_binding]:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "nimop", "namespace": "nimop-system"}
        ]

    # The same pod security posture, probes, resources and settings.
    assert (
        one(built, "Deployment", "nimop")["spec"]["strategy"]
        == one(chart, "Deployment", "nimop")["spec"]["strategy"]
    )
    ours = one(built, "Deployment", "nimop")["spec"]["template"]["spec"]
    theirs = one(chart, "Deployment", "nimop")["spec"]["template"]["spec"]
    assert ours["securityContext"] == theirs["securityContext"]
    assert ours["volumes"] == theirs["volumes"]
    mine, helms = ours["containers"][0], theirs["containers"][0]
    for key in ("securityContext", "livenessProbe", "readinessProbe", "resources", "ports"):
        assert mine[key] == helms[key], key
    assert mine["env"] == helms["env"]
    assert mine["args"] == helms["args"]

    others = [d for d in built if d["kind"] != "CustomResourceDefinition"]
    try:
        # A server-side dry run needs the namespace to exist already.
        lab.kubectl("apply", "-f", str(KUSTOMIZE_BASE / "namespace.yaml"))
        dry = lab.kubectl("apply", "-k", str(KUSTOMIZE_BASE), "--dry-run=server")
        assert "deployment.apps/nimop created (server dry run)" in dry, dry
        # Forced: this session's Helm installs created the CRDs the chart ships that the crd
        # fixture did not (NimCache), so Helm owns their fields here.
        lab.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(KUSTOMIZE_BASE))
        system = Kubectl(lab, "nimop-system")
        # The restricted Pod Security Standard, enforced on the namespace, admits the pod.
        wait_for("the operator pod", lambda: system.items("pods"), timeout=30)
        user = "system:serviceaccount:nimop-system:nimop"
        baseline = everyone(lab, "nimop-system")
        everywhere = as_listed(NAMESPACE_RULES | CAPACITY_RULES)
        assert_permissions(lab, user, "default", everywhere, baseline)
        assert_permissions(
            lab,
            user,
            "nimop-system",
            everywhere | named_as_listed(lease_rules("nimop")),
            baseline,
        )
        permitted(lab, user, [("watch", "nimservices.nimop.dev", None, None)])
        denied(lab, user, never_allowed("default"))
        lease_access(lab, user, "nimop", "nimop-system", "default")
    finally:
        lab.kubectl(
            "delete",
            "--ignore-not-found",
            "--wait=false",
            "-f",
            "-",
            input=yaml.safe_dump_all(others),
            check=False,
        )
