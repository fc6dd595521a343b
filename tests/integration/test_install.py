"""Installing nimop: the Helm chart and the kustomize base, on the real control plane.

The operator's image cannot run in the lab (the lab's "containers" are NIM simulators), so an
install test installs the chart with no running operator pod, then runs the operator as a local
process whose kubeconfig holds a token of the chart's ServiceAccount. The operator then works with
exactly the RBAC the chart grants: a NimService reaching Ready proves the rules are enough, and
`kubectl auth can-i` proves they are not more than needed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
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

CHART = REPO / "charts" / "nimop"
CI_VALUES = CHART / "ci"
KUSTOMIZE_BASE = REPO / "deploy" / "kustomize" / "base"

# The operator's rules in every namespace it manages: the contract docs/install.md explains.
# Anything added to the chart or the kustomize base must be added here, on purpose.
NAMESPACE_RULES: set[Rule] = {
    ("nimop.dev", "nimservices", "get"),
    ("nimop.dev", "nimservices", "list"),
    ("nimop.dev", "nimservices", "watch"),
    ("nimop.dev", "nimservices/status", "patch"),
    ("nimop.dev", "nimservices/finalizers", "update"),
    *{("apps", "deployments", v) for v in ("get", "create", "patch")},
    *{("", "services", v) for v in ("get", "create", "patch")},
    *{("", "persistentvolumeclaims", v) for v in ("get", "list", "create", "patch", "delete")},
    *{("policy", "poddisruptionbudgets", v) for v in ("get", "list", "create", "patch", "delete")},
    ("apps", "replicasets", "list"),
    ("", "pods", "list"),
    ("", "pods/status", "patch"),
    ("", "secrets", "get"),
    ("", "configmaps", "get"),
    ("", "events", "create"),
}
CAPACITY_RULES: set[Rule] = {("", "nodes", "list"), ("", "pods", "list")}

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


def find(docs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def container_env(deployment: Obj) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "<fieldRef>") for e in container.get("env", [])}


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

    def template(self, *args: str) -> list[Obj]:
        out = self.run("template", "t", str(CHART), "--namespace", "nimop-system", *args)
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
        ["-f", str(CI_VALUES / "peering-values.yaml")],
        ["--set", "probe.mode=proxy,customTemplates.configMap=my-templates,log.json=true"],
    ],
    ids=["defaults", "namespaced", "peering", "options"],
)
def test_chart_lints_clean(helm: Helm, values: list[str]) -> None:
    out = helm.run("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in out.stdout
    assert "[WARNING]" not in out.stdout, out.stdout
    assert "[ERROR]" not in out.stdout, out.stdout


def test_default_render_is_cluster_wide_and_locked_down(helm: Helm) -> None:
    docs = helm.template()
    assert not find(docs, "Role")
    assert not find(docs, "RoleBinding")
    assert not find(docs, "CustomResourceDefinition")  # crds/ is not a template
    assert rule_set(one(docs, "ClusterRole", "t-nimop")["rules"]) == NAMESPACE_RULES
    assert rule_set(one(docs, "ClusterRole", "t-nimop-capacity")["rules"]) == CAPACITY_RULES
    for binding in find(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "t-nimop", "namespace": "nimop-system"}
        ]

    deployment = one(docs, "Deployment", "t-nimop")
    spec = deployment["spec"]
    assert spec["strategy"] == {"type": "Recreate"}  # a standalone operator never runs twice
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
    assert "NIMOP_PEERING" not in env
    assert env["NIMOP_HTTP_ADDRESS"] == "0.0.0.0:8080"
    assert env["NIMOP_PROBE_MODE"] == "direct"
    assert env["NIMOP_PROBE_INTERVAL_FAST"] == "5"
    assert env["NIMOP_PROBE_INTERVAL_STEADY"] == "30"
    assert env["POD_ID"] == env["POD_NAME"] == "<fieldRef>"

    service = one(docs, "Service", "t-nimop-metrics")
    assert service["spec"]["ports"][0]["targetPort"] == "http-metrics"
    assert not find(docs, "ServiceMonitor")


def test_namespace_scoped_render_grants_roles_per_namespace(helm: Helm) -> None:
    docs = helm.template("-f", str(CI_VALUES / "namespaced-values.yaml"))
    roles = find(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["nim-team-a", "nim-team-b"]
    for role in roles:
        assert rule_set(role["rules"]) == NAMESPACE_RULES
    bindings = find(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["nim-team-a", "nim-team-b"]
    assert all(b["subjects"][0]["namespace"] == "nimop-system" for b in bindings)
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


def test_peering_render(helm: Helm) -> None:
    docs = helm.template("--set", "replicas=2")
    crds = sorted(d["metadata"]["name"] for d in find(docs, "CustomResourceDefinition"))
    assert crds == ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"]
    peering = one(docs, "ClusterKopfPeering", "t-nimop")
    assert "post-install" in peering["metadata"]["annotations"]["helm.sh/hook"]
    rules = rule_set(one(docs, "ClusterRole", "t-nimop")["rules"])
    assert rules - NAMESPACE_RULES == {
        ("kopf.dev", "clusterkopfpeerings", v) for v in ("get", "list", "watch", "patch")
    }
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert container_env(deployment)["NIMOP_PEERING"] == "t-nimop"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container  # the image's entrypoint; priorities are drawn inside
    assert container["args"] == ["run"]
    assert "NIMOP_PRIORITY" not in container_env(deployment)

    shared = helm.template("--set", "replicas=2,peering.installCRDs=false")
    assert not find(shared, "CustomResourceDefinition")
    assert find(shared, "ClusterKopfPeering")

    forced = helm.template("--set", "peering.enabled=true,peering.name=nimop-peers")
    assert container_env(one(forced, "Deployment"))["NIMOP_PEERING"] == "nimop-peers"

    namespaced = helm.template(
        "-f", str(CI_VALUES / "namespaced-values.yaml"), "--set", "replicas=3"
    )
    assert sorted(p["metadata"]["namespace"] for p in find(namespaced, "KopfPeering")) == [
        "nim-team-a",
        "nim-team-b",
    ]
    assert not find(namespaced, "ClusterKopfPeering")
    for role in find(namespaced, "Role"):
        assert ("kopf.dev", "kopfpeerings", "patch") in rule_set(role["rules"])


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
        (["--set", "replica=2"], "additional properties 'replica' not allowed"),
    ],
    ids=[
        "replicas-string",
        "replicas-negative",
        "probe-mode",
        "namespaces-string",
        "namespace-invalid",
        "quantity",
        "log-json",
        "typo",
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
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "lab",
                "cluster": {"server": lab.server, "certificate-authority": str(lab.ca_file)},
            }
        ],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "lab", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


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


def never_allowed(namespace: str) -> list[tuple[str, str, str | None, str | None]]:
    """What no install mode may grant, checked in the operator's own namespace of NimServices."""
    checks: list[tuple[str, str, str | None, str | None]] = [("*", "*", None, None)]
    for ns in (namespace, "kube-system"):
        checks += [(v, "secrets", ns, None) for v in ("create", "update", "patch", "delete")]
        checks += [(v, "secrets", ns, None) for v in ("list", "watch", "deletecollection")]
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
    # Pods in kube-system: nothing beyond the capacity role's cluster-wide list.
    checks += [(v, "pods", "kube-system", None) for v in ("get", "watch", "create", "update")]
    checks += [(v, "pods", "kube-system", None) for v in ("patch", "delete")]
    checks += [
        ("get", "pods", "kube-system", "log"),
        ("create", "pods", "kube-system", "exec"),
        ("create", "pods", "kube-system", "eviction"),
    ]
    return checks


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
        permitted(
            lab,
            user,
            [
                ("watch", "nimservices.nimop.dev", None, None),
                ("patch", "nimservices.nimop.dev", k.ns, "status"),
                ("update", "nimservices.nimop.dev", k.ns, "finalizers"),
                ("create", "deployments.apps", k.ns, None),
                ("patch", "deployments.apps", k.ns, None),
                ("delete", "persistentvolumeclaims", k.ns, None),
                ("list", "replicasets.apps", k.ns, None),
                ("patch", "pods", k.ns, "status"),
                ("get", "secrets", k.ns, None),
                ("get", "configmaps", k.ns, None),
                ("create", "events", k.ns, None),
                ("list", "pods", "kube-system", None),
                ("list", "nodes", None, None),
            ],
        )
        denied(lab, user, never_allowed(k.ns))

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
            permitted(
                lab,
                user,
                [
                    ("list", "nimservices.nimop.dev", k.ns, None),
                    ("patch", "nimservices.nimop.dev", k.ns, "status"),
                    ("patch", "pods", k.ns, "status"),
                    ("get", "secrets", k.ns, None),
                    ("list", "nodes", None, None),
                    ("list", "pods", other.ns, None),  # the read-only capacity role
                ],
            )
            denied(
                lab,
                user,
                [
                    *never_allowed(k.ns),
                    ("get", "nimservices.nimop.dev", other.ns, None),
                    ("list", "nimservices.nimop.dev", other.ns, None),
                    ("list", "nimservices.nimop.dev", None, None),
                    ("patch", "nimservices.nimop.dev", other.ns, "status"),
                    ("patch", "deployments.apps", other.ns, None),
                    ("get", "secrets", other.ns, None),
                    ("create", "events", other.ns, None),
                    ("patch", "pods", other.ns, "status"),
                    ("patch", "pods", "kube-system", "status"),
                ],
            )

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


