"""Start and stop a real control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, plus the lab's pod runner.

Every child process is tied to this one: it gets PR_SET_PDEATHSIG, so it dies if we die (even by
SIGKILL), and a watchdog tears the whole lab down when any component exits on its own. Ports are
free ones picked at start, so several labs (a test session beside `make cluster-up`) coexist.
"""

from __future__ import annotations

import ctypes
import logging
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from nimlab import nodes
from nimlab.karpenter import KarpenterConfig
from nimlab.karpenter import start as start_karpenter
from nimlab.leases import Lease, acquire_pod_cidr
from nimlab.provisioner import storage_class

log = logging.getLogger(__name__)

SERVICE_CIDR = "10.96.0.0/16"  # allocated from, never dialled: there is no kube-proxy here
STAGES_DIR = Path(__file__).parent / "stages"
_PR_SET_PDEATHSIG = 1


class LabError(RuntimeError):
    pass


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


ESTABLISHED = 'jsonpath={.status.conditions[?(@.type=="Established")].status}'


def wait_established(
    kubectl: Callable[..., str], crds: Iterable[str], timeout: float = 30.0
) -> None:
    """Wait until each CRD (by name) is Established. `kubectl wait --for=condition` is no use
    here: it fails at once while a new CRD has no conditions yet (the API server compiles its
    CEL rules first)."""
    deadline = time.monotonic() + timeout
    for name in crds:
        while kubectl("get", f"crd/{name}", "-o", ESTABLISHED).strip() != "True":
            if time.monotonic() > deadline:
                raise LabError(f"CRD {name} not Established within {timeout:g}s")
            time.sleep(0.1)


