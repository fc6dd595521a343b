"""`python -m bench.chaos` (make chaos): the operator SIGKILLed at random moments, at least 50
times, while 30 NimServices converge and then roll out new image tags, on a lab of its own.

The operator is a real `python -m nimop run` process, started as the integration tests start it
(tests/integration/helpers.py OperatorProcess) and restarted after every kill. The soak runs in
waves: the first creates the NimServices, each later one gives all of them a new image tag (a
rollout each). Within a wave the operator is killed after a random 0 to CHAOS_MAX_GAP seconds of
life, again and again, as long as the wave still has work to do, so every kill lands mid-work:
during start-up and the first list, mid-pass, between an apply and its status patch,
mid-rollout. After at most CHAOS_WAVE_KILLS kills the wave is left to finish, and the time from
its last kill until everything is right again is its re-convergence time. Then the next wave
starts, until CHAOS_KILLS kills are done.

The lab's pod runner once computed a pod's Ready from a copy older than the operator's
readiness gate condition and never looked again (fixed in nimlab/kubelet.py PodWorker.written;
a real kubelet reconciles Ready when a gate changes). The soak still guards against it: a pod
stuck with a stale Ready for NUDGE_SECONDS gets an annotation touched so the runner looks again,
and each nudge is printed and counted apart from the operator's violations (expected: 0).

Right means: every NimService Ready at its current generation, its Deployment running the image
its spec names, exactly one Deployment and one Service each (owned by its UID), no Deployment or
Service owned by no NimService, every ReplicaSet owned by a Deployment that exists, and no
finalizer on any NimService. Duplicates and finalizers are also looked for all along.

It prints its figures and exits 1 on any violation: a wave that does not re-converge within
CHAOS_TIMEOUT seconds of its last kill, or a duplicate, orphan or finalizer seen at any point.

Environment: CHAOS_KILLS (50), CHAOS_SERVICES (30), CHAOS_WAVE_KILLS (5), CHAOS_MAX_GAP (4),
CHAOS_TIMEOUT (300), CHAOS_SEED (random; printed, to replay a run's kill timings),
CHAOS_WORKDIR (keep the lab's and every operator run's logs there instead of in a temporary
directory removed at the end).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from tests.integration.helpers import IMAGE, Kubectl, OperatorProcess, nimservice

from nimlab import nodes
from nimlab.binaries import ensure_binaries, repo_root
from nimlab.cluster import Cluster

Obj = dict[str, Any]
NAMESPACE = "chaos"
SLOW_SECONDS = 30.0
NUDGE_SECONDS = 10.0
"""How long a pod may keep a stale Ready (see stale_ready) before the soak nudges it."""
"""A wave still not re-converged this long after its last kill prints what is wrong."""


@dataclass(frozen=True)
class Config:
    kills: int = 50
    services: int = 30
    wave_kills: int = 5
    seed: int = 0
    timeout: float = 300.0
    max_gap: float = 4.0

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        return cls(
            kills=int(env.get("CHAOS_KILLS", "50")),
            services=int(env.get("CHAOS_SERVICES", "30")),
            wave_kills=int(env.get("CHAOS_WAVE_KILLS", "5")),
            seed=int(env.get("CHAOS_SEED") or random.SystemRandom().randrange(2**31)),
            timeout=float(env.get("CHAOS_TIMEOUT", "300")),
            max_gap=float(env.get("CHAOS_MAX_GAP", "4")),
        )


@dataclass
class Wave:
    name: str
    kills: int = 0
    reconverged: float | None = None
    """Seconds from the wave's last kill until everything was right again."""
    left: list[str] = field(default_factory=list)
    """What was still wrong when the wave timed out."""


def tag_of(wave: int) -> str:
    """The image tag every NimService runs in a wave: a new one each time (the simulator loads
    its model in a second whatever the version)."""
    return f"1.3.{3 + wave}-load-1s"


def manifests(count: int, tag: str) -> str:
    docs = []
    for i in range(count):
        doc = nimservice(f"nim-{i:02d}", tag=tag)
        doc["metadata"]["namespace"] = NAMESPACE
        docs.append(doc)
    return yaml.safe_dump_all(docs)


def controller_uid(obj: Obj) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref["uid"])
    return None