def paused(proc: OperatorProcess) -> bool:
    """kopf logs a pause only when it was running before; a late joiner starts paused."""
    lines = [
        line
        for line in proc.logs().splitlines()
        if "Resuming operations" in line or "Pausing operations" in line
    ]
    return not lines or "Pausing" in lines[-1]


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


def test_peering_replicas_hand_over(
    lab: Cluster, crd: Path, k: Kubectl, lab_helm: Helm, tmp_path: Path
) -> None:
    """Two replicas: peering CRDs, the peering object and RBAC from the chart; the pods' own
    operators draw distinct priorities, one replica serves, the other takes over."""
    nowhere = '{"nimop.dev/install-test":"nowhere"}'  # the pods are admitted, never scheduled
    with installed(
        lab, lab_helm, "--set", "replicas=2", "--set-json", f"nodeSelector={nowhere}"
    ) as release:
        peering = f"{release.name}-nimop"
        try:
            release_ns = Kubectl(lab, release.namespace)
            wait_for(
                "two operator pods admitted under the restricted Pod Security Standard",
                lambda: len(release_ns.items("pods")) == 2,
                timeout=30,
            )
            manifest = lab_helm.run("get", "manifest", release.name, "-n", release.namespace)
            deployment = one(
                [d for d in yaml.safe_load_all(manifest.stdout) if d], "Deployment", peering
            )
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            assert container["args"] == ["run"]
            argv = [sys.executable, "-m", "nimop", *container["args"]]
            rendered = {e["name"]: e["value"] for e in container["env"] if "value" in e}
            assert rendered["NIMOP_PEERING"] == peering

            kubeconfig = token_kubeconfig(lab, release, tmp_path / "kubeconfig")
            replicas = {
                name: PodProcess(
                    lab,
                    tmp_path / name,
                    env={**rendered, "KUBECONFIG": str(kubeconfig), "POD_ID": name},
                    argv=argv,
                )
                for name in ("peer-a", "peer-b")
            }
            for proc in replicas.values():
                proc.workdir.mkdir()
                proc.start()
            try:

                def peers() -> dict[str, int] | None:
                    obj = Kubectl(lab, "default").get("clusterkopfpeering", peering)
                    status = (obj or {}).get("status") or {}
                    found = {p: int(v["priority"]) for p, v in status.items() if p in replicas}
                    return found if len(found) == 2 else None

                priorities = wait_for("both replicas in the peering", peers, timeout=30)
                # An upgrade keeps the peering object, and with it the replicas' keep-alives.
                uid = lab.kubectl(
                    "get", "clusterkopfpeering", peering, "-o", "jsonpath={.metadata.uid}"
                )
                lab_helm.run(
                    "upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values"
                )
                assert uid == lab.kubectl(
                    "get", "clusterkopfpeering", peering, "-o", "jsonpath={.metadata.uid}"
                )
                assert peers() == priorities
                assert len(set(priorities.values())) == 2, priorities
                active, standby = sorted(priorities, key=priorities.__getitem__, reverse=True)
                # A peer that joins after a higher one starts paused and stays so silently;
                # one that was running first logs the pause. Either way it must not reconcile.
                wait_for(f"{standby} paused", lambda: paused(replicas[standby]), timeout=30)
                k.apply(nimservice("ha-1"))
                k.wait_condition("ha-1", "Ready", "True", "Serving", timeout=90)
                assert replicas[active].metric("nimop_reconcile_total") > 0
                assert replicas[standby].metric("nimop_reconcile_total") == 0

                replicas[active].stop()  # a clean exit withdraws it from the peering at once
                wait_for(
                    f"{standby} to resume",
                    lambda: "Resuming operations" in replicas[standby].logs(),
                    timeout=30,
                )
                k.apply(nimservice("ha-2"))
                k.wait_condition("ha-2", "Ready", "True", "Serving", timeout=90)
                for proc in replicas.values():
                    assert not refusals(proc), proc.logs()
            finally:
                for proc in replicas.values():
                    proc.stop()
        finally:
            lab.kubectl("delete", "clusterkopfpeering", peering, "--ignore-not-found", check=False)