def crd_names(*paths: Path) -> list[str]:
    """The names of the CRDs in these files, or in the resources of these kustomizations."""
    files: list[Path] = []
    for path in paths:
        kustomization = path / "kustomization.yaml"
        if kustomization.is_file():
            resources = yaml.safe_load(kustomization.read_text()).get("resources") or []
            files.extend(path / str(r) for r in resources)
        else:
            files.append(path)
    return [
        str(doc["metadata"]["name"])
        for f in files
        for doc in yaml.safe_load_all(f.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Component:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Cluster:
    """One lab. Use as a context manager, or call start() and stop()."""

    workdir: Path
    bin_dir: Path
    topology: nodes.Topology = field(default_factory=nodes.Topology.default)
    with_runner: bool = True
    runner_args: list[str] = field(default_factory=list)
    on_crash: Callable[[str], None] | None = None
    pod_cidr: str = ""  # empty: lease a free slice of 127.1.0.0/16 for this lab's lifetime
    # Real Karpenter with the kwok provider and the lab's NodePools (nimlab.karpenter); its build
    # directory defaults to hack/karpenter/build.sh's.
    karpenter: KarpenterConfig | None = None
    extra_users: tuple[str, ...] = ()
    """More admin users, each with a token of its own (`user_token(name)`): lets a benchmark
    tell one client's requests from the others' in the API server's audit log."""
    audit_log: bool = False
    """Record every request's metadata (user, verb, resource) in workdir/audit.log."""
    karpenter_home: Path | None = None

    components: list[Component] = field(default_factory=list, init=False)
    server: str = field(default="", init=False)
    token: str = field(default="", init=False)
    user_tokens: dict[str, str] = field(default_factory=dict, init=False)
    crashed: str | None = field(default=None, init=False)
    runner_control: str = field(default="", init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _lease: Lease | None = field(default=None, init=False)

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "apiserver.crt"

    def install_crds(self, *paths: Path, timeout: float = 30.0) -> None:
        """Server-side apply CRD files (or a directory with a kustomization of them) and wait
        until every CRD they define is Established."""
        for path in paths:
            flag = "-k" if (path / "kustomization.yaml").is_file() else "-f"
            self.kubectl("apply", "--server-side", flag, str(path))
        wait_established(self.kubectl, crd_names(*paths), timeout)

    def create_namespace(self, name: str, ngc_api_key: str | None = None) -> None:
        """A namespace ready for pods (its default ServiceAccount exists), with an `ngc-api`
        Secret holding NGC_API_KEY when a key is given."""
        self.kubectl("create", "namespace", name)
        # The controller-manager creates the ServiceAccount; pods cannot be created before it.
        self.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
        if ngc_api_key is not None:
            self.kubectl(
                "create", "secret", "generic", "ngc-api", "-n", name,
                f"--from-literal=NGC_API_KEY={ngc_api_key}",
            )  # fmt: skip

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        """Run the lab's own kubectl against this cluster; returns stdout."""
        out = subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and out.returncode != 0:
            raise LabError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- start -----------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        started = time.monotonic()
        deadline = started + timeout
        try:
            self._prepare()
            self._start_etcd(deadline)
            self._start_apiserver(deadline)
            self._start_controllers()
            if self.with_runner:
                self._spawn_runner()  # its start-up overlaps with the nodes coming up
            self._create_nodes(deadline)
            self._create_storage_class()
            if self.karpenter is not None:
                self._start_karpenter(deadline)
            self._wait_controllers(deadline)
            self._warm_ip_pool(deadline)
            if self.with_runner:
                self._wait_runner(deadline)
        except BaseException:
            self.stop()
            raise
        threading.Thread(target=self._watchdog, name="nimlab-watchdog", daemon=True).start()
        log.info("lab ready in %.1fs: %s", time.monotonic() - started, self.kubeconfig)

    def _prepare(self) -> None:
        if not self.pod_cidr:
            self._lease = acquire_pod_cidr()
            self.pod_cidr = self._lease.cidr
        for sub in ("pki", "logs", "etcd"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        pki = self.workdir / "pki"
        # An EC key is as good as RSA for signing service account tokens and is instant to make.
        subprocess.run(
            [
                "openssl",
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                str(pki / "sa.key"),
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["openssl", "ec", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")],
            check=True,
            capture_output=True,
        )
        self.token = secrets.token_hex(24)
        self.user_tokens = {user: secrets.token_hex(24) for user in self.extra_users}
        lines = [f"{self.token},lab-admin,lab-admin,system:masters"]
        lines += [f"{tok},{user},{user},system:masters" for user, tok in self.user_tokens.items()]
        (pki / "tokens.csv").write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, argv: list[str]) -> Component:
        comp = Component(name, argv, self.workdir / "logs" / f"{name}.log")
        comp.start()
        self.components.append(comp)
        return comp

    def _wait(self, what: str, check: Callable[[], bool], deadline: float) -> None:
        while time.monotonic() < deadline:
            for comp in self.components:
                if not comp.running():
                    raise LabError(
                        f"{comp.name} exited while waiting for {what}:\n{comp.log_tail()}"
                    )
            try:
                if check():
                    return
            except (httpx.HTTPError, OSError, LabError):
                pass
            time.sleep(0.1)
        tails = "\n".join(f"--- {c.name}\n{c.log_tail(15)}" for c in self.components)
        raise LabError(f"timed out waiting for {what}\n{tails}")

    def _start_etcd(self, deadline: float) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=lab",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=lab=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",
                # A single member elects itself after one election timeout: keep it short.
                "--heartbeat-interval=25",
                "--election-timeout=150",
                "--log-level=warn",
            ],
        )

        def healthy() -> bool:
            resp = httpx.get(f"{self.etcd_url}/health", timeout=1, trust_env=False)
            return resp.status_code == 200

        self._wait("etcd", healthy, deadline)

    def _start_apiserver(self, deadline: float) -> None:
        pki = self.workdir / "pki"
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={pki}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={pki / 'tokens.csv'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # The apiserver would publish its own address as the `kubernetes` Service's
                # endpoint; a loopback endpoint is invalid there and nobody here needs it.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--v=1",
                *self._audit_args(),
            ],
        )
        self._write_kubeconfig()

        def ready() -> bool:
            resp = httpx.get(
                f"{self.server}/readyz",
                headers={"Authorization": f"Bearer {self.token}"},
                verify=ssl.create_default_context(cafile=str(self.ca_file)),
                timeout=2,
                trust_env=False,
            )
            return resp.status_code == 200

        self._wait("kube-apiserver /readyz", lambda: self.ca_file.exists() and ready(), deadline)

    @property
    def audit_path(self) -> Path:
        return self.workdir / "audit.log"

    def _audit_args(self) -> list[str]:
        if not self.audit_log:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "audit.k8s.io/v1",
                    "kind": "Policy",
                    "omitStages": ["RequestReceived"],
                    "rules": [{"level": "Metadata"}],
                }
            )
        )
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_path}",
            "--audit-log-format=json",
            "--audit-log-maxsize=0",
        ]

    def user_token(self, user: str) -> str:
        return self.user_tokens[user]

    def _write_kubeconfig(self) -> None:
        self.write_kubeconfig(self.kubeconfig, self.token, user="lab-admin")

    def write_kubeconfig(self, path: Path, token: str, user: str = "user") -> Path:
        """A kubeconfig for this cluster authenticating with `token` (the admin's, or, in
        tests, a ServiceAccount's, to run something with exactly that account's RBAC)."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "nimlab",
                    "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "nimlab", "context": {"cluster": "nimlab", "user": user}}],
            "current-context": "nimlab",
        }
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    def _start_controllers(self) -> None:
        pki = self.workdir / "pki"
        kc = str(self.kubeconfig)
        common = [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            # No front proxy or client CA here, so there is nothing to look up.
            "--authentication-skip-lookup=true",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ]
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                *common,
                f"--secure-port={free_port()}",
                f"--cert-dir={pki / 'kcm'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--use-service-account-credentials=false",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-gc-syncs=20",
                # Endpoints and EndpointSlices refuse loopback pod IPs: these controllers could
                # only fail and emit warning events. The runner's service proxy stands in.
                "--controllers=*,-endpoints-controller,-endpointslice-controller,"
                "-endpointslice-mirroring-controller",
            ],
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.bin_dir / "kube-scheduler"),
                *common,
                f"--secure-port={free_port()}",
                f"--cert-dir={pki / 'scheduler'}",
            ],
        )
        self._spawn(
            "kwok",
            [
                str(self.bin_dir / "kwok"),
                f"--kubeconfig={kc}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector="
                f"{nodes.KWOK_ANNOTATION}={nodes.KWOK_ANNOTATION_VALUE}",
                f"--cidr={self.pod_cidr}",
                f"--node-ip={nodes.NODE_IP_BASE}",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{free_port()}",
                *[f"--config={p}" for p in sorted(STAGES_DIR.glob("*.yaml"))],
            ],
        )

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {self.token}"},
            verify=ssl.create_default_context(cafile=str(self.ca_file)),
            timeout=10,
            trust_env=False,
        )

    def _create_nodes(self, deadline: float) -> None:
        with self.api() as api:
            for node in self.topology.nodes():
                resp = api.post("/api/v1/nodes", json=node)
                if resp.status_code != 201:
                    raise LabError(f"creating node {node['metadata']['name']}: {resp.text}")
            want = {n["metadata"]["name"] for n in self.topology.nodes()}

            def all_ready() -> bool:
                items = api.get("/api/v1/nodes").json()["items"]
                ready = {
                    n["metadata"]["name"]
                    for n in items
                    if any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in n.get("status", {}).get("conditions", [])
                    )
                }
                return want <= ready

            self._wait("nodes Ready", all_ready, deadline)

    def _start_karpenter(self, deadline: float) -> None:
        from nimlab.binaries import ensure_karpenter

        assert self.karpenter is not None
        home = self.karpenter_home or ensure_karpenter()
        start_karpenter(self, self.karpenter, home, deadline)

    def _create_storage_class(self) -> None:
        """The default class the runner provisions for, as every managed cluster has one."""
        with self.api() as api:
            resp = api.post("/apis/storage.k8s.io/v1/storageclasses", json=storage_class())
            if resp.status_code not in (201, 409):
                raise LabError(f"creating the default StorageClass: {resp.text}")

    def _wait_controllers(self, deadline: float) -> None:
        """Pods can only be created once the `default` ServiceAccount exists."""
        with self.api() as api:
            self._wait(
                "default ServiceAccount",
                lambda: (
                    api.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200
                ),
                deadline,
            )

    @property
    def _runner_file(self) -> Path:
        return self.workdir / "runner.addr"

    def _spawn_runner(self) -> None:
        control = self._runner_file
        control.unlink(missing_ok=True)
        self._spawn(
            "pod-runner",
            [
                sys.executable,
                "-m",
                "nimlab",
                "runner",
                "--kubeconfig",
                str(self.kubeconfig),
                "--control-file",
                str(control),
                "--volume-dir",
                str(self.workdir / "volumes"),
                *self.runner_args,
            ],
        )

    def _warm_ip_pool(self, deadline: float) -> None:
        """Give one pod an address before any workload arrives.

        kwok (v0.8.0, PodController.ipPool) creates a CIDR's address pool when it first needs
        it, with a load and then a separate store: pods that get their addresses at that same
        moment each create a pool of their own and receive the same first address (seen with a
        thousand pods created at once: two pods on 127.1.0.1, one of them crash-looping on the
        address in use). Once this pod has an address the pool exists, and every later pod
        draws from that one pool."""
        nodes = self.topology.nodes()
        if not nodes:
            return  # no node to place it on yet: Karpenter adds them once pods ask
        name = "nimlab-ip-warmup"
        path = "/api/v1/namespaces/default/pods"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": nodes[0]["metadata"]["name"],
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "warmup", "image": "registry.k8s.io/pause:3.10"}],
            },
        }
        with self.api() as api:
            resp = api.post(path, json=pod)
            if resp.status_code not in (201, 409):
                raise LabError(f"creating the IP pool warm-up pod: {resp.text}")
            self._wait(
                "the first pod address",
                lambda: bool(api.get(f"{path}/{name}").json().get("status", {}).get("podIP")),
                deadline,
            )
            api.delete(f"{path}/{name}", params={"gracePeriodSeconds": "0"})

    def _wait_runner(self, deadline: float) -> None:
        self._wait("pod runner", self._runner_file.exists, deadline)
        self.runner_control = self._runner_file.read_text().strip()

    # -- watch and stop --------------------------------------------------------------------

    def _watchdog(self) -> None:
        while not self._stopping.wait(0.5):
            for comp in list(self.components):
                if not comp.running() and not self._stopping.is_set():
                    self.crashed = comp.name
                    log.error(
                        "lab component %s exited; stopping the lab\n%s", comp.name, comp.log_tail()
                    )
                    if self.on_crash is not None:
                        self.on_crash(comp.name)
                    self.stop()
                    return

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
            for comp in reversed(self.components):
                comp.stop()
            if self._lease is not None:
                self._lease.release()

    def healthy(self) -> bool:
        return self.crashed is None and all(c.running() for c in self.components)

    def describe(self) -> dict[str, Any]:
        return {
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "runner": self.runner_control,
            "pids": {c.name: c.proc.pid for c in self.components if c.proc is not None},
            "workdir": str(self.workdir),
            "pod_cidr": self.pod_cidr,
            "karpenter": self.karpenter.describe() if self.karpenter is not None else None,
            "nodes": [
                {
                    "name": n["metadata"]["name"],
                    "ip": n["status"]["addresses"][0]["address"],
                    "gpus": int(n["status"]["capacity"].get("nvidia.com/gpu", 0)),
                    "product": n["metadata"]["labels"].get("nvidia.com/gpu.product", ""),
                }
                for n in self.topology.nodes()
            ],
        }