def ready_now(nim: Obj) -> str | None:
    """None when Ready at the current generation, else why not."""
    generation = nim["metadata"].get("generation")
    status = nim.get("status") or {}
    if status.get("observedGeneration") != generation:
        return f"generation {generation} not observed yet"
    for cond in status.get("conditions") or []:
        if cond["type"] == "Ready":
            if cond["status"] == "True" and cond.get("observedGeneration") == generation:
                return None
            return f"Ready={cond['status']} {cond.get('reason')}: {cond.get('message')}"
    return "no Ready condition"


def stale_ready(pod: Obj) -> bool:
    """Ready=False because of a readiness gate whose condition is True: a kubelet recomputes
    Ready when a gate changes (kubernetes pkg/kubelet/kubelet.go HandlePodReconcile,
    pkg/kubelet/status/status_manager.go NeedToReconcilePodReadiness)."""
    conditions = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    gates = [g["conditionType"] for g in pod["spec"].get("readinessGates") or []]
    ready = conditions.get("Ready", {})
    return (
        bool(gates)
        and ready.get("status") == "False"
        and ready.get("reason") == "ReadinessGatesNotReady"
        and conditions.get("ContainersReady", {}).get("status") == "True"
        and all(conditions.get(g, {}).get("status") == "True" for g in gates)
    )


@dataclass
class Snapshot:
    """The namespace as the API server has it, in four lists."""

    nims: list[Obj]
    deployments: list[Obj]
    services: list[Obj]
    replica_sets: list[Obj]
    pods: list[Obj]

    @classmethod
    def read(cls, api: httpx.Client) -> Snapshot:
        def items(path: str) -> list[Obj]:
            resp = api.get(path)
            resp.raise_for_status()
            found: list[Obj] = resp.json()["items"]
            return found

        ns = f"namespaces/{NAMESPACE}"
        return cls(
            items(f"/apis/nimop.dev/v1alpha1/{ns}/nimservices"),
            items(f"/apis/apps/v1/{ns}/deployments"),
            items(f"/api/v1/{ns}/services"),
            items(f"/apis/apps/v1/{ns}/replicasets"),
            items(f"/api/v1/{ns}/pods"),
        )

    def duplicates(self) -> list[str]:
        """Children beyond one per NimService, and children of no NimService: never allowed,
        not even for a moment."""
        uids = {n["metadata"]["uid"] for n in self.nims}
        found = []
        for kind, objs in (("Deployment", self.deployments), ("Service", self.services)):
            per_owner = Counter(controller_uid(o) for o in objs)
            for obj in objs:
                owner = controller_uid(obj)
                name = obj["metadata"]["name"]
                if owner not in uids:
                    found.append(f"{kind} {name} is owned by no NimService ({owner})")
                elif per_owner[owner] > 1:
                    found.append(f"{kind} {name}: its owner has {per_owner[owner]} of them")
        return found

    def hard_violations(self) -> list[str]:
        """What must hold at any moment: no duplicates, no finalizers."""
        found = self.duplicates()
        for nim in self.nims:
            if nim["metadata"].get("finalizers"):
                found.append(f"NimService {nim['metadata']['name']} has finalizers")
        return found

    def not_converged(self, count: int, tag: str) -> list[str]:
        """Everything still wrong, hard violations included; empty once converged."""
        wrong = self.hard_violations()
        if len(self.nims) != count:
            wrong.append(f"{len(self.nims)} NimServices, expected {count}")
        deployments = {controller_uid(d): d for d in self.deployments}
        services = {controller_uid(s) for s in self.services}
        for nim in self.nims:
            name, uid = nim["metadata"]["name"], nim["metadata"]["uid"]
            why = ready_now(nim)
            if why:
                wrong.append(f"{name}: {why}")
            deployment = deployments.get(uid)
            if deployment is None:
                wrong.append(f"{name}: no Deployment")
            else:
                images = {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]}
                if f"{IMAGE}:{tag}" not in images:
                    wrong.append(f"{name}: its Deployment runs {sorted(images)}, not {tag}")
            if uid not in services:
                wrong.append(f"{name}: no Service")
        for pod in self.pods:
            if stale_ready(pod):
                wrong.append(
                    f"pod {pod['metadata']['name']}: Ready=False for a readiness gate that is "
                    "True (the lab's kubelet did not recompute Ready; not the operator's doing)"
                )
        deployment_uids = {d["metadata"]["uid"] for d in self.deployments}
        for rs in self.replica_sets:
            if controller_uid(rs) not in deployment_uids:
                wrong.append(f"ReplicaSet {rs['metadata']['name']} is an orphan")
        return wrong


