"""One container of a simulated pod through its whole life, as the kubelet would drive it.

Pull (or fail to), resolve the environment and mounts (or fail to), start what the container
runs (nimlab.entrypoint: a NIM simulator on podIP:port, a NIM utility, an image under runc
through nimlab.imageruntime, or a process that just runs), probe it, and when it exits record
its exit code and termination message, then restart it under the kubelet's back-off as
restartPolicy says. Every state change updates the ContainerView and pokes the pod, which
decides whether the API server needs to hear of it. Init containers are the same worker with
run-to-completion semantics.

A running simulator costs no task and no timer of its own: its exit and the control API's kill
resolve the instance's outcome directly, and its probes are derived from its transitions
(nimlab.probedriver), so a container at rest does nothing at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from nimlab import imageruntime
from nimlab.containerenv import ConfigError, EnvResolver, pull_error
from nimlab.containerlog import ContainerLog
from nimlab.devices import device_env
from nimlab.entrypoint import Plan, plan, serving_port
from nimlab.kubeapi import ApiError, KubeAPI, Obj
from nimlab.podstatus import CONTAINER_CREATING, ContainerView, timestamp
from nimlab.probedriver import ProbeDriver
from nimlab.probes import Probe, Prober, derived_target
from nimlab.probestate import ContainerProbes, Event, Kind, Target, Timeline
from nimlab.termination import DEFAULT_PATH, read_message_file, termination_message
from nimlab.timing import Backoff, TimeScale, go_duration
from nimlab.volumes import Mount, Volume, mount_table, path_map
from nimsim import SimConfig, Simulator, Transition, utilities

log = logging.getLogger("nimlab.kubelet")

__all__ = ["ContainerWorker", "PodContext", "Termination", "serving_port"]

CONFIG_RETRY = 5.0  # kubelet seconds between CreateContainerConfigError retries
PULL_ATTEMPT = 2.0  # kubelet seconds an ErrImagePull stays visible before the back-off shows
PROCESS_SECONDS = 1.0  # how long a container with nothing simulated "runs" before it completes
KILLED_EXIT_CODE = 137
START_ERROR_EXIT_CODE = 128
CRASH_EXIT_CODE = 1
# Bounded so that a flapping simulator cannot grow the runner: the control API's history.
MAX_TRANSITIONS = 64
MAX_READY_CHANGES = 32
PROBE_FIELDS: tuple[tuple[Kind, str], ...] = (
    ("startup", "startupProbe"),
    ("readiness", "readinessProbe"),
    ("liveness", "livenessProbe"),
)
# A simulator transition -> the phase it enters (nimsim.Simulator.phase).
PHASE_AFTER = {
    "downloading": "downloading",
    "listening": "loading",
    "ready": "ready",
    "not-ready": "loading",
    "exited": "exited",
}

Finish = Callable[[int, str | None], None]


class PodContext(Protocol):
    """What a container needs from its pod."""

    api: KubeAPI
    prober: Prober
    scale: TimeScale
    label: str
    node_labels: Mapping[str, str]

    @property
    def pod(self) -> Obj: ...

    @property
    def volumes(self) -> Mapping[str, Volume]: ...

    def instance_dir(self, container: str, instance: int) -> Path: ...

    def changed(self) -> None: ...


@dataclass(frozen=True)
class Termination:
    exit_code: int
    reason: str
    message: str | None
    started_at: str
    finished_at: str
    container_id: str

    def as_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        }
        if self.message:
            state["message"] = self.message
        return state


def _fresh_instance_dir(directory: Path, stale: Path | None) -> None:
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "rootfs").mkdir(parents=True)
    (directory / "termination-log").touch()


def exit_reason(code: int) -> str:
    """The runtime's reason for an exited container (OOMKilled is not simulated)."""
    return "Completed" if code == 0 else "Error"


