"""The default path: the NimService from the API server, the NIM through its service proxy.

The lab's API server cannot proxy to loopback pod IPs (docs/lab.md), so the API server is
played here by an httpx MockTransport that answers the NimService GET itself and forwards
service-proxy requests to a live simulator, the way kube-apiserver forwards them to the
Service. The tests check what the plugin sends (paths, credentials) and how it reads what the
API server says (Status objects for 401, 403, 404 and "no endpoints").
"""

from __future__ import annotations

import asyncio
import io
import json
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from nimcheck import build_parser, run
from nimcheck.cli import Streams
from nimcheck.cluster import parse_nimservice, service_proxy_url
from nimcheck.kubeconfig import ApiAccess
from nimop import names

from .test_nimcheck_support import MODEL, simulator

SERVER = "https://127.0.0.1:6443"
TOKEN = "Bearer t0ken"
ACCESS = ApiAccess(
    server=SERVER,
    context="prod",
    user="alice",
    namespace="team-a",
    headers={"Authorization": TOKEN},
    verify=ssl.create_default_context(),
)


def nimservice(
    name: str = "llama",
    namespace: str = "team-a",
    ready: tuple[str, str, str] = ("True", "Serving", "1/1 replicas serve"),
    generation: int = 3,
    observed: int = 3,
    port: int | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": MODEL, "image": {"repository": "r", "tag": "t"}}
    if port is not None:
        spec["service"] = {"port": port}
    status, reason, message = ready
    return {
        "apiVersion": "nimop.dev/v1alpha1",
        "kind": "NimService",
        "metadata": {"name": name, "namespace": namespace, "generation": generation},
        "spec": spec,
        "status": {
            "observedGeneration": observed,
            "conditions": [
                {"type": "Ready", "status": status, "reason": reason, "message": message},
            ],
        },
    }


def status_object(code: int, reason: str, message: str, **details: str) -> httpx.Response:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return httpx.Response(code, json=body)


@dataclass
class FakeApiServer:
    """Serves one NimService; proxies its Service to `backend`, or answers `proxy_answer`."""

    obj: dict[str, Any] | None
    backend: str = ""
    proxy_answer: httpx.Response | None = None
    nimservice_answer: httpx.Response | None = None
    seen: list[httpx.Request] = field(default_factory=list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        path = request.url.raw_path.decode()
        if "/nimservices/" in path:
            if self.nimservice_answer is not None:
                return self.nimservice_answer
            if self.obj is None:
                name = path.rsplit("/", 1)[-1]
                return status_object(
                    404, "NotFound", f'nimservices.nimop.dev "{name}" not found', name=name
                )
            return httpx.Response(200, json=self.obj)
        prefix, marker, rest = path.partition("/proxy")
        if not marker or not prefix.startswith("/api/v1/namespaces/"):
            return httpx.Response(404, text="404 page not found")
        if self.proxy_answer is not None:
            return self.proxy_answer
        async with httpx.AsyncClient(trust_env=False, verify=False) as client:
            upstream = await client.request(
                request.method,
                f"{self.backend}{rest}",
                content=request.content,
                headers={"content-type": request.headers.get("content-type", "")},
            )
        return httpx.Response(
            upstream.status_code,
            content=upstream.content,
            headers={"content-type": upstream.headers.get("content-type", "")},
        )


def check(
    api: Callable[[httpx.Request], Coroutine[None, None, httpx.Response]], *argv: str
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["check", *argv])
    code = run(
        args,
        streams=Streams(out, err, {}),
        api_transport=httpx.MockTransport(api),
        access=ACCESS,
    )
    return code, out.getvalue(), err.getvalue()


def test_every_check_passes_through_the_service_proxy_with_the_users_token() -> None:
    with simulator() as url:
        api = FakeApiServer(nimservice(), backend=url)
        code, out, err = check(api, "llama", "--requests", "2", "--concurrency", "2")
    assert code == 0, out + err
    assert out.splitlines()[:2] == [
        "NimService team-a/llama is Ready (Serving)",
        f"Checking {MODEL} at {SERVER}/api/v1/namespaces/team-a/services/http:llama:8000/proxy "
        "through the API server's service proxy",
    ]
    first = api.seen[0]
    assert str(first.url) == f"{SERVER}/apis/nimop.dev/v1alpha1/namespaces/team-a/nimservices/llama"
    proxied = api.seen[1:]
    assert proxied
    assert all(r.headers["authorization"] == TOKEN for r in api.seen)
    prefix = "/api/v1/namespaces/team-a/services/http:llama:8000/proxy/"
    assert all(r.url.raw_path.decode().startswith(prefix) for r in proxied)
    paths = {r.url.raw_path.decode().removeprefix(prefix[:-1]) for r in proxied}
    assert {"/v1/health/ready", "/v1/health/live", "/v1/models", "/v1/chat/completions"} <= paths


def test_json_names_the_proxy_and_the_nimservice() -> None:
    with simulator() as url:
        api = FakeApiServer(nimservice(), backend=url)
        code, out, _ = check(api, "llama", "-o", "json", "--requests", "1", "--concurrency", "1")
    assert code == 0
    doc = json.loads(out)
    assert doc["via"] == "service-proxy"
    assert doc["nimService"] == {
        "namespace": "team-a",
        "name": "llama",
        "service": "llama",
        "port": 8000,
        "ready": {"status": "True", "reason": "Serving", "message": "1/1 replicas serve"},
    }


def test_service_name_and_port_come_from_nimop_names_and_the_spec() -> None:
    obj = nimservice(name="llama.3.1", namespace="ml", port=9000)
    info = parse_nimservice(obj)
    assert info.service == names.service_name("llama.3.1")
    assert info.service != "llama.3.1"
    assert info.port == 9000
    url = service_proxy_url(SERVER + "/", "ml", info.service, info.port)
    assert url == f"{SERVER}/api/v1/namespaces/ml/services/http:{info.service}:9000/proxy"


def test_namespace_flag_overrides_the_contexts_namespace() -> None:
    api = FakeApiServer(None)
    code, _, err = check(api, "llama", "-n", "other")
    assert code == 3
    assert api.seen[0].url.path == "/apis/nimop.dev/v1alpha1/namespaces/other/nimservices/llama"
    assert err == "error: NimService other/llama not found\n"


def test_a_nimservice_that_is_not_ready_is_one_line_and_nothing_is_probed() -> None:
    api = FakeApiServer(
        nimservice(ready=("False", "ModelLoading", "0/1 replicas serve: pod llama-0 is loading"))
    )
    code, out, err = check(api, "llama")
    assert code == 3
    assert out == ""
    assert err == (
        "error: NimService team-a/llama is not Ready (ModelLoading): "
        "0/1 replicas serve: pod llama-0 is loading\n"
    )
    assert len(api.seen) == 1


def test_a_status_for_an_older_generation_is_not_ready() -> None:
    code, _, err = check(FakeApiServer(nimservice(generation=4, observed=3)), "llama")
    assert code == 3
    assert "has not yet observed generation 4 (status is for 3)" in err


def test_a_nimservice_without_status_says_so() -> None:
    obj = nimservice()
    del obj["status"]
    code, _, err = check(FakeApiServer(obj), "llama")
    assert code == 3
    assert "has no Ready condition yet (is the nimop operator running?)" in err


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            status_object(401, "Unauthorized", "Unauthorized"),
            f"error: the API server at {SERVER} rejected the credentials of user alice in "
            "context prod (401 Unauthorized): log in again or fix the kubeconfig\n",
        ),
        (
            status_object(
                403,
                "Forbidden",
                'nimservices.nimop.dev "llama" is forbidden: User "alice" cannot get resource '
                '"nimservices" in API group "nimop.dev" in the namespace "team-a"',
            ),
            'error: forbidden by the API server (403): nimservices.nimop.dev "llama" is '
            'forbidden: User "alice" cannot get resource "nimservices" in API group '
            '"nimop.dev" in the namespace "team-a"\n',
        ),
        (
            httpx.Response(404, text="404 page not found"),
            f"error: the API server at {SERVER} does not serve nimservices.nimop.dev: "
            "is the NimService CRD installed?\n",
        ),
    ],
)
def test_the_api_server_refusing_the_nimservice_read_is_one_line(
    answer: httpx.Response, message: str
) -> None:
    code, out, err = check(FakeApiServer(nimservice(), nimservice_answer=answer), "llama")
    assert (code, out, err) == (3, "", message)


