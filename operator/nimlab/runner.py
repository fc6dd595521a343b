"""The pod runner process: kubelet, kube-proxy and volume provisioner for the simulated nodes.

One asyncio process does what the node agents of a real cluster do, against the real API server:
it runs every pod's containers as in-process NIM simulators on the pod's loopback IP, proxies
Services on their own loopback addresses, and provisions volumes. Its control API lets tests
do what the Kubernetes API cannot express, such as crashing a container.

It is built to carry a thousand pods on two cores: everything is driven by watches and by the
simulators' own transitions, status writes go through one bounded, coalescing pool, and a pod
at rest costs memory but no CPU (no probe loop, no write loop, no timer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from aiohttp import web

from nimlab.atomic import write_atomically
from nimlab.controlapi import make_app
from nimlab.informer import Informer
from nimlab.kubeapi import Credentials, KubeAPI
from nimlab.kubelet import Kubelet
from nimlab.provisioner import Provisioner
from nimlab.proxy import ServiceProxy
from nimlab.timing import TimeScale

log = logging.getLogger("nimlab.runner")

# The runner logs each container transition itself; per-request and simulator chatter is noise.
QUIET_LOGGERS = ("httpx", "httpcore", "aiohttp.access", "nimsim")


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("nimsim.server").setLevel(logging.CRITICAL)  # "simulated crash": ours too


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def run(kubeconfig: Path, control_file: Path, scale: TimeScale, volume_dir: Path) -> None:
    api = KubeAPI(Credentials.from_kubeconfig(kubeconfig))
    kubelet = Kubelet(api, scale, volume_dir)
    pods = Informer(api, "/api/v1/pods", kubelet.on_pod, "pods")
    proxy = ServiceProxy(api, lambda: list(pods.store.values()))
    services = Informer(api, "/api/v1/services", proxy.on_service, "services")
    provisioner = Provisioner(api, volume_dir)
    claims = Informer(api, "/api/v1/persistentvolumeclaims", provisioner.on_claim, "claims")
    tasks = [
        asyncio.create_task(job.run(), name=name)
        for name, job in (
            ("pods", pods),
            ("services", services),
            ("claims", claims),
            ("proxy", proxy),
            ("provisioner", provisioner),
            ("status-writer", kubelet.writer),
        )
    ]
    app_runner = web.AppRunner(make_app(kubelet, proxy), access_log=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    synced: asyncio.Future[object] = asyncio.ensure_future(
        asyncio.gather(pods.synced.wait(), services.synced.wait())
    )
    stopped: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
    try:
        # A runner that cannot reach the API server must still stop promptly when told to.
        await asyncio.wait({synced, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            await app_runner.setup()
            site = web.TCPSite(app_runner, "127.0.0.1", 0)
            await site.start()
            url = f"http://127.0.0.1:{app_runner.addresses[0][1]}"
            write_atomically(control_file, url + "\n")
            log.info("pod runner ready (time scale %g): control API %s", scale.factor, url)
            await stopped
        log.info("stopping")
    finally:
        synced.cancel()
        stopped.cancel()
        await cancel_all(tasks)
        await kubelet.close()
        await proxy.close()
        await app_runner.cleanup()
        await api.aclose()


def main(kubeconfig: Path, control_file: Path, time_scale: float, volume_dir: Path | None) -> int:
    configure_logging()
    volumes = volume_dir or kubeconfig.parent / "volumes"
    try:
        asyncio.run(run(kubeconfig, control_file, TimeScale(time_scale), volumes))
    finally:
        control_file.unlink(missing_ok=True)
    return 0
