"""The runner's control API: what tests and the CLI can ask of the simulated kubelet.

Served on 127.0.0.1 only. Killing a pod's process is the one fault that cannot be expressed
through the Kubernetes API (deleting a pod is not the same as its container crashing), hence
the endpoint; the rest is read-only introspection.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nimlab.kubelet import Kubelet, PodWorker
from nimlab.proxy import ServiceProxy

KUBELET: web.AppKey[Kubelet] = web.AppKey("kubelet", Kubelet)
PROXY: web.AppKey[ServiceProxy] = web.AppKey("proxy", ServiceProxy)


def describe_pod(worker: PodWorker) -> dict[str, Any]:
    return {
        "namespace": worker.namespace,
        "name": worker.name,
        "uid": worker.uid,
        "ip": worker.ip,
        "node": worker.pod["spec"].get("nodeName", ""),
        "statusWrites": worker.writes,
        "containers": [
            {
                "name": c.name,
                "state": c.view.state_name,
                "reason": c.view.reason,
                "ready": c.view.ready,
                "started": c.view.started,
                "restartCount": c.view.restart_count,
                "url": c.url,
            }
            for c in worker.containers
        ],
    }


def _worker(request: web.Request) -> PodWorker:
    kubelet = request.app[KUBELET]
    worker = kubelet.find(request.match_info["namespace"], request.match_info["name"])
    if worker is None:
        raise web.HTTPNotFound(text="no such pod on the simulated nodes\n")
    return worker


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def pods(request: web.Request) -> web.Response:
    workers = sorted(request.app[KUBELET].workers.values(), key=lambda w: w.label)
    return web.json_response([describe_pod(w) for w in workers])


async def kill(request: web.Request) -> web.Response:
    worker = _worker(request)
    hold = request.query.get("hold", "").lower() in ("1", "true", "yes")
    worker.kill(hold)
    return web.json_response({"killed": worker.label, "hold": hold})


async def release(request: web.Request) -> web.Response:
    worker = _worker(request)
    worker.release()
    return web.json_response({"released": worker.label})


async def services(request: web.Request) -> web.Response:
    entries = sorted(request.app[PROXY].entries.values(), key=lambda e: (e.namespace, e.name))
    return web.json_response([e.describe() for e in entries])


def make_app(kubelet: Kubelet, proxy: ServiceProxy) -> web.Application:
    app = web.Application()
    app[KUBELET] = kubelet
    app[PROXY] = proxy
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/pods", pods)
    app.router.add_post("/pods/{namespace}/{name}/kill", kill)
    app.router.add_post("/pods/{namespace}/{name}/release", release)
    app.router.add_get("/services", services)
    return app
