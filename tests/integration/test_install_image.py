"""Installing nimop as users do, with the real operator image running in the lab.

`make image` builds the operator image; the lab's pod runner runs it under runc like a kubelet
would (nimlab.imageruntime): as uid 65532 with a read-only root filesystem and no capabilities,
with the chart's ServiceAccount token and the lab API server's CA at
/var/run/secrets/kubernetes.io/serviceaccount, and KUBERNETES_SERVICE_HOST/PORT pointing at the
API server, so the operator finds its in-cluster configuration unchanged. Its /healthz probes
decide the pod's readiness, as on a cluster.

One Helm release goes through a user's whole story, in order: `helm install` -> the operator pod
Ready -> the llama example Ready; `helm upgrade` rolls the pod while a NimService keeps serving;
two replicas elect a leader on the Lease and deleting the leader's pod hands over; `helm
uninstall` leaves the CRDs and the NimServices in place. Then the kustomize base, with its image
set to the built one, does the same. The timings (install -> NimService Ready, leader
takeover) are printed; they are not asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, watch

from nimlab import labimages
from nimlab.binaries import ensure_binaries
from nimlab.cluster import Cluster
from nimlab.control import RunnerControl

from .helpers import MODEL, REPO, Kubectl, Sampler, nimservice, service_url, wait_for

# A cold `make image` (base image from Debian packages, both images) takes minutes on 2 cores.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

Obj = dict[str, Any]
VERSION = labimages.version()
IMAGE = "localhost/nimop"  # as buildah and podman tag a local build
CHART = REPO / "charts" / "nimop"
KUSTOMIZE_BASE = REPO / "deploy" / "kustomize" / "base"
BIND_POD_IP = REPO / "deploy" / "kustomize" / "components" / "bind-pod-ip"
EXAMPLE = REPO / "examples" / "llama-3.1-8b-instruct.yaml"
EXAMPLE_NAME = "llama-3-1-8b-instruct"
LEASE_SECONDS = 6
# Fast passes, so the story takes seconds; the pod runner scales kubelet timings to match.
VALUES = [
    "--set",
    f"image.repository={IMAGE}",
    "--set",
    f"image.tag={VERSION}",
    "--set",
    "image.pullPolicy=Never",
    "--set",
    "metrics.bindPodIP=true",
    "--set",
    "probe.intervalFast=1",
    "--set",
    "probe.intervalSteady=2",
    "--set",
    "probe.timeout=1",
    "--set",
    f"leaderElection.leaseSeconds={LEASE_SECONDS}",
]
OPERATOR_POD = "app.kubernetes.io/component=operator"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# Run inside the operator's container (`kubectl exec`): its process's view of itself.
CHECK = textwrap.dedent(
    """
    import errno, json, os, pathlib
    def status(pid):
        fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
        return {k: fields[k].split() for k in ("Uid", "Gid", "Groups", "CapEff", "NoNewPrivs")}
    def write(path):
        try:
            pathlib.Path(path).write_text("x")
            return "ok"
        except OSError as err:
            return errno.errorcode[err.errno]
    main = next(
        int(p.name) for p in pathlib.Path("/proc").iterdir()
        if p.name.isdigit() and b"nimop" in p.joinpath("cmdline").read_bytes()
        and p.joinpath("cmdline").read_bytes().endswith(b"run\\x00")
    )
    account = pathlib.Path("SERVICE_ACCOUNT_DIR")
    print(json.dumps({
        "self": status("self"), "main": status(main),
        "root": write("/probe"), "tmp": write("/tmp/probe"),
        "token": account.joinpath("token").read_text().count("."),
        "namespace": account.joinpath("namespace").read_text(),
        "ca": account.joinpath("ca.crt").read_text(),
        "host": os.environ.get("KUBERNETES_SERVICE_HOST"),
        "port": os.environ.get("KUBERNETES_SERVICE_PORT"),
    }))
    """
).replace("SERVICE_ACCOUNT_DIR", SERVICE_ACCOUNT_DIR)


Say = Callable[[str], None]


@pytest.fixture(scope="module")
def say(request: pytest.FixtureRequest) -> Say:
    """Print a measurement past pytest's capture, so it shows in `make test`'s output."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")

    def write(line: str) -> None:
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\n[install-image] {line}")

    return write