def test_forbidden_service_proxy_is_one_line() -> None:
    forbidden = status_object(
        403,
        "Forbidden",
        'services "llama" is forbidden: User "alice" cannot get resource "services/proxy" in '
        'API group "" in the namespace "team-a"',
    )
    code, out, err = check(FakeApiServer(nimservice(), proxy_answer=forbidden), "llama")
    assert code == 3
    assert out == ""
    assert err.startswith('error: forbidden by the API server (403): services "llama" is forbidden')
    assert err.count("\n") == 1


def test_no_endpoints_behind_the_service_is_one_line() -> None:
    unavailable = status_object(
        503, "ServiceUnavailable", 'no endpoints available for service "llama"'
    )
    code, out, err = check(FakeApiServer(nimservice(), proxy_answer=unavailable), "llama")
    assert code == 3
    assert out == ""
    assert err == (
        f"error: cannot check {SERVER}/api/v1/namespaces/team-a/services/http:llama:8000/proxy: "
        "GET /v1/health/live: the API server could not proxy to the Service (HTTP 503): "
        'no endpoints available for service "llama"\n'
    )


def test_a_503_from_the_nim_itself_is_a_check_failure_not_a_proxy_error() -> None:
    loading = httpx.Response(
        503, json={"object": "health.response", "message": "Service is not ready", "status": "x"}
    )

    async def api(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode()
        if "/nimservices/" in path:
            return httpx.Response(200, json=nimservice())
        if path.endswith("/v1/health/live"):
            return httpx.Response(200, json={"object": "health.response", "message": "live"})
        return loading

    code, out, _ = check(api, "llama")
    assert code == 1
    ready = next(line for line in out.splitlines() if " health.ready " in line)
    assert ready.startswith("FAIL")
    assert "HTTP 503" in ready
    assert "Service is not ready" in ready


def test_an_unreachable_api_server_is_one_line() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    code, out, err = check(refuse, "llama")  # type: ignore[arg-type]
    assert (code, out) == (3, "")
    assert err == f"error: cannot reach the API server at {SERVER}: connection refused\n"


def test_endpoint_flag_still_reads_the_nimservice_but_not_the_proxy() -> None:
    with simulator() as url:
        api = FakeApiServer(nimservice())
        code, out, _ = check(api, "llama", "--endpoint", url, "--requests", "1")
    assert code == 0, out
    assert len(api.seen) == 1
    assert out.splitlines()[1] == f"Checking {MODEL} at {url}"
    asyncio.get_event_loop_policy()  # the command's loop is closed; nothing leaked into ours
