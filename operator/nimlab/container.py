"""One container of a simulated pod through its whole life, as the kubelet would drive it.

Pull (or fail to), resolve the environment (or fail to), start a NIM simulator on podIP:port,
probe it, and when it exits restart it under the kubelet's back-off. Every state change updates
the ContainerView and pokes the pod, which decides whether the API server needs to hear of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from nimlab.containerenv import ConfigError, EnvResolver, image_tag, pull_error
from nimlab.kubeapi import ApiError, KubeAPI, Obj
from nimlab.podstatus import ContainerView, timestamp
from nimlab.probes import Probe, Prober
from nimlab.timing import Backoff, TimeScale, go_duration
from nimsim import SimConfig, Simulator, fault_from_image_tag

log = logging.getLogger("nimlab.kubelet")

BIND_SECONDS = 10.0  # a deleted pod's simulator on a reused IP may still be closing
CONFIG_RETRY = 5.0  # kubelet seconds between CreateContainerConfigError retries
PULL_ATTEMPT = 2.0  # kubelet seconds an ErrImagePull stays visible before the back-off shows
KILLED_EXIT_CODE = 137
CRASH_EXIT_CODE = 1

Finish = Callable[[int, str, str | None], None]


class PodContext(Protocol):
    """What a container needs from its pod."""

    api: KubeAPI
    prober: Prober
    scale: TimeScale
    label: str

    @property
    def pod(self) -> Obj: ...

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


def serving_port(spec: dict[str, Any], env: dict[str, str]) -> int | None:
    """The TCP port the simulator listens on: NIM_SERVER_PORT if declared, else the first."""
    ports = [
        int(p["containerPort"])
        for p in spec.get("ports") or []
        if p.get("protocol", "TCP") == "TCP" and p.get("containerPort")
    ]
    wanted = env.get("NIM_SERVER_PORT", "")
    if wanted.isdigit() and int(wanted) in ports:
        return int(wanted)
    return ports[0] if ports else None


class ContainerWorker:
    def __init__(self, ctx: PodContext, spec: dict[str, Any], restart_policy: str) -> None:
        self.ctx = ctx
        self.spec = spec
        self.name: str = spec["name"]
        self.view = ContainerView(name=self.name, image=spec.get("image", ""))
        self.sim: Simulator | None = None
        self.restart_policy = restart_policy
        self._backoff = Backoff(ctx.scale)
        self._kill = asyncio.Event()
        self._hold = False
        self._released = asyncio.Event()
        self._last_termination: Termination | None = None
        self._last_logged: tuple[str, str] = ("", "")

    @property
    def url(self) -> str:
        return self.sim.url if self.sim is not None else ""

    def kill(self, hold: bool = False) -> None:
        """Make the running instance exit as if its process died; with hold, keep it down."""
        if hold:
            self._hold = True
            self._released.clear()
        self._kill.set()

    def release(self) -> None:
        self._hold = False
        self._released.set()

    async def run(self) -> None:
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
            failure = pull_error(self.view.image)
            if failure is not None:
                await self._failed_pull(failure, pull_failures)
                pull_failures += 1
                continue
            env = await self._environment()
            if env is None:
                continue
            ended = await self._run_once(env)
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

    async def _environment(self) -> dict[str, str] | None:
        try:
            return await EnvResolver(self.ctx.api, self.ctx.pod).resolve(self.spec)
        except ConfigError as err:
            self._waiting("CreateContainerConfigError", str(err))
        except (ApiError, httpx.HTTPError) as err:
            log.warning("%s %s: reading its environment failed: %s", self.ctx.label, self.name, err)
        await asyncio.sleep(self.ctx.scale(CONFIG_RETRY))
        return None

    async def _run_once(self, env: dict[str, str]) -> Termination:
        """Start one instance and return when it has exited, for whatever reason."""
        self._kill.clear()
        ip = (self.ctx.pod.get("status") or {}).get("podIP", "")
        port = serving_port(self.spec, env)
        started_at = timestamp()
        if port is not None:
            sim_env = {
                **fault_from_image_tag(image_tag(self.view.image)),
                **env,
                "NIMSIM_IMAGE": self.view.image,
                "NIMSIM_HOST": ip,
                "NIM_SERVER_PORT": str(port),
            }
            try:
                config = SimConfig.from_env(sim_env)
            except ValueError as err:
                return self._failed_start(started_at, f"simulator configuration: {err}")
            self.sim = await self._bind(config)
            if self.sim is None:
                return self._failed_start(
                    started_at, f"listen tcp {ip}:{port}: bind: address already in use"
                )
        self._started(started_at)

        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[tuple[int, str, str | None]] = loop.create_future()

        def finish(code: int, reason: str, message: str | None) -> None:
            if not outcome.done():
                outcome.set_result((code, reason, message))

        tasks = [
            asyncio.create_task(self._probe_all(ip, time.monotonic(), finish)),
            asyncio.create_task(self._await_kill(finish)),
        ]
        if self.sim is not None:
            tasks.append(asyncio.create_task(self._await_crash(self.sim, finish)))
        elif self.restart_policy != "Always":
            tasks.append(asyncio.create_task(self._complete(finish)))
        try:
            code, reason, message = await outcome
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._stop_sim()
        return Termination(code, reason, message, started_at, timestamp(), self._container_id())

    async def _bind(self, config: SimConfig) -> Simulator | None:
        deadline = time.monotonic() + BIND_SECONDS
        while True:
            sim = Simulator(config)
            try:
                await sim.start()
            except OSError as err:
                if time.monotonic() > deadline:
                    log.warning("%s %s: cannot listen: %s", self.ctx.label, self.name, err)
                    return None
                await asyncio.sleep(0.1)
            else:
                return sim

    async def _stop_sim(self) -> None:
        sim, self.sim = self.sim, None
        if sim is not None:
            await sim.stop()

    async def _await_kill(self, finish: Finish) -> None:
        await self._kill.wait()
        self._log("killed through the control API")
        finish(CRASH_EXIT_CODE, "Error", None)

    async def _await_crash(self, sim: Simulator, finish: Finish) -> None:
        await sim.crashed.wait()
        self._log(f"exited with code {CRASH_EXIT_CODE} (simulated crash)")
        finish(CRASH_EXIT_CODE, "Error", None)

    async def _complete(self, finish: Finish) -> None:
        """A container with nothing to serve in a run-to-completion pod (a Job) just succeeds."""
        await asyncio.sleep(self.ctx.scale(1.0))
        self._log("completed")
        finish(0, "Completed", None)

    async def _probe_all(self, ip: str, started: float, finish: Finish) -> None:
        scale = self.ctx.scale
        startup = Probe.parse(self.spec.get("startupProbe"), self.spec, scale)
        if startup is not None and not await self._probe_loop(
            startup, "startup", ip, started, finish
        ):
            return
        self.view.started = True
        self.ctx.changed()
        readiness = Probe.parse(self.spec.get("readinessProbe"), self.spec, scale)
        liveness = Probe.parse(self.spec.get("livenessProbe"), self.spec, scale)
        if readiness is None:
            self._set_ready(True, "")
        loops = [
            self._probe_loop(probe, kind, ip, started, finish)
            for probe, kind in ((readiness, "readiness"), (liveness, "liveness"))
            if probe is not None
        ]
        await asyncio.gather(*loops)

    async def _probe_loop(
        self, probe: Probe, kind: str, ip: str, started: float, finish: Finish
    ) -> bool:
        """Probe every period; startup returns True once it passed, liveness never returns
        until it fails; a startup or liveness failure ends the instance through `finish`."""
        await asyncio.sleep(max(0.0, started + probe.initial_delay - time.monotonic()))
        successes = failures = 0
        while True:
            ok, detail = await self.ctx.prober.check(probe, ip)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            if kind == "readiness":
                if ok and successes >= probe.success_threshold:
                    self._set_ready(True, "")
                elif not ok and failures >= probe.failure_threshold:
                    self._set_ready(False, detail)
            elif ok and kind == "startup" and successes >= probe.success_threshold:
                self._log("startup probe passed")
                return True
            elif not ok and failures >= probe.failure_threshold:
                self._log(f"{kind} probe failed ({detail}); killing it")
                finish(KILLED_EXIT_CODE, "Error", None)
                return False
            await asyncio.sleep(probe.period)

    def _set_ready(self, ready: bool, detail: str) -> None:
        if self.view.ready != ready:
            self.view.ready = ready
            self._log("ready" if ready else f"not ready ({detail})")
            self.ctx.changed()

    # -- state changes ------------------------------------------------------------------------

    def _started(self, started_at: str) -> None:
        if self.view.ever_started:
            self.view.restart_count += 1
        self.view.ever_started = True
        self._apply_last_state()
        self.view.state = {"running": {"startedAt": started_at}}
        self.view.started = self.view.ready = False
        where = f", serving {self.sim.url}" if self.sim is not None else ""
        self._log(f"started (restartCount {self.view.restart_count}{where})")
        self.ctx.changed()

    def _failed_start(self, started_at: str, message: str) -> Termination:
        """The process could not come up: the kubelet sees a container that exited at once."""
        self._log(f"failed to start: {message}")
        if self.view.ever_started:
            self.view.restart_count += 1
        self.view.ever_started = True
        return Termination(
            CRASH_EXIT_CODE, "Error", message, started_at, timestamp(), self._container_id()
        )

    def _terminated(self, ended: Termination) -> None:
        self._apply_last_state()
        self.view.state = {"terminated": ended.as_state()}
        self.view.ready = self.view.started = False
        self._last_termination = ended
        self.ctx.changed()

    def _waiting(self, reason: str, message: str) -> None:
        self._apply_last_state()
        self.view.state = {"waiting": {"reason": reason, "message": message}}
        self.view.ready = self.view.started = False
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