@pytest.fixture(scope="module")
def images(say: Say) -> str:
    """The operator image as `make image` builds it (cached layers: seconds when warm)."""
    started = time.monotonic()
    out = subprocess.run(
        [str(REPO / "hack" / "image" / "build.sh")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    assert out.returncode == 0, f"hack/image/build.sh failed:\n{out.stdout[-6000:]}"
    assert labimages.lab_image(f"{IMAGE}:{VERSION}") is not None
    say(f"make image: {time.monotonic() - started:.1f}s")
    return out.stdout


@dataclass
class Helm:
    binary: Path
    home: Path
    kubeconfig: Path

    def __call__(self, *args: str) -> str:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECONFIG": str(self.kubeconfig),
        }
        out = subprocess.run(
            [str(self.binary), *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=180,
        )
        assert out.returncode == 0, f"helm {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
        return out.stdout + out.stderr


@dataclass
class Release:
    """One Helm release of the chart, in a namespace enforcing the restricted Pod Security
    Standard, and a namespace of NimServices it manages."""

    lab: Cluster
    helm: Helm
    name: str
    ns: Kubectl
    nims: Kubectl
    installed_at: float = 0.0
    installed: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def lease(self) -> str:
        return f"{self.name}-nimop"

    def pods(self) -> list[Obj]:
        return [
            p
            for p in self.ns.items("pods", f"app.kubernetes.io/instance={self.name},{OPERATOR_POD}")
            if not p["metadata"].get("deletionTimestamp")
        ]

    def ready_pods(self, count: int) -> list[Obj] | None:
        pods = self.pods()
        if len(pods) != count or not all(pod_ready(p) for p in pods):
            return None
        return pods

    def holder(self) -> str:
        lease = self.ns.get("lease", self.lease)
        return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")

    def leader(self) -> str | None:
        """The pod whose name the Lease holder's identity starts with (POD_NAME-<suffix>)."""
        holder = self.holder()
        return next(
            (
                p["metadata"]["name"]
                for p in self.pods()
                if holder.startswith(p["metadata"]["name"] + "-")
            ),
            None,
        )


def pod_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def restricted_namespace(lab: Cluster, prefix: str) -> Kubectl:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    lab.kubectl("create", "namespace", name)
    lab.kubectl(
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    lab.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=30s")
    return Kubectl(lab, name)


@pytest.fixture(scope="module")
def release(
    lab: Cluster, crd: Path, images: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    helm = Helm(ensure_binaries() / "helm", tmp_path_factory.mktemp("helm"), lab.kubeconfig)
    ns = restricted_namespace(lab, "nimop")
    nims = Kubectl(lab, f"nims-{uuid.uuid4().hex[:6]}")
    lab.kubectl("create", "namespace", nims.ns)
    lab.kubectl("wait", "--for=create", "serviceaccount/default", "-n", nims.ns, "--timeout=30s")
    nims.secrets()
    rel = Release(lab, helm, f"r{uuid.uuid4().hex[:6]}", ns, nims)
    try:
        yield rel
    finally:
        if rel.installed:
            helm("uninstall", rel.name, "-n", ns.ns)
        for namespace in (ns.ns, nims.ns):
            lab.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def exec_check(control: RunnerControl, namespace: str, pod: str) -> Obj:
    result = control.exec(namespace, pod, ["python", "-c", CHECK])
    assert result.exit_code == 0, result
    seen: Obj = json.loads(result.stdout)
    return seen


def assert_locked_down(seen: Obj, namespace: str, lab: Cluster) -> None:
    """The chart's pod security, from inside: uid/gid 65532, no capabilities, no new
    privileges, a read-only root with a writable /tmp, and the in-cluster credentials."""
    for process in (seen["self"], seen["main"]):
        assert process["Uid"] == ["65532"] * 4, process
        assert process["Gid"] == ["65532"] * 4, process
        assert process["CapEff"] == ["0000000000000000"], process
        assert process["NoNewPrivs"] == ["1"], process
    assert seen["root"] == "EROFS"
    assert seen["tmp"] == "ok"
    assert seen["token"] == 2  # a JWT from the TokenRequest API
    assert seen["namespace"] == namespace
    assert seen["ca"] == lab.ca_file.read_text()  # the lab API server's own CA
    assert (seen["host"], seen["port"]) == ("127.0.0.1", lab.server.rsplit(":", 1)[1])


def test_helm_install_runs_the_operator_image_and_the_example_becomes_ready(
    lab: Cluster, release: Release, control: RunnerControl, say: Say
) -> None:
    rel = release
    rel.installed_at = time.monotonic()
    out = rel.helm("install", rel.name, str(CHART), "-n", rel.ns.ns, *VALUES)
    rel.installed = True
    assert "PodSecurity" not in out, out
    rel.nims("apply", "-f", str(EXAMPLE))

    (pod,) = wait_for("the operator pod Ready", lambda: rel.ready_pods(1), timeout=180)
    rel.timings["pod Ready"] = time.monotonic() - rel.installed_at
    container = pod["spec"]["containers"][0]
    assert container["image"] == f"{IMAGE}:{VERSION}"
    assert pod["status"]["containerStatuses"][0]["state"]["running"]
    info = control.pod(rel.ns.ns, pod["metadata"]["name"])
    assert info is not None
    assert info.containers[0].runs == f"image {IMAGE.removeprefix('localhost/')}:{VERSION}"

    rel.nims.wait_condition(EXAMPLE_NAME, "Ready", "True", "Serving", timeout=180)
    rel.timings["NimService Ready"] = time.monotonic() - rel.installed_at
    say(
        f"helm install -> operator pod Ready {rel.timings['pod Ready']:.1f}s, "
        f"-> {EXAMPLE_NAME} Ready {rel.timings['NimService Ready']:.1f}s"
    )
    # The operator's own log (the pod's, through the runner): it runs in the cluster.
    logs = control.log(rel.ns.ns, pod["metadata"]["name"])
    assert "leading: holding lease" in logs, logs[-3000:]
    url = service_url(lab, rel.nims, EXAMPLE_NAME)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10, trust_env=False)
    assert answer.status_code == 200, answer.text


def test_the_operator_pod_runs_locked_down_with_in_cluster_credentials(
    lab: Cluster, release: Release, control: RunnerControl
) -> None:
    rel = release
    (pod,) = wait_for("the operator pod Ready", lambda: rel.ready_pods(1), timeout=60)
    seen = exec_check(control, rel.ns.ns, pod["metadata"]["name"])
    assert_locked_down(seen, rel.ns.ns, lab)


def test_helm_upgrade_rolls_the_operator_pod_while_a_nimservice_keeps_serving(
    lab: Cluster, release: Release
) -> None:
    rel = release
    (old,) = wait_for("the operator pod Ready", lambda: rel.ready_pods(1), timeout=60)
    rel.nims.apply(nimservice("steady"))
    rel.nims.wait_condition("steady", "Ready", "True", "Serving", timeout=90)
    url = service_url(lab, rel.nims, "steady")
    old_name = old["metadata"]["name"]

    def rolled() -> list[Obj] | None:
        pods = rel.ready_pods(1)
        return pods if pods and pods[0]["metadata"]["name"] != old_name else None

    with Sampler(rel.nims, "steady", url) as sampler:
        rel.helm(
            "upgrade", rel.name, str(CHART), "-n", rel.ns.ns, "--reuse-values",
            "--set", "log.level=DEBUG",
        )  # fmt: skip
        (new,) = wait_for("the new operator pod, alone", rolled, timeout=120)
        new_name = new["metadata"]["name"]
        wait_for("the new pod to lead", lambda: rel.leader() == new_name, timeout=60)
        time.sleep(1)  # a few more samples with the new leader in charge
    assert sampler.requests > 5
    assert sampler.failures == [], sampler.failures[:5]
    assert min(sampler.serving) >= 1
    env = {e["name"]: e.get("value") for e in new["spec"]["containers"][0]["env"]}
    assert env["NIMOP_LOG_LEVEL"] == "DEBUG"
    # The new leader reconciles: an edit takes effect.
    rel.nims("patch", "nimservice", "steady", "--type=merge", "-p", '{"spec":{"replicas":2}}')
    wait_for(
        "steady at 2 serving replicas",
        lambda: rel.nims.nim("steady").get("status", {}).get("servingReplicas") == 2,
        timeout=90,
    )


@dataclass
class LeaseWatch:
    """Every version of the Lease as the API server reports it (holder, transitions)."""

    api: Any
    namespace: str
    name: str
    seen: list[tuple[float, str, int]] = field(default_factory=list)
    _watch: watch.Watch = field(default_factory=watch.Watch)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LeaseWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        leases = client.CoordinationV1Api(self.api)
        with contextlib.suppress(Exception):  # the stream ends when stopped; seen says enough
            for event in self._watch.stream(  # type: ignore[no-untyped-call]
                leases.list_namespaced_lease,
                self.namespace,
                field_selector=f"metadata.name={self.name}",
                timeout_seconds=120,
            ):
                spec = event["object"].spec
                self.seen.append(
                    (time.monotonic(), spec.holder_identity or "", int(spec.lease_transitions or 0))
                )

    def __exit__(self, *exc: object) -> None:
        self._watch.stop()  # type: ignore[no-untyped-call]


def test_two_replicas_hand_over_when_the_leaders_pod_is_deleted(
    lab: Cluster, release: Release, api: Any, control: RunnerControl, say: Say
) -> None:
    rel = release
    rel.helm(
        "upgrade", rel.name, str(CHART), "-n", rel.ns.ns, "--reuse-values", "--set", "replicas=2"
    )
    pods = wait_for("two operator pods Ready", lambda: rel.ready_pods(2), timeout=120)
    names = {p["metadata"]["name"] for p in pods}
    assert len({p["status"]["podIP"] for p in pods}) == 2  # each binds its own pod IP
    leader: str = wait_for("a leader among them", lambda: rel.leader(), timeout=60)
    assert leader in names
    (standby,) = names - {leader}
    wait_for(
        f"{standby} standing by",
        lambda: "standing by: lease" in control.log(rel.ns.ns, standby),
        timeout=30,
    )
    for name in names:  # both replicas run as the chart says, each in its own container
        assert_locked_down(exec_check(control, rel.ns.ns, name), rel.ns.ns, lab)

    with LeaseWatch(api, rel.ns.ns, rel.lease) as lease:
        wait_for("the lease watch", lambda: lease.seen, timeout=30)
        deleted = time.monotonic()
        rel.ns("delete", "pod", leader, "--wait=false")
        wait_for(f"{standby} to lead", lambda: rel.leader() == standby, timeout=LEASE_SECONDS * 3)
        takeover = time.monotonic() - deleted
    rel.timings["leader takeover"] = takeover
    say(f"leader pod deleted -> standby holds the Lease in {takeover:.2f}s")
    holders = [holder for when, holder, _ in lease.seen if when >= deleted]
    # SIGTERM made the leader release the Lease (an empty holder) rather than let it expire.
    assert "" in holders, lease.seen
    assert holders[-1].startswith(f"{standby}-"), holders
    rel.nims.apply(nimservice("after-takeover"))
    rel.nims.wait_condition("after-takeover", "Ready", "True", "Serving", timeout=90)
    wait_for("the replacement pod Ready", lambda: rel.ready_pods(2), timeout=120)


def test_helm_uninstall_leaves_the_crds_and_the_nimservices_serving(
    lab: Cluster, release: Release
) -> None:
    rel = release
    rel.helm("uninstall", rel.name, "-n", rel.ns.ns, "--wait")
    rel.installed = False
    wait_for("the operator pods gone", lambda: not rel.pods(), timeout=90)
    for crd in ("nimservices.nimop.dev", "nimcaches.nimop.dev"):
        assert (
            lab.kubectl("get", "crd", crd, "-o", "name").strip()
            == f"customresourcedefinition.apiextensions.k8s.io/{crd}"
        )
    for name in (EXAMPLE_NAME, "steady", "after-takeover"):
        assert rel.nims.nim(name)["status"]["conditions"]
        deployment = rel.nims.get("deployment", name)
        assert deployment is not None
        assert (deployment.get("status") or {}).get("readyReplicas"), deployment.get("status")
    url = service_url(lab, rel.nims, EXAMPLE_NAME)
    with Sampler(rel.nims, EXAMPLE_NAME, url) as sampler:
        time.sleep(1.5)
    assert sampler.requests > 0
    assert sampler.failures == [], sampler.failures[:3]


# -- the kustomize base ---------------------------------------------------------------------------


def overlay(directory: Path) -> Path:
    """A user's overlay of the base: the built image and the bind-pod-ip component."""
    directory.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(KUSTOMIZE_BASE, directory)],
        "components": [os.path.relpath(BIND_POD_IP, directory)],
        "images": [{"name": "nimop", "newName": IMAGE, "newTag": VERSION}],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


def test_the_kustomize_base_runs_the_image_too(
    lab: Cluster,
    crd: Path,
    images: str,
    release: Release,
    control: RunnerControl,
    tmp_path: Path,
    say: Say,
) -> None:
    system = Kubectl(lab, "nimop-system")
    # Another test may have applied the base and be deleting its namespace still.

    def settled() -> bool:
        found = lab.kubectl("get", "namespace", "nimop-system", "-o", "json", check=False)
        return not found or json.loads(found)["status"]["phase"] == "Active"

    wait_for("no namespace nimop-system being deleted", settled, timeout=120)
    directory = overlay(tmp_path / "overlay")
    built = [d for d in yaml.safe_load_all(lab.kubectl("kustomize", str(directory))) if d]
    others = [d for d in built if d["kind"] != "CustomResourceDefinition"]
    started = time.monotonic()
    try:
        lab.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(directory))

        def one_ready() -> list[Obj] | None:
            pods = system.items("pods", OPERATOR_POD)
            return pods if len(pods) == 1 and pod_ready(pods[0]) else None

        (pod,) = wait_for("the operator pod Ready", one_ready, timeout=180)
        pod_ready_after = time.monotonic() - started
        assert pod["spec"]["containers"][0]["image"] == f"{IMAGE}:{VERSION}"
        assert_locked_down(
            exec_check(control, "nimop-system", pod["metadata"]["name"]), "nimop-system", lab
        )
        release.nims.apply(nimservice("kustomized"))
        release.nims.wait_condition("kustomized", "Ready", "True", "Serving", timeout=120)
        say(
            f"kubectl apply -k -> operator pod Ready {pod_ready_after:.1f}s, "
            f"-> NimService Ready {time.monotonic() - started:.1f}s"
        )
    finally:
        lab.kubectl(
            "delete", "--ignore-not-found", "--wait=false", "-f", "-",
            input=yaml.safe_dump_all(others), check=False,
        )  # fmt: skip
    wait_for("the operator pod gone", lambda: not system.items("pods", OPERATOR_POD), timeout=90)
    assert release.nims.nim("kustomized")["status"]["conditions"]
    assert lab.kubectl("get", "crd", "nimservices.nimop.dev", "-o", "name").strip()