# -- the kustomize base -------------------------------------------------------------------------


def test_kustomize_base_applies_and_matches_the_chart(lab: Cluster, crd: Path, helm: Helm) -> None:
    built = [d for d in yaml.safe_load_all(lab.kubectl("kustomize", str(KUSTOMIZE_BASE))) if d]
    # The CRD is the generated file itself.
    assert one(built, "CustomResourceDefinition") == yaml.safe_load(CRD.read_text())
    assert one(built, "Namespace")["metadata"]["name"] == "nimop-system"

    # Identical RBAC content to the chart with default values.
    chart = helm.template()
    assert rule_set(one(built, "ClusterRole", "nimop")["rules"]) == rule_set(
        one(chart, "ClusterRole", "t-nimop")["rules"]
    )
    assert rule_set(one(built, "ClusterRole", "nimop-capacity")["rules"]) == rule_set(
        one(chart, "ClusterRole", "t-nimop-capacity")["rules"]
    )
    assert rule_set(one(built, "ClusterRole", "nimop")["rules"]) == NAMESPACE_RULES
    for binding in find(built, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "nimop", "namespace": "nimop-system"}
        ]

    # The same pod security posture, probes, resources and settings.
    ours = one(built, "Deployment", "nimop")["spec"]["template"]["spec"]
    theirs = one(chart, "Deployment", "t-nimop")["spec"]["template"]["spec"]
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
        lab.kubectl("apply", "--server-side", "-k", str(KUSTOMIZE_BASE))
        system = Kubectl(lab, "nimop-system")
        # The restricted Pod Security Standard, enforced on the namespace, admits the pod.
        wait_for("the operator pod", lambda: system.items("pods"), timeout=30)
        user = "system:serviceaccount:nimop-system:nimop"
        permitted(lab, user, [("watch", "nimservices.nimop.dev", None, None)])
        denied(lab, user, never_allowed("default"))
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
