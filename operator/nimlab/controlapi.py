"""The runner's control API: what tests and the CLI can ask of the simulated kubelet.

Served on 127.0.0.1 only. Killing a pod's process is the one fault that cannot be expressed
through the Kubernetes API (deleting a pod is not the same as its container crashing), hence
the endpoint; the rest is read-only introspection, container logs included (the API server's
pods/log would have to dial a kubelet, and there is none). Times are Unix seconds as floats
(sub-second precision), so benchmarks can line a simulator's transitions up with what the
API server and an operator made of them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from nimlab import imageruntime
from nimlab.container import ContainerWorker
from nimlab.kubelet import Kubelet, PodWorker
from nimlab.proxy import ServiceProxy

KUBELET: web.AppKey[Kubelet] = web.AppKey("kubelet", Kubelet)
PROXY: web.AppKey[ServiceProxy] = web.AppKey("proxy", ServiceProxy)


def describe_container(c: ContainerWorker) -> dict[str, Any]:
    instance = c.instance
    return {
        "name": c.name,
        "init": c.init,
        "state": c.view.state_name,
        "reason": c.view.reason,
        "exitCode": c.view.exit_code,
        "ready": c.view.ready,
        "started": c.view.started,
        "restartCount": c.view.restart_count,
        "url": c.url,
        "runs": instance.plan.describe() if instance else "",
        "phase": c.phase,
        "phases": list(c.phases),
        "transitions": [{"name": name, "time": when} for name, when in c.transitions],
        "readyChanges": [{"ready": ready, "time": when} for ready, when in c.ready_changes],
        "probesSent": c.probes_sent,
        "probeTimer": c.probe_timer,
        "mounts": [
            {"path": m.container_path, "hostPath": str(m.host_path), "readOnly": m.read_only}
            for m in (instance.mounts if instance else [])
        ],
    }


def describe_pod(worker: PodWorker) -> dict[str, Any]:
    return {
        "namespace": worker.namespace,
        "name": worker.name,
        "uid": worker.uid,
        "ip": worker.ip,
        "node": worker.pod["spec"].get("nodeName", ""),
        "statusWrites": worker.writes,
        "readyWritten": [{"ready": ready, "time": when} for ready, when in worker.ready_written],
        "containers": [describe_container(c) for c in worker.containers],
        "initContainers": [describe_container(c) for c in worker.runtime.init_containers],
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
    hold = _flag(request, "hold")
    worker.kill(hold)
    return web.json_response({"killed": worker.label, "hold": hold})


async def release(request: web.Request) -> web.Response:
    worker = _worker(request)
    worker.release()
    return web.json_response({"released": worker.label})


async def logs(request: web.Request) -> web.Response:
    """`kubectl logs` for a simulated container: ?container=, ?previous=, ?tail=, ?timestamps=."""
    worker = _worker(request)
    workers = worker.runtime.all_workers()
    name = request.query.get("container") or ""
    if not name:
        if len(worker.containers) != 1:
            names = " ".join(c.name for c in workers)
            raise web.HTTPBadRequest(
                text=f"a container name must be specified for pod {worker.name}, "
                f"choose one of: [{names}]\n"
            )
        name = worker.containers[0].name
    container = next((c for c in workers if c.name == name), None)
    if container is None:
        raise web.HTTPNotFound(text=f"container {name} is not valid for pod {worker.name}\n")
    tail_text = request.query.get("tail", "")
    if tail_text and not tail_text.lstrip("-").isdigit():
        raise web.HTTPBadRequest(text=f"tail must be an integer, got {tail_text!r}\n")
    tail = int(tail_text) if tail_text and int(tail_text) >= 0 else None
    previous = _flag(request, "previous")
    if previous and container.log.previous is None:
        raise web.HTTPBadRequest(
            text=f'previous terminated container "{name}" in pod "{worker.name}" not found\n'
        )
    text = container.log.render(previous, tail, _flag(request, "timestamps"))
    return web.Response(text=text)


async def exec_(request: web.Request) -> web.Response:
    """`kubectl exec` into a container that runs under runc (nimlab.imageruntime)."""
    worker = _worker(request)
    names = [c.name for c in worker.runtime.all_workers()]
    try:
        result = await imageruntime.exec_request(worker.uid, names, await request.json())
    except ValueError as err:
        raise web.HTTPBadRequest(text=f"{err}\n") from err
    except LookupError as err:
        raise web.HTTPConflict(text=f"{err}\n") from err
    except TimeoutError as err:
        raise web.HTTPGatewayTimeout(text="the command did not finish in time\n") from err
    return web.json_response(result)


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true", "yes")


async def stats(request: web.Request) -> web.Response:
    """Runner-wide counters: what the pods cost the API server and the runner."""
    kubelet = request.app[KUBELET]
    workers = list(kubelet.workers.values())
    containers = [c for w in workers for c in w.containers]
    return web.json_response(
        {
            "pods": len(workers),
            "statusWrites": kubelet.writer.writes,
            "statusWriteRetries": kubelet.writer.retries,
            "statusWriteBacklog": kubelet.writer.backlog,
            "apiRequests": kubelet.api.requests,
            "probeTimers": sum(c.probe_timer for c in containers),
            "networkProbes": kubelet.prober.sent,
        }
    )


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
    app.router.add_get("/pods/{namespace}/{name}/log", logs)
    app.router.add_post("/pods/{namespace}/{name}/exec", exec_)
    app.router.add_get("/services", services)
    app.router.add_get("/stats", stats)
    return app