@dataclass
class Instance:
    """One start of the container: its plan, filesystem and, for a server, its simulator."""

    number: int
    plan: Plan
    directory: Path
    mounts: list[Mount]
    env: dict[str, str]
    config: SimConfig | None = None

    @property
    def termination_log(self) -> Path:
        return self.directory / "termination-log"


class ContainerWorker:
    def __init__(
        self,
        ctx: PodContext,
        spec: dict[str, Any],
        restart_policy: str,
        *,
        init: bool = False,
        waiting_reason: str = CONTAINER_CREATING,
    ) -> None:
        self.ctx = ctx
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.view = ContainerView(
            name=self.name,
            image=spec.get("image", ""),
            state={"waiting": {"reason": waiting_reason}},
        )
        self.sim: Simulator | None = None
        self.log = ContainerLog()
        self.instance: Instance | None = None
        self.phases: list[str] = []
        # This instance's simulator transitions, and the kubelet's ready flips of the container,
        # as (name or ready, Unix time): what the control API reports for benchmarks.
        self.transitions: deque[tuple[str, float]] = deque(maxlen=MAX_TRANSITIONS)
        self.ready_changes: deque[tuple[bool, float]] = deque(maxlen=MAX_READY_CHANGES)
        self.probe_driver: ProbeDriver | None = None
        self._probes_sent = 0  # by earlier instances
        # A regular init container runs to completion: "Always" restarts it only on failure.
        self.restart_policy = (
            ("Never" if restart_policy == "Never" else "OnFailure") if init else restart_policy
        )
        self._backoff = Backoff(ctx.scale)
        self._finish: Finish | None = None
        self._hold = False
        self._released = asyncio.Event()
        self._last_termination: Termination | None = None
        self._last_logged: tuple[str, str] = ("", "")
        self._instances = 0

    @property
    def url(self) -> str:
        sim = self.sim
        return sim.url if sim is not None and sim.listening.is_set() else ""

    @property
    def phase(self) -> str:
        """The simulator's phase while one runs (downloading, loading, ready), else ""."""
        if self.sim is not None:
            self._note_phase(self.sim.phase)
            return self.sim.phase
        return ""

    @property
    def probes_sent(self) -> int:
        """Probes that went over the network; a simulator's own are derived and never do."""
        driver = self.probe_driver
        return self._probes_sent + (driver.sent if driver is not None else 0)

    @property
    def probe_timer(self) -> bool:
        """Whether a derived-probe timer is pending (never for a container at rest)."""
        driver = self.probe_driver
        return driver is not None and driver.timer_pending

    @property
    def succeeded(self) -> bool:
        return self.view.finished and self.view.exit_code == 0

    def kill(self, hold: bool = False) -> None:
        """Make the running instance exit as if its process died; with hold, keep it down."""
        if hold:
            self._hold = True
            self._released.clear()
        finish = self._finish
        if finish is not None:
            self._log("killed through the control API")
            finish(CRASH_EXIT_CODE, None)

    def release(self) -> None:
        self._hold = False
        self._released.set()

    async def run(self) -> None:
        """Until the container is finished for good (restartPolicy), or the pod goes away."""
        try:
            await self._lifecycle()
        except Exception:
            log.exception(
                "%s %s: the simulated kubelet failed this container", self.ctx.label, self.name
            )
        finally:
            await self._stop_sim()

    async def _lifecycle(self) -> None:
        pull_failures = 0
        while True:
            if self._hold:
                await self._released.wait()
            failure = pull_error(self.view.image) or await imageruntime.pull(self.spec)
            if failure is not None:
                await self._failed_pull(failure, pull_failures)
                pull_failures += 1
                continue
            prepared = await self._prepare()
            if prepared is None:
                continue
            try:
                ended = await self._run_once(*prepared)
            except Exception as err:
                ended = self._start_error(err)
            self._terminated(ended)
            if self.restart_policy == "Never" or (
                self.restart_policy == "OnFailure" and ended.exit_code == 0
            ):
                self.view.finished = True
                self.ctx.changed()
                return
            if self._hold:
                self._log("held down until released")
                continue
            delay = self._backoff.delay(time.monotonic())
            if delay > 0:
                pod = self.ctx.pod["metadata"]
                self._waiting(
                    "CrashLoopBackOff",
                    f"back-off {go_duration(delay)} restarting failed container={self.name} "
                    f"pod={pod['name']}_{pod['namespace']}({pod.get('uid', '')})",
                )
                await asyncio.sleep(delay)

    async def _failed_pull(self, message: str, failures: int) -> None:
        scale = self.ctx.scale
        self._waiting("ErrImagePull", message)
        await asyncio.sleep(scale(PULL_ATTEMPT))
        self._waiting(
            "ImagePullBackOff",
            f'Back-off pulling image "{self.view.image}": ErrImagePull: {message}',
        )
        await asyncio.sleep(min(scale(10.0) * 2**failures, scale(300.0)))

    async def _prepare(self) -> tuple[dict[str, str], list[Mount]] | None:
        """The container's environment and mounts, or None after CreateContainerConfigError."""
        try:
            env = await EnvResolver(self.ctx.api, self.ctx.pod).resolve(self.spec)
            mounts = mount_table(self.spec, self.ctx.volumes, env)
            return env, mounts
        except ConfigError as err:
            self._waiting("CreateContainerConfigError", str(err))
        except (ApiError, httpx.HTTPError) as err:
            log.warning("%s %s: reading its environment failed: %s", self.ctx.label, self.name, err)
        await asyncio.sleep(self.ctx.scale(CONFIG_RETRY))
        return None

    async def _new_instance(self, env: dict[str, str], mounts: list[Mount]) -> Instance:
        """A fresh writable layer and termination-log file, as a new container gets."""
        number = self._instances
        self._instances += 1
        directory = self.ctx.instance_dir(self.name, number)
        # The kubelet keeps the last dead container only.
        stale = self.ctx.instance_dir(self.name, number - 2) if number >= 2 else None
        await asyncio.to_thread(_fresh_instance_dir, directory, stale)
        chosen = plan(self.spec, env, utilities.ENTRYPOINTS)
        return Instance(number, chosen, directory, mounts, env)

    def _sim_env(self, env: dict[str, str], instance: Instance) -> dict[str, str]:
        pod = self.ctx.pod
        message_path = str(self.spec.get("terminationMessagePath") or DEFAULT_PATH)
        table = path_map(
            instance.directory / "rootfs",
            instance.mounts,
            {message_path: instance.termination_log},
        )
        return {
            **env,
            **device_env(self.spec, self.ctx.node_labels, pod["metadata"].get("uid", "")),
            "NIMSIM_IMAGE": self.view.image,
            "NIMSIM_HOST": (pod.get("status") or {}).get("podIP", ""),
            "NIMSIM_PATH_MAP": json.dumps(table),
            "NIMSIM_READ_ONLY_PATHS": json.dumps(
                sorted({m.container_path for m in instance.mounts if m.read_only})
            ),
        }

    async def _run_once(self, env: dict[str, str], mounts: list[Mount]) -> Termination:
        """Start one instance and return when it has exited, for whatever reason."""
        self.log.new_instance()
        self.phases = []
        self.transitions = deque(maxlen=MAX_TRANSITIONS)
        instance = await self._new_instance(env, mounts)
        self.instance = instance
        ip = (self.ctx.pod.get("status") or {}).get("podIP", "")
        started_at = timestamp()
        sim_env = self._sim_env(env, instance)
        instance.env = {k: v for k, v in sim_env.items() if not k.startswith("NIMSIM_")}
        if instance.plan.port is not None:
            sim_env["NIM_SERVER_PORT"] = str(instance.plan.port)
        try:
            instance.config = SimConfig.from_env(sim_env)
        except ValueError as err:
            # The process starts and dies at once with its own complaint, as a NIM would.
            self.log.write(f"ERROR: invalid configuration: {err}")
            return self._failed_start(started_at, instance)

        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[tuple[int, str | None]] = loop.create_future()

        def finish(code: int, message: str | None) -> None:
            if not outcome.done():
                outcome.set_result((code, message))

        self._finish = finish
        timeline = Timeline()
        origin = loop.time()
        program: asyncio.Task[None] | None = None
        try:
            if instance.plan.kind == "server":
                self.sim = self._simulator(instance.config, timeline, finish)
                await self.sim.start()
                self._note_phase(self.sim.phase)
            self._started(started_at, instance)
            if not self.init:
                self.probe_driver = self._probe_driver(origin, ip, timeline, finish)
                self.probe_driver.start()
            if self.sim is None:
                program = asyncio.create_task(self._run_program(instance, finish))
            code, runtime_message = await outcome
        finally:
            self._finish = None
            driver, self.probe_driver = self.probe_driver, None
            if driver is not None:
                await driver.stop()
                self._probes_sent += driver.sent
            if program is not None:
                program.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await program
            await self._stop_sim()
        return self._ended(code, runtime_message, started_at, instance)

    def _simulator(self, config: SimConfig, timeline: Timeline, finish: Finish) -> Simulator:
        """The NIM process; its transitions feed the probes, its own exit ends the instance."""
        transitions = self.transitions

        def on_transition(change: Transition) -> None:
            timeline.record(change.name, change.monotonic)
            transitions.append((change.name, change.wall))
            if change.name in PHASE_AFTER:
                self._note_phase(PHASE_AFTER[change.name])
            if change.name == "exited" and sim.exit_code is not None:
                finish(sim.exit_code, None)
            driver = self.probe_driver
            if driver is not None:
                driver.wake()

        sim = Simulator(config, output=self.log.write, on_transition=on_transition)
        return sim

    def _probe_driver(
        self, origin: float, ip: str, timeline: Timeline, finish: Finish
    ) -> ProbeDriver:
        """Probes of the container's own simulator are derived; the others are sent."""
        sim = self.sim
        sim_port = sim.config.port if sim is not None and sim.config.port > 0 else None
        slow = sim is not None and sim.config.faults.slow
        specs: dict[Kind, tuple[Probe, Target | None]] = {}
        for kind, field in PROBE_FIELDS:
            probe = Probe.parse(self.spec.get(field), self.spec, self.ctx.scale)
            if probe is not None:
                specs[kind] = (probe, derived_target(probe, sim_port, slow))
        probes = ContainerProbes.create(origin, specs, timeline)

        def on_event(event: Event, detail: str) -> None:
            self._probe_event(event, detail, finish)

        return ProbeDriver(probes, ip, self.ctx.prober, on_event)

    def _probe_event(self, event: Event, detail: str, finish: Finish) -> None:
        if event.name == "started":
            if event.kind == "startup":
                self._log("startup probe passed")
            self.view.started = True
            self.ctx.changed()
        elif event.name == "ready":
            self._set_ready(True, "")
        elif event.name == "not-ready":
            self._set_ready(False, detail)
        else:
            self._log(f"{event.kind} probe failed ({detail}); killing it")
            finish(KILLED_EXIT_CODE, None)

    def _ended(
        self, code: int, runtime_message: str | None, started_at: str, instance: Instance
    ) -> Termination:
        """The kubelet's view of an exited instance: its code and its termination message."""
        file_text = read_message_file(instance.termination_log)
        policy = self.spec.get("terminationMessagePolicy")
        message = termination_message(policy, code, file_text, self.log.lines())
        if runtime_message:
            message = f"{runtime_message}: {message}" if message else runtime_message
        self._log(f"exited with code {code}")
        return Termination(
            code, exit_reason(code), message or None, started_at, timestamp(), self._container_id()
        )

    async def _run_program(self, instance: Instance, finish: Finish) -> None:
        """A utility, an image, or a process that just runs; its exit status ends the instance."""
        config = instance.config
        assert config is not None
        chosen = instance.plan
        try:
            if chosen.kind == "utility":
                code = await utilities.run(list(chosen.argv), config, self.log.write)
            elif chosen.kind == "image":
                code = await imageruntime.run(self.ctx, self.spec, instance, self.log.write)
            elif self.restart_policy == "Always":
                await asyncio.Event().wait()  # a server-less process that never exits on its own
                return
            else:
                await asyncio.sleep(self.ctx.scale(PROCESS_SECONDS))
                code = 0
        except Exception as err:
            # A Python process dying of an uncaught exception: a traceback and exit status 1.
            log.exception("%s %s: the simulated program raised", self.ctx.label, self.name)
            self.log.write(f"Traceback (most recent call last): {type(err).__name__}: {err}")
            code = CRASH_EXIT_CODE
        finish(code, None)

    async def _stop_sim(self) -> None:
        sim, self.sim = self.sim, None
        if sim is not None:
            await sim.stop()

    def _set_ready(self, ready: bool, detail: str) -> None:
        if self.view.ready != ready:
            self._record_ready(ready)
            self._log("ready" if ready else f"not ready ({detail})")
            self.ctx.changed()

    def _record_ready(self, ready: bool) -> None:
        """Every change of the kubelet's ready goes through here, for the control API."""
        if self.view.ready != ready:
            self.ready_changes.append((ready, time.time()))
        self.view.ready = ready

    def _note_phase(self, phase: str) -> None:
        if not self.phases or self.phases[-1] != phase:
            self.phases.append(phase)
            if len(self.phases) > MAX_TRANSITIONS:  # a flapping model
                del self.phases[0]

    # -- state changes ------------------------------------------------------------------------

    def _started(self, started_at: str, instance: Instance) -> None:
        if self.view.ever_started:
            self.view.restart_count += 1
        self.view.ever_started = True
        self._apply_last_state()
        self.view.state = {"running": {"startedAt": started_at}}
        # An init container counts as started while it runs (it has no startup probe).
        self.view.started = self.init
        self._record_ready(False)
        self._log(f"started (restartCount {self.view.restart_count}, {instance.plan.describe()})")
        self.ctx.changed()

    def _failed_start(self, started_at: str, instance: Instance) -> Termination:
        """The process could not come up: the kubelet sees a container that exited at once."""
        if self.view.ever_started:
            self.view.restart_count += 1
        self.view.ever_started = True
        return self._ended(CRASH_EXIT_CODE, None, started_at, instance)

    def _start_error(self, err: Exception) -> Termination:
        """The runtime itself failed to run the instance: containerd's StartError, exit 128."""
        log.exception("%s %s: the simulated runtime failed to run it", self.ctx.label, self.name)
        if self.view.ever_started and "running" not in self.view.state:
            self.view.restart_count += 1
        self.view.ever_started = True
        now = timestamp()
        message = f"failed to start the simulated container: {type(err).__name__}: {err}"
        return Termination(
            START_ERROR_EXIT_CODE, "StartError", message, now, now, self._container_id()
        )

    def _terminated(self, ended: Termination) -> None:
        self._apply_last_state()
        self.view.state = {"terminated": ended.as_state()}
        # A regular init container that exited 0 reads as ready (the kubelet's prober manager).
        self._record_ready(self.init and ended.exit_code == 0)
        self.view.started = False
        self._last_termination = ended
        self.ctx.changed()

    def _waiting(self, reason: str, message: str) -> None:
        self._apply_last_state()
        self.view.state = {"waiting": {"reason": reason, "message": message}}
        self._record_ready(False)
        self.view.started = False
        if (reason, message) != self._last_logged:
            self._last_logged = (reason, message)
            self._log(f"{reason}: {message}")
        self.ctx.changed()

    def _apply_last_state(self) -> None:
        if self._last_termination is not None:
            self.view.last_state = {"terminated": self._last_termination.as_state()}

    def _container_id(self) -> str:
        return self.view.container_id(self.ctx.pod["metadata"].get("uid", ""))

    def _log(self, what: str) -> None:
        log.info("%s %s: %s", self.ctx.label, self.name, what)