class Soak:
    def __init__(self, config: Config, lab: Cluster, workdir: Path) -> None:
        self.config = config
        self.lab = lab
        self.rng = random.Random(config.seed)
        self.operator = OperatorProcess(lab, workdir, env={"NIMOP_NAMESPACES": NAMESPACE})
        self.kubectl = Kubectl(lab, NAMESPACE)
        self.waves: list[Wave] = []
        self.seen: list[str] = []
        """Hard violations seen between kills (each once)."""
        self.nudged: list[str] = []
        """Pods whose stale Ready the soak had to nudge (the lab's fault, not the operator's)."""
        self._stale_since: dict[str, float] = {}

    def _look(self, api: httpx.Client) -> Snapshot | None:
        """The namespace now, after noting any hard violation in it."""
        try:
            snap = Snapshot.read(api)
        except httpx.HTTPError:
            return None
        for problem in snap.hard_violations():
            if problem not in self.seen:
                self.seen.append(problem)
        self._nudge_stale(api, snap)
        return snap

    def _nudge_stale(self, api: httpx.Client, snap: Snapshot) -> None:
        """Work around the lab's kubelet: a pod whose Ready it left stale for NUDGE_SECONDS gets
        an annotation touched, which makes the lab's kubelet look at it again (a real kubelet
        reconciles Ready on its own). Counted and printed, so it hides nothing."""
        now = time.monotonic()
        stale = {p["metadata"]["uid"]: p for p in snap.pods if stale_ready(p)}
        self._stale_since = {u: self._stale_since.get(u, now) for u in stale}
        for uid, pod in stale.items():
            if now - self._stale_since[uid] < NUDGE_SECONDS:
                continue
            name = pod["metadata"]["name"]
            with contextlib.suppress(httpx.HTTPError):
                api.patch(
                    f"/api/v1/namespaces/{NAMESPACE}/pods/{name}",
                    json={"metadata": {"annotations": {"chaos.nimop.dev/nudged": str(now)}}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
            self._stale_since[uid] = now
            if name not in self.nudged:
                self.nudged.append(name)
                print(f"    nudged pod {name}: the lab's kubelet left its Ready stale", flush=True)

    def _settle(self, api: httpx.Client, tag: str, until: float) -> tuple[float | None, list[str]]:
        """Poll until everything is right (returns when, and []) or `until` (None, what is
        still wrong)."""
        wrong: list[str] = ["not looked at yet"]
        while time.monotonic() < until:
            snap = self._look(api)
            wrong = snap.not_converged(self.config.services, tag) if snap else ["unreadable"]
            if not wrong:
                return time.monotonic(), []
            time.sleep(0.25)
        return None, wrong

    def run_wave(self, index: int, kills_left: int, api: httpx.Client) -> Wave:
        wave = Wave("converge" if index == 0 else f"rollout {index}")
        tag = tag_of(index)
        self.kubectl.apply(manifests(self.config.services, tag))
        last_kill = time.monotonic()
        while wave.kills < min(self.config.wave_kills, kills_left):
            gap = self.rng.uniform(0.0, self.config.max_gap)
            done, _ = self._settle(api, tag, time.monotonic() + gap)
            if done is not None:
                break  # finished before the next kill was due
            self.operator.kill()
            last_kill = time.monotonic()
            wave.kills += 1
            self._look(api)
            self.operator.start()
        done, wrong = self._settle(api, tag, last_kill + SLOW_SECONDS)
        if done is None:
            print(f"  {wave.name}: still wrong {SLOW_SECONDS:.0f}s after the last kill:")
            for line in wrong[:10]:
                print(f"    {line}", flush=True)
            done, wrong = self._settle(api, tag, last_kill + self.config.timeout)
        if done is None:
            wave.left = wrong
        elif wave.kills:
            wave.reconverged = done - last_kill
        print(
            f"  {wave.name:<11} {wave.kills} kills, "
            + (
                f"NOT re-converged {self.config.timeout:.0f}s after the last: {wave.left[:5]}"
                if wave.left
                else f"re-converged {wave.reconverged:.1f}s after the last"
                if wave.reconverged is not None
                else "done before the first kill was due"
            ),
            flush=True,
        )
        return wave

    def run(self) -> None:
        self.lab.install_crds(repo_root() / "crds", timeout=60)
        self.lab.create_namespace(NAMESPACE)
        self.kubectl.secrets()
        self.operator.start()
        with self.lab.api() as api:
            while self.kills < self.config.kills:
                self.waves.append(
                    self.run_wave(len(self.waves), self.config.kills - self.kills, api)
                )
        self.operator.stop()

    @property
    def kills(self) -> int:
        return sum(w.kills for w in self.waves)

    def tracebacks(self) -> int:
        return sum(
            path.read_text(errors="replace").count("Traceback (most recent call last)")
            for path in self.operator.workdir.glob("operator-*.log")
        )


def report(config: Config, soak: Soak, seconds: float) -> int:
    """Print the figures; the exit status: 0 only when nothing was wrong."""
    times = [w.reconverged for w in soak.waves if w.reconverged is not None]
    failed = [w for w in soak.waves if w.left]
    duplicates = [v for v in soak.seen if "finalizers" not in v]
    finalizers = [v for v in soak.seen if "finalizers" in v]
    rows: Iterable[tuple[str, int | float | str]] = [
        ("NimServices (1 GPU replica each)", config.services),
        ("waves (creation, then image-tag rollouts)", len(soak.waves)),
        ("SIGKILLs of the operator, each with work left", soak.kills),
        ("operator starts", soak.operator.starts),
        ("re-convergence after a wave's last kill, median (s)", _median(times)),
        ("re-convergence after a wave's last kill, max (s)", max(times) if times else "-"),
        ("waves not re-converged", len(failed)),
        ("duplicate or ownerless Deployments/Services seen", len(duplicates)),
        ("NimServices with finalizers seen", len(finalizers)),
        ("operator tracebacks logged", soak.tracebacks()),
        ("pods nudged: the lab's kubelet left Ready stale (lab bug)", len(soak.nudged)),
        ("seed (CHAOS_SEED)", str(config.seed)),
    ]
    print(f"\n== chaos ({seconds:.0f}s)")
    for key, value in rows:
        if isinstance(value, float):
            value = f"{value:.1f}"
        print(f"  {key:<56} {value!s:>10}")
    for problem in soak.seen:
        print(f"  VIOLATION: {problem}")
    for wave in failed:
        print(f"  VIOLATION: {wave.name} did not re-converge; still wrong:")
        for line in wave.left[:20]:
            print(f"    {line}")
    return 1 if soak.seen or failed else 0


def _median(values: list[float]) -> float | str:
    return statistics.median(values) if values else "-"


def main() -> int:
    config = Config.from_env()
    if min(config.kills, config.services, config.wave_kills) < 1:
        print("CHAOS_KILLS, CHAOS_SERVICES and CHAOS_WAVE_KILLS must be >= 1", file=sys.stderr)
        return 2
    started = time.monotonic()
    # Room for every replica plus some surge replicas: rollouts that find no spare GPU go one
    # at a time, so both rollout paths get killed.
    gpu_nodes = math.ceil(config.services * 1.25 / 8) + 1
    print(
        f"chaos: {config.services} NimServices, {config.kills} SIGKILLs (at most "
        f"{config.wave_kills} a wave), {gpu_nodes} GPU nodes, seed {config.seed}",
        flush=True,
    )
    keep = os.environ.get("CHAOS_WORKDIR")
    with tempfile.TemporaryDirectory(prefix="nimop-chaos-") as tmp:
        work = Path(keep) if keep else Path(tmp)
        (work / "operator").mkdir(parents=True)
        lab = Cluster(
            workdir=work / "lab",
            bin_dir=ensure_binaries(),
            topology=nodes.Topology.default(gpu_nodes=gpu_nodes, cpu_nodes=0),
            runner_args=["--time-scale", os.environ.get("NIMLAB_TIME_SCALE", "0.2")],
        )
        soak = Soak(config, lab, work / "operator")
        lab.start()
        try:
            soak.run()
        finally:
            soak.operator.kill()
            status = report(config, soak, time.monotonic() - started)
            lab.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
